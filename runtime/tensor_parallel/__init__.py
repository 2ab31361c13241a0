"""Tensor-parallel bundles at run time: one process per rank, rank 0 schedules (ranks.py)."""

from .launcher import RankFailed
from .layout import tensor_parallel_size, weight_files
from .ranks import TensorParallelBackend, open_ranks

__all__ = ["RankFailed", "TensorParallelBackend", "open_ranks", "tensor_parallel_size", "weight_files"]
