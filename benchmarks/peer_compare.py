"""llmc against Hugging Face transformers on the same random-weight checkpoint, in one run on a GPU.

    python benchmarks/peer_compare.py --model qwen3-0.6b          # or llama-3.1-8b
    python benchmarks/peer_compare.py --model qwen3-0.6b --work .peer_work --budget-s 540
    python benchmarks/peer_compare.py --model llama-3.1-8b --quantize fp8     # an FP8 bundle (peers stay bf16)
    python benchmarks/peer_compare.py --model qwen3-30b-a3b --layers 12       # MoE, fewer layers to fit the disk

Stages, each skipped when its result is already in --work (so a second call on a warm machine
continues where a timed-out one stopped): a bf16 checkpoint from the real config with random
weights (created on the GPU, saved with a word-level tokenizer of the full vocabulary), `llmc
build --target <this GPU>`, `llmc bench` at batch 1 and batch 8 (in 32 / out 128), then
transformers eager and transformers with a static cache + torch.compile(mode="reduce-overhead",
fullgraph=True), each in its own process; and one request of 1024 tokens through llmc's engine, which
prepares the next step while one runs (`llmc run`'s path). Prints a table of decode ms/step, batch-8 latency and
start-up cost, as multiples of the floor (weight bytes / measured copy bandwidth) and of each
peer; writes every number to $OUT/peer_compare_<model>.json (and to --work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "qwen3-0.6b": ("Qwen3Config", dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
        max_position_embeddings=40960, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645)),
    "llama-3.1-8b": ("LlamaConfig", dict(  # head tied, as the 15.0 GB measured in DEVICE.md
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        intermediate_size=14336, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001)),
    "qwen3-30b-a3b": ("Qwen3MoeConfig", dict(
        hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        intermediate_size=6144, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], vocab_size=151936, tie_word_embeddings=False,
        rope_theta=1e6, max_position_embeddings=40960, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645)),
}
INPUT_LEN, OUTPUT_LEN, BATCH = 32, 128, 8


def active_weight_bytes(model: str, layers: int | None, bytes_per_weight: float = 2.0) -> float:
    """Weights one decode token reads: all but the experts it is not routed to (MoE), at bf16 or FP8 size."""
    fields = CONFIGS[model][1]
    h, v, n = fields["hidden_size"], fields["vocab_size"], layers or fields["num_hidden_layers"]
    hd, q, kv = fields["head_dim"], fields["num_attention_heads"], fields["num_key_value_heads"]
    attention = h * hd * (2 * q + 2 * kv)
    if "num_experts" in fields:
        mlp = fields["num_experts_per_tok"] * 3 * h * fields["moe_intermediate_size"] + fields["num_experts"] * h
    else:
        mlp = 3 * h * fields["intermediate_size"]
    head = 0 if fields["tie_word_embeddings"] else v * h
    return bytes_per_weight * (n * (attention + mlp) + head) + 2.0 * v * h  # the embedding row is negligible; the head is read


# ---- stages (run in this process) ---------------------------------------------------------------


def make_checkpoint(model: str, out: Path, device: str = "cuda", **overrides) -> None:
    """Random bf16 weights from the real config, initialised on the GPU, plus a word-level tokenizer."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    name, fields = CONFIGS[model]
    config = getattr(transformers, name)(**{**fields, **{k: v for k, v in overrides.items() if v is not None}})
    torch.manual_seed(0)
    try:
        with torch.device(device):  # random init on the GPU: seconds, where the CPU takes minutes for 8B
            hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    except Exception as e:
        print(f"init on {device} failed ({e}); initialising on the CPU", flush=True)
        hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    hf.save_pretrained(out)
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(out)
    del hf
    if device == "cuda":
        torch.cuda.empty_cache()


def gpu_target() -> str:
    from llmc.runtime.backends.cuda_driver import query_device
    from llmc.runtime.compat import suggest_target

    device, why = query_device()
    if device is None:
        sys.exit(f"no GPU: {why}")
    return suggest_target(device) or sys.exit(f"llmc has no target for {device.describe()}")


def run(cmd: list[str], timeout: float, log: Path) -> tuple[int, str]:
    """Run a child process, keep its output in `log`; returns (exit code, output tail)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1))
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        text_of = lambda x: x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        code, text = 124, f"{text_of(e.stdout)}{text_of(e.stderr)}\ntimed out after {timeout:.0f} s"
    log.write_text(f"$ {' '.join(cmd)}\n({time.perf_counter() - start:.1f} s, exit {code})\n{text}")
    return code, text[-3000:]


# ---- the transformers worker (run in a child process) ------------------------------------------------


def hf_worker(ckpt: str, mode: str, batch: int, input_len: int, output_len: int, iters: int,
              device: str = "cuda") -> dict:
    """Time transformers' generate(): per-step times from a streamer that syncs at each token."""
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    class StepTimer(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            sync()
            self.times.append(time.perf_counter())

        def end(self):
            pass

    load0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16).to(device).eval()
    load_s = time.perf_counter() - load0
    vocab = model.config.vocab_size
    ids = torch.randint(0, min(vocab, 10000), (batch, input_len), generator=torch.Generator().manual_seed(0)).to(device)
    # an EOS id no step can produce: every request runs to output_len, like ignore_eos
    kwargs = dict(max_new_tokens=output_len, do_sample=False, pad_token_id=0, eos_token_id=vocab + 1,
                  attention_mask=torch.ones_like(ids))
    if mode == "compile":  # generate() compiles the decode step when the cache is static (HF's recipe)
        kwargs["cache_implementation"] = "static"
        if hasattr(transformers, "CompileConfig"):
            kwargs["compile_config"] = transformers.CompileConfig(fullgraph=True, mode="reduce-overhead")
        else:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)

    def once():
        timer = StepTimer()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, streamer=timer, **kwargs)
        sync()
        t1 = time.perf_counter()
        steps = [b - a for a, b in zip(timer.times[1:], timer.times[2:])]  # [0]: prompt, [1]: first token
        return {"latency": t1 - t0, "ttft": timer.times[1] - t0 if len(timer.times) > 1 else None, "steps": steps}

    first0 = time.perf_counter()
    first = once()  # eager: warm-up; compile: compiles the decode step (and captures its graphs)
    first_s = time.perf_counter() - first0
    if mode == "compile":
        once()  # the second call may still record graphs
    runs = [once() for _ in range(iters)]
    steps = sorted(s for r in runs for s in r["steps"])
    lat = sorted(r["latency"] for r in runs)
    return {"mode": mode, "batch": batch, "input_len": input_len, "output_len": output_len, "iters": iters,
            "decode_step_median": steps[len(steps) // 2] if steps else None,
            "latency_median": lat[len(lat) // 2], "latency_mean": sum(lat) / len(lat),
            "ttft_median": sorted(r["ttft"] for r in runs)[len(runs) // 2],
            "load_s": load_s, "first_call_s": first_s, "first_call_latency": first["latency"],
            "compiled": mode == "compile" and (hasattr(model, "_compiled_call") or hasattr(model.forward, "_torchdynamo_orig_callable")),
            "gpu": torch.cuda.get_device_name() if device == "cuda" else device,
            "torch": torch.__version__, "transformers": transformers.__version__}


# ---- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="qwen3-0.6b")
    parser.add_argument("--work", type=Path, default=Path(".peer_work"), help="checkpoint, bundle, partial results")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="where the JSON goes ($OUT)")
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers than the real model (disk, time)")
    parser.add_argument("--quantize", choices=["fp8"], default=None, help="build an FP8 bundle (llmc build --quantize)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting stages after this many seconds")
    parser.add_argument("--skip", default="", help="comma-separated stages to skip: hf_eager,hf_compile_b1,hf_compile_b8")
    parser.add_argument("--hf-worker", nargs=6, metavar=("CKPT", "MODE", "BATCH", "IN", "OUT", "ITERS"), help=argparse.SUPPRESS)
    parser.add_argument("--hf-device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--make-checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_checkpoint:  # in a child, so this process holds no CUDA context while llmc measures
        make_checkpoint(args.model, args.make_checkpoint, num_hidden_layers=args.layers)
        return
    if args.hf_worker:
        ckpt, mode, batch, inp, out, iters = args.hf_worker
        print("RESULT " + json.dumps(hf_worker(ckpt, mode, int(batch), int(inp), int(out), int(iters), args.hf_device)))
        return

    start = time.perf_counter()
    name = args.model + (f"-{args.layers}l" if args.layers else "") + (f"-{args.quantize}" if args.quantize else "")
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.pop("not_run", None)
    left = lambda: args.budget_s - (time.perf_counter() - start)
    py, skip = sys.executable, set(filter(None, args.skip.split(",")))
    llmc = [py, "-m", "llmc.cli"]
    bench = [py, "-c", "from llmc.cli.bench import bench; bench()"]
    target = gpu_target()
    ckpt, bundle = work / "hf", work / f"bundle-{target}"

    def save():
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"peer_compare_{name}.json").write_text(json.dumps(results, indent=2, sort_keys=True))

    def stage(name: str, need_s: float, fn) -> None:
        if name in skip or (name in results and "error" not in results[name]):
            return  # done in an earlier call (failed stages run again)
        if left() < need_s:
            results.setdefault("not_run", []).append(name)
            print(f"[{name}] not started: {left():.0f} s left of the budget; run again to continue", flush=True)
            return
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        results[name] = fn()
        results[name]["stage_s"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {results[name].get('error', 'ok')} in {results[name]['stage_s']} s", flush=True)
        save()

    def checkpoint():
        if (ckpt / "config.json").is_file():
            return {"path": str(ckpt), "reused": True}
        layers = ["--layers", str(args.layers)] if args.layers else []
        code, tail = run([py, __file__, "--model", args.model, *layers, "--make-checkpoint", str(ckpt)], left() - 10,
                         work / "checkpoint.log")
        return {"path": str(ckpt)} if code == 0 else {"error": f"exited {code}: {tail}"}

    def build():
        if (bundle / "manifest.json").is_file():
            return {"path": str(bundle), "reused": True}
        quantize = ["--quantize", args.quantize] if args.quantize else []
        code, tail = run(llmc + ["build", str(ckpt), "--target", target, "--dtype", "bfloat16", *quantize, "-o", str(bundle)],
                         left() - 10, work / "build.log")
        return {"path": str(bundle)} if code == 0 else {"error": f"llmc build exited {code}: {tail}"}

    def llmc_cli_bench(label: str, args: list[str], read):
        """A stage running `llmc bench BUNDLE ARGS --output-json`; `read` makes its result of the JSON."""
        def fn():
            if "error" in results.get("build", {}):
                return {"error": "no bundle"}
            out = work / f"{label}.json"
            code, tail = run(bench + [str(bundle), *args, "--output-json", str(out)], left() - 10, work / f"{label}.log")
            return read(json.loads(out.read_text())) if code == 0 else {"error": f"llmc bench exited {code}: {tail}"}
        return fn

    def llmc_bench(batch: int, iters: int):
        return llmc_cli_bench(f"llmc_b{batch}", ["--batch-size", str(batch), "--input-len", str(INPUT_LEN), "--output-len",
                                                  str(OUTPUT_LEN), "--num-iters-warmup", "3", "--num-iters", str(iters),
                                                  "--verify", "fast"], lambda result: result)

    def llmc_engine(output_len: int):
        """One request through the engine as `llmc run` serves it (next step prepared while one runs):
        the wall time per output token, prefill included."""
        def per_token(result):
            tp = result["throughput"]
            return {**tp, "step": tp["elapsed"] / tp["output_tokens"]}

        return llmc_cli_bench("llmc_engine_b1", ["--throughput", "--num-prompts", "1", "--max-concurrency", "1",
                                                 "--input-len", str(INPUT_LEN), "--output-len", str(output_len),
                                                 "--verify", "none"], per_token)

    def hf(mode: str, batch: int, output_len: int, iters: int):
        def fn():
            code, tail = run([py, __file__, "--hf-worker", str(ckpt), mode, str(batch), str(INPUT_LEN),
                              str(output_len), str(iters)], left() - 10, work / f"hf_{mode}_b{batch}.log")
            line = next((l for l in tail.splitlines() if l.startswith("RESULT ")), None)
            return json.loads(line[7:]) if code == 0 and line else {"error": f"exited {code}: {tail[-1500:]}"}
        return fn

    results["model"], results["target"] = name, target
    results["active_weight_bytes"] = active_weight_bytes(args.model, args.layers, 1.0 if args.quantize else 2.0)
    stage("checkpoint", 60, checkpoint)
    stage("build", 60, build)
    stage("llmc_b1", 30, llmc_bench(1, 10))
    stage(f"llmc_b{BATCH}", 30, llmc_bench(BATCH, 10))
    stage("llmc_engine_b1", 30, llmc_engine(1024))
    stage("hf_eager", 60, hf("eager", 1, 32, 2))
    stage("hf_compile_b1", 120, hf("compile", 1, OUTPUT_LEN, 3))
    stage(f"hf_compile_b{BATCH}", 120, hf("compile", BATCH, OUTPUT_LEN, 3))
    results["table"] = table(results)
    save()
    print("\n".join(results["table"]))


def table(r: dict) -> list[str]:
    """The comparison, as lines: every number next to the floor and the peers."""
    def get(stage, *keys):
        value = r.get(stage, {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    b1 = get("llmc_b1", "latency") or {}
    floor = b1.get("floor_step")
    ms = lambda s: f"{s * 1e3:9.3f}" if s else "      n/a"
    x = lambda s, ref: f"{s / ref:7.2f}x" if s and ref else "     n/a"
    rows = [
        ("llmc", b1.get("decode_step_median"), get(f"llmc_b{BATCH}", "latency", "avg_latency"),
         get("llmc_b1", "load", "process_to_ready_s"), "process start to ready"),
        ("llmc engine (overlap)", get("llmc_engine_b1", "step"), None, None, "1 request, 1024 tokens, prefill included"),
        ("HF eager", get("hf_eager", "decode_step_median"), None, get("hf_eager", "load_s"), "from_pretrained"),
        ("HF static + compile", get("hf_compile_b1", "decode_step_median"),
         get(f"hf_compile_b{BATCH}", "latency_median"), get("hf_compile_b1", "first_call_s"), "first generate (compile)"),
    ]
    bw, wb = b1.get("copy_bandwidth"), b1.get("weight_bytes")
    active = r.get("active_weight_bytes")
    if bw and active and wb and active < 0.9 * wb:  # MoE: a token reads only its experts
        floor = active / bw
    lines = [f"{r.get('model')} on {get('llmc_b1', 'load', 'device') or r.get('target')}, bf16 random weights; floor "
             + (f"{floor * 1e3:.3f} ms/step = {floor * bw / 1e9:.2f} GB read per token (of {wb / 1e9:.2f} GB) / "
                f"{bw / 1e12:.2f} TB/s (copy measured now)" if floor else "n/a"),
             f"{'':22} {'decode ms/step b1':>17} {'x floor':>8} {f'b{BATCH} in{INPUT_LEN}/out{OUTPUT_LEN} ms':>20} "
             f"{'start-up s':>10}"]
    for name, step, lat, startup, what in rows:
        lines.append(f"{name:22} {ms(step):>17} {x(step, floor):>8} {ms(lat):>20} "
                     f"{(f'{startup:.1f}' if startup else 'n/a'):>10}  ({what})")
    ours, ours8 = rows[0][1], rows[0][2]
    for name, step, lat, *_ in rows[2:]:
        lines.append(f"llmc vs {name}: decode {x(step, ours).strip()} faster, batch {BATCH} {x(lat, ours8).strip()} faster")
    for name in r.get("not_run", []):
        lines.append(f"not run (budget): {name}")
    for name, value in r.items():
        if isinstance(value, dict) and "error" in value:
            lines.append(f"failed: {name}: {value['error'][-300:]}")
    return lines


if __name__ == "__main__":
    main()
