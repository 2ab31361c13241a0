"""FP8 bundles with tensor parallelism: N gloo processes run the shared plans natively on their shards.

Block-wise weights: each rank's K/N input columns of o/down are whole blocks, so its activation groups are
TP=1's and the logits equal the TP=1 FP8 bundle's within float32 rounding (measured 3e-7 relative).
Per-token activations (`--quantize fp8`, compressed-tensors channel): a row-parallel layer's rank quantizes
its own K/N columns of each token, as vLLM does, not the whole row. That rounds differently from TP=1, and
the random-weight models amplify it: logits within MAX_REL of the largest TP=1 logit (measured 4-10% at 2
and 4 ranks), greedy tokens equal wherever TP=1's top-2 margin is over twice the difference. That this
rounding is the whole difference is checked exactly: transformers on the dequantized weights, its linears'
inputs rounded per token, o/down's per 1 x K/N group, gives the TP logits within 1e-5 (measured 4e-7); the
bundle's self-test reference rounds the same way, so `llmc verify --run` passes on the ranks.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from fp8_checkpoints import LINEAR, dequantize, make_fp8_checkpoint, quantize_rows, reference_model
from llmc.aot.build import BuildConfig, build
from llmc.cli.main import main
from test_fp8_parity import fake_quantize
from test_tp_numerics import PROMPT, _free_port, _rank_main, _steps
from tp_checkpoints import BUILD, VOCAB

MAX_REL = 0.25
CASES = [("llama", "quantize", 0, 2), ("qwen3", "quantize", 0, 2), ("llama", "channel", 0, 4),
         ("llama", "block", 16, 2), ("qwen3", "block", 16, 2)]


def _bundle(model, out, size: int, **kw):
    build(model, out, BuildConfig(target="cpu", dtype="float32", tensor_parallel_size=size, **BUILD, **kw), use_cache=False)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}{c[2] or ''}-tp{c[3]}")
def case(request, tmp_path_factory):
    """(case, TP=1 steps, rank 0's TP steps, 16-bit checkpoint, dequantized linears, TP bundle)."""
    import safetensors.torch
    import torch.multiprocessing as mp

    family, layout, block, size = request.param
    root = tmp_path_factory.mktemp(f"{family}-{layout}")
    src, model, deq = make_fp8_checkpoint(family, root, "channel" if layout == "quantize" else layout, block or 128,
                                          vocab_size=VOCAB)
    kw = {}
    if layout == "quantize":
        model, kw = src, dict(quantize="fp8")
        tensors = safetensors.torch.load_file(str(src / "model.safetensors"))
        deq = {name: dequantize(*quantize_rows(w)) for name, w in tensors.items() if LINEAR.fullmatch(name)}
    _bundle(model, root / "tp1", 1, **kw)
    _bundle(model, root / "tp", size, **kw)
    expected = _steps(root / "tp1", "weights/model.safetensors")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(size, _free_port(), root / "tp", int(expected[0]["next_tokens"][1]), results),
                 nprocs=size, join=True)
        results = dict(results)
    assert all(results[r] == results[0] for r in range(size)), "the ranks' logits differ"
    return request.param, expected, results[0], src, deq, root / "tp"


def test_tp_logits_match_the_single_rank_fp8_bundle(case):
    (family, layout, _, size), expected, got, _, _, _ = case
    bound = 1e-5 if layout == "block" else MAX_REL
    for step, (want, have) in enumerate(zip(expected, got)):
        logits = torch.tensor(have["logits"])
        diff = (logits - want["logits"]).abs().max()
        rel = float(diff / want["logits"].abs().max())
        assert rel <= bound, f"{family}-{layout} tp{size} step {step}: logits differ by {rel:.2e} (relative), allowed {bound}"
        top2 = want["logits"].topk(2, -1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * diff  # no difference this size can change the argmax here
        tokens, want_tokens = torch.tensor(have["next_tokens"]), want["next_tokens"]
        assert torch.equal(tokens[clear], want_tokens[clear]), f"{family}-{layout} tp{size} step {step}: greedy tokens differ"
        if layout == "block":
            assert torch.equal(tokens, want_tokens)


def test_per_rank_activation_rounding_is_the_whole_difference(case):
    (family, layout, block, size), _, got, src, deq, _ = case
    hf = reference_model(src, deq)
    for name, module in hf.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            row_parallel = name.endswith(("o_proj", "down_proj"))
            group = block or (module.in_features // size if row_parallel else 0)  # a rank's K/N columns of a token
            module.register_forward_pre_hook(lambda m, args, group=group: (fake_quantize(args[0], group),))
    with torch.no_grad():
        want = hf(torch.tensor([PROMPT])).logits[0, [3, len(PROMPT) - 1]].float()
    rel = float((torch.tensor(got[0]["logits"]) - want).abs().max() / want.abs().max())
    assert rel < 1e-5, f"{family}-{layout} tp{size}: logits differ from per-rank-rounded transformers by {rel:.2e}"


def test_the_ranks_pass_the_bundles_self_test(case):
    # the self-test's reference is the whole model rounding activations per rank (per_rank_activations)
    name, *_, bundle = case
    result = CliRunner().invoke(main, ["verify", "--run", "--device", "cpu", str(bundle)], catch_exceptions=False)
    assert result.exit_code == 0 and "selftest passed" in result.output, f"{name}: {result.output}"


def test_blocks_that_do_not_split_across_ranks_are_one_line(tmp_path):
    _, model, _ = make_fp8_checkpoint("llama", tmp_path, "block", 32, vocab_size=VOCAB)
    out = tmp_path / "x.llmc"
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(out), "--max-seq-len", "32", "-tp", "2"],
                                catch_exceptions=False)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: config.json: "), result.output
    assert all(w in lines[0] for w in ("intermediate_size 96", "--tensor-parallel-size 2", "weight_block_size 32")), lines[0]
    assert not out.exists() and not list(tmp_path.glob("x.llmc.tmp-*"))
