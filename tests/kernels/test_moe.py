"""moe_route and fused_moe: every kernel impl against the native functions, including experts that
receive no token and one expert that receives every token."""

import pytest
import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16]


def _route_args(dtype, tokens, experts, top_k, renormalize):
    logits = torch.randn(tokens, experts, generator=torch.Generator().manual_seed(tokens * experts + top_k)) * 3
    return logits.to(dtype), top_k, renormalize


@parametrize("moe_route", _route_args, dtype=DTYPES, tokens=[1, 5, 19], experts=[8, 60], top_k=[1, 2, 4],
             renormalize=[False, True])
def test_moe_route(provider, dtype, tokens, experts, top_k, renormalize):
    args = _route_args(dtype, tokens, experts, top_k, renormalize)
    weights, ids = run("moe_route", provider, *args)
    want_weights, want_ids = OPS["moe_route"].native(*args)
    logits = args[0].float()  # bfloat16 logits tie often: a tied expert may stand in for another
    chosen, want = logits.gather(1, ids.long()), logits.gather(1, want_ids.long())
    assert torch.equal(chosen, want), f"moe_route {provider}: chosen experts differ"
    assert all(len(set(row)) == len(row) for row in ids.tolist()), f"moe_route {provider}: an expert chosen twice"
    assert_close(weights, want_weights, torch.float32, f"moe_route {provider} weights")


def _routing(tokens, experts, top_k, pattern, seed):
    g = torch.Generator().manual_seed(seed)
    if pattern == "one_expert_gets_all":  # expert 3 is every token's first choice
        rest = torch.stack([torch.randperm(experts - 1, generator=g)[: top_k - 1] for _ in range(tokens)])
        ids = torch.cat([torch.full((tokens, 1), 3), rest + (rest >= 3).long()], dim=1)
    elif pattern == "few_experts":  # experts 0 .. top_k only: the others receive no token
        ids = torch.stack([torch.randperm(top_k + 1, generator=g)[:top_k] for _ in range(tokens)])
    else:
        ids = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
    weights = torch.rand(tokens, top_k, generator=g)
    return weights, ids.to(torch.int32)


def _moe_args(dtype, tokens, shape, pattern):
    experts, top_k, hidden, inter = shape
    g = torch.Generator().manual_seed(tokens * hidden + inter)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / hidden**0.5).to(dtype)
    w2 = (torch.randn(experts, hidden, inter, generator=g) / inter**0.5).to(dtype)
    weights, ids = _routing(tokens, experts, top_k, pattern, tokens + experts)
    return x, w13, w2, weights, ids


SHAPES = [(8, 2, 72, 40), (5, 1, 48, 24), (6, 3, 40, 88)]  # experts, top_k, hidden, expert width


@parametrize("fused_moe", _moe_args, dtype=DTYPES, tokens=[1, 3, 37], shape=SHAPES,
             pattern=["random", "one_expert_gets_all", "few_experts"])
def test_fused_moe(provider, dtype, tokens, shape, pattern):
    args = _moe_args(dtype, tokens, shape, pattern)
    out = run("fused_moe", provider, *args)
    want = OPS["fused_moe"].native(*args)
    if dtype == torch.float32:
        assert_close(out, want, dtype, f"fused_moe {provider} {shape} {pattern}")
    else:  # products rounded to bfloat16 twice on the way: allow a few of its ulps on the sum's scale
        err = (out.float() - want.float()).abs().max().item()
        assert err <= 0.03 * want.float().abs().max().item(), f"fused_moe {provider} {shape} {pattern}: max error {err:.3g}"


@pytest.mark.parametrize("tokens", [2, 21])
def test_grouped_path_blocks_cover_every_row(tokens):
    # a small BLOCK_K makes the K loop run several partial steps
    args = _moe_args(torch.float32, tokens, (8, 2, 72, 40), "random")
    out = run("fused_moe", "triton_grouped", *args, BLOCK_K=16)
    assert_close(out, OPS["fused_moe"].native(*args), torch.float32, "fused_moe grouped BLOCK_K=16")
