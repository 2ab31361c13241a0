"""Ahead-of-time compilation (no GPU): real cubin / hsaco, the ABI, determinism, the cache key.

About ten real compiles in all (~0.3 s each once Triton is warm): keep it that way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from llmc.aot.compile import (
    ABI_VERSION,
    SCRATCH_PARAMS,
    CompiledKernel,
    arg_type,
    compile_all,
    compile_kernel,
    kernel_index,
    kernel_key,
    spec_from_launch,
    toolchain,
)
from llmc.artifacts.kernel_cache import KernelCache
from llmc.errors import LlmcError
from llmc.kernels.launch import Launch, Out

KERNELS_SRC = textwrap.dedent(
    '''
    import triton
    import triton.language as tl


    @triton.jit
    def _scale(x, s):
        return x * s


    @triton.jit
    def axpy_kernel(
        # pointers
        x_ptr, y_ptr, out_ptr,
        # sizes and scalars
        n, alpha,
        # meta-parameters
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
        y = tl.load(y_ptr + offs, mask=mask).to(tl.float32)
        tl.store(out_ptr + offs, (_scale(x, alpha) + y).to(out_ptr.dtype.element_ty), mask=mask)


    @triton.jit
    def bias_kernel(x_ptr, BLOCK: tl.constexpr, bias_ptr, out_ptr, n):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        if bias_ptr is not None:
            x += tl.load(bias_ptr + offs, mask=mask)
        tl.store(out_ptr + offs, x, mask=mask)
    '''
)

ELF_MACHINE = {"cubin": 190, "hsaco": 224}  # EM_CUDA, EM_AMDGPU
TARGETS = ("sm90", "sm80", "gfx942")


def load_module(folder, name, src=KERNELS_SRC):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def axpy_launch(module, n=1823, block=256, dtype=torch.bfloat16):
    x = torch.empty(n, dtype=dtype, device="meta")
    return Launch(module.axpy_kernel, (triton_cdiv(n, block),), (x, x, Out(0), n, 0.5), {"BLOCK": block})


def triton_cdiv(a, b):
    return -(-a // b)


def axpy_spec(module, target="sm90", **kw):
    launch = axpy_launch(module, **{k: kw.pop(k) for k in ("block", "dtype") if k in kw})
    types = ["*bf16" if isinstance(a, Out) else arg_type(a) for a in launch.args]
    return spec_from_launch(launch, types, target, **kw)


@pytest.fixture(scope="module")
def kmod(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("kernels_a"), "llmc_test_kernels_a")


@pytest.fixture(scope="module")
def cache_a(tmp_path_factory):
    return KernelCache(tmp_path_factory.mktemp("cache_a"))


@pytest.fixture(scope="module")
def built(kmod, cache_a):
    specs = [axpy_spec(kmod, t) for t in TARGETS]
    start = time.perf_counter()
    kernels, stats = compile_all(specs + specs[:1], cache_a)  # a duplicate is compiled once
    seconds = time.perf_counter() - start
    return specs, kernels, stats, seconds


# -- specs ------------------------------------------------------------------------------------


def test_arg_types():
    assert arg_type(torch.empty(3, dtype=torch.bfloat16, device="meta")) == "*bf16"
    assert arg_type(torch.empty(3, dtype=torch.float16)) == "*fp16"
    assert arg_type(torch.empty(3, dtype=torch.int64, device="meta")) == "*i64"
    assert arg_type(torch.empty(3, dtype=torch.int8, device="meta")) == "*i8"
    assert arg_type(torch.empty(3, dtype=torch.bool, device="meta")) == "*u1"
    assert arg_type(7) == "i32" and arg_type(-(2**31)) == "i32"
    assert arg_type(2**31) == "i64" and arg_type(-(2**40)) == "i64"
    assert arg_type(1e-6) == "fp32"
    assert arg_type(True) == "i1"
    assert arg_type(None) == "constexpr"
    with pytest.raises(ValueError):
        arg_type(2**64)


def test_spec_from_launch(kmod):
    spec = axpy_spec(kmod)
    assert spec.signature == (
        ("x_ptr", "*bf16"), ("y_ptr", "*bf16"), ("out_ptr", "*bf16"), ("n", "i32"), ("alpha", "fp32"), ("BLOCK", "constexpr")
    )
    assert spec.constexprs == (("BLOCK", 256),)
    assert spec.attrs == tuple((i, (("tt.divisibility", 16),)) for i in range(3))  # pointers only: no int specialisation
    assert (spec.num_warps, spec.num_stages, spec.target, spec.fp_fusion) == (4, 3, "sm90", True)
    assert spec.abi_params[-2:] == SCRATCH_PARAMS


def test_spec_none_is_constexpr_and_attrs_index_all_params(kmod):
    x = torch.empty(100, dtype=torch.float32, device="meta")
    launch = Launch(kmod.bias_kernel, (1,), (x, None, Out(0), 100), {"BLOCK": 128})
    spec = spec_from_launch(launch, ["*fp32", "constexpr", "*fp32", "i32"], "sm90")
    assert dict(spec.signature) == {"x_ptr": "*fp32", "BLOCK": "constexpr", "bias_ptr": "constexpr", "out_ptr": "*fp32", "n": "i32"}
    assert spec.constexprs == (("BLOCK", 128), ("bias_ptr", None))
    assert [i for i, _ in spec.attrs] == [0, 3]  # indices count the constexpr parameters too
    assert [n for n, _ in spec.abi_params] == ["x_ptr", "out_ptr", "n", "global_scratch", "profile_scratch"]
    kernel = compile_kernel(spec, None)
    assert kernel.binary[:4] == b"\x7fELF" and kernel.params == spec.abi_params


def test_spec_rejects_bad_launches(kmod):
    x = torch.empty(8, dtype=torch.float32, device="meta")
    with pytest.raises(ValueError, match="takes 5 non-constexpr"):
        spec_from_launch(Launch(kmod.axpy_kernel, (1,), (x, x, Out(0), 8), {"BLOCK": 8}), ["*fp32"] * 3 + ["i32"], "sm90")
    with pytest.raises(ValueError, match="no constexpr parameter"):
        spec_from_launch(
            Launch(kmod.axpy_kernel, (1,), (x, x, Out(0), 8, 1.0), {"BLOCK": 8, "NOPE": 1}), ["*fp32"] * 3 + ["i32", "fp32"], "sm90"
        )
    with pytest.raises(ValueError, match="has no value"):
        spec_from_launch(Launch(kmod.axpy_kernel, (1,), (x, x, Out(0), 8, 1.0)), ["*fp32"] * 3 + ["i32", "fp32"], "sm90")
    with pytest.raises(Exception, match="runs no compiled kernels"):
        axpy_spec(kmod, "cpu")


# -- compiling --------------------------------------------------------------------------------


def test_build_for_three_targets_gives_real_binaries(built):
    specs, kernels, stats, seconds = built
    assert (stats.compiled, stats.cached) == (3, 0)
    assert len(kernels) == 3 and stats.ids[0] == stats.ids[3]
    for spec, kid in zip(specs, stats.ids):
        k = kernels[kid]
        assert k.target == spec.target and k.name == "axpy_kernel"
        assert k.binary[:4] == b"\x7fELF"
        assert int.from_bytes(k.binary[18:20], "little") == ELF_MACHINE[k.suffix]
        assert k.id == hashlib.sha256(k.binary).hexdigest() == kid
        assert [n for n, _ in k.params] == ["x_ptr", "y_ptr", "out_ptr", "n", "alpha", "global_scratch", "profile_scratch"]
        assert k.params[-2:] == (("global_scratch", "*i8"), ("profile_scratch", "*i8"))
        assert k.num_warps == 4 and k.num_ctas == 1 and k.shared >= 0
    print(f"\n3 compiles in {seconds:.2f} s ({seconds / 3:.2f} s each, first includes Triton's warm-up)")


def test_index_entries_hold_what_a_launcher_needs(built):
    _, kernels, _, _ = built
    index = kernel_index(kernels.values())
    text = json.dumps(index, sort_keys=True, separators=(",", ":"))
    for kid, entry in index["kernels"].items():
        assert set(entry) == {
            "file", "name", "target", "params", "num_warps", "num_ctas", "shared",
            "global_scratch_size", "global_scratch_align", "profile_scratch_size", "profile_scratch_align",
        }
        assert entry["file"] == f"kernels/{kid}.{'hsaco' if entry['target'] == 'gfx942' else 'cubin'}"
        assert entry["params"][-1] == {"name": "profile_scratch", "type": "*i8"}
        assert entry["global_scratch_align"] >= 1 and entry["profile_scratch_align"] >= 1
    for leak in ("/tmp", "/root", "/home", os.uname().nodename, "llmc_test_kernels"):
        assert leak not in text
    for k in kernels.values():
        assert b"llmc_test_kernels" not in k.binary and b"/tmp/" not in k.binary


def test_same_spec_gives_same_bytes_from_another_cwd(built, kmod, tmp_path, monkeypatch):
    specs, kernels, stats, _ = built
    monkeypatch.chdir(tmp_path)
    for i in (0, 2):  # sm90 cubin and gfx942 hsaco, compiled again without the cache
        assert compile_kernel(specs[i], None) == kernels[stats.ids[i]]


def test_same_source_from_another_path_and_cache_gives_same_key_and_bytes(built, tmp_path, monkeypatch):
    specs, kernels, stats, _ = built
    other = load_module(tmp_path / "elsewhere" / "deeper", "llmc_test_kernels_b")
    spec = axpy_spec(other, "sm90")
    tools = toolchain("sm90")
    assert kernel_key(spec, tools) == kernel_key(specs[0], tools)
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "cache_b"))
    monkeypatch.chdir(tmp_path)
    cache_b = KernelCache()
    assert cache_b.root == tmp_path / "cache_b"
    kernels_b, stats_b = compile_all([spec], cache_b)
    assert (stats_b.compiled, stats_b.cached) == (1, 0)
    assert kernels_b[stats_b.ids[0]] == kernels[stats.ids[0]]


def test_fp_fusion_changes_the_bytes(built, kmod):
    specs, kernels, stats, _ = built
    unfused = compile_kernel(axpy_spec(kmod, "sm90", fp_fusion=False), None)
    assert unfused.binary[:4] == b"\x7fELF" and unfused.binary != kernels[stats.ids[0]].binary


def test_warm_rebuild_compiles_nothing(built, cache_a):
    specs, kernels, stats, _ = built
    start = time.perf_counter()
    again, warm = compile_all(specs, cache_a)
    assert (warm.compiled, warm.cached) == (0, 3)
    assert again == kernels and warm.ids == stats.ids[:3]
    assert time.perf_counter() - start < 5


def test_corrupt_entry_is_recompiled(built, cache_a):
    specs, kernels, stats, _ = built
    key = kernel_key(specs[0], toolchain("sm90"))
    bin_path = cache_a.kernels_dir / key[:2] / f"{key}.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:100])  # truncated on disk
    seen = []
    again, warm = compile_all(specs, cache_a, progress=lambda done, total, spec, hit: seen.append((done, total, spec.target, hit)))
    assert (warm.compiled, warm.cached) == (1, 2)
    assert seen == [(1, 3, "sm80", True), (2, 3, "gfx942", True), (3, 3, "sm90", False)]  # the hits first
    assert again == kernels
    assert cache_a.get(key) == kernels[stats.ids[0]].binary  # the entry is whole again


def test_parallel_and_serial_compiles_give_the_same_kernels(kmod, tmp_path):
    x = torch.empty(100, dtype=torch.float32, device="meta")
    bias = spec_from_launch(Launch(kmod.bias_kernel, (1,), (x, None, Out(0), 100), {"BLOCK": 128}), ["*fp32", "constexpr", "*fp32", "i32"], "sm80")
    specs = [axpy_spec(kmod, "sm90", block=128), bias, axpy_spec(kmod, "gfx942", fp_fusion=False)]
    cache = KernelCache(tmp_path / "cache")
    seen = []
    parallel, p_stats = compile_all(specs + specs[:1], cache, lambda done, total, spec, hit: seen.append((done, total, hit)), workers=3)
    serial, s_stats = compile_all(specs + specs[:1], None, workers=1)
    assert parallel == serial and list(parallel) == list(serial)
    assert p_stats == s_stats and p_stats.compiled == 3
    assert sorted(seen) == [(1, 3, False), (2, 3, False), (3, 3, False)]
    warm, w_stats = compile_all(specs, cache, workers=3)  # what the workers compiled, the parent stored
    assert warm == serial and (w_stats.compiled, w_stats.cached) == (0, 3)


def test_a_compile_error_in_a_worker_is_the_same_llmc_error(kmod):
    bad = axpy_spec(kmod, "sm90", block=100)  # tl.arange needs a power of 2
    with pytest.raises(LlmcError) as serial:
        compile_kernel(bad, None)
    with pytest.raises(LlmcError) as parallel:
        compile_all([axpy_spec(kmod, "sm80"), bad], None, workers=2)
    assert type(parallel.value) is type(serial.value) and str(parallel.value) == str(serial.value)
    assert str(serial.value).startswith("compiling axpy_kernel for sm90 failed: ") and "power of 2" in str(serial.value)


def test_compiled_kernel_round_trips_through_the_cache_meta(built):
    _, kernels, _, _ = built
    for k in kernels.values():
        assert CompiledKernel.from_meta(k.binary, json.loads(json.dumps(k.meta()))) == k


# -- the cache key ----------------------------------------------------------------------------


def test_cache_key_covers_what_changes_bytes_and_nothing_else(kmod, tmp_path, monkeypatch):
    tools = toolchain("sm90")
    base = axpy_spec(kmod)
    key = kernel_key(base, tools)

    changed_source = load_module(tmp_path / "c", "llmc_test_kernels_c", KERNELS_SRC.replace("_scale(x, alpha) + y", "_scale(x, alpha) - y"))
    changed_helper = load_module(tmp_path / "d", "llmc_test_kernels_d", KERNELS_SRC.replace("return x * s", "return x / s"))
    perturbed = {
        "kernel source": kernel_key(axpy_spec(changed_source), tools),
        "source of a called jit function": kernel_key(axpy_spec(changed_helper), tools),
        "constexpr": kernel_key(axpy_spec(kmod, block=128), tools),
        "signature type": kernel_key(dataclasses.replace(base, signature=(("x_ptr", "*fp16"),) + base.signature[1:]), tools),
        "attrs": kernel_key(dataclasses.replace(base, attrs=base.attrs[:2]), tools),
        "num_warps": kernel_key(dataclasses.replace(base, num_warps=8), tools),
        "num_stages": kernel_key(dataclasses.replace(base, num_stages=2), tools),
        "target sm80": kernel_key(dataclasses.replace(base, target="sm80"), tools),
        "target sm89": kernel_key(dataclasses.replace(base, target="sm89"), tools),
        "target gfx942": kernel_key(dataclasses.replace(base, target="gfx942"), tools),
        "triton version": kernel_key(base, dataclasses.replace(tools, triton="3.6.0" if tools.triton != "3.6.0" else "3.9.0")),
        "ptxas version": kernel_key(base, dataclasses.replace(tools, ptxas="12.8.93 (cuda_12.8.r12.8/compiler.35583870_0)x")),
        "triton's output-changing env": kernel_key(base, dataclasses.replace(tools, env=tools.env + (("TRITON_F32_DEFAULT", "ieee"),))),
        "fp fusion": kernel_key(dataclasses.replace(base, fp_fusion=False), tools),
        "llmc ABI version": kernel_key(base, tools, abi_version=ABI_VERSION + 1),
    }
    unchanged = [k for k, v in perturbed.items() if v == key]
    assert not unchanged, f"the key ignores: {unchanged}"
    assert len(set(perturbed.values())) == len(perturbed)

    # nothing that does not change the bytes: cache root, cwd, time, the kernel file's path
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "another-cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "time", lambda: 4102444800.0)
    elsewhere = load_module(tmp_path / "some" / "other" / "dir", "llmc_test_kernels_e")
    assert toolchain("sm90") == tools
    assert kernel_key(axpy_spec(kmod), toolchain("sm90")) == key
    assert kernel_key(axpy_spec(elsewhere), toolchain("sm90")) == key


def test_toolchain_knows_triton_and_ptxas():
    sm90, sm80, gfx = toolchain("sm90"), toolchain("sm80"), toolchain("gfx942")
    import triton

    assert sm90.triton == triton.__version__
    assert sm90.ptxas and sm80.ptxas and gfx.ptxas is None
    assert "/" not in sm90.ptxas.split(" ")[0]  # a version, not a path


# -- interpreter mode -------------------------------------------------------------------------

INTERPRET_SCRIPT = """
import dataclasses, importlib.util, json, os, sys
assert os.environ["TRITON_INTERPRET"] == "1"
import torch
spec = importlib.util.spec_from_file_location("llmc_test_kernels_a", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
assert type(mod.axpy_kernel).__name__ == "InterpretedFunction"
x, y, out = torch.randn(300), torch.randn(300), torch.empty(300)
mod.axpy_kernel[(2,)](x, y, out, 300, 0.5, BLOCK=256)  # runs on the CPU interpreter
assert torch.allclose(out, 0.5 * x + y)
from llmc.aot.compile import compile_all, compile_kernel, kernel_key, spec_from_launch, toolchain
from llmc.kernels.launch import Launch, Out
m = torch.empty(1823, dtype=torch.bfloat16, device="meta")
s = spec_from_launch(Launch(mod.axpy_kernel, (8,), (m, m, Out(0), 1823, 0.5), {"BLOCK": 256}), ["*bf16"] * 3 + ["i32", "fp32"], "sm90")
k = compile_kernel(s, None)
both, stats = compile_all([s, dataclasses.replace(s, target="sm80")], None, workers=2)
print(json.dumps({"id": k.id, "key": kernel_key(s, toolchain("sm90")), "ids": stats.ids}))
"""


def test_compiles_real_cubins_under_the_interpreter(built, kmod, tmp_path):
    specs, kernels, stats, _ = built
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", INTERPRET_SCRIPT, kmod.__file__], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"id": stats.ids[0], "key": kernel_key(specs[0], toolchain("sm90")), "ids": list(stats.ids[:2])}
