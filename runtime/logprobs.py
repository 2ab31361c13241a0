"""Log probabilities as requests get them: one `TokenLogprob` per generated (or prompt) token.

The step computes them on the device (the plan's `logprobs` op): per logits row the target
token's logprob and the top MAX_LOGPROBS tokens; here a row becomes an entry.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TokenLogprob(NamedTuple):
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the likeliest tokens and their logprobs, likeliest first


def row_entry(arrays: tuple[np.ndarray, np.ndarray, np.ndarray], row: int, token_id: int, num_top: int) -> TokenLogprob:
    """Row `row` of a step's (token_logprobs [R], top_token_ids [R, K], top_logprobs [R, K])."""
    token_logprobs, top_ids, top_logprobs = arrays
    top = tuple(zip(top_ids[row, :num_top].tolist(), top_logprobs[row, :num_top].tolist()))
    return TokenLogprob(int(token_id), float(token_logprobs[row]), top)


def prompt_logprobs(seq) -> list[TokenLogprob | None] | None:
    """A request's prompt logprobs as reported: None for the first prompt token (nothing predicts it)."""
    if seq.params.prompt_logprobs is None or seq.index:
        return None
    return [None, *seq.prompt_logprobs]
