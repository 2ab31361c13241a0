"""Partial rotary (a cos/sin table narrower than a head, as in Phi-4-mini): every kernel impl against native."""

import torch
from harness import parametrize, run
from test_rotary import MAX_POSITIONS, _assert_fused_matches, _fused_args, _rope_args
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16]
HEADS = [(6, 2, 32, 24), (4, 1, 80, 16), (3, 3, 64, 48)]  # (q heads, kv heads, head_dim, rotary width)


def _table(rot):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    angles = torch.arange(MAX_POSITIONS).float()[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # [P, rot]


def _partial(args, rot, table_at):
    return (*args[:table_at], _table(rot), *args[table_at + 1:])


def _rope_partial(dtype, tokens, heads):
    return _partial(_rope_args(dtype, tokens, heads[:3]), heads[3], 3)


def _fused_partial(dtype, tokens, heads, norm):
    return _partial(_fused_args(dtype, tokens, heads[:3], norm), heads[3], 2)


@parametrize("rotary_embedding", _rope_partial, dtype=DTYPES, tokens=[1, 5], heads=HEADS)
def test_partial_rotary_embedding(provider, dtype, tokens, heads):
    args = _rope_partial(dtype, tokens, heads)
    for got, want, name in zip(run("rotary_embedding", provider, *args), OPS["rotary_embedding"].native(*args), "qk"):
        assert_close(got, want, dtype, f"rotary_embedding {provider} {name} rot={heads[3]}")


@parametrize("qkv_rope_cache", _fused_partial, dtype=DTYPES, tokens=[1, 5], heads=HEADS, norm=["qk_norm", "none"])
def test_partial_qkv_rope_cache(provider, dtype, tokens, heads, norm):
    make = lambda: _fused_partial(dtype, tokens, heads, norm)  # noqa: E731
    _assert_fused_matches(provider, make, dtype, f"qkv_rope_cache {provider} {norm} rot={heads[3]}")


def test_columns_past_the_table_pass_through():
    q, k, positions, table, head_dim = _rope_partial(torch.float32, 3, HEADS[0])
    q_out, _ = OPS["rotary_embedding"].native(q, k, positions, table, head_dim)
    heads = q.reshape(3, -1, head_dim)
    assert torch.equal(q_out.reshape(3, -1, head_dim)[..., 24:], heads[..., 24:])
