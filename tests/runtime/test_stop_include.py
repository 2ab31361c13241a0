"""include_stop_str_in_output: the text ends just after the first stop string, streamed without holding back;
the stop token's own text comes only with it."""

import pytest

from llmc.runtime.output_processor import OutputProcessor
from llmc.runtime.sampling_params import SamplingParams
from llmc.runtime.sequence import Sequence, SequenceStatus
from llmc.runtime.stop import StopChecker

WORDS = {1: "Hello", 2: ",", 3: " world", 4: "!", 5: " ##", 6: "#", 7: " end", 8: "\n", 9: "x\n\ny"}


def decode_words(ids):
    return "".join(WORDS[i] for i in ids)


def feed(checker, ids):
    stream = []
    for k, token_id in enumerate(ids):
        stopped = checker.append(token_id)
        stream.append(checker.delta(finished=stopped or k == len(ids) - 1))
        if stopped:
            break
    return stream


def test_the_stop_string_ends_the_text():
    checker = StopChecker(decode_words, stop=["!"], include_stop=True)
    assert feed(checker, [1, 2, 3, 4, 3]) == ["Hello", ",", " world", "!"]
    assert checker.stopped and checker.text == "Hello, world!"


def test_a_stop_across_tokens_is_kept_whole_and_nothing_is_held_back():
    checker = StopChecker(decode_words, stop=["###"], include_stop=True)
    assert feed(checker, [1, 3, 5, 6, 7]) == ["Hello", " world", " ##", "#"]
    assert checker.text == "Hello world ###"


def test_text_after_the_stop_inside_one_token_is_cut():
    checker = StopChecker(decode_words, stop=["\n"], include_stop=True)
    assert "".join(feed(checker, [1, 9, 7])) == "Hellox\n"


def test_the_earliest_stop_wins():
    checker = StopChecker(decode_words, stop=["y", "\n"], include_stop=True)
    assert "".join(feed(checker, [9])) == "x\n"


@pytest.mark.parametrize("include, text", [(False, "Hello,"), (True, "Hello,!")])
def test_the_stop_token_adds_text_only_when_included(include, text):
    seq = Sequence(0, "r", [1], SamplingParams(stop_token_ids=[4], include_stop_str_in_output=include))
    proc = OutputProcessor(decode_words)
    proc.add(seq)
    texts = []
    for token in (2, 4):
        seq.output_token_ids.append(token)
        if token == 4:  # the scheduler finishes the sequence on its stop token before its text
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, "stop"
        assert not proc.append(seq, token)
        texts.append(proc.output(seq, [token]).new_text)
    assert "Hello" + "".join(texts) == text
