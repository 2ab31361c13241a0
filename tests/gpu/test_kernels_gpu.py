"""Linear, LM head and paged attention kernels on a real GPU, at Qwen3-0.6B and Llama-3.1-8B shapes.

Each impl is compiled by Triton's JIT and launched on the current GPU, and compared with the op's
native torch function on the same CUDA tensors. Cases are generated as tests/kernels does: only
the shapes an impl supports (asked on meta tensors at collection). This runs in the same process
as the interpreted kernel tests: those interpret inside a block, so kernels here are compiled.
"""

import pytest
import torch
from harness import parametrize
from triton.runtime.jit import JITFunction

import llmc.kernels
from llmc.aot.ir import OPS
from llmc.kernels.launch import run_eager

pytestmark = pytest.mark.gpu

MODELS = {
    # hidden, q heads, kv heads, head_dim, intermediate, vocab
    "qwen3-0.6b": (1024, 16, 8, 128, 3072, 151936),
    "llama-3.1-8b": (4096, 32, 8, 128, 14336, 128256),
}
BF16 = dict(atol=2e-2, rtol=2e-2)  # one or two bf16 ulps of the rounded output, plus summation order


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    if not isinstance(llmc.kernels.linear.matmul_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 is set for this process: its kernels are interpreted, not compiled")


def run(provider, op, args):
    """The impl's launches, compiled and launched on the GPU, into outputs poisoned with NaN."""
    impl = OPS[op].impls[provider]
    major, minor = torch.cuda.get_device_capability()
    if not impl.available_on(f"sm{major}{minor}"):
        pytest.skip(f"{op}/{provider} does not run on sm{major}{minor}")
    return run_eager(impl, args, out_fill=float("nan"))


def linear_shapes(model):
    hidden, hq, hk, hd, inter, _ = MODELS[model]
    return {
        "qkv_proj": ((hq + 2 * hk) * hd, hidden),
        "o_proj": (hidden, hq * hd),
        "gate_up_proj": (2 * inter, hidden),
        "down_proj": (hidden, inter),
    }


def randn(*shape, device, dtype=torch.bfloat16, scale=1.0):
    return (torch.randn(shape, device=device) * scale).to(dtype)


# Each *_args builds an op's arguments on `device`: "meta" at collection (to ask supports_args
# without allocating a vocabulary-sized weight), "cuda" in the test.
def linear_args(model, layer, m, device="meta"):
    n, k = linear_shapes(model)[layer]
    bias = randn(n, device=device) if layer == "qkv_proj" else None
    return randn(m, k, device=device), randn(n, k, device=device, scale=k**-0.5), bias


def norm_linear_args(model, layer, m, device="meta"):
    n, k = linear_shapes(model)[layer]
    x, residual, norm_w = randn(m, k, device=device), randn(m, k, device=device), randn(k, device=device, scale=0.2) + 1
    return x, residual, norm_w, 1e-6, randn(n, k, device=device, scale=k**-0.5), None


def silu_mul_linear_args(model, m, device="meta"):
    n, k = linear_shapes(model)["down_proj"]
    return randn(m, 2 * k, device=device), randn(n, k, device=device, scale=k**-0.5), None


def lm_head_args(model, rows, device="meta"):
    hidden, *_, vocab = MODELS[model]
    x, weight = randn(rows + 7, hidden, device=device), randn(vocab, hidden, device=device, scale=hidden**-0.5)
    return x, weight, torch.randint(0, rows + 7, (rows,), device=device, dtype=torch.int32)


@parametrize("linear", linear_args, model=list(MODELS), layer=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
             m=[1, 5, 16, 64, 200, 512])
def test_linear(provider, model, layer, m):
    torch.manual_seed(0)
    args = linear_args(model, layer, m, "cuda")
    torch.testing.assert_close(run(provider, "linear", args), OPS["linear"].native(*args), **BF16)


@parametrize("norm_linear", norm_linear_args, model=list(MODELS), layer=["qkv_proj", "gate_up_proj"], m=[1, 8, 512])
def test_norm_linear(provider, model, layer, m):
    torch.manual_seed(0)
    args = norm_linear_args(model, layer, m, "cuda")
    out, summed = run(provider, "norm_linear", args)
    want, want_summed = OPS["norm_linear"].native(*args)
    assert torch.equal(summed, want_summed)
    # rounding differs from native by one bf16 rounding of the normalised row (kernels/linear.py)
    torch.testing.assert_close(out, want, atol=4e-2, rtol=4e-2)


@parametrize("silu_mul_linear", silu_mul_linear_args, model=list(MODELS), m=[1, 8, 512])
def test_silu_mul_linear(provider, model, m):
    torch.manual_seed(0)
    args = silu_mul_linear_args(model, m, "cuda")
    torch.testing.assert_close(run(provider, "silu_mul_linear", args), OPS["silu_mul_linear"].native(*args), **BF16)


@parametrize("lm_head", lm_head_args, model=list(MODELS), rows=[1, 8, 64])
def test_lm_head(provider, model, rows):
    torch.manual_seed(0)
    args = lm_head_args(model, rows, "cuda")
    torch.testing.assert_close(run(provider, "lm_head", args), OPS["lm_head"].native(*args), **BF16)


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


def paged_args(model, case, device="meta", block_size=16):
    q_lens, seq_lens, sliding_window, pad_rows = ATTENTION_CASES[case]
    _, hq, hk, hd, _, _ = MODELS[model]
    blocks = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks) + 5
    order = torch.randperm(num_blocks, device=device).to(torch.int32)
    block_tables = torch.zeros(len(seq_lens), max(blocks) + 2, dtype=torch.int32, device=device)
    used = 0
    for b, count in enumerate(blocks):
        block_tables[b, :count] = order[used : used + count]
        used += count
    starts = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32).to(device)
    k_cache, v_cache = randn(num_blocks, block_size, hk, hd, device=device), randn(num_blocks, block_size, hk, hd, device=device)
    seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    q = randn(sum(q_lens) + pad_rows, hq * hd, device=device)
    return (q, k_cache, v_cache, block_tables, seq_lens_t, starts, max(q_lens), hd**-0.5, sliding_window)


@parametrize("paged_attention", paged_args, model=list(MODELS), case=list(ATTENTION_CASES))
def test_paged_attention(provider, model, case):
    torch.manual_seed(0)
    args = paged_args(model, case, "cuda")
    # the native function builds its masks on the CPU: run it there
    expected = OPS["paged_attention"].native(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])
    torch.testing.assert_close(run(provider, "paged_attention", args).cpu(), expected, **BF16)
