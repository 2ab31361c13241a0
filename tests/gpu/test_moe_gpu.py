"""The newer families' kernels on a real GPU at real shapes (Qwen3-30B-A3B, Mixtral-8x7B, Gemma-2-9B), against
the ops' native functions on the same CUDA tensors (decode time against the floor: benchmarks/decode_floors.py)."""

import pytest
import torch
from triton.runtime.jit import JITFunction

import llmc.kernels
from llmc.aot.ir import OPS
from llmc.kernels.launch import run_eager

pytestmark = pytest.mark.gpu

MOE = {  # experts, top-k, hidden, expert width
    "qwen3-30b-a3b": (128, 8, 2048, 768),
    "mixtral-8x7b-slice": (8, 2, 4096, 2048),  # a quarter of Mixtral's 14336 width, to keep memory small
}


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    if not isinstance(llmc.kernels.moe.moe_gemm_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 is set for this process: its kernels are interpreted, not compiled")


def _moe_args(model, tokens, seed=0):
    experts, top_k, hidden, inter = MOE[model]
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, hidden, device="cuda", generator=g).bfloat16()
    w13 = (torch.randn(experts, 2 * inter, hidden, device="cuda", generator=g) / hidden**0.5).bfloat16()
    w2 = (torch.randn(experts, hidden, inter, device="cuda", generator=g) / inter**0.5).bfloat16()
    logits = torch.randn(tokens, experts, device="cuda", generator=g)
    weights, ids = OPS["moe_route"].native(logits, top_k, True)
    return logits, (x, w13, w2, weights, ids)


@pytest.mark.parametrize("model", list(MOE))
@pytest.mark.parametrize("tokens", [1, 2, 64, 512])
def test_fused_moe(model, tokens):
    logits, args = _moe_args(model, tokens)
    weights, ids = run_eager(OPS["moe_route"].impls["triton"], (logits, MOE[model][1], True))
    assert torch.equal(ids, args[4]) and torch.allclose(weights, args[3], atol=1e-6)
    want = OPS["fused_moe"].native(*args).float()
    for provider, impl in OPS["fused_moe"].impls.items():
        if not impl.launches or not impl.supports(*args):
            continue
        got = run_eager(impl, args, out_fill=float("nan")).float()
        err = (got - want).abs().max().item()
        assert err <= 0.03 * want.abs().max().item(), f"{model} T={tokens} {provider}: max error {err:.3g}"


def test_softcap_attention_and_gelu_linear():
    g = torch.Generator(device="cuda").manual_seed(1)
    heads, kv_heads, hd, bs, n = 16, 8, 256, 16, 300  # Gemma-2-9B's attention
    q = torch.randn(n, heads * hd, device="cuda", generator=g).bfloat16()
    cache = [torch.randn(n // bs + 2, bs, kv_heads, hd, device="cuda", generator=g).bfloat16() for _ in range(2)]
    tables = torch.arange(n // bs + 2, device="cuda", dtype=torch.int32)[None]
    args = (q, *cache, tables, torch.tensor([n], device="cuda", dtype=torch.int32),
            torch.tensor([0, n], device="cuda", dtype=torch.int32), n, 256**-0.5, 100, 50.0)
    want = OPS["softcap_paged_attention"].native(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])
    got = run_eager(OPS["softcap_paged_attention"].impls["triton_prefill"], args, out_fill=float("nan"))
    torch.testing.assert_close(got.cpu(), want, atol=2e-2, rtol=2e-2)
    x = torch.randn(8, 2 * 3584, device="cuda", generator=g).bfloat16()
    w = (torch.randn(2304, 3584, device="cuda", generator=g) / 60).bfloat16()
    for provider in ("triton_gemv", "triton_gemm"):
        got = run_eager(OPS["gelu_tanh_mul_linear"].impls[provider], (x, w, None), out_fill=float("nan"))
        torch.testing.assert_close(got, OPS["gelu_tanh_mul_linear"].native(x, w, None), atol=4e-2, rtol=4e-2)
