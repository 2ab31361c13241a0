"""A fleet's install, `pip install '.[cuda,serve]'`, runs GPU bundles without torch, triton or transformers.

The check runs in a separate venv that holds only llmc's declared runtime dependencies (so a stray
`import torch` on the serving path fails there, as it would on a fleet machine), over cuda-python's
real bindings and a stand-in libcuda.so.1.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))
from fake_cuda import write_fake_bundle  # noqa: E402
from runtime_only_venv import FORBIDDEN, make_runtime_venv  # noqa: E402
from test_cuda_real_bindings import CHILD, fake_libcuda  # noqa: E402,F401  (the stand-in libcuda fixture)

NOTHING_FORBIDDEN = f"""
import sys
bad = [m for m in {FORBIDDEN!r} if m in sys.modules]
assert not bad, f"imported {{bad}}"
"""


@pytest.fixture(scope="module")
def fleet_python(tmp_path_factory) -> Path:
    try:
        return make_runtime_venv(tmp_path_factory.mktemp("fleet") / "venv")
    except md.PackageNotFoundError as e:  # a machine without the fleet extras installed (the GPU host)
        pytest.skip(f"the fleet venv needs {e} installed here: pip install '.[cuda,serve]'")


def _run(python: Path, *args: str, libdir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    if libdir is not None:
        env["LD_LIBRARY_PATH"] = str(libdir)
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300, env=env)


def test_the_fleet_venv_has_no_compiler(fleet_python):
    for module in FORBIDDEN:
        done = _run(fleet_python, "-c", f"import {module}")
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, f"{module} is importable in the fleet venv"


def test_the_serving_commands_import_without_the_compiler(fleet_python):
    done = _run(fleet_python, "-c", """
import llmc.cli.main, llmc.cli.run, llmc.cli.serve, llmc.cli.bench, llmc.cli.verify
import llmc.runtime, llmc.runtime.server, llmc.runtime.backends.cuda, llmc.runtime.bench
""" + NOTHING_FORBIDDEN)
    assert done.returncode == 0, done.stderr
    for command in ("run", "serve", "bench", "verify"):
        done = _run(fleet_python, "-m", "llmc.cli", command, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout, done.stderr


def test_a_gpu_bundle_verifies_and_runs_without_the_compiler(fleet_python, fake_libcuda, tmp_path):
    bundle = tmp_path / "b.llmc"
    write_fake_bundle(bundle)
    verified = _run(fleet_python, "-m", "llmc.cli", "verify", str(bundle))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    inspected = _run(fleet_python, "-m", "llmc.cli", "inspect", str(bundle))
    assert inspected.returncode == 0 and "target   sm90 (cuda)" in inspected.stdout, inspected.stderr
    ran = _run(fleet_python, "-c", CHILD + NOTHING_FORBIDDEN, str(bundle), libdir=fake_libcuda)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["summary"]["num_graphs"] == 2
