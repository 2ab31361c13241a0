"""The embedded example checkpoint (examples/zen-llama) loads in transformers and recites the Zen."""

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer  # noqa: E402

ZEN_LLAMA = Path(__file__).parents[1] / "examples" / "zen-llama"


def test_greedy_continuation_recites_the_zen():
    model = transformers.AutoModelForCausalLM.from_pretrained(ZEN_LLAMA).eval()
    tokenizer = Tokenizer.from_file(str(ZEN_LLAMA / "tokenizer.json"))
    prompt = torch.tensor([tokenizer.encode("Beautiful is").ids])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, prompt.shape[1] :].tolist())
    assert text.startswith(" better than ugly"), text
