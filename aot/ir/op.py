"""IR ops: a plain torch function is an op's semantics and its `native` impl.

`register_op` turns the function into a torch custom op (`torch.ops.llmc.<name>`) so a traced
graph shows it as one node. Other implementations register against it with `register_impl`;
their schema must equal the op's. Which impl serves a node is decided only by the target's
priority list (see `aot/target.py` and `aot/lower.py`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

NAMESPACE = "llmc"
OPS: dict[str, "IrOp"] = {}


class SchemaMismatch(TypeError):
    """An impl's signature differs from its op's."""


@dataclass(frozen=True)
class Impl:
    """One implementation of an op.

    `fn` has the op's signature. For a `native`-style impl it computes the result with torch;
    for a kernel impl (`launches=True`) it returns the list of kernel launches that compute it
    (see `llmc.aot.launch`), which both the build (ahead of time) and tests (eagerly) use.
    """

    op: "IrOp"
    provider: str
    fn: Callable
    targets: frozenset[str] | None  # None: every target
    supports_args: Callable[..., bool] | None
    launches: bool

    def available_on(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    def supports(self, *args) -> bool:
        return self.supports_args is None or bool(self.supports_args(*args))

    def __call__(self, *args):
        if not self.launches:
            return self.fn(*args)
        from llmc.aot.launch import run_eager

        return run_eager(self, args)


@dataclass
class IrOp:
    name: str
    native: Callable
    fake: Callable
    mutates: tuple[str, ...]
    torch_op: object
    impls: dict[str, Impl] = field(default_factory=dict)

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.native)

    def register_impl(
        self,
        provider: str,
        *,
        targets: Iterable[str] | None = None,
        supports_args: Callable[..., bool] | None = None,
        launches: bool = False,
    ) -> Callable[[Callable], Callable]:
        def decorate(fn: Callable) -> Callable:
            _check_schema(self, provider, fn)
            if supports_args is not None:
                _check_schema(self, f"{provider}.supports_args", supports_args)
            if provider in self.impls:
                raise ValueError(f"op {self.name!r} already has an impl named {provider!r}")
            self.impls[provider] = Impl(
                self, provider, fn, None if targets is None else frozenset(targets), supports_args, launches
            )
            return fn

        return decorate

    def __call__(self, *args):
        return self.torch_op(*args)


def _param_shape(sig: inspect.Signature) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in sig.parameters.values()]


def _check_schema(op: IrOp, provider: str, fn: Callable) -> None:
    want, got = _param_shape(op.signature), _param_shape(inspect.signature(fn))
    if want != got:
        raise SchemaMismatch(
            f"impl {provider!r} of op {op.name!r} takes ({', '.join(n for n, _ in got)}); "
            f"the op takes ({', '.join(n for n, _ in want)})"
        )


def register_op(
    fn: Callable | None = None, *, mutates: tuple[str, ...] = (), fake: Callable | None = None
) -> Callable:
    """Register `fn` as op `llmc::<fn.__name__>`; `fake` computes output metadata for tracing.

    Without `fake`, the native function is run on meta tensors, which works for ops built from
    shape-polymorphic torch calls.
    """

    def decorate(fn: Callable) -> IrOp:
        name = fn.__name__
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        custom = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=mutates)(fn)
        if fake is not None:
            _check_schema_fn(name, fn, fake)
        fake_fn = fake or (_no_outputs if mutates else fn)
        custom.register_fake(fake_fn)
        op = IrOp(name, fn, fake_fn, tuple(mutates), getattr(getattr(torch.ops, NAMESPACE), name))
        op.impls["native"] = Impl(op, "native", fn, None, None, False)
        OPS[name] = op
        return op

    return decorate(fn) if fn is not None else decorate


def _no_outputs(*args) -> None:
    return None


def _check_schema_fn(name: str, fn: Callable, other: Callable) -> None:
    if _param_shape(inspect.signature(fn)) != _param_shape(inspect.signature(other)):
        raise SchemaMismatch(f"fake function of op {name!r} does not take the op's arguments")


def op_of(node_target: object) -> IrOp | None:
    """The IrOp a traced fx node calls, or None for anything else (getitem, output, ...)."""
    name = getattr(node_target, "_qualified_op_name", None) or str(node_target)
    if name.startswith(f"{NAMESPACE}::"):
        return OPS.get(name.split("::", 1)[1])
    if name.startswith(f"{NAMESPACE}."):
        return OPS.get(name.split(".", 1)[1].split(".")[0])
    return None
