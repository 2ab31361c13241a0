"""What to compile: a `KernelSpec` is one (kernel, specialization, target), made from a `Launch`.

The spec names every parameter's Triton type, the constexpr values, the divisibility hints
(every buffer llmc hands a kernel is 16-byte aligned) and the launch options; under
TRITON_INTERPRET the kernel's plain function is wrapped back into a JITFunction.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable

import torch
import triton
from triton._utils import canonicalize_dtype
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from llmc.errors import UserError

from .target import get_target

# llmc's kernel ABI: bump when the meaning of an index entry or the calling convention changes.
ABI_VERSION = 1

SCRATCH_PARAMS = (("global_scratch", "*i8"), ("profile_scratch", "*i8"))
_TYPES = {
    "i1", "u1", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64",
    "fp16", "bf16", "fp32", "fp64", "fp8e4nv", "fp8e5", "fp8e4b8", "fp8e5b16", "fp8e4b15",
}  # what a parameter may be, after an optional "*" (pointer)
_POINTER_DIVISIBILITY = (("tt.divisibility", 16),)  # every buffer llmc hands a kernel is 16-byte aligned


def arg_type(value) -> str:
    """Triton's type string for one kernel argument: a tensor (real or meta), int, float, bool or None."""
    if isinstance(value, torch.Tensor):
        return "*" + canonicalize_dtype(value.dtype)
    if value is None:
        return "constexpr"
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return "i32"
        if -(2**63) <= value < 2**63:
            return "i64"
        raise ValueError(f"integer kernel argument {value} does not fit in 64 bits")
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a kernel argument of type {type(value).__name__}")


# -- the kernel's identity --------------------------------------------------------------------

_JIT_WRAPPERS: dict[Callable, JITFunction] = {}  # python function -> its JITFunction (interpreter mode)


def jit_function(kernel) -> JITFunction:
    """A real JITFunction for `kernel`, also when `@triton.jit` gave an InterpretedFunction.

    Under TRITON_INTERPRET=1 every `@triton.jit` returns an InterpretedFunction; compiling one
    needs a JITFunction of the same Python function whose globals see the jit functions it
    calls as JITFunctions too. The wrapper is built once per function.
    """
    if isinstance(kernel, JITFunction):
        return kernel
    fn = getattr(kernel, "fn", None)
    if not inspect.isfunction(fn):
        raise TypeError(f"{kernel!r} is not a @triton.jit function")
    if fn in _JIT_WRAPPERS:
        return _JIT_WRAPPERS[fn]
    scope = dict(fn.__globals__)
    clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    for attr in ("__kwdefaults__", "__annotations__", "__qualname__", "__module__", "__doc__"):
        setattr(clone, attr, getattr(fn, attr))
    accepted = inspect.signature(JITFunction.__init__).parameters
    options = {k: v for k, v in getattr(kernel, "kwargs", {}).items() if k in accepted and k != "fn"}
    wrapper = _JIT_WRAPPERS[fn] = JITFunction(clone, **options)
    for name, value in fn.__globals__.items():  # helpers it calls, wrapped the same way
        if not isinstance(value, JITFunction) and inspect.isfunction(getattr(value, "fn", None)) and hasattr(value, "rewrite"):
            scope[name] = jit_function(value)
    return wrapper


# -- what to compile --------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpec:
    kernel: Any  # the @triton.jit function as written (JITFunction, or InterpretedFunction)
    signature: tuple[tuple[str, str], ...]  # every parameter in order: (name, "*bf16" | "i32" | "fp32" | "constexpr" ...)
    constexprs: tuple[tuple[str, Any], ...]  # (name, value) for each "constexpr" parameter, in order
    attrs: tuple[tuple[int, tuple[tuple[str, int], ...]], ...]  # (param index, ((attr, value), ...))
    num_warps: int
    num_stages: int
    target: str  # sm80 | sm89 | sm90 | gfx942
    fp_fusion: bool = True

    def __post_init__(self):
        if not get_target(self.target).compiles_kernels:
            raise UserError(f"target {self.target!r} runs no compiled kernels; choose a GPU target")
        for name, ty in self.signature:
            if ty != "constexpr" and ty.removeprefix("*") not in _TYPES:
                raise ValueError(f"{self.name}: parameter {name} has unknown Triton type {ty!r}")
        if self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
            raise ValueError(f"{self.name}: num_warps {self.num_warps} must be a power of two")

    @property
    def name(self) -> str:
        return getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__

    @property
    def abi_params(self) -> tuple[tuple[str, str], ...]:
        """The compiled entry point's parameters: the non-constexpr ones, then Triton's two scratch pointers."""
        return tuple((n, t) for n, t in self.signature if t != "constexpr") + SCRATCH_PARAMS

    def ast_source(self) -> ASTSource:
        return ASTSource(
            jit_function(self.kernel),
            signature=dict(self.signature),
            constexprs=dict(self.constexprs),
            attrs={(i,): [list(a) for a in specs] for i, specs in self.attrs},
        )


_SPECS: dict[tuple, KernelSpec] = {}  # a build plans thousands of launches of a few dozen specs


def spec_from_launch(launch, arg_types: list[str], target: str, *, fp_fusion: bool = True) -> KernelSpec:
    """The spec of one `Launch`; `arg_types[i]` is `launch.args[i]`'s type (see `arg_type`)."""
    # the spec depends on the arguments' types and which are None; constexpr values by repr, since
    # True, 1 and 1.0 are equal in Python but compile differently
    constexprs = repr(sorted(launch.constexprs.items(), key=lambda kv: kv[0]))
    same = (launch.kernel, tuple(a is None for a in launch.args), tuple(arg_types), constexprs, launch.num_warps,
            launch.num_stages, target, fp_fusion)
    try:
        known = same in _SPECS
    except TypeError:  # a kernel object that cannot be hashed
        return _spec_from_launch(launch, arg_types, target, fp_fusion)
    if not known:
        if len(_SPECS) > 4096:
            _SPECS.clear()
        _SPECS[same] = _spec_from_launch(launch, arg_types, target, fp_fusion)
    return _SPECS[same]


def _spec_from_launch(launch, arg_types: list[str], target: str, fp_fusion: bool) -> KernelSpec:
    jit = jit_function(launch.kernel)
    runtime = [p for p in jit.params if not p.is_constexpr]
    if len(launch.args) != len(runtime) or len(arg_types) != len(runtime):
        raise ValueError(
            f"{launch.name} takes {len(runtime)} non-constexpr arguments ({', '.join(p.name for p in runtime)}); "
            f"the launch gives {len(launch.args)} arguments and {len(arg_types)} types"
        )
    given = dict(zip((p.name for p in runtime), zip(launch.args, arg_types)))
    unknown = set(launch.constexprs) - {p.name for p in jit.params if p.is_constexpr}
    if unknown:
        raise ValueError(f"{launch.name} has no constexpr parameter {sorted(unknown)[0]!r}")
    signature, constexprs, attrs = [], [], []
    for i, p in enumerate(jit.params):
        if p.is_constexpr:
            if p.name in launch.constexprs:
                value = launch.constexprs[p.name]
            elif p.default is not inspect.Parameter.empty:
                value = p.default
            else:
                raise ValueError(f"{launch.name}: constexpr {p.name} has no value and no default")
            signature.append((p.name, "constexpr"))
            constexprs.append((p.name, value.value if isinstance(value, triton.language.constexpr) else value))
            continue
        value, ty = given[p.name]
        if value is None and ty != "constexpr":
            raise ValueError(f"{launch.name}: argument {p.name} is None, so its type must be 'constexpr', not {ty!r}")
        signature.append((p.name, ty))
        if ty == "constexpr":
            constexprs.append((p.name, value))
        elif ty.startswith("*"):
            attrs.append((i, _POINTER_DIVISIBILITY))
    return KernelSpec(
        kernel=launch.kernel,
        signature=tuple(signature),
        constexprs=tuple(constexprs),
        attrs=tuple(attrs),
        num_warps=int(launch.num_warps),
        num_stages=int(launch.num_stages),
        target=target,
        fp_fusion=fp_fusion,
    )

