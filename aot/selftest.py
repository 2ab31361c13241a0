"""The bundle's self-test: one prefill of a short prompt through the build's own reference (the ops'
native functions), its top tokens and logits stored for `llmc verify --run`.

The figures must not depend on the build machine: torch runs on one thread here (its worker threads
have been seen to compute `cos` differently), and logits keep five significant digits.
"""

from __future__ import annotations

import contextlib

import torch

SELFTEST_TOP = 5
# a prompt the tokenizer maps to fewer distinct ids (all unknown words, say: often the padding row, all
# zeros) gives tied logits, which test nothing
MIN_DISTINCT = 4


def selftest(fused) -> dict:
    from .reference import prefill_logits

    i = fused.ingested
    ids = selftest_ids(i.tokenizer, i.spec, i.config.selftest_prompt)[: i.max_seq_len]  # positions the rope table holds
    with one_thread():
        logits = prefill_logits(fused.graph, fused.weights, i.kv_layout, i.spec.num_layers, ids).float()
    top = torch.topk(logits, min(SELFTEST_TOP, logits.shape[-1]), dim=-1)
    return {
        "prompt_token_ids": ids,
        "top_token_ids": top.indices.tolist(),
        "top_logits": [[float(f"{v:.5g}") for v in row] for row in top.values.tolist()],
        "dtype": i.dtype,
    }


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def selftest_ids(tokenizer: dict, spec, prompt: str) -> list[int]:
    if "tokenizer.json" in tokenizer:
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(tokenizer["tokenizer.json"])).encode(prompt).ids[:16]
        if len(set(ids)) >= MIN_DISTINCT and all(0 <= i < spec.vocab_size for i in ids):
            return ids
    return [(7 * i + 1) % spec.vocab_size for i in range(8)]
