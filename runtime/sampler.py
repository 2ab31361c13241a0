"""The host half of sampling: each logits row's parameters and uniform draw.

Sampling itself runs on the device, at the end of every plan (`next_tokens`), so the host only
writes, per row, the request's temperature, top-k, top-p and the uniform number that picks its
token. A request whose values the plan's int32/float32 inputs cannot hold is reported here, by
row, so the step can fail that request alone.
"""

from __future__ import annotations

import numpy as np

from .sampling_params import uniform_draw

INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RowError(ValueError):
    """Some requests' sampling values do not fit the plan's inputs; `seqs` are the culprits."""

    def __init__(self, seqs, message: str):
        super().__init__(message)
        self.seqs = seqs


class Sampler:
    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def rows(self, seqs, indices) -> tuple[list[float], list[int], list[float], list[float]]:
        """(temperature, top_k, top_p, uniform) per sampling sequence; `indices[i]` is the index of
        the output token seqs[i] samples (its draw). Greedy rows draw nothing."""
        temperature, top_k, top_p, uniform = [], [], [], []
        bad = []
        vocab = self.vocab_size
        for seq, index in zip(seqs, indices):
            p = seq.params
            t = p.temperature
            if not 0 <= t <= FLOAT32_MAX:
                bad.append(seq)
            temperature.append(t)
            top_k.append(p.top_k if p.top_k < vocab else 0)  # k >= vocab keeps every token: off
            top_p.append(p.top_p)
            uniform.append(uniform_draw(seq.seed, index) if t > 0 else 0.0)
        if bad:
            raise RowError(bad, f"temperature of request {bad[0].request_id!r} does not fit a float32")
        return temperature, top_k, top_p, uniform
