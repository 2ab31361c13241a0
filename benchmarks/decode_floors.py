"""Two decode kernels against their weight-read floors, on one GPU (timed checks live here, not in tests).

    python3 benchmarks/decode_floors.py

- fused_moe at one token, Qwen3-30B-A3B's shape (128 experts, top 8, hidden 2048, width 768): time
  against reading the 8 chosen experts' weights once at the copy bandwidth measured now.
- The FP8 GEMV against the bf16 GEMV at Llama-3.1-8B's gate_up_proj (28672 x 4096), m = 1: the FP8
  weights are half the bytes, so the FP8 kernel should take about half the time.
Each timing replays the kernel's launches in a CUDA graph (triton.testing.do_bench_cudagraph).
"""

from __future__ import annotations

import torch
from triton.testing import do_bench_cudagraph

import llmc.kernels  # noqa: F401  (registers the impls)
from llmc.aot.ir import OPS
from llmc.kernels.launch import allocate_outputs, resolve


def graphed(impl, args):
    outputs = allocate_outputs(impl.op, args)
    launches = [(l, [resolve(a, outputs) for a in l.args]) for l in impl.fn(*args)]

    def step():
        for l, kernel_args in launches:
            l.kernel[l.grid3](*kernel_args, **l.constexprs, num_warps=l.num_warps, num_stages=l.num_stages)

    step()  # compile outside the capture
    return step


def copy_bandwidth() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench_cudagraph(lambda: dst.copy_(src), rep=100)
    return 2 * src.numel() / (ms * 1e-3)


def moe_decode(bandwidth: float) -> str:
    experts, top_k, hidden, inter = 128, 8, 2048, 768
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, hidden, device="cuda", generator=g).bfloat16()
    w13 = (torch.randn(experts, 2 * inter, hidden, device="cuda", generator=g) / hidden**0.5).bfloat16()
    w2 = (torch.randn(experts, hidden, inter, device="cuda", generator=g) / inter**0.5).bfloat16()
    weights, ids = OPS["moe_route"].native(torch.randn(1, experts, device="cuda", generator=g), top_k, True)
    ms = do_bench_cudagraph(graphed(OPS["fused_moe"].impls["triton_decode"], (x, w13, w2, weights, ids)), rep=200)
    floor = top_k * 3 * hidden * inter * 2 / bandwidth * 1e3
    return f"fused_moe T=1 (Qwen3-30B-A3B): {ms * 1e3:.1f} us, floor {floor * 1e3:.1f} us, {ms / floor:.2f}x floor"


def fp8_gemv(bandwidth: float) -> str:
    n, k = 28672, 4096
    torch.manual_seed(0)
    x = torch.randn((1, k), device="cuda").to(torch.bfloat16)
    weight = (torch.randn((n, k), device="cuda") * 64).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale = torch.rand((n, 1), device="cuda") * 1e-3 / k**0.5 + 1e-5
    fp8 = do_bench_cudagraph(graphed(OPS["fp8_linear"].impls["triton_fp8_gemv"], (x, weight, scale, None, 0)), rep=200)
    bf16 = do_bench_cudagraph(graphed(OPS["linear"].impls["triton_gemv"], (x, weight.to(torch.bfloat16), None)), rep=200)
    return (f"gate_up_proj {n}x{k} m=1: fp8 {fp8 * 1e3:.1f} us ({n * k / bandwidth * 1e6:.1f} us floor), "
            f"bf16 {bf16 * 1e3:.1f} us ({2 * n * k / bandwidth * 1e6:.1f} us floor), fp8/bf16 {fp8 / bf16:.2f}")


if __name__ == "__main__":
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    print(moe_decode(bw))
    print(fp8_gemv(bw))
