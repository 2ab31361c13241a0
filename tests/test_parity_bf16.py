"""bfloat16 builds of the newer families against transformers in float32, with transformers' own bfloat16 run as
the yardstick: top-1 agreement and error no worse than it (tiny random models have near-ties, and an MoE router
near a tie may pick another expert in bfloat16, so fixed thresholds alone would test the model, not the build).
"""

import numpy as np
import pytest
import torch

from checkpoints import make_checkpoint
from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine

PROMPTS = [[3, 17, 45, 9, 120, 77, 5, 201, 64, 33, 18] * 2, [(11 * i) % 200 + 3 for i in range(17)]]
MIN_AGREE, MAX_REL = 0.5, 0.1  # always good enough, whatever transformers' bfloat16 run does


@pytest.fixture(scope="module", params=["qwen3_moe", "mixtral", "gemma2", "gemma3", "phi3"])
def family(request, tmp_path_factory):
    import transformers

    root = tmp_path_factory.mktemp(request.param)
    model_dir = make_checkpoint(request.param, root / "hf")
    build(model_dir, root / "bundle", BuildConfig(target="cpu", dtype="bfloat16", max_batch_size=4, max_seq_len=64,
                                                  max_num_batched_tokens=32))
    def load(path, **kwargs):  # eager attention: the reference semantics (sdpa drops Gemma-2's soft-cap in some versions)
        return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kwargs)

    return request.param, Engine.load(root / "bundle"), load(model_dir), load(model_dir, dtype=torch.bfloat16)


def test_bf16_top1_agrees_with_transformers(family):
    name, engine, hf, hf_bf16 = family
    for prompt in PROMPTS:
        got = engine.score(prompt)
        with torch.no_grad():
            want = hf(torch.tensor([prompt])).logits[0].float().numpy()
            peer = hf_bf16(torch.tensor([prompt])).logits[0].float().numpy()
        rel, peer_rel = (np.abs(x - want).max() / np.abs(want).max() for x in (got, peer))
        assert rel <= max(MAX_REL, 1.5 * peer_rel), f"{name}: relative error {rel:.3f}, transformers' bf16 {peer_rel:.3f}"
        # bf16 rounding may swap near-tied tokens: the top token must agree where the float32 reference's
        # lead over its runner-up is more than twice the error transformers' own bf16 makes
        ordered = np.sort(want, axis=-1)
        clear = ordered[:, -1] - ordered[:, -2] > 2 * np.abs(peer - want).max()
        differ = clear & (got.argmax(-1) != want.argmax(-1))
        assert not differ.any(), f"{name}: top-1 differs at {int(differ.sum())} of {int(clear.sum())} clear positions"
        agree = int((got.argmax(-1) == want.argmax(-1)).sum())
        assert agree >= MIN_AGREE * len(prompt), f"{name}: top-1 agrees at only {agree} of {len(prompt)} positions"
