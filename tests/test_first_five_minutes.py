"""What a new user meets first: the README, the install check, and the CLI's small courtesies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoints import make_checkpoint

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / ".ci"))
import check_installs  # noqa: E402


def llmc(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "llmc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---- the README ---------------------------------------------------------------------------------


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    main_job, tests = first_block
    assert main_job.startswith("pip install") and "llmc build examples/zen-llama" in main_job and "llmc run" in main_job
    assert "python -m pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "the test command in .ci/run must be the README's, verbatim"
    assert "check_installs.py" in ci


def test_the_readmes_links_work_from_a_clone():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    cited = re.findall(r"`((?:docs|examples|benchmarks|tests)/[\w./-]+)`", README)
    assert links, "the README links its docs"
    for target in links + cited:
        if "://" in target:
            continue
        assert not target.startswith("../"), f"{target}: outside the repository"
        assert (ROOT / target).exists(), f"{target}: cited by the README, missing from the repository"


def test_every_readme_install_line_is_checked():
    lines = check_installs.readme_install_lines(README)
    assert "-c constraints.txt -e '.[build]'" in lines
    assert "'.[cuda,serve]'" in lines and "'.[cuda]'" in lines, "the fleet install is checked"
    assert any("serve" in line and "-e" in line for line in lines)
    assert not any(line.startswith("--") and "[" not in line for line in lines)


def test_a_resolution_failure_is_reported_by_its_key_line():
    output = """Collecting torch==2.13.0
ERROR: Cannot install llmc and llmc[build]==0.1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    torch 2.13.0 depends on triton==3.7.1; platform_system == "Linux"
    The user requested (constraint) triton==3.9.0
"""
    keys = check_installs.key_lines(output)
    assert keys[0].startswith("ERROR: Cannot install")
    assert "torch 2.13.0 depends on triton==3.7.1" in keys[2] and "triton==3.9.0" in keys[3]
    assert check_installs.pip_arguments("-q -c constraints.txt -e '.[build]'") == ["-c", "constraints.txt", "-e", ".[build]"]


def test_the_pinned_triton_is_the_one_the_pinned_torch_requires():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    import importlib.metadata as md

    if md.version("torch").split("+")[0] != pins["torch"]:
        pytest.skip("torch here is not the pinned one")
    required = [r for r in md.requires("torch") or () if r.startswith("triton")]
    if not required:  # a CPU-only torch wheel, as on our own machines: nothing to compare
        pytest.skip("this torch wheel does not depend on triton")
    assert f"triton=={pins['triton']}" in required[0]


def test_the_test_run_does_not_print_a_skip_summary(tmp_path):
    (tmp_path / "test_skips.py").write_text("import pytest\n\n@pytest.mark.skip(reason='a reason')\ndef test_a():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), str(tmp_path / "test_skips.py")], capture_output=True, text=True)
    assert "1 skipped" in done.stdout
    assert "a reason" not in done.stdout and "SKIPPED" not in done.stdout, done.stdout


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_checkpoint("llama", tmp_path_factory.mktemp("five") / "hf")


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("five_bundle") / "b.llmc"
    done = llmc("build", model, "-o", out, "--max-seq-len", "64", "--max-batch-size", "2")
    assert done.returncode == 0, done.stderr
    return out


def test_run_ends_with_the_finish_reason(bundle):
    done = llmc("run", bundle, "--prompt", "w5 w6 w7", "--max-tokens", "3")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[length]"


def test_inspect_prints_the_summary_and_the_nodes_on_request(bundle):
    short = llmc("inspect", bundle).stdout
    assert short.startswith("bundle ") and "kernels  " in short and "target   cpu" in short
    assert re.search(r"^  linear: native x\d+", short, re.M), short
    assert "decode_b1/" not in short
    full = llmc("inspect", bundle, "--nodes").stdout
    assert full.startswith(short) and "decode_b1/" in full


def test_a_context_above_the_model_is_said(model, tmp_path):
    done = llmc("build", model, "-o", tmp_path / "b.llmc", "--max-seq-len", "100000", "--max-batch-size", "1")
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "--max-seq-len 100000" in warning[0] and "256 tokens" in warning[0], done.stderr
    quiet = llmc("build", model, "-o", tmp_path / "c.llmc", "--max-batch-size", "1")
    assert "warning:" not in quiet.stderr


def test_serve_says_when_max_num_seqs_is_above_the_bundle(bundle):
    pytest.importorskip("uvicorn")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-m", "llmc.cli", "serve", str(bundle), "--port", "18713",
                             "--max-num-seqs", "64", "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert line.startswith("warning: --max-num-seqs 64") and "at most 2 sequences" in line, line


def test_build_counts_kernels_while_compiling(model, tmp_path):
    """The compile stage reports done/total after each kernel; the CLI shows it as `compile 12/33`."""
    import io
    import json

    from rich.console import Console

    from llmc.cli.build import _progress

    child = f"""
import contextlib, json
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
calls = []
@contextlib.contextmanager
def progress(name):
    yield lambda done, total: calls.append((name, done, total))
build({str(model)!r}, {str(tmp_path / "b.llmc")!r}, BuildConfig(target="sm90", max_batch_size=1, max_num_batched_tokens=16,
      max_seq_len=64), progress=progress, use_cache=False)
print(json.dumps(calls))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert calls and {name for name, _, _ in calls} == {"compile"}
    total = calls[-1][2]
    assert [d for _, d, _ in calls] == list(range(1, total + 1)) and all(t == total for _, _, t in calls)

    out = io.StringIO()
    stage = _progress(Console(file=out, force_terminal=True, width=120))
    with stage("compile") as count:
        for i in range(1, total + 1):
            count(i, total)
    assert f"compile {total}/{total}" in out.getvalue()
