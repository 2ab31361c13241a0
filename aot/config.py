"""BuildConfig: every option that affects a bundle, validated once and recorded in the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmc.errors import UserError

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class BuildConfig:
    target: str = "cpu"
    dtype: str | None = None  # None: the checkpoint's dtype
    max_batch_size: int = 8
    max_seq_len: int = 2048
    kv_block_size: int = 16
    max_num_batched_tokens: int = 512
    op_priority: dict = field(default_factory=dict)  # op -> tuple of providers
    selftest_prompt: str = "Beautiful is better than"

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise UserError(f"--dtype {self.dtype!r} is not supported; choose one of {', '.join(DTYPE_CHOICES)}")
        for name in ("max_batch_size", "max_seq_len", "kv_block_size", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.kv_block_size & (self.kv_block_size - 1):
            raise UserError(f"--kv-block-size must be a power of two, got {self.kv_block_size}")
        if self.max_num_batched_tokens < self.max_batch_size:
            raise UserError("--max-num-batched-tokens must be at least --max-batch-size")

    def manifest_fields(self, dtype: str, max_seq_len: int) -> dict:
        return {
            "dtype": dtype, "max_batch_size": self.max_batch_size, "max_seq_len": max_seq_len,
            "kv_block_size": self.kv_block_size, "max_num_batched_tokens": self.max_num_batched_tokens,
            "op_priority": {op: list(p) for op, p in sorted(self.op_priority.items())},
        }
