"""The targets that Triton kernels compile for: every target whose backend compiles kernels."""

from llmc.aot.target import TARGETS

GPU_TARGETS: tuple[str, ...] = tuple(name for name, target in TARGETS.items() if target.compiles_kernels)
