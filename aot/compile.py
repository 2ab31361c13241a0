"""Ahead-of-time compilation of kernel launches into cubin / hsaco, through the kernel cache.

One `KernelSpec` is one (kernel, specialization, target): `triton.compile(ASTSource(...),
target=GPUTarget(...))` turns it into a binary with no GPU present. The cache key covers what
changes the bytes (kernel source and the jit functions it calls, signature, constexprs, attrs,
num_warps, num_stages, target, Triton and ptxas versions, fp fusion, the environment variables
Triton itself says change its output, llmc's kernel ABI version) and nothing else. Compilation
pins Triton's knobs (line info off, no overrides, no dumps, a private Triton cache), so neither
the binary nor the index entry carries a path, a time or a host name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import triton
from triton.backends.compiler import GPUTarget

from llmc.artifacts.kernel_cache import KernelCache
from llmc.errors import LlmcError

from .compile_pool import pool_map
from .target import get_target

from .kernel_spec import (ABI_VERSION, SCRATCH_PARAMS, KernelSpec, arg_type, jit_function,  # noqa: F401
                          spec_from_launch)


# -- the toolchain and the key ----------------------------------------------------------------


@dataclass(frozen=True)
class Toolchain:
    triton: str
    ptxas: str | None  # cuda targets: the ptxas Triton runs for this arch
    env: tuple[tuple[str, str], ...]  # environment variables Triton says change its output, as pinned

    def as_dict(self) -> dict[str, Any]:
        return {"triton": self.triton, "ptxas": self.ptxas, "env": dict(self.env)}


def gpu_target(name: str) -> GPUTarget:
    t = get_target(name)
    return GPUTarget(t.backend, t.arch, t.warp_size)


def ptxas_version(arch: int) -> str:
    """The version of the ptxas Triton uses for `arch` (3.6: ptxas below sm100; 3.9: ptxas-blackwell from sm90)."""
    from triton.backends.nvidia.compiler import get_ptxas_version

    text = get_ptxas_version(arch)
    release = re.search(r"release [\d.]+, V([\d.]+)", text)
    build = re.search(r"^Build (\S+)", text, re.MULTILINE)
    if release and build:
        return f"{release.group(1)} ({build.group(1)})"
    return text.strip()


def toolchain(target: str) -> Toolchain:
    from triton._C.libtriton import get_cache_invalidating_env_vars

    t = get_target(target)
    with tempfile.TemporaryDirectory() as tmp, _pinned_triton(tmp):
        env = tuple(sorted(get_cache_invalidating_env_vars().items()))
    return Toolchain(triton=triton.__version__, ptxas=ptxas_version(t.arch) if t.backend == "cuda" else None, env=env)


def _canonical(value) -> Any:
    if isinstance(value, triton.language.constexpr):
        value = value.value
    if value is None or isinstance(value, (bool, int, str)):
        return [type(value).__name__, value]
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, triton.language.dtype):
        return ["dtype", str(value)]
    if isinstance(value, (tuple, list)):
        return ["tuple", [_canonical(v) for v in value]]
    raise TypeError(f"constexpr value {value!r} of type {type(value).__name__} has no canonical form for the cache key")


def kernel_key(spec: KernelSpec, tools: Toolchain, abi_version: int = ABI_VERSION) -> str:
    """The cache key: sha256 over everything that changes the compiled bytes, and nothing else."""
    fields = {
        "abi_version": abi_version,
        "name": spec.name,
        "source": jit_function(spec.kernel).cache_key,  # the source, and that of every jit function it calls
        "signature": [list(p) for p in spec.signature],
        "constexprs": [[n, _canonical(v)] for n, v in spec.constexprs],
        "attrs": [[i, [list(a) for a in specs]] for i, specs in spec.attrs],
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "num_ctas": 1,
        "target": dataclasses.astuple(gpu_target(spec.target)),
        "fp_fusion": spec.fp_fusion,
        "toolchain": tools.as_dict(),
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def _pinned_triton(cache_dir: str):
    """Triton's knobs set so the output depends on the spec only: no line info (it carries paths),
    no IR overrides or dumps, no arch override, a private Triton cache, every compile a real one."""
    from triton import knobs

    pins = {
        knobs.compilation: {
            "disable_line_info": True, "always_compile": True, "override": False, "dump_ir": False,
            "store_binary_only": False, "enable_asan": False, "dump_ir_extract_di_local_variables": False,
            "use_ir_loc": None,
        },
        knobs.runtime: {"override_arch": None},
        knobs.language: {"default_fp_fusion": True, "force_disable_fp_fusion": False},
        knobs.nvidia: {"disable_ptxas_opt": False},
        knobs.cache: {"dir": cache_dir, "manager_class": None},
    }
    with contextlib.ExitStack() as stack:
        for group, values in pins.items():
            stack.enter_context(group.scope())
            for name, value in values.items():
                if name in group.knob_descriptors:  # a knob one Triton version has and another lacks is skipped
                    setattr(group, name, value)
        yield


# -- compiling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledKernel:
    binary: bytes
    name: str  # the entry point
    target: str
    params: tuple[tuple[str, str], ...]  # the full ABI, scratch pointers last
    num_warps: int
    num_ctas: int
    shared: int
    global_scratch_size: int
    global_scratch_align: int
    profile_scratch_size: int
    profile_scratch_align: int

    @property
    def id(self) -> str:
        return hashlib.sha256(self.binary).hexdigest()

    @property
    def suffix(self) -> str:
        return get_target(self.target).binary_suffix

    @property
    def file(self) -> str:
        return f"kernels/{self.id}.{self.suffix}"

    def meta(self) -> dict[str, Any]:
        """Everything but the bytes, as JSON (what the cache stores beside the binary)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "binary"}
        d["params"] = [{"name": n, "type": t} for n, t in self.params]
        return d

    def index_entry(self) -> dict[str, Any]:
        return {"file": self.file, **self.meta()}

    @classmethod
    def from_meta(cls, binary: bytes, meta: Mapping[str, Any]) -> CompiledKernel:
        fields = dict(meta)
        fields["params"] = tuple((p["name"], p["type"]) for p in meta["params"])
        return cls(binary=binary, **fields)


def kernel_index(kernels: Iterable[CompiledKernel]) -> dict[str, Any]:
    """The content of kernels/index.json."""
    return {"kernels": {k.id: k.index_entry() for k in sorted(kernels, key=lambda k: k.id)}}


def compile_kernel(spec: KernelSpec, cache: KernelCache | None) -> CompiledKernel:
    kernels, stats = compile_all([spec], cache, workers=1)
    return kernels[stats.ids[0]]


def _load(cache: KernelCache | None, key: str) -> CompiledKernel | None:
    if cache is None or (entry := cache.load(key)) is None:
        return None
    try:
        return CompiledKernel.from_meta(entry.payload, entry.meta)
    except (KeyError, TypeError, ValueError):  # an entry of another shape: rebuild it
        cache.discard(key)
        return None


def _interpreting() -> bool:
    """True when Triton was imported with TRITON_INTERPRET set: its own @jit library functions
    (tl.sum, tl.max, ...) are then interpreter objects that corrupt ahead-of-time compilation."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(triton.language.standard.sum, InterpretedFunction)


def _compile(spec: KernelSpec) -> CompiledKernel:
    target = get_target(spec.target)
    options = {
        "num_warps": spec.num_warps, "num_stages": spec.num_stages, "num_ctas": 1,
        "enable_fp_fusion": spec.fp_fusion, "debug": False, "instrumentation_mode": "",
    }
    if target.backend == "cuda":
        options["ptx_options"] = ""  # not $PTXAS_OPTIONS
    with tempfile.TemporaryDirectory(prefix="llmc-triton-") as tmp, _pinned_triton(tmp):
        try:
            compiled = triton.compile(spec.ast_source(), target=gpu_target(spec.target), options=options)
        except Exception as e:
            hint = "; unset TRITON_INTERPRET: Triton's interpreter breaks ahead-of-time compilation" if _interpreting() else ""
            raise LlmcError(f"compiling {spec.name} for {spec.target} failed: {e}{hint}") from e
        md = compiled.metadata
        binary = bytes(compiled.asm[target.binary_suffix])
        asm = compiled.asm["ptx" if target.backend == "cuda" else "amdgcn"]
    if md.enable_fp_fusion != spec.fp_fusion or md.debug:
        raise LlmcError(f"{spec.name}: Triton compiled with fp_fusion={md.enable_fp_fusion}, debug={md.debug}")
    kernel = CompiledKernel(
        binary=binary,
        name=md.name,
        target=spec.target,
        params=spec.abi_params,
        num_warps=int(md.num_warps),
        num_ctas=int(md.num_ctas),
        shared=int(md.shared or 0),
        # Triton 3.6 leaves these out (hip) or None (cuda) when the kernel needs no scratch
        global_scratch_size=int(getattr(md, "global_scratch_size", 0) or 0),
        global_scratch_align=int(getattr(md, "global_scratch_align", 1) or 1),
        profile_scratch_size=int(getattr(md, "profile_scratch_size", 0) or 0),
        profile_scratch_align=int(getattr(md, "profile_scratch_align", 1) or 1),
    )
    compiled_params = _entry_param_count(asm, target.backend, md.name)
    if compiled_params != len(kernel.params):
        raise LlmcError(
            f"{spec.name} for {spec.target}: the binary's entry takes {compiled_params} parameters, "
            f"llmc's ABI says {len(kernel.params)} ({', '.join(n for n, _ in kernel.params)})"
        )
    return kernel


def _entry_param_count(asm: str, backend: str, name: str) -> int:
    """How many parameters the compiled entry point takes, read from its PTX or AMDGCN text."""
    if backend == "cuda":
        m = re.search(rf"\.entry\s+{re.escape(name)}\s*\(([^)]*)\)", asm)
        return len(re.findall(r"\.param\s", m.group(1))) if m else -1
    m = re.search(rf"\.args:(.*?)\.name:\s+{re.escape(name)}\s", asm, re.DOTALL)
    kinds = re.findall(r"\.value_kind:\s+(\S+)", m.group(1)) if m else []
    return len([k for k in kinds if not k.startswith("hidden_")]) if m else -1


@dataclass(frozen=True)
class CompileStats:
    compiled: int  # unique specs compiled now
    cached: int  # unique specs read from the cache
    ids: tuple[str, ...]  # the kernel id of each spec given, in order (duplicates included)


def _identity(spec: KernelSpec) -> tuple:
    # the spec's fields, constexpr values by repr: True, 1 and 1.0 are equal in Python but compile differently
    return (spec.kernel, spec.signature, repr(spec.constexprs), spec.attrs, spec.num_warps, spec.num_stages, spec.target,
            spec.fp_fusion)


def compile_all(
    specs: Iterable[KernelSpec], cache: KernelCache | None, progress: Callable[[int, int, KernelSpec, bool], None] | None = None,
    workers: int | None = None,
) -> tuple[dict[str, CompiledKernel], CompileStats]:
    """Compile (or load) every distinct spec once; `progress(done, total, spec, from_cache)` after each,
    the cache hits first. The misses compile in `workers` processes (None: one per CPU); the result
    does not depend on how many."""
    specs = list(specs)
    tools: dict[str, Toolchain] = {}
    keys, known = [], {}  # a plan's thousands of launches name a few dozen specs: each is keyed once
    for spec in specs:
        if spec.target not in tools:
            tools[spec.target] = toolchain(spec.target)
        same = _identity(spec)
        if same not in known:
            known[same] = kernel_key(spec, tools[spec.target])
        keys.append(known[same])
    unique = dict(zip(keys, specs))  # key -> first spec with it
    by_key = {key: _load(cache, key) for key in unique}
    misses = [key for key, kernel in by_key.items() if kernel is None]
    done = itertools.count(1)
    for key, kernel in by_key.items():
        if kernel is not None and progress is not None:
            progress(next(done), len(unique), unique[key], True)

    def compiled(i: int, kernel: CompiledKernel) -> None:
        by_key[misses[i]] = kernel
        if cache is not None:
            cache.put(misses[i], kernel.binary, kernel.meta())
        if progress is not None:
            progress(next(done), len(unique), unique[misses[i]], False)

    pool_map(_compile, [unique[key] for key in misses], workers, compiled)
    kernels = {k.id: k for k in by_key.values()}
    return kernels, CompileStats(compiled=len(misses), cached=len(unique) - len(misses), ids=tuple(by_key[k].id for k in keys))
