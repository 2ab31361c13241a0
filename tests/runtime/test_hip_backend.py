"""The hip backend through hip-python's real bindings over a stand-in libamdhip64.so, driving a
gfx942 bundle's plans (warp size 64): no AMD GPU needed (and none has run it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_cuda import write_fake_bundle

CHILD = """
import json, sys
import numpy as np
from llmc.artifacts import Bundle
from llmc.runtime import Engine, SamplingParams
from llmc.runtime.backends.hip import HipBackend
bundle = Bundle.open(sys.argv[1])
zeros = lambda plan: {k: np.zeros(v["shape"], v["dtype"]) for k, v in plan["inputs"].items()}
backend = HipBackend.open(bundle)
tokens, logits = backend.run(bundle.plan("decode_b2"), zeros(bundle.plan("decode_b2")), True)
assert tokens.shape == (2,) and logits.shape == (2, 16), (tokens, logits)
summary = dict(backend.load_summary)
engine = Engine(bundle, backend, overlap=True)
done = engine.generate([[3, 4, 5]], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
engine.close()
print(json.dumps({"summary": summary, "tokens": done[0].token_ids}))
"""


def arch_offset() -> int:
    """Where hip-python's hipDeviceProp_t keeps gcnArchName (the layout the real library writes)."""
    import ctypes

    from hip import hip

    prop = hip.hipDeviceProp_t()
    size, addr = prop.c_sizeof(), int(prop.as_c_void_p().value)
    for offset in range(size - 8):
        ctypes.memset(addr, 0, size)
        ctypes.memmove(addr + offset, b"gfxPROBE", 8)
        if str(prop.gcnArchName).startswith("gfxPROBE"):
            return offset
    raise AssertionError("gcnArchName not found in hipDeviceProp_t")


@pytest.fixture(scope="module")
def fake_rocm(tmp_path_factory):
    pytest.importorskip("hip")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libamdhip64.so")
    root = tmp_path_factory.mktemp("fakerocm")
    (root / "lib").mkdir()
    source = Path(__file__).with_name("fake_libamdhip.c")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(root / "lib" / "libamdhip64.so"), str(source)], check=True)
    return root


def run_child(root, bundle_dir, fail=None):
    log = root / f"log-{fail}"
    log.unlink(missing_ok=True)
    env = {**os.environ, "ROCM_PATH": str(root), "LD_LIBRARY_PATH": str(root / "lib"), "FAKE_HIP_LOG": str(log),
           "FAKE_HIP_FAIL": fail or "", "FAKE_HIP_ARCH_OFFSET": str(arch_offset())}
    done = subprocess.run([sys.executable, "-c", CHILD, str(bundle_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_a_gfx942_bundle_runs_through_the_real_bindings(fake_rocm, tmp_path):
    write_fake_bundle(tmp_path / "b.llmc", target=("gfx942", "hip", "gfx942"), warp_size=64)
    done, log = run_child(fake_rocm, tmp_path / "b.llmc")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["summary"]["device"] == "Fake AMD Instinct MI300X" and out["summary"]["target"] == "gfx942"
    assert out["summary"]["num_graphs"] == 2 and out["summary"]["kv_limited_by"] == "block count limit"
    assert len(out["tokens"]) == 3
    assert [line for line in log if line.startswith("hipGraphInstantiate")] == ["hipGraphInstantiate 3 nodes"] * 2
    # 4 warps of 64 lanes: the manifest's warp size, not 32
    assert any(line.startswith("hipModuleLaunchKernel sample_kernel grid 2 1 1 block 256 1 1 shared 1024") for line in log)
    assert any(line.startswith("hipFuncSetAttribute kv_write_kernel") for line in log)
    assert sum(line.startswith("hipGraphLaunch") for line in log) >= 3  # run() plus the engine's decode steps
    count = lambda prefix: sum(line.startswith(prefix) for line in log)  # noqa: E731
    assert count("hipMalloc ") == count("hipFree ") and count("hipHostMalloc ") == count("hipHostFree ")
    assert count("hipModuleLoadData") == count("hipModuleUnload") == 3
    assert count("hipEventCreateWithFlags") == count("hipEventDestroy")
    assert log[-1] == "hipDevicePrimaryCtxRelease 0"


def test_a_module_that_does_not_load_names_the_target(fake_rocm, tmp_path):
    write_fake_bundle(tmp_path / "b.llmc", target=("gfx942", "hip", "gfx942"), warp_size=64)
    done, _ = run_child(fake_rocm, tmp_path / "b.llmc", fail="hipModuleLoadData")
    assert done.returncode != 0 and "does not load on gfx942 (Fake AMD Instinct MI300X)" in done.stderr, done.stderr


def test_an_sm90_bundle_is_refused_on_an_amd_gpu(fake_rocm, tmp_path):
    write_fake_bundle(tmp_path / "b.llmc")
    done, _ = run_child(fake_rocm, tmp_path / "b.llmc")
    assert done.returncode != 0 and "gfx942" in done.stderr and "rebuild" in done.stderr, done.stderr
