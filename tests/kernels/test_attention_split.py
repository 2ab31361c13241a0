"""`split_kv_paged_attention`: the split-KV kernels against the native function, through Triton's
interpreter, at contexts up to 32k; and the launch rule's choice of splits."""

import dataclasses
from typing import NamedTuple

import pytest
import torch
from harness import parametrize, run
from tolerances import assert_close

from test_attention import Case as AttentionCase
from test_attention import paged_args

from llmc.aot.ir import OPS
from llmc.aot.launch_context import DEFAULT_CONTEXT, launch_context
from llmc.kernels.attention_split import num_splits


class Case(NamedTuple):
    seq_lens: tuple[int, ...]  # tokens in the cache per sequence (0 with no new token: an empty sequence)
    q_heads: int
    kv_heads: int
    head_dim: int
    block_size: int
    sliding_window: int
    pad_rows: int  # rows of q past the last sequence
    pad_seqs: int  # sequences with no tokens
    num_sms: int  # the launch context's multiprocessors (few: no split)
    max_splits: int = 8


CASES = {
    "split_gqa": Case((5, 300, 1000), 4, 2, 16, 16, 0, 2, 1, 132),
    "split_window_empty": Case((3000, 0, 40), 2, 1, 32, 8, 500, 1, 0, 132),
    "split_32k": Case((32768, 700), 2, 1, 16, 64, 0, 0, 1, 132, 16),
    "one_split": Case((600, 33), 4, 1, 16, 16, 0, 1, 0, 1),
}


def make_case(name: str, dtype: torch.dtype):
    """paged_attention's arguments (one new token per non-empty sequence), then max_splits."""
    case = CASES[name]
    decode = AttentionCase(tuple(int(n > 0) for n in case.seq_lens), case.seq_lens, case.q_heads, case.kv_heads,
                           case.head_dim, case.block_size, case.sliding_window, case.pad_rows, case.pad_seqs)
    return (*paged_args(decode, dtype), case.max_splits)


@parametrize("split_kv_paged_attention", make_case, name=list(CASES), dtype=(torch.float32, torch.bfloat16))
def test_split_kv_attention(provider, name, dtype):
    args = make_case(name, dtype)
    expected, _ = OPS["split_kv_paged_attention"].native(*args)
    with launch_context(dataclasses.replace(DEFAULT_CONTEXT, num_sms=CASES[name].num_sms)):
        launches = OPS["split_kv_paged_attention"].impls[provider].fn(*args)
        got, _ = run("split_kv_paged_attention", provider, *args, BLOCK_N=256 if name == "split_32k" else 64)
    splits = launches[0].grid3[2]
    assert (splits > 1) == (name != "one_split") and len(launches) == 1 + (splits > 1)
    assert_close(got, expected, dtype, f"{provider} {name}, {splits} splits")


def test_the_native_function_is_paged_attention():
    args = make_case("split_gqa", torch.float32)
    out, workspace = OPS["split_kv_paged_attention"].native(*args)
    assert torch.equal(out, OPS["paged_attention"].native(*args[:-1]))
    assert workspace.shape == (args[0].shape[0], 4, 8, 18) and workspace.dtype == torch.float32


@pytest.mark.parametrize("rows, context, sms, want", [
    (1, 32768, 132, 16),  # one sequence, long context: as many splits as allowed
    (256, 32768, 132, 1),  # a full batch fills the GPU alone
    (4, 600, 132, 4),  # short context: at least 128 keys a split
    (64, 4096, 8, 1),  # few multiprocessors, already busy
])
def test_the_launch_rule_splits_small_batches_with_long_contexts(rows, context, sms, want):
    assert num_splits(rows, 1, context, 16, sms) == want
