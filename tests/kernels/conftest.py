"""Kernel tests run through Triton's interpreter on the CPU unless told otherwise.

The variable must be set before `llmc.kernels` is imported: `@triton.jit` reads it when it
decorates, so this conftest (loaded before the test modules of this folder) sets it.

Two mistakes of the interpreter (Triton 3.9) are corrected here so that it computes what the
compiled kernel computes:
- it truncates float32 -> bfloat16, where the GPU (cvt.rn) and torch round to nearest even;
- a scalar comparison (`slot >= 0`) keeps its operands' dtype in its handle, so broadcasting it
  into a block (`mask & (slot >= 0)`) yields integers instead of booleans.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")


def _fix_interpreter() -> None:
    try:
        import numpy as np
        import torch
        import triton.language as tl
        from triton.runtime.interpreter import InterpreterBuilder, TensorHandle, _get_np_dtype
    except ImportError:
        return
    truncating_cast, splat = InterpreterBuilder.cast_impl, InterpreterBuilder.create_splat

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            data = np.ascontiguousarray(src.data, dtype=np.float32)
            rounded = torch.from_numpy(data.reshape(-1)).to(torch.bfloat16).view(torch.int16).numpy()
            return TensorHandle(rounded.view(np.uint16).reshape(data.shape), dst_type.scalar)
        return truncating_cast(self, src, dst_type)

    def create_splat(self, ret_ty, arg):
        if ret_ty.scalar == tl.int1 and not isinstance(arg.dtype, tl.block_type):
            return TensorHandle(np.full(ret_ty.shape, arg.data, dtype=_get_np_dtype(tl.int1)), tl.int1)
        return splat(self, ret_ty, arg)

    InterpreterBuilder.cast_impl = cast_impl
    InterpreterBuilder.create_splat = create_splat


if os.environ["TRITON_INTERPRET"] == "1":
    _fix_interpreter()
