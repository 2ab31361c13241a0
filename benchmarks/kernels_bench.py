"""Kernel benchmarks on one GPU: the machine's ceilings, then every linear / lm_head /
paged_attention impl at decode and prefill shapes of Qwen3-0.6B and Llama-3.1-8B, each beside a
torch peer measured in the same run.

    python benchmarks/kernels_bench.py [--models qwen3-0.6b,llama-3.1-8b] [--quick] [--sweep]

Every time is the median of triton.testing.do_bench over a CUDA graph that calls the kernel once
per copy of its data, with enough copies to overflow L2: neither Python launch overhead nor a
warm L2 flatters a number (a decode step reads every weight cold, too). Prints a table and, when
$OUT is set, writes $OUT/kernels_bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
import triton
from triton.testing import do_bench

import llmc.kernels.attention  # noqa: F401  (registers the impls)
import llmc.kernels.linear as linear_kernels
from llmc.aot.ir import OPS
from llmc.kernels.launch import allocate_outputs, resolve

MODELS = {
    # hidden, q heads, kv heads, head_dim, intermediate, vocab
    "qwen3-0.6b": (1024, 16, 8, 128, 3072, 151936),
    "llama-3.1-8b": (4096, 32, 8, 128, 14336, 128256),
}
FLUSH_BYTES = 256 << 20  # copies of a kernel's data per timing: at least this much (H100 L2: 50 MB)
MAX_COPIES = 64
SWEEP_ROWS = [int(m) for m in os.environ.get("SWEEP_ROWS", "1,8").split(",")]
ROWS: list[dict] = []
CEIL: dict[str, float] = {}


def timed(calls, rep=100) -> float:
    """Seconds per call: the calls (one per copy of the data) captured in one CUDA graph, replayed."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    ms = do_bench(graph.replay, warmup=25, rep=rep, return_mode="median")
    return ms * 1e-3 / len(calls)


def copies_for(nbytes: int) -> int:
    return max(1, min(MAX_COPIES, math.ceil(FLUSH_BYTES / max(nbytes, 1))))


def launcher(impl, args, constexprs=None, grid=None, num_warps=None, num_stages=None):
    """A zero-argument call that runs the impl's launches on these args (outputs allocated once)."""
    outputs = allocate_outputs(impl.op, args)
    launches = []
    for launch in impl.fn(*args):
        meta = {**launch.constexprs, **(constexprs or {})}
        kernel = launch.kernel[grid(meta) if grid else launch.grid3]
        launches.append((kernel, [resolve(a, outputs) for a in launch.args], meta,
                         num_warps or launch.num_warps, num_stages or launch.num_stages))

    def call():
        for kernel, kargs, meta, warps, stages in launches:
            kernel(*kargs, **meta, num_warps=warps, num_stages=stages)

    return call


def record(kind, name, shape, seconds, nbytes, flops, peer_seconds=None, **extra):
    gbs, tflops = nbytes / seconds / 1e9, flops / seconds / 1e12
    row = dict(kind=kind, kernel=name, shape=shape, us=seconds * 1e6, gb_s=gbs, tflop_s=tflops,
               frac_bw=gbs / CEIL["copy_gb_s"], frac_mm=tflops / CEIL["matmul_tflop_s"], **extra)
    if peer_seconds:
        row.update(peer_us=peer_seconds * 1e6, speedup_vs_peer=peer_seconds / seconds)
    ROWS.append(row)
    peer = f"{row['peer_us']:9.1f} {row['speedup_vs_peer']:6.2f}x" if peer_seconds else ""
    print(f"{name:34s} {shape:34s} {row['us']:9.1f} {gbs:8.0f} {tflops:7.1f} {row['frac_bw']:6.0%} {row['frac_mm']:6.0%} {peer}", flush=True)


def header(title):
    print(f"\n== {title}")
    print(f"{'kernel':34s} {'shape':34s} {'us':>9s} {'GB/s':>8s} {'TFLOP/s':>7s} {'%copy':>6s} {'%mm':>6s} {'peer us':>9s} {'vs peer':>7s}")


def ceilings():
    n = 1 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    t = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median") * 1e-3
    CEIL["copy_gb_s"] = 2 * n / t / 1e9
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median") * 1e-3
    CEIL["matmul_tflop_s"] = 2 * 8192**3 / t / 1e12
    print(f"ceilings: copy {CEIL['copy_gb_s']:.0f} GB/s (1 GiB D2D, read + write); "
          f"matmul {CEIL['matmul_tflop_s']:.0f} TFLOP/s (torch bf16 8192^3)")


def providers(op, *args):
    major, minor = torch.cuda.get_device_capability()
    for name, impl in OPS[op].impls.items():
        if impl.launches and impl.available_on(f"sm{major}{minor}") and impl.supports(*args):
            yield name, impl


def bench_linear(model, ms, lm_head_rows):
    hidden, hq, hk, hd, inter, vocab = MODELS[model]
    layers = {"qkv_proj": ((hq + 2 * hk) * hd, hidden), "o_proj": (hidden, hq * hd),
              "gate_up_proj": (2 * inter, hidden), "down_proj": (hidden, inter)}
    header(f"linear / lm_head, {model}, bf16")
    for layer, (n, k) in list(layers.items()) + [("lm_head", (vocab, hidden))]:
        copies = copies_for(n * k * 2)
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * k**-0.5 for _ in range(copies)]
        for m in lm_head_rows if layer == "lm_head" else ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            nbytes, flops = n * k * 2 + m * k * 2 + m * n * (4 if layer == "lm_head" else 2), 2 * m * n * k
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            peer = timed([lambda w=w: torch.mm(x, w.t(), out=out) for w in weights])
            shape = f"{layer} M={m} N={n} K={k}"
            if layer == "lm_head":
                rows = torch.arange(m, device="cuda", dtype=torch.int32)
                for name, impl in providers("lm_head", x, weights[0], rows):
                    t = timed([launcher(impl, (x, w, rows)) for w in weights])
                    record("lm_head", f"lm_head/{name}", shape, t, nbytes, flops, peer, model=model, m=m, n=n, k=k)
            else:
                for name, impl in providers("linear", x, weights[0], None):
                    t = timed([launcher(impl, (x, w, None)) for w in weights])
                    record("linear", f"linear/{name}", shape, t, nbytes, flops, peer, model=model, m=m, n=n, k=k)
        del weights
        torch.cuda.empty_cache()


def paged(model, q_lens, seq_lens, copies, block_size=16):
    _, hq, hk, hd, _, _ = MODELS[model]
    blocks = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks)
    order = torch.randperm(num_blocks, device="cuda").to(torch.int32)  # scattered, as after a while of serving
    block_tables = torch.zeros(len(seq_lens), max(blocks), dtype=torch.int32, device="cuda")
    used = 0
    for b, count in enumerate(blocks):
        block_tables[b, :count] = order[used : used + count]
        used += count
    starts = torch.tensor([0] + list(q_lens), dtype=torch.int32).cumsum(0).to(torch.int32).cuda()
    q = torch.randn(int(starts[-1]), hq * hd, device="cuda", dtype=torch.bfloat16)
    seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    caches = [(torch.randn(num_blocks, block_size, hk, hd, device="cuda", dtype=torch.bfloat16),
               torch.randn(num_blocks, block_size, hk, hd, device="cuda", dtype=torch.bfloat16)) for _ in range(copies)]
    return [(q, k, v, block_tables, seq_lens_t, starts, max(q_lens), hd**-0.5, 0) for k, v in caches]


def sdpa_peer(model, q_lens, seq_lens, copies):
    """torch SDPA on dense [B, H, L, hd] tensors of the same lengths (equal lengths only)."""
    _, hq, hk, hd, _, _ = MODELS[model]
    b, n, length = len(q_lens), q_lens[0], seq_lens[0]
    q = torch.randn(b, hq, n, hd, device="cuda", dtype=torch.bfloat16)
    kv = [(torch.randn(b, hk, length, hd, device="cuda", dtype=torch.bfloat16),
           torch.randn(b, hk, length, hd, device="cuda", dtype=torch.bfloat16)) for _ in range(copies)]
    causal = n > 1
    try:
        call = [lambda k=k, v=v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True) for k, v in kv]
        return timed(call)
    except Exception as e:  # noqa: BLE001  (a peer that cannot run is reported, not fatal)
        print(f"  (sdpa peer failed: {type(e).__name__}: {e})")
        return None


def bench_attention(model, decode_cases, prefill_cases):
    _, hq, hk, hd, _, _ = MODELS[model]
    header(f"paged_attention, {model}, bf16, block_size 16")
    for q_lens, seq_lens in decode_cases + prefill_cases:
        kv_bytes = sum(seq_lens) * hk * hd * 2 * 2
        copies = copies_for(kv_bytes)
        argsets = paged(model, q_lens, seq_lens, copies)
        nbytes = kv_bytes + 2 * sum(q_lens) * hq * hd * 2
        visible = sum(sum(range(s - n + 1, s + 1)) for n, s in zip(q_lens, seq_lens))
        flops = 4 * visible * hd * hq
        # SDPA's causal mask is aligned top-left: a fair peer only for decode and for prefill without context
        same = len(set(q_lens)) == 1 and len(set(seq_lens)) == 1 and q_lens[0] in (1, seq_lens[0])
        peer = sdpa_peer(model, q_lens, seq_lens, copies) if same else None
        shape = f"B={len(q_lens)} q={q_lens[0]} kv={seq_lens[0]}" + ("" if len(set(seq_lens)) == 1 else "..")
        for name, impl in providers("paged_attention", *argsets[0]):
            t = timed([launcher(impl, args) for args in argsets])
            record("paged_attention", f"paged_attention/{name}", shape, t, nbytes, flops, peer, model=model,
                   q_lens=list(q_lens), seq_lens=list(seq_lens))
        del argsets
        torch.cuda.empty_cache()


def sweep(model):
    """Launch parameters around the rules' picks, for tuning them (not part of the default run)."""
    hidden, hq, hk, hd, inter, vocab = MODELS[model]
    header(f"sweep: gemv_kernel, {model}")
    impl = OPS["linear"].impls["triton_gemv"]
    for n, k in (((hq + 2 * hk) * hd, hidden), (hidden, hq * hd), (hidden, inter), (2 * inter, hidden)):
        copies = copies_for(n * k * 2)
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        for m in SWEEP_ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            if m == 1:
                configs = [(bn, bk, w, s) for bn in (2, 4, 8, 16) for bk in (512, 1024, 2048, 4096) for w in (2, 4, 8) for s in (2, 3)]
            else:
                configs = [(bn, bk, 4, s) for bn in (16, 32) for bk in (128, 256) for s in (3, 4, 5)]
            for bn, bk, w, s in configs:
                if bn * bk > 16384 or bk > max(k, 512) or (m == 1 and bn * bk < 2048):
                    continue
                grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), 1, 1)
                shape = f"M={m} N={n} K={k} BN={bn} BK={bk} w={w} s={s}"
                try:
                    t = timed([launcher(impl, (x, wt, None), dict(BLOCK_N=bn, BLOCK_K=bk), grid, w, s) for wt in weights], rep=30)
                except Exception as e:  # noqa: BLE001  (out of shared memory, registers: skip the config)
                    print(f"gemv_kernel {shape}: {type(e).__name__}")
                    continue
                record("sweep", "gemv_kernel", shape, t, n * k * 2, 2 * m * n * k)
        del weights
    header(f"sweep: decode_attention_kernel, {model}")
    impl = OPS["paged_attention"].impls["triton_decode"]
    for b, length in ((1, 4096), (8, 2048), (32, 1024)):
        argsets = paged(model, [1] * b, [length] * b, copies_for(b * length * hk * hd * 4))
        for bn, w, s in [(bn, w, s) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3)]:
            shape = f"B={b} kv={length} BN={bn} w={w} s={s}"
            try:
                t = timed([launcher(impl, args, dict(BLOCK_N=bn), None, w, s) for args in argsets], rep=30)
            except Exception as e:  # noqa: BLE001
                print(f"decode_attention_kernel {shape}: {type(e).__name__}")
                continue
            record("sweep", "decode_attention_kernel", shape, t, b * length * hk * hd * 4, 4 * b * length * hd * hq)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="decode M=1 and prefill M=512 only")
    parser.add_argument("--sweep", action="store_true", help="also sweep gemv / decode attention launch parameters")
    parser.add_argument("--no-default", action="store_true", help="only the sweep")
    opts = parser.parse_args()
    assert torch.cuda.is_available(), "needs a GPU"
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    ceilings()
    ms = (1, 512) if opts.quick else (1, 8, 512, 2048)
    for model in opts.models.split(","):
        if not opts.no_default:
            bench_linear(model, ms, (1, 64) if opts.quick else (1, 8, 64))
            decode = [([1] * b, [ctx] * b) for b in ((1, 8) if opts.quick else (1, 8, 32)) for ctx in (1024, 4096)]
            prefill = [([t], [t]) for t in ((512,) if opts.quick else (512, 2048))]
            prefill += [] if opts.quick else [([512] * 4, [2048] * 4)]  # chunked prefill: 1536 tokens of context
            bench_attention(model, decode, prefill)
        if opts.sweep:
            sweep(model)
    if os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "kernels_bench.json")
        info = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                    gemv_min_programs=linear_kernels.min_programs())
        with open(path, "w") as f:
            json.dump(dict(info=info, ceilings=CEIL, results=ROWS), f, indent=1, sort_keys=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
