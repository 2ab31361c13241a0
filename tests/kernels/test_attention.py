"""`paged_attention`: every kernel impl against the native function, through Triton's interpreter."""

import dataclasses
from typing import NamedTuple

import pytest
import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS
from llmc.aot.launch_context import DEFAULT_CONTEXT, launch_context

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Case(NamedTuple):
    q_lens: tuple[int, ...]  # new tokens per sequence
    seq_lens: tuple[int, ...]  # tokens in the cache per sequence, the new ones last
    q_heads: int
    kv_heads: int
    head_dim: int
    block_size: int
    sliding_window: int
    pad_rows: int  # rows of q past the last sequence
    pad_seqs: int  # sequences with no tokens (seq_len 0, query_start_loc repeated)
    block_n: int | None = None  # override of the kernel's keys per step (more steps, more edges)


CASES = {
    "decode_mha": Case((1, 1, 1), (5, 16, 33), 2, 2, 16, 4, 0, 2, 1),
    "decode_gqa_window": Case((1, 1, 1, 1), (1, 9, 40, 23), 4, 2, 32, 8, 7, 1, 0, block_n=16),
    "decode_mqa": Case((1, 1), (17, 70), 4, 1, 16, 16, 0, 0, 2),
    "decode_mqa_empty": Case((1, 0, 1), (3, 0, 12), 4, 1, 16, 4, 0, 3, 0),
    "decode_gqa_long": Case((1, 1), (600, 37), 4, 2, 16, 16, 0, 1, 0),  # long enough for split-KV
    "prefill_gqa_chunked": Case((3, 17, 1), (5, 17, 40), 4, 2, 32, 8, 0, 2, 1),
    "prefill_mqa_window": Case((9, 20), (30, 20), 4, 1, 16, 4, 6, 1, 0, block_n=16),
    "prefill_mha_long": Case((20, 70), (20, 90), 2, 2, 16, 16, 0, 3, 0),
    "prefill_many_short": Case((2, 1, 3, 1, 2), (2, 9, 3, 33, 17), 2, 1, 16, 8, 0, 1, 1),
}


def make_case(name: str, dtype: torch.dtype):
    return paged_args(CASES[name], dtype)


def paged_args(case: Case, dtype: torch.dtype) -> tuple:
    """paged_attention's arguments for `case`: blocks scattered over the pool, random q and caches."""
    gen = torch.Generator().manual_seed(sum(case.seq_lens) + case.head_dim)
    bs = case.block_size
    blocks_per_seq = [(n + bs - 1) // bs for n in case.seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks, generator=gen).to(torch.int32)  # blocks scattered over the pool
    num_seqs = len(case.seq_lens) + case.pad_seqs
    block_tables = torch.zeros(num_seqs, max(blocks_per_seq) + 1, dtype=torch.int32)
    used = 0
    for b, count in enumerate(blocks_per_seq):
        block_tables[b, :count] = order[used : used + count]
        used += count
    starts = [0]
    for n in case.q_lens:
        starts.append(starts[-1] + n)
    query_start_loc = torch.tensor(starts + [starts[-1]] * case.pad_seqs, dtype=torch.int32)
    seq_lens = torch.tensor(list(case.seq_lens) + [0] * case.pad_seqs, dtype=torch.int32)
    tokens = starts[-1] + case.pad_rows
    q = torch.randn(tokens, case.q_heads * case.head_dim, generator=gen).to(dtype)
    cache_shape = (num_blocks, bs, case.kv_heads, case.head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(dtype)
    v_cache = torch.randn(cache_shape, generator=gen).to(dtype)
    scale = case.head_dim**-0.5
    return (q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max(case.q_lens), scale, case.sliding_window)


@parametrize("paged_attention", lambda name, dtype: make_case(name, dtype), name=list(CASES), dtype=DTYPES)
def test_paged_attention(provider, name, dtype):
    args = make_case(name, dtype)
    block_n = CASES[name].block_n
    override = {} if block_n is None else {"BLOCK_N": block_n}
    expected = OPS["paged_attention"].native(*args)
    assert_close(run("paged_attention", provider, *args, **override), expected, dtype, f"{provider} {name}")


@pytest.mark.parametrize("sms", [1, 6])
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("name", ["decode_gqa_window", "decode_mqa", "decode_mqa_empty"])
def test_decode_packed_heads(sms, dtype, name):
    # small grids split GQA groups over programs (the cases above); with more multiprocessors
    # busy a program takes a whole group (sms=1) or part of one (sms=6 for 4 rows, 4 q heads)
    args = make_case(name, dtype)
    block_n = CASES[name].block_n
    override = {} if block_n is None else {"BLOCK_N": block_n}
    expected = OPS["paged_attention"].native(*args)
    with launch_context(dataclasses.replace(DEFAULT_CONTEXT, num_sms=sms)):
        (launch,) = OPS["paged_attention"].impls["triton_decode"].fn(*args)
        heads = launch.constexprs["HEADS"]
        assert heads > 1
        got = run("paged_attention", "triton_decode", *args, **override)
    assert_close(got, expected, dtype, f"triton_decode {name}, {heads} heads a program")
