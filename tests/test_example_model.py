"""llmc on the embedded example (examples/zen-llama, a tiny Llama that memorised the Zen of Python):
the bundle it builds holds the fused weights, and greedy decoding recites the training text."""

import codecs
import json
from pathlib import Path

import pytest

from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine, SamplingParams

ZEN_LLAMA = Path(__file__).parents[1] / "examples" / "zen-llama"


def zen_text() -> str:
    """What examples/train_zen.py trains on: `import this`, without printing it."""
    import this

    return codecs.decode(this.s, "rot13")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("zen") / "zen.llmc"
    build(ZEN_LLAMA, out, BuildConfig(target="cpu", max_seq_len=512))
    return out


def test_greedy_decoding_recites_the_zen_and_stops(bundle):
    text = zen_text()
    prompt = "Beautiful is"
    engine = Engine.load(bundle)
    (completion,) = engine.generate([prompt], SamplingParams(max_tokens=400, temperature=0.0))
    assert completion.finish_reason == "stop", completion
    assert (prompt + completion.text).strip() == text[text.index(prompt):].strip()


def test_bundle_holds_merged_weights_only(bundle):
    names = set()
    for shard in (bundle / "weights").glob("*.safetensors"):
        data = shard.read_bytes()
        names |= set(json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])) - {"__metadata__"}
    layers = json.loads((ZEN_LLAMA / "config.json").read_text())["num_hidden_layers"]
    for i in range(layers):
        assert {f"layers.{i}.qkv_proj.weight", f"layers.{i}.gate_up_proj.weight"} <= names
        dropped = {f"layers.{i}.{p}_proj.weight" for p in ("q", "k", "v", "gate", "up")}
        assert not dropped & names, f"pre-merge weights written to the bundle: {sorted(dropped & names)}"
