"""Structured output through llguidance: whatever the logits, masked sampling gives text that matches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llguidance")

from llmc.errors import UserError  # noqa: E402
from llmc.runtime.structured_output import Constraint, GrammarCompiler, allowed  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "examples" / "zen-llama" / "tokenizer.json"
VOCAB, EOS = 384, 1
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                           "tag": {"enum": ["a", "b"]}}, "required": ["n", "ok", "tag"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def compiler():
    return GrammarCompiler(TOKENIZER.read_text(), VOCAB, (EOS,))


def sample_constrained(compiler, constraint, seed, max_tokens=400):
    """Random logits, biased towards closing braces so that free-form JSON ends."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    closing = np.array(["}" in tokenizer.decode([t]) for t in range(VOCAB)])
    rng = np.random.default_rng(seed)
    matcher = compiler.matcher(constraint)
    row = np.zeros(matcher.words, np.int32)
    tokens = []
    for _ in range(max_tokens):
        matcher.fill_bitmask(row)
        logits = rng.normal(size=VOCAB) * 3 + 4 * closing
        logits[~allowed(row, VOCAB)] = -np.inf
        probs = np.exp(logits - logits.max())
        token = int(rng.choice(VOCAB, p=probs / probs.sum()))
        assert matcher.accept(token), matcher.error
        if token == EOS:
            break
        tokens.append(token)
    else:
        pytest.fail(f"seed {seed}: no end of sequence in {max_tokens} tokens")
    return tokenizer.decode(tokens)


@pytest.mark.parametrize("seed", range(20))
def test_json_schema_output_always_validates(compiler, seed):
    value = json.loads(sample_constrained(compiler, Constraint("json_schema", SCHEMA), seed))
    assert set(value) == {"n", "ok", "tag"}
    assert isinstance(value["n"], int) and isinstance(value["ok"], bool) and value["tag"] in ("a", "b")


@pytest.mark.parametrize("seed", range(5))
def test_json_object_regex_and_choice(compiler, seed):
    assert isinstance(json.loads(sample_constrained(compiler, Constraint("json_object"), seed)), dict)
    assert re.fullmatch(r"[0-9]{3}-[a-c]+", sample_constrained(compiler, Constraint("regex", r"[0-9]{3}-[a-c]+"), seed))
    assert sample_constrained(compiler, Constraint("choice", ["better", "worse"]), seed) in ("better", "worse")


def test_the_mask_allows_exactly_the_constraint(compiler):
    matcher = compiler.matcher(Constraint("choice", ["y", "n"]))
    row = np.zeros(matcher.words, np.int32)
    matcher.fill_bitmask(row)
    assert allowed(row, VOCAB).sum() == 2
    assert not matcher.accept(EOS)  # nothing chosen yet: end of sequence breaks it


@pytest.mark.parametrize("kind, value, words", [
    ("xml", None, "not supported"),
    ("json_schema", "not a dict", "must be dict"),
    ("choice", [], "non-empty"),
    ("regex", "(unclosed", "regex"),
])
def test_bad_constraints_are_user_errors(compiler, kind, value, words):
    with pytest.raises(UserError, match=words):
        compiler.matcher(Constraint(kind, value))


def test_a_constraint_past_llguidances_limits_is_refused_not_compiled(compiler):
    """llguidance's parser limits (its defaults) bound what one request may make the server compile:
    a schema past them is a user error naming the field, raised before any matcher exists."""
    wide = {"type": "object", "properties": {f"k{i}": {"type": "array", "items": {"type": "object", "properties": {
        f"j{j}": {"type": "string", "pattern": "[a-z]{3,900}"} for j in range(30)}}} for i in range(60)}}
    with pytest.raises(UserError, match="json_schema: .*too large"):
        compiler.matcher(Constraint("json_schema", {"anyOf": [wide] * 50}))
