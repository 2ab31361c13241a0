"""FP8 cpu bundles against transformers run on the *dequantized* weights in float32.

Both checkpoint layouts (block-wise `fp8`, compressed-tensors per channel and per tensor) and
`--quantize fp8` of a bf16 checkpoint, on two families. With the weights equal, the one
difference left is llmc's dynamic activation quantization: every input of a linear is rounded to
e4m3 (3 mantissa bits: within 2^-4 of its value, about 2^-4/sqrt(3) = 3.6% RMS), so each linear's
output moves by a few percent of its size (the rounding errors of K terms add like a random walk,
as the terms do). Seven such linears per layer, two layers and a random-weight model that
amplifies what it is given: the logits stay within MAX_REL of the largest logit (measured: 4-9%),
and the greedy next token agrees at most positions (measured: 67-100% per prompt, 82% overall).
That the activation rounding is the whole difference is checked too: with the same rounding hooked
into transformers' linears, the logits agree within 1e-4.
"""

import numpy as np
import pytest
import torch

from fp8_checkpoints import make_fp8_checkpoint, quantize_rows, dequantize, LINEAR, reference_model
from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine

MAX_REL = 0.2
MIN_AGREE = 0.7
PROMPTS = [[3, 17, 45, 9, 120, 77, 5, 201, 64, 33, 18] * 2, [7, 7, 8, 150, 99, 4, 31, 60, 12, 200, 3, 5, 88],
           [100, 101, 102, 103, 11, 22, 33, 44, 55, 66, 77, 88, 99, 110, 121]]
CASES = [("llama", "block", 128), ("qwen3", "block", 32), ("llama", "channel", 0), ("qwen3", "tensor", 0),
         ("llama", "quantize", 0), ("qwen3", "quantize", 0)]


def options(**kw):
    return BuildConfig(target="cpu", dtype="float32", max_seq_len=96, max_batch_size=4, max_num_batched_tokens=32, **kw)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}{c[2] or ''}")
def case(request, tmp_path_factory):
    import safetensors.torch

    family, layout, block = request.param
    root = tmp_path_factory.mktemp(f"{family}-{layout}")
    if layout == "quantize":
        src, _, _ = make_fp8_checkpoint(family, root, "channel")
        tensors = safetensors.torch.load_file(str(src / "model.safetensors"))
        deq = {name: dequantize(*quantize_rows(w)) for name, w in tensors.items() if LINEAR.fullmatch(name)}
        build(src, root / "bundle", options(quantize="fp8"), use_cache=False)
    else:
        src, model_dir, deq = make_fp8_checkpoint(family, root, layout, block or 128)
        build(model_dir, root / "bundle", options(), use_cache=False)
    return request.param, Engine.load(root / "bundle"), reference_model(src, deq), src, deq


def fake_quantize(x: torch.Tensor, group: int) -> torch.Tensor:
    """x rounded as llmc's activation quantizer declares: e4m3 per token (group 0) or per 1 x group."""
    rows = x.reshape(-1, x.shape[-1]).float()
    out = torch.empty_like(rows)
    step = group or rows.shape[1]
    for j in range(0, rows.shape[1], step):
        part = rows[:, j:j + step]
        scale = (part.abs().amax(1, keepdim=True) / 448).clamp_min(1e-12)
        out[:, j:j + step] = (part / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale
    return out.reshape(x.shape).to(x.dtype)


def test_logits_match_dequantized_transformers(case):
    name, engine, hf, _, _ = case
    agree, total = 0, 0
    for prompt in PROMPTS:
        got = engine.score(prompt)
        with torch.no_grad():
            want = hf(torch.tensor([prompt])).logits[0].float().numpy()
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < MAX_REL, f"{name}: logits differ from dequantized transformers by {rel:.3f} (relative), allowed {MAX_REL}"
        agree, total = agree + int((got.argmax(-1) == want.argmax(-1)).sum()), total + len(prompt)
    assert agree / total >= MIN_AGREE, f"{name}: greedy next tokens agree at {agree}/{total} positions, need {MIN_AGREE:.0%}"
    assert engine.bundle.manifest["quantization"]["weights"] == "fp8_e4m3"


def test_activation_rounding_is_the_whole_difference(case):
    (family, layout, block), engine, _, src, deq = case
    hf = reference_model(src, deq)
    group = block if layout == "block" else 0
    for name, module in hf.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            module.register_forward_pre_hook(lambda m, args: (fake_quantize(args[0], group),))
    prompt = PROMPTS[0]
    got = engine.score(prompt)
    with torch.no_grad():
        want = hf(torch.tensor([prompt])).logits[0].float().numpy()
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, f"{family}-{layout}: logits differ from transformers with e4m3 activations by {rel:.2e}"
