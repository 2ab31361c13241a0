"""llmc's cpu bundles against Hugging Face transformers, for every supported family.

Random-weight checkpoints from real configs (tests/checkpoints.py); float32 logits at every
position within 1e-4 relative error, and 32 greedy tokens identical to `generate()`.
"""

import numpy as np
import pytest
import torch

from checkpoints import FAMILIES, make_checkpoint
from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine, SamplingParams

PROMPT = [3, 17, 45, 9, 120, 77, 5, 201, 64, 33, 18]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    import transformers

    root = tmp_path_factory.mktemp(request.param)
    model_dir = make_checkpoint(request.param, root / "hf")
    out = root / "bundle"
    build(model_dir, out, BuildConfig(target="cpu", dtype="float32", max_batch_size=8, max_seq_len=96, max_num_batched_tokens=32))
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return request.param, Engine.load(out), hf


def test_logits_match_transformers(family):
    name, engine, hf = family
    prompt = PROMPT * 2  # 22 tokens: crosses KV blocks and prefill chunks
    got = engine.score(prompt)
    with torch.no_grad():
        want = hf(torch.tensor([prompt])).logits[0].float().numpy()
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, f"{name}: logits differ from transformers by {rel:.2e} (relative), allowed 1e-4"


def test_greedy_generation_matches_transformers(family):
    name, engine, hf = family
    (completion,) = engine.generate([PROMPT], SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True))
    never = hf.config.vocab_size + 1  # an EOS id no step can produce: like ignore_eos
    with torch.no_grad():
        want = hf.generate(torch.tensor([PROMPT]), max_new_tokens=32, do_sample=False, eos_token_id=never, pad_token_id=0)
    want = want[0, len(PROMPT):]
    assert completion.token_ids == want.tolist(), f"{name}: greedy tokens differ from transformers"
    assert len(set(completion.token_ids)) > 3, "degenerate test: the model repeats one token"
