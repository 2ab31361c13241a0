"""Linear, LM head and paged attention kernels on a real GPU, at Qwen3-0.6B and Llama-3.1-8B shapes.

Each impl runs eagerly (`impl(*args)`: Triton JIT-compiles and launches it on the current GPU)
and is compared with the op's native torch function on the same CUDA tensors. Run on its own:
`python -m pytest -q -m gpu tests/gpu/test_kernels_gpu.py` (tests/kernels sets TRITON_INTERPRET).
"""

import os

import pytest
import torch

pytestmark = pytest.mark.gpu

MODELS = {
    # hidden, q heads, kv heads, head_dim, intermediate, vocab
    "qwen3-0.6b": (1024, 16, 8, 128, 3072, 151936),
    "llama-3.1-8b": (4096, 32, 8, 128, 14336, 128256),
}
BF16 = dict(atol=2e-2, rtol=2e-2)  # one or two bf16 ulps of the rounded output, plus summation order


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 is set (tests/kernels sets it): run tests/gpu on its own")
    import llmc.kernels  # noqa: F401  (registers every impl)


def ops():
    from llmc.aot.ir import OPS

    return OPS


def run(impl, *args):
    """The impl's launches, eagerly (Triton JIT), into outputs poisoned with NaN."""
    from llmc.kernels.launch import run_eager

    return run_eager(impl, args, out_fill=float("nan"))


def available(impl):
    major, minor = torch.cuda.get_device_capability()
    return impl.available_on(f"sm{major}{minor}")


def linear_shapes(model):
    hidden, hq, hk, hd, inter, _ = MODELS[model]
    return {
        "qkv_proj": ((hq + 2 * hk) * hd, hidden),
        "o_proj": (hidden, hq * hd),
        "gate_up_proj": (2 * inter, hidden),
        "down_proj": (hidden, inter),
    }


def randn(*shape, dtype=torch.bfloat16, scale=1.0):
    return (torch.randn(shape, device="cuda") * scale).to(dtype)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("layer", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
@pytest.mark.parametrize("m", [1, 5, 16, 64, 200, 512])
@pytest.mark.parametrize("provider", ["triton_gemv", "triton_wgmma", "triton_gemm"])
def test_linear(model, layer, m, provider):
    n, k = linear_shapes(model)[layer]
    torch.manual_seed(0)
    x, weight, bias = randn(m, k), randn(n, k, scale=k**-0.5), randn(n) if layer == "qkv_proj" else None
    impl = ops()["linear"].impls[provider]
    if not impl.supports(x, weight, bias) or not available(impl):
        pytest.skip(f"{provider} does not take M={m} here")
    torch.testing.assert_close(run(impl, x, weight, bias), ops()["linear"].native(x, weight, bias), **BF16)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("layer", ["qkv_proj", "gate_up_proj"])
@pytest.mark.parametrize("m", [1, 8, 512])
@pytest.mark.parametrize("provider", ["triton_gemv", "triton_wgmma", "triton_gemm"])
def test_norm_linear(model, layer, m, provider):
    n, k = linear_shapes(model)[layer]
    torch.manual_seed(0)
    x, residual, norm_w = randn(m, k), randn(m, k), randn(k, scale=0.2) + 1
    weight = randn(n, k, scale=k**-0.5)
    op = ops()["norm_linear"]
    args = (x, residual, norm_w, 1e-6, weight, None)
    impl = op.impls[provider]
    if not impl.supports(*args) or not available(impl):
        pytest.skip(f"{provider} does not take M={m} here")
    out, summed = run(impl, *args)
    want, want_summed = op.native(*args)
    assert torch.equal(summed, want_summed)
    # rounding differs from native by one bf16 rounding of the normalised row (kernels/linear.py)
    torch.testing.assert_close(out, want, atol=4e-2, rtol=4e-2)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("m", [1, 8, 512])
@pytest.mark.parametrize("provider", ["triton_gemv", "triton_wgmma", "triton_gemm"])
def test_silu_mul_linear(model, m, provider):
    n, k = linear_shapes(model)["down_proj"]
    torch.manual_seed(0)
    x, weight = randn(m, 2 * k), randn(n, k, scale=k**-0.5)
    op = ops()["silu_mul_linear"]
    impl = op.impls[provider]
    if not impl.supports(x, weight, None) or not available(impl):
        pytest.skip(f"{provider} does not take M={m} here")
    torch.testing.assert_close(run(impl, x, weight, None), op.native(x, weight, None), **BF16)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("rows", [1, 8, 64])
@pytest.mark.parametrize("provider", ["triton_gemv", "triton_wgmma", "triton_gemm"])
def test_lm_head(model, rows, provider):
    hidden, *_, vocab = MODELS[model]
    torch.manual_seed(0)
    x, weight = randn(rows + 7, hidden), randn(vocab, hidden, scale=hidden**-0.5)
    indices = torch.randint(0, rows + 7, (rows,), device="cuda", dtype=torch.int32)
    impl = ops()["lm_head"].impls[provider]
    if not impl.supports(x, weight, indices) or not available(impl):
        pytest.skip(f"{provider} does not take {rows} rows here")
    torch.testing.assert_close(run(impl, x, weight, indices), ops()["lm_head"].native(x, weight, indices), **BF16)


def paged_inputs(model, q_lens, seq_lens, block_size=16, sliding_window=0, pad_rows=0):
    _, hq, hk, hd, _, _ = MODELS[model]
    blocks = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks) + 5
    order = torch.randperm(num_blocks, device="cuda").to(torch.int32)
    block_tables = torch.zeros(len(seq_lens), max(blocks) + 2, dtype=torch.int32, device="cuda")
    used = 0
    for b, count in enumerate(blocks):
        block_tables[b, :count] = order[used : used + count]
        used += count
    starts = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32).cuda()
    tokens = int(starts[-1]) + pad_rows
    k_cache = randn(num_blocks, block_size, hk, hd)
    v_cache = randn(num_blocks, block_size, hk, hd)
    seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    q = randn(tokens, hq * hd)
    return (q, k_cache, v_cache, block_tables, seq_lens_t, starts, max(q_lens), hd**-0.5, sliding_window)


ATTENTION_CASES = {
    # name: (q_lens, seq_lens, sliding_window, pad_rows)
    "decode_b1": ([1], [1000], 0, 0),
    "decode_b8": ([1] * 8, [1, 15, 16, 17, 300, 1024, 2000, 4096], 0, 0),
    "decode_b8_padded": ([1] * 5 + [0] * 3, [33, 700, 16, 5, 1200, 0, 0, 0], 0, 3),
    "decode_window": ([1] * 4, [100, 1000, 4096, 5], 512, 0),
    "prefill_one": ([512], [512], 0, 0),
    "prefill_chunked": ([300, 17, 1, 128], [300, 1041, 2049, 256], 0, 9),
    "prefill_window": ([700, 64], [700, 900], 256, 0),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
@pytest.mark.parametrize("provider", ["triton_decode", "triton_prefill"])
def test_paged_attention(model, case, provider):
    q_lens, seq_lens, window, pad_rows = ATTENTION_CASES[case]
    torch.manual_seed(0)
    args = paged_inputs(model, q_lens, seq_lens, sliding_window=window, pad_rows=pad_rows)
    impl = ops()["paged_attention"].impls[provider]
    if not impl.supports(*args):
        pytest.skip(f"{provider} does not take max_query_len={args[6]}")
    # the native function builds its masks on the CPU: run it there
    expected = ops()["paged_attention"].native(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])
    torch.testing.assert_close(run(impl, *args).cpu(), expected, **BF16)
