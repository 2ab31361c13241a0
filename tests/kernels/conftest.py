"""Kernel tests run through Triton's interpreter on the CPU unless told otherwise.

The variable must be set before `llmc.kernels` is imported: `@triton.jit` reads it when it
decorates, so this conftest (loaded before the test modules of this folder) sets it.

Three mistakes of the interpreter (Triton 3.9) are corrected here so that it computes what the
compiled kernel computes:
- it truncates float32 -> bfloat16, where the GPU (cvt.rn) and torch round to nearest even;
- it multiplies bfloat16 (stored as uint16) as integers in tl.dot;
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


def _fix_bf16_dot() -> None:
    """Triton's interpreter multiplies bfloat16 (stored as uint16) as integers in tl.dot; widen first."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "llmc_bf16", False):
        return
    create_dot = builder.create_dot

    def widen(t):
        if t.dtype.scalar != tl.bfloat16:
            return t
        data = interpreter._convert_float(t.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return interpreter.TensorHandle(data, tl.float32)

    def fixed(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    fixed.llmc_bf16 = True
    builder.create_dot = fixed


if os.environ["TRITON_INTERPRET"] == "1":
    _fix_interpreter()
    _fix_bf16_dot()
