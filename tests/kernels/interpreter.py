"""Triton's interpreter for one block of code, in a process whose kernels are compiled ones.

`@triton.jit` decides at decoration whether a kernel is compiled or interpreted
(TRITON_INTERPRET), so setting that variable for a test process would turn every kernel of the
process into an interpreted one, the GPU tests' too. Instead, inside `interpreter()` every
JITFunction launched or called (the kernel, its helpers, `tl.sum` and friends) runs through an
InterpretedFunction of the same Python function; outside it nothing changes.

Mistakes of the interpreter are corrected inside the block so that it computes what the
compiled kernel computes:
- it truncates float32 -> bfloat16, where the GPU (cvt.rn) and torch round to nearest even;
- it multiplies bfloat16 (stored as uint16) as integers in tl.dot;
- a scalar comparison (`slot >= 0`) keeps its operands' dtype in its handle, so broadcasting it
  into a block (`mask & (slot >= 0)`) yields integers instead of booleans;
- (Triton 3.6) a scalar used as an index (`range(lo, n)`) goes through int() of a one-element
  array, which numpy 2.5 refuses.
And one leak is stopped: a jit helper called from a kernel patches triton.language for its call
and never restores it, which would break the compilation of later, real kernels.
"""

import contextlib
import types

import numpy as np
import torch
import triton.language as tl
from triton.runtime import interpreter as ti
from triton.runtime.jit import JITFunction

_INTERPRETED: dict = {}  # python function -> the InterpretedFunction of a copy of it


def interpreted(kernel) -> ti.InterpretedFunction:
    """An InterpretedFunction of `kernel`'s function, whose rewrite lands in a copy of its globals."""
    if isinstance(kernel, ti.InterpretedFunction):
        return kernel
    fn = kernel.fn
    if fn not in _INTERPRETED:
        clone = types.FunctionType(fn.__code__, dict(fn.__globals__), fn.__name__, fn.__defaults__, fn.__closure__)
        for attr in ("__kwdefaults__", "__annotations__", "__qualname__", "__module__", "__doc__"):
            setattr(clone, attr, getattr(fn, attr))
        _INTERPRETED[fn] = ti.InterpretedFunction(clone)
    return _INTERPRETED[fn]


def _rounding_cast(cast_impl):
    def cast(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            data = np.ascontiguousarray(src.data, dtype=np.float32)
            rounded = torch.from_numpy(data.reshape(-1)).to(torch.bfloat16).view(torch.int16).numpy()
            return ti.TensorHandle(rounded.view(np.uint16).reshape(data.shape), dst_type.scalar)
        return cast_impl(self, src, dst_type)

    return cast


def _boolean_splat(create_splat):
    def splat(self, ret_ty, arg):
        if ret_ty.scalar == tl.int1 and not isinstance(arg.dtype, tl.block_type):
            return ti.TensorHandle(np.full(ret_ty.shape, arg.data, dtype=ti._get_np_dtype(tl.int1)), tl.int1)
        return create_splat(self, ret_ty, arg)

    return splat


def _widening_dot(create_dot):
    def widen(t):
        if t.dtype.scalar != tl.bfloat16:
            return t
        return ti.TensorHandle(ti._convert_float(t.data, tl.bfloat16, tl.float32, None).view(np.float32), tl.float32)

    def dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    return dot


def _scalar_index(patch_lang_tensor):
    def patch(tensor, scope):
        patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    return patch


def _restoring(patch_lang, device_call):
    """`_patch_lang` that records its scopes, and a device-function call that restores the ones it made."""
    scopes = []

    def patch(fn):
        scopes.append(patch_lang(fn))
        return scopes[-1]

    def call(self, *args, **kwargs):
        mark = len(scopes)
        try:
            return device_call(self, *args, **kwargs)
        finally:
            while len(scopes) > mark:
                scopes.pop().restore()

    return patch, call


@contextlib.contextmanager
def interpreter():
    """Run every Triton kernel launched inside the block through the (corrected) interpreter."""
    builder = ti.InterpreterBuilder
    patch_lang, device_call = _restoring(ti._patch_lang, ti.InterpretedFunction.__call__)
    patched = [
        (JITFunction, "run", lambda self, *args, **kwargs: interpreted(self).run(*args, **kwargs)),
        (JITFunction, "__call__", lambda self, *args, **kwargs: interpreted(self)(*args, **kwargs)),
        (builder, "cast_impl", _rounding_cast(builder.cast_impl)),
        (builder, "create_splat", _boolean_splat(builder.create_splat)),
        (builder, "create_dot", _widening_dot(builder.create_dot)),
        (ti, "_patch_lang_tensor", _scalar_index(ti._patch_lang_tensor)),
        (ti, "_patch_lang", patch_lang),
        (ti.InterpretedFunction, "__call__", device_call),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patched]
    for owner, name, value in patched:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
