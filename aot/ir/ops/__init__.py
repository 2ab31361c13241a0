"""The IR's ops. Importing this package registers every op (and its native impl)."""

from . import (activation, attention, attention_split, cache, collective, fp8, fused, linear, logit_edits, logprobs, moe, norm,  # noqa: F401
               rotary, sampling, tensor, vocab_parallel)
from ..op import OPS

__all__ = ["OPS"]
