"""Launch parameters of the small decode kernels, swept on one GPU: split-KV attention (keys per
step, warps, stages, splits) at the context a plan serves (2048) and shorter sequences, greedy
`sample` (block, warps) over a 151,936-token vocabulary, and `qkv_rope_cache` (heads per program).

    python3 benchmarks/h200/sweep_decode.py        # prints the best few per case; JSON to $OUT

Times are graph replays over enough copies of the data to overflow L2 (kernels_bench.timed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kernels_bench as kb  # noqa: E402

import llmc.kernels  # noqa: E402,F401
import llmc.kernels.attention_split as split_kv  # noqa: E402
import llmc.kernels.rotary as rotary  # noqa: E402
from llmc.aot.ir import OPS  # noqa: E402

HQ, HK, HD, BLOCK = 16, 8, 128, 16  # Qwen3-0.6B's attention
CONTEXT = 2048
RESULTS: list[dict] = []


def attention_args(batch: int, seq_len: int, copies: int):
    max_blocks = CONTEXT // BLOCK
    num_blocks = batch * max_blocks
    tables = torch.randperm(num_blocks, device="cuda").to(torch.int32).view(batch, max_blocks)
    starts = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
    q = torch.randn(batch, HQ * HD, device="cuda", dtype=torch.bfloat16)
    lens = torch.full((batch,), seq_len, dtype=torch.int32, device="cuda")
    caches = [(torch.randn(num_blocks, BLOCK, HK, HD, device="cuda", dtype=torch.bfloat16),
               torch.randn(num_blocks, BLOCK, HK, HD, device="cuda", dtype=torch.bfloat16)) for _ in range(copies)]
    return [(q, k, v, tables, lens, starts, 1, HD**-0.5, 0) for k, v in caches]


def sweep_attention():
    impl = OPS["paged_attention"].impls["triton_split_kv"]
    decode = OPS["paged_attention"].impls["triton_decode"]
    rule = split_kv.num_splits
    for batch, seq_len in ((1, 128), (1, 1024), (1, 2000), (8, 128), (8, 1024), (64, 512)):
        argsets = attention_args(batch, seq_len, min(8, kb.copies_for(batch * CONTEXT * HK * HD * 4)))
        rows = []
        try:
            rows.append((kb.timed([kb.launcher(decode, a) for a in argsets], rep=30), "triton_decode"))
        except Exception as e:  # noqa: BLE001
            print(f"triton_decode: {type(e).__name__}: {e}")
        for splits in (1, 4, 8, 16):
            for block_n in (32, 64, 128):
                for warps in (4, 8):
                    for stages in (2, 3):
                        split_kv.num_splits = lambda *a, s=splits: s
                        split_kv.BLOCK_N, split_kv.NUM_WARPS, split_kv.NUM_STAGES = block_n, warps, stages
                        try:
                            t = kb.timed([kb.launcher(impl, a) for a in argsets], rep=30)
                        except Exception as e:  # noqa: BLE001  (shared memory, registers)
                            print(f"splits={splits} BN={block_n} w={warps} s={stages}: {type(e).__name__}")
                            continue
                        rows.append((t, f"splits={splits} BN={block_n} w={warps} s={stages}"))
        split_kv.num_splits = rule
        split_kv.BLOCK_N, split_kv.NUM_WARPS, split_kv.NUM_STAGES = 64, 4, 3  # as before the sweep
        rule_splits = rule(batch, HK, CONTEXT, 32, torch.cuda.get_device_properties(0).multi_processor_count)
        current = next((t for t, c in rows if c == f"splits={rule_splits} BN=64 w=4 s=3"), None)
        report(f"attention B={batch} len={seq_len} (rule: splits={rule_splits} BN=64 w=4 s=3)", rows, current)


def sweep_sample():
    impl = OPS["sample"].impls["triton"]
    vocab = 151936
    for rows_n in (1, 8):
        logits = [torch.randn(rows_n, vocab, device="cuda", dtype=torch.float32) for _ in range(8)]
        zeros_f = torch.zeros(rows_n, device="cuda")
        ints = torch.zeros(rows_n, dtype=torch.int32, device="cuda")
        ones = torch.ones(rows_n, device="cuda")
        rows = []
        for block in (1024, 2048, 4096, 8192):
            for warps in (4, 8, 16):
                args = [(x, zeros_f, ints, ones, zeros_f, zeros_f) for x in logits]
                try:
                    t = kb.timed([kb.launcher(impl, a, dict(BLOCK=block), None, warps) for a in args], rep=30)
                except Exception as e:  # noqa: BLE001
                    print(f"sample BLOCK={block} w={warps}: {type(e).__name__}")
                    continue
                rows.append((t, f"BLOCK={block} w={warps}"))
        report(f"sample greedy rows={rows_n} vocab={vocab} (rule: BLOCK=1024 w=8)", rows,
               next((t for t, c in rows if c == "BLOCK=1024 w=8"), None))


def sweep_rope():
    impl = OPS["qkv_rope_cache"].impls["triton"]
    for tokens in (1, 8, 64):
        num_blocks = 64
        qkv = torch.randn(tokens, (HQ + 2 * HK) * HD, device="cuda", dtype=torch.bfloat16)
        positions = torch.arange(tokens, dtype=torch.int32, device="cuda") + 100
        cos_sin = torch.randn(4096, HD, device="cuda", dtype=torch.float32)
        norm = torch.ones(HD, device="cuda", dtype=torch.bfloat16)
        k = torch.zeros(num_blocks, BLOCK, HK, HD, device="cuda", dtype=torch.bfloat16)
        v = torch.zeros_like(k)
        slots = torch.arange(tokens, dtype=torch.int32, device="cuda")
        args = (qkv, positions, cos_sin, norm, norm, k, v, slots, HQ, HK, HD, 1e-6)
        rows = []
        for block_h in (1, 2, 4):
            for warps in (1, 2, 4):
                grid = lambda meta: (tokens, triton.cdiv(HQ + HK, meta["BLOCK_H"]), 1)
                t = kb.timed([kb.launcher(impl, args, dict(BLOCK_H=block_h), grid, warps)] * 8, rep=30)
                rows.append((t, f"BLOCK_H={block_h} w={warps}"))
        report(f"qkv_rope_cache tokens={tokens}", rows, None)


def report(case: str, rows: list, current: float | None) -> None:
    rows.sort()
    best = ", ".join(f"{c}: {t * 1e6:.1f}" for t, c in rows[:5])
    now = f"; the rule's pick {current * 1e6:.1f} us" if current else ""
    print(f"{case}{now}\n   best (us): {best}", flush=True)
    RESULTS.append(dict(case=case, current_us=current and current * 1e6, results=[(c, t * 1e6) for t, c in rows]))


if __name__ == "__main__":
    kb.CEIL["copy_gb_s"], kb.CEIL["matmul_tflop_s"] = 1.0, 1.0
    for part in sys.argv[1:] or ("rope", "sample", "attention"):
        globals()[f"sweep_{part}"]()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "sweep_decode.json").write_text(json.dumps(RESULTS, indent=1))
