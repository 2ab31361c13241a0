"""The output processor alone: text deltas, stop strings, finished requests forgotten."""

from llmc.runtime.output_processor import OutputProcessor
from llmc.runtime.sampling_params import SamplingParams
from llmc.runtime.sequence import Sequence, SequenceStatus

WORDS = {1: "Hello", 2: ",", 3: " wor", 4: "ld", 5: "!", 6: " END", 7: " more"}


def decode(ids):
    return "".join(WORDS.get(i, "?") for i in ids)


def make(stop=()):
    seq = Sequence(0, "r", [1], SamplingParams(stop=stop))
    proc = OutputProcessor(decode)
    proc.add(seq)
    return seq, proc


def feed(seq, proc, tokens):
    texts = []
    for t in tokens:
        seq.output_token_ids.append(t)
        stopped = proc.append(seq, t)
        if stopped:
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, "stop"
        texts.append(proc.output(seq, [t]).new_text)
        if stopped:
            break
    return texts


def test_text_deltas_add_up_to_the_text():
    seq, proc = make()
    texts = feed(seq, proc, [2, 3, 4, 5])
    seq.status = SequenceStatus.FINISHED
    assert "".join(texts) + proc.output(seq, []).new_text == ", world!"


def test_a_stop_string_ends_the_text_before_it():
    seq, proc = make(stop=(" END",))
    texts = feed(seq, proc, [3, 4, 6, 7])
    assert "".join(texts) == " world" and seq.finish_reason == "stop" and len(texts) == 3


def test_a_finished_request_is_forgotten():
    seq, proc = make()
    seq.status = SequenceStatus.FINISHED
    out = proc.output(seq, [])
    assert out.finished and proc._text == {}
