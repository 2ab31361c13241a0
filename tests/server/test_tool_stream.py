"""ToolCallSplitter: the same content and calls however the text is cut into pieces."""

import random

import pytest

from llmc.runtime.server.tool_stream import ToolCallSplitter

CALL = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
TEXTS = {
    "calls only": f"\n{CALL}\n{CALL}\n",
    "text then calls": f"Sure.\n\n{CALL}\n",
    "text around a call": f"A\n{CALL}\n\nB ",
    "no calls": "  plain <tool text\n",
    "a block that is not a call": "x <tool_call>nope</tool_call> y",
    "unfinished call": f"ok {CALL[:30]}",
}


def split(pieces):
    splitter, events = ToolCallSplitter(), []
    for piece in pieces:
        events += splitter.feed(piece)
    events += splitter.finish()
    content = "".join(e for e in events if isinstance(e, str))
    return content, [e for e in events if not isinstance(e, str)]


@pytest.mark.parametrize("name", TEXTS)
def test_any_cut_gives_the_whole_result(name):
    text = TEXTS[name]
    whole = split([text])
    rng = random.Random(0)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
        assert split([text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]) == whole
    assert split(list(text)) == whole


def test_what_whole_results_are():
    assert split([TEXTS["calls only"]]) == ("", [split([CALL])[1][0]] * 2)
    assert split([TEXTS["text around a call"]])[0] == "A\n\n\nB"
    assert split([TEXTS["no calls"]]) == (TEXTS["no calls"], [])
    assert split([TEXTS["a block that is not a call"]]) == (TEXTS["a block that is not a call"], [])
    assert split([TEXTS["unfinished call"]]) == (TEXTS["unfinished call"], [])
