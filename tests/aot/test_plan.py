"""Planning: buckets, arena placement without overlaps, scratch buffers owned by their node."""

from checkpoints import make_checkpoint
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
from llmc.aot.plan import ALIGN, buckets


def _planned(tmp_path, target="sm90"):
    hf = make_checkpoint("qwen3", tmp_path / "hf")
    config = BuildConfig(target=target, dtype="bfloat16", max_seq_len=64, max_batch_size=4, max_num_batched_tokens=32)
    return build(hf, tmp_path / "out", config, stop_after="plan").plans


def test_buckets():
    names = [b.name for b in buckets(8, 100)]
    assert names == ["decode_b1", "decode_b2", "decode_b4", "decode_b8", "prefill_t16", "prefill_t32",
                     "prefill_t64", "prefill_t100"]
    assert all(b.num_logits == min(b.num_tokens, 8) for b in buckets(8, 100) if b.kind == "prefill")


def test_arena_never_overlaps_live_buffers_and_scratch_belongs_to_its_node(tmp_path):
    plans = _planned(tmp_path)
    for name, plan in plans.items():
        buffers, steps = plan["buffers"], plan["steps"]
        index = {}  # buffer -> (first step, last step)
        for i, step in enumerate(steps):
            used = [r["buffer"] for launch in step.get("launches", []) for r in launch["params"] if "buffer" in r]
            used += step["outputs"]
            used += [r["buffer"] for r in step["args"] if isinstance(r, dict) and "buffer" in r]
            for b in used:
                first, last = index.get(b, (i, i))
                index[b] = (min(first, i), max(last, i))
                if ".scratch" in b:
                    assert b.startswith(step["node"] + "."), f"{name}: step {step['node']} uses {b}"
        for b, spec in buffers.items():
            assert spec["offset"] % ALIGN == 0
        live = sorted(index)
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                (fa, la), (fb, lb) = index[a], index[b]
                if la < fb or lb < fa:
                    continue
                sa, sb = buffers[a], buffers[b]
                end_a = sa["offset"] + _nbytes(sa)
                end_b = sb["offset"] + _nbytes(sb)
                assert end_a <= sb["offset"] or end_b <= sa["offset"], f"{name}: {a} and {b} overlap while both live"
        assert any(".scratch" in b for b in buffers) == (plan["num_tokens"] > 1)


def _nbytes(spec) -> int:
    size = {"bfloat16": 2, "float16": 2, "float32": 4, "int32": 4, "int64": 8}[spec["dtype"]]
    n = 1
    for d in spec["shape"]:
        n *= d
    return n * size
