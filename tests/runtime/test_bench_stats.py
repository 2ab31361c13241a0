"""llmc bench without a device: percentiles, bucket choice, the floor, and the fixed-batch driver
against a fake backend that checks every input a plan receives (FORMAT.md's semantics)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from llmc.errors import UserError
from llmc.runtime import bench as b
from llmc.runtime.batch import fill_inputs

V, BLOCK = 50, 4


def plan(name, kind, T, B, R=None, max_blocks=8):
    R = R or B
    shapes = {"input_ids": [T], "positions": [T], "slot_mapping": [T], "block_tables": [B, max_blocks],
              "seq_lens": [B], "query_start_loc": [B + 1], "logits_indices": [R], "temperature": [R],
              "top_k": [R], "top_p": [R], "uniform": [R]}
    floats = ("temperature", "top_p", "uniform")
    return {"name": name, "kind": kind, "num_tokens": T, "num_seqs": B, "num_logits": R,
            "max_blocks_per_seq": max_blocks,
            "inputs": {k: {"shape": s, "dtype": "float32" if k in floats else "int32"} for k, s in shapes.items()}}


PLANS = {p["name"]: p for p in (plan("decode_b1", "decode", 1, 1), plan("decode_b2", "decode", 2, 2),
                                plan("decode_b4", "decode", 4, 4), plan("prefill_t8", "prefill", 8, 4),
                                plan("prefill_t16", "prefill", 16, 4))}
MANIFEST = {"kv_cache": {"block_size": BLOCK}, "model": {"vocab_size": V}}


class ContextBackend:
    """A fake model whose next token is sum(context) % V, computed from the KV slots it was given:
    it fails unless every position of every sequence was written, once, at the slot its block table names."""

    def __init__(self, num_kv_blocks=64):
        self.num_kv_blocks = num_kv_blocks
        self.kv: dict[int, int] = {}
        self.runs: list[str] = []
        self.load_summary = {"load_seconds": 0.5, "kv_tokens": num_kv_blocks * BLOCK}

    def run(self, plan, inputs, want_logits):
        self.runs.append(plan["name"])
        for key, spec in plan["inputs"].items():
            assert inputs[key].shape == tuple(spec["shape"]) and inputs[key].dtype == np.dtype(spec["dtype"]), key
        ids, pos, slots = inputs["input_ids"], inputs["positions"], inputs["slot_mapping"]
        qsl, seq_lens, tables = inputs["query_start_loc"], inputs["seq_lens"], inputs["block_tables"]
        assert (np.diff(qsl) >= 0).all()
        for t in range(qsl[-1]):
            assert slots[t] >= 0
            self.kv[int(slots[t])] = int(ids[t])
        assert (slots[qsl[-1]:] == -1).all()  # padding writes nothing
        out = np.zeros(plan["num_logits"], dtype=np.int32)
        for r in range(plan["num_seqs"]):
            n = qsl[r + 1] - qsl[r]
            if n == 0:
                assert seq_lens[r] == 0
                continue
            assert inputs["logits_indices"][r] == qsl[r + 1] - 1
            assert pos[qsl[r + 1] - 1] == seq_lens[r] - 1  # the new tokens come last
            context = [self.kv[int(tables[r][p // BLOCK]) * BLOCK + p % BLOCK] for p in range(seq_lens[r])]
            out[r] = sum(context) % V
        assert (inputs["temperature"] == 0).all() and (inputs["top_p"] == 1).all()
        return out, (np.zeros((plan["num_logits"], V), np.float32) if want_logits else None)

    def close(self):
        pass


def reference(prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(sum(seq) % V)
    return seq[len(prompt):]


# ---- statistics -------------------------------------------------------------------------------


def test_percentiles_interpolate_like_numpy_and_vllm():
    values = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    p = b.percentiles(values)
    assert list(p) == [10, 25, 50, 75, 90, 99]
    assert p[50] == pytest.approx(0.55) and p[10] == pytest.approx(0.19) and p[99] == pytest.approx(0.991)
    assert b.percentiles([3.0]) == {q: 3.0 for q in (10, 25, 50, 75, 90, 99)}


def test_floor_math():
    # Qwen3-0.6B: 1.19 GB of bf16 weights at 2.97 TB/s -> 0.40 ms per decode step
    floor = b.floor_seconds(1_190_000_000, 2.97e12)
    assert floor == pytest.approx(0.4007e-3, rel=1e-3)
    assert b.ratio(0.8e-3, floor) == pytest.approx(1.996, rel=1e-3)
    assert b.floor_seconds(10, None) is None and b.ratio(1.0, None) is None


def test_summary_from_a_fake_clock():
    cfg = b.BenchConfig(batch_size=2, input_len=4, output_len=3, num_iters_warmup=0, num_iters=2)
    runs = [{"latency": 0.010, "ttft": 0.004, "steps": [0.002, 0.004]},
            {"latency": 0.020, "ttft": 0.006, "steps": [0.003, 0.005]}]
    s = b.summarize_latency(runs, cfg, weight_bytes=3_000_000_000, bandwidth=3e12)
    assert s["avg_latency"] == pytest.approx(0.015) and s["ttft_median"] == pytest.approx(0.005)
    assert s["decode_step_median"] == pytest.approx(0.0035) and s["floor_step"] == pytest.approx(1e-3)
    assert s["decode_vs_floor"] == pytest.approx(3.5) and s["output_tokens_per_s"] == pytest.approx(6 / 0.015)
    lines = b.format_latency(s)
    assert lines[0] == "Avg latency: 0.015000 seconds"
    assert lines[1] == "10% percentile latency: 0.011000 seconds" and lines[6].startswith("99% percentile latency")
    assert any("3.50x the floor" in line for line in lines)
    assert any("1.000 ms/step = 3 GB of weights / 3.000 TB/s" in line for line in lines)
    cpu = b.summarize_latency(runs, cfg, weight_bytes=1, bandwidth=None)
    assert cpu["decode_vs_floor"] is None and any("n/a" in line for line in b.format_latency(cpu))


def test_config_is_validated():
    with pytest.raises(UserError, match="--batch-size must be >= 1"):
        b.BenchConfig(batch_size=0)
    with pytest.raises(UserError, match="--num-iters-warmup"):
        b.BenchConfig(num_iters_warmup=-1)


# ---- buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, want", [(1, "decode_b1"), (2, "decode_b2"), (3, "decode_b4"), (4, "decode_b4")])
def test_decode_takes_the_smallest_bucket_that_holds_the_batch(batch, want):
    backend = ContextBackend()
    fb = b.FixedBatch(backend, PLANS, MANIFEST, [[1, 2, 3]] * batch, 3)
    fb.generate()
    assert backend.runs == ["prefill_t16" if batch * 3 > 8 else "prefill_t8"] + [want] * 2


def test_prefill_chunks_fill_the_largest_plan_and_split_long_prompts():
    assert b.prefill_chunks([5, 5, 5], PLANS) == [[(0, 0, 5), (1, 0, 5), (2, 0, 5)]]
    assert b.prefill_chunks([20, 3], PLANS) == [[(0, 0, 16)], [(0, 16, 4), (1, 0, 3)]]
    assert b.prefill_chunks([1] * 6, PLANS) == [[(i, 0, 1) for i in range(4)], [(4, 0, 1), (5, 0, 1)]]


def test_step_batch_inputs_follow_the_format():
    p = PLANS["prefill_t8"]
    batch = b.step_batch("prefill", [([7, 8, 9], 4, [3, 5]), ([1], 0, [6])], BLOCK)
    inputs = fill_inputs(p, batch)
    assert inputs["input_ids"].tolist() == [7, 8, 9, 1, 0, 0, 0, 0]
    assert inputs["positions"].tolist() == [4, 5, 6, 0, 0, 0, 0, 0]
    assert inputs["slot_mapping"].tolist() == [20, 21, 22, 24, -1, -1, -1, -1]
    assert inputs["seq_lens"].tolist() == [7, 1, 0, 0]
    assert inputs["query_start_loc"].tolist() == [0, 3, 4, 4, 4]
    assert inputs["logits_indices"].tolist() == [2, 3, 0, 0]
    assert inputs["block_tables"][0, :3].tolist() == [3, 5, 0] and inputs["block_tables"][1, 0] == 6
    assert inputs["top_p"].tolist() == [1, 1, 1, 1] and inputs["temperature"].tolist() == [0, 0, 0, 0]


# ---- the fixed batch, end to end on a fake backend ------------------------------------------------


@pytest.mark.parametrize("batch, input_len, output_len", [(1, 5, 6), (3, 7, 5), (4, 20, 3), (2, 3, 1)])
def test_fixed_batch_generates_what_the_model_says(batch, input_len, output_len):
    backend = ContextBackend()
    prompts = b.random_prompts(batch, input_len, V, seed=batch)
    fb = b.FixedBatch(backend, PLANS, MANIFEST, prompts, output_len)
    result = fb.generate()
    assert result["outputs"] == [reference(p, output_len) for p in prompts]
    assert len(result["steps"]) == output_len - 1
    assert sum(name.startswith("decode") for name in backend.runs) == output_len - 1


def test_fixed_batch_refuses_what_the_bundle_cannot_hold():
    with pytest.raises(UserError, match="larger than the bundle's largest decode bucket"):
        b.FixedBatch(ContextBackend(), PLANS, MANIFEST, [[1]] * 5, 4)
    with pytest.raises(UserError, match="holds at most 32 tokens per sequence|holds at most 32 per sequence"):
        b.FixedBatch(ContextBackend(), PLANS, MANIFEST, [[1] * 30], 4)
    with pytest.raises(UserError, match="need 16 KV blocks; the backend has 7"):
        b.FixedBatch(ContextBackend(num_kv_blocks=7), PLANS, MANIFEST, [[1] * 10] * 4, 6)


def test_run_latency_counts_iterations_and_warmups():
    backend = ContextBackend()
    cfg = b.BenchConfig(batch_size=2, input_len=4, output_len=3, num_iters_warmup=2, num_iters=3)
    ticks = iter(range(1000))
    result = b.run_latency(backend, PLANS, MANIFEST, cfg, weight_bytes=100, bandwidth=1e3,
                           clock=lambda: float(next(ticks)))
    assert len(result["latencies"]) == 3 and result["decode_steps_timed"] == 6
    assert backend.runs.count("decode_b2") == 5 * 2
    assert result["decode_step_median"] == 1.0 and result["decode_vs_floor"] == pytest.approx(10.0)


def test_throughput_counts_requests_and_tokens():
    ticks = iter([0.0, 2.0])
    seen = {}

    def generate(prompts, max_tokens):
        seen.update(n=len(prompts), lens={len(p) for p in prompts}, max_tokens=max_tokens)
        return [[0] * max_tokens for _ in prompts]

    r = b.run_throughput(generate, 10, 32, 16, V, clock=lambda: next(ticks))
    assert seen == {"n": 10, "lens": {32}, "max_tokens": 16}
    assert r["requests_per_s"] == 5.0 and r["output_tokens_per_s"] == 80.0 and r["total_tokens_per_s"] == 240.0
    lines = b.format_throughput(r)
    assert lines[:3] == ["Throughput: 5.00 requests/s, 240.00 total tokens/s, 80.00 output tokens/s",
                         "Total num prompt tokens:  320", "Total num output tokens:  160"]  # vLLM's lines


def test_process_uptime_is_a_small_positive_number():
    up = b.process_uptime()
    assert up is None or 0 <= up < 24 * 3600


# ---- the command ------------------------------------------------------------------------------


def test_bench_command_prints_vllm_lines_and_writes_json(tmp_path, monkeypatch):
    from llmc.cli.bench import bench

    class FakeBundle:
        manifest = {"target": {"name": "cpu", "backend": "cpu"}, "files": {}, **MANIFEST}

        @classmethod
        def open(cls, path, verify):
            assert verify == "full"
            return cls()

        def plans(self):
            return sorted(PLANS)

        def plan(self, name):
            return PLANS[name]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    backend = ContextBackend()
    monkeypatch.setattr("llmc.artifacts.Bundle", FakeBundle)
    monkeypatch.setattr(b, "open_backend", lambda bundle, device, util: backend)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench, ["x.llmc", "--batch-size", "2", "--input-len", "5", "--output-len", "4",
                                        "--num-iters-warmup", "1", "--num-iters", "2", "--output-json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Avg latency: ") and lines[0].endswith(" seconds")
    assert [line.split("%")[0] for line in lines[1:7]] == ["10", "25", "50", "75", "90", "99"]
    assert "n/a" in result.output and lines[-1].startswith("Load time: ")
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and len(report["latency"]["latencies"]) == 2
    assert report["load"]["backend_open_s"] == 0.5


# ---- on a real bundle, through the cpu backend ---------------------------------------------------


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from checkpoints import make_checkpoint
    from llmc.aot.build import BuildConfig, build

    root = tmp_path_factory.mktemp("bench-cpu")
    make_checkpoint("qwen3", root / "hf")
    build(root / "hf", root / "bundle", BuildConfig(target="cpu", dtype="float32", max_batch_size=4, max_seq_len=96,
                                                    max_num_batched_tokens=32))
    return root


def test_fixed_batch_on_the_cpu_backend_matches_transformers(cpu_bundle):
    import torch
    import transformers
    from llmc.artifacts import Bundle

    prompt = [3, 17, 45, 9, 120, 77, 5, 201, 64, 33, 18]
    prompts = [prompt, prompt[3:] + [11, 12, 13], [5] * 11, prompt * 3]  # the last spans two prefill steps
    with Bundle.open(cpu_bundle / "bundle") as bundle:
        backend = b.open_backend(bundle, "cpu")
        plans = {name: bundle.plan(name) for name in bundle.plans()}
        got = b.FixedBatch(backend, plans, bundle.manifest, prompts, 12).generate()["outputs"]
        backend.close()
    hf = transformers.AutoModelForCausalLM.from_pretrained(cpu_bundle / "hf", dtype=torch.float32)
    never = hf.config.vocab_size + 1
    for p, tokens in zip(prompts, got):
        with torch.no_grad():
            want = hf.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=never, pad_token_id=0)
        assert tokens == want[0, len(p):].tolist()


def test_bench_command_on_the_cpu_backend(cpu_bundle, tmp_path):
    from llmc.cli.bench import bench

    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench, [str(cpu_bundle / "bundle"), "--batch-size", "3", "--input-len", "20",
                                        "--output-len", "5", "--num-iters-warmup", "1", "--num-iters", "2",
                                        "--output-json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["latency"]["decode_vs_floor"] is None
    assert report["latency"]["decode_steps_timed"] == 2 * 4 and report["load"]["process_to_ready_s"] > 0


def test_bench_throughput_mode_on_the_cpu_backend(cpu_bundle, tmp_path):
    from llmc.cli.bench import bench

    out = tmp_path / "t.json"
    result = CliRunner().invoke(bench, [str(cpu_bundle / "bundle"), "--throughput", "--num-prompts", "6",
                                        "--input-len", "10", "--output-len", "4", "--max-concurrency", "2",
                                        "--output-json", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Throughput: ") and "requests/s" in result.output
    assert "Total num output tokens:  24" in result.output and "at most 2 at once" in result.output
    t = json.loads(out.read_text())["throughput"]
    assert t["num_prompts"] == 6 and t["output_tokens"] == 6 * 4 and t["requests_per_s"] > 0
