from llmc.runtime.stop import StopChecker

WORDS = {1: "Hello", 2: ",", 3: " world", 4: "!", 5: " ##", 6: "#", 7: " end", 8: "\n", 9: "\n\n"}


def decode_words(ids):
    return "".join(WORDS[i] for i in ids)


def feed(checker, ids, finished_at_end=True):
    stream = []
    for k, token_id in enumerate(ids):
        stopped = checker.append(token_id)
        stream.append(checker.delta(finished=stopped or (finished_at_end and k == len(ids) - 1)))
        if stopped:
            break
    return stream


def test_no_stop_strings_streams_every_token():
    checker = StopChecker(decode_words)
    assert feed(checker, [1, 2, 3, 4]) == ["Hello", ",", " world", "!"]
    assert checker.text == "Hello, world!" and not checker.stopped


def test_text_is_truncated_before_the_stop_string():
    checker = StopChecker(decode_words, stop=["!"])
    assert feed(checker, [1, 2, 3, 4, 3]) == ["Hello", ",", " world", ""]
    assert checker.stopped and checker.text == "Hello, world"


def test_stop_string_spanning_several_tokens():
    checker = StopChecker(decode_words, stop=["###"])
    stream = feed(checker, [1, 3, 5, 6, 7])
    assert checker.stopped and checker.text == "Hello world "
    assert "".join(stream) == "Hello world " and len(stream) == 4


def test_stop_string_inside_one_token():
    checker = StopChecker(decode_words, stop=["\n"])
    feed(checker, [1, 9, 3])
    assert checker.stopped and checker.text == "Hello"


def test_earliest_of_several_stop_strings_wins():
    checker = StopChecker(decode_words, stop=[" end", "world"])
    feed(checker, [1, 3, 7])
    assert checker.text == "Hello "


def test_a_possible_stop_prefix_is_held_back_until_it_is_not_one():
    checker = StopChecker(decode_words, stop=["##!"])
    assert checker.append(1) is False and checker.delta() == "Hello"[:-2]
    checker.append(5)  # "Hello ##": " ##" could start the stop string
    assert checker.delta() == "lo "
    checker.append(6)  # "Hello ###"
    assert checker.delta() == "#"
    assert checker.append(4) is True  # "Hello ###!" holds "##!"
    assert checker.delta(finished=True) == "" and checker.text == "Hello #"


def test_finished_flushes_the_held_back_tail():
    checker = StopChecker(decode_words, stop=["never here"])
    assert "".join(feed(checker, [1, 2, 3])) == "Hello, world"


BYTES = {10: b"caf", 11: b"\xc3", 12: b"\xa9", 13: b" ok", 14: b"\xe2\x82", 15: b"\xac"}


def decode_bytes(ids):
    return b"".join(BYTES[i] for i in ids).decode("utf-8", errors="replace")


def test_characters_split_across_tokens_are_not_streamed_half_done():
    checker = StopChecker(decode_bytes)
    assert feed(checker, [10, 11, 12, 13, 14, 15]) == ["caf", "", "é", " ok", "", "€"]
    assert checker.text == "café ok€"


def test_stop_string_made_of_a_split_character():
    checker = StopChecker(decode_bytes, stop=["é"])
    feed(checker, [10, 11, 12, 13])
    assert checker.stopped and checker.text == "caf"


def test_an_incomplete_character_at_the_end_is_flushed_when_finished():
    checker = StopChecker(decode_bytes)
    assert feed(checker, [10, 11]) == ["caf", "\ufffd"]


SPACES = {1: "▁Hello", 2: "▁world", 3: "!"}


def decode_sentencepiece(ids):
    # like sentencepiece: a leading space at the start of the decoded text is dropped
    return "".join(SPACES[i] for i in ids).replace("▁", " ").removeprefix(" ")


def test_prompt_context_keeps_the_first_output_tokens_leading_space():
    checker = StopChecker(decode_sentencepiece, prompt_token_ids=[1])
    assert feed(checker, [2, 3]) == [" world", "!"]
    without_context = StopChecker(decode_sentencepiece)
    without_context.append(2)
    assert without_context.text == "world"
