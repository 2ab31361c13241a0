"""The bundle self-test: a prompt that exercises the model, and ties that are not disagreements."""

import json
from types import SimpleNamespace

import numpy as np

from llmc.aot.selftest import selftest_ids
from llmc.runtime.selftest import run_selftest


def _word_tokenizer(tmp_path, words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return {"tokenizer.json": path}


def test_a_prompt_of_unknown_words_falls_back_to_spread_ids(tmp_path):
    # every word unknown: [0, 0, 0, 0], the padding row of many checkpoints, whose logits all tie
    tokenizer = _word_tokenizer(tmp_path, ["<unk>", "a", "b"])
    ids = selftest_ids(tokenizer, SimpleNamespace(vocab_size=211), "the quick brown fox")
    assert len(set(ids)) == len(ids) == 8


def test_a_prompt_the_tokenizer_knows_is_used(tmp_path):
    words = ["<unk>", "one", "two", "three", "four", "five"]
    tokenizer = _word_tokenizer(tmp_path, words)
    assert selftest_ids(tokenizer, SimpleNamespace(vocab_size=6), "one two three four five") == [1, 2, 3, 4, 5]


class _Scored:
    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype=np.float32)

    def score(self, ids):
        return self.logits


def _reference(top_ids, top_logits):
    return json.loads(json.dumps({"prompt_token_ids": [1, 2], "top_token_ids": top_ids, "top_logits": top_logits,
                                  "dtype": "float32"}))


def test_tied_top_logits_agree_whichever_token_the_reference_named():
    engine = _Scored([[0.0, 0.0, 0.0], [1.0, 3.0, 3.0]])
    result = run_selftest(engine, _reference([[2, 0], [2, 1]], [[0.0, 0.0], [3.0, 3.0]]))
    assert result.passed and result.top1_agreement == 1.0


def test_a_different_top_token_is_a_disagreement():
    engine = _Scored([[0.0, 1.0, 0.5], [1.0, 3.0, 2.0]])
    result = run_selftest(engine, _reference([[2, 1], [1, 2]], [[1.0, 0.5], [3.0, 2.0]]))
    assert result.top1_agreement == 0.5 and not result.passed
