"""BuildConfig: every option that affects a bundle, validated once and recorded in the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmc.artifacts.validate import LIMITS
from llmc.errors import UserError

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class BuildConfig:
    target: str = "cpu"
    dtype: str | None = None  # None: the checkpoint's dtype
    max_batch_size: int = 256
    max_seq_len: int = 2048
    kv_block_size: int = 16
    max_num_batched_tokens: int = 8192
    op_priority: dict = field(default_factory=dict)  # op -> tuple of providers
    selftest_prompt: str = "Beautiful is better than"
    quantize: str | None = None  # "fp8": quantize a 16-bit checkpoint's linears at build (aot/quantize.py)
    tensor_parallel_size: int = 1  # ranks the weights split across (aot/tensor_parallel.py)

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise UserError(f"--dtype {self.dtype!r} is not supported; choose one of {', '.join(DTYPE_CHOICES)}")
        for name in ("max_batch_size", "max_seq_len", "kv_block_size", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
            if value > LIMITS[f"build.{name}"]:  # what a bundle may declare (the rope table, plans and KV grow with it)
                raise UserError(f"--{name.replace('_', '-')} {value} is over the limit of {LIMITS[f'build.{name}']}")
        if self.max_seq_len < 2:  # the runtime needs room for one prompt token and one generated token
            raise UserError(f"--max-seq-len must be at least 2 (one prompt token and one generated), got {self.max_seq_len}")
        if self.kv_block_size & (self.kv_block_size - 1):
            raise UserError(f"--kv-block-size must be a power of two, got {self.kv_block_size}")
        if self.quantize not in (None, "fp8"):
            raise UserError(f"--quantize {self.quantize!r} is not supported; choose fp8")
        if not isinstance(self.tensor_parallel_size, int) or not 1 <= self.tensor_parallel_size <= 64:
            raise UserError(f"--tensor-parallel-size must be an integer from 1 to 64, got {self.tensor_parallel_size!r}")
        if self.max_num_batched_tokens < self.max_batch_size:
            raise UserError("--max-num-batched-tokens must be at least --max-batch-size")

    def manifest_fields(self, dtype: str, max_seq_len: int) -> dict:
        return {
            "dtype": dtype, "max_batch_size": self.max_batch_size, "max_seq_len": max_seq_len,
            "kv_block_size": self.kv_block_size, "max_num_batched_tokens": self.max_num_batched_tokens,
            "op_priority": {op: list(p) for op, p in sorted(self.op_priority.items())},
            **({"quantize": self.quantize} if self.quantize else {}),
            **({"tensor_parallel_size": self.tensor_parallel_size} if self.tensor_parallel_size > 1 else {}),
        }
