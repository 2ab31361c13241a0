"""No module of llmc unpickles anything or runs a checkpoint's own code."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aot", "kernels", "artifacts", "runtime", "cli", "llmc_pkg")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}


def offences(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append((node.lineno, "from torch import load"))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in {("torch", "load"), ("pickle", "load"), ("pickle", "loads")}:
                found.append((node.lineno, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.keyword) and node.arg in ("trust_remote_code", "allow_pickle"):
            if isinstance(node.value, ast.Constant) and node.value.value is True:
                found.append((node.lineno, f"{node.arg}=True"))
    return found


def test_scanner_catches_each_form():
    source = ("import pickle\nfrom pickle import loads\nimport torch\ntorch.load('x')\npickle.load(f)\n"
              "f(trust_remote_code=True)\nfrom torch import load\nnp.load(p, allow_pickle=True)\n")
    assert sorted(line for line, _ in offences(ast.parse(source))) == [1, 2, 4, 5, 6, 7, 8]
    assert offences(ast.parse("f(trust_remote_code=False)\nimport torch.nn\nsafetensors.torch.load_file(p)")) == []


def test_no_module_unpickles_or_trusts_remote_code():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert any(p.name == "reader.py" for p in files)  # the scan sees the tree
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}"
           for p in files for line, what in offences(ast.parse(p.read_bytes(), str(p)))]
    assert not bad, "forbidden (pickle can run arbitrary code; use safetensors/JSON):\n" + "\n".join(bad)


def test_artifacts_import_neither_torch_nor_triton():
    code = ("import sys, llmc.artifacts, llmc.cli.verify, llmc.cli.pack; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
