"""The bundle's self-test: score the reference prompt stored at build time and compare."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype -> (least share of positions whose top token must agree, largest relative logit error)
TOLERANCES = {"float32": (1.0, 1e-3), "bfloat16": (0.9, 5e-2), "float16": (0.9, 2e-2)}
TIE = 1e-6  # logits this close (relative) to the top are tied with it


@dataclass(frozen=True)
class SelftestResult:
    positions: int
    top1_agreement: float
    max_relative_error: float
    passed: bool

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"selftest {verdict}: top-1 agrees at {self.top1_agreement:.0%} of {self.positions} positions, "
                f"largest relative logit error {self.max_relative_error:.2e}")


def run_selftest(engine, reference: dict) -> SelftestResult:
    logits = engine.score(reference["prompt_token_ids"])
    want_ids = np.asarray(reference["top_token_ids"])
    want_logits = np.asarray(reference["top_logits"], dtype=np.float64)
    best = logits.max(-1)
    at_want = np.take_along_axis(logits, want_ids[:, :1], axis=-1)[:, 0]
    # a position agrees when the reference's top token is (one of) the top here: ties are not disagreement
    agreement = float(np.mean(at_want >= best - TIE * np.maximum(np.abs(best), 1.0)))
    got = np.take_along_axis(logits.astype(np.float64), want_ids, axis=-1)
    error = float(np.abs(got - want_logits).max() / max(np.abs(want_logits).max(), 1e-6))
    least, most = TOLERANCES.get(reference.get("dtype", "float32"), TOLERANCES["bfloat16"])
    return SelftestResult(len(want_ids), agreement, error, agreement >= least and error <= most)
