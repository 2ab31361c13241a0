"""Hermes / Qwen tool calls: validation, the constraint for required and named choices, parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmc.errors import UserError
from llmc.runtime.server.tool_calls import call_constraint, check_tools, parse_tool_calls, template_format

HERMES = "{% for t in tools %}{{ t | tojson }}{% endfor %} <tool_call>...</tool_call> {{ messages }}"
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Oslo", "Rome"]}, "days": {"type": "integer"}},
    "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}


def test_parse_separates_calls_from_text():
    text = ('Let me look.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo", "days": 2}}\n</tool_call>\n'
            '<tool_call>{"name": "time", "arguments": {}}</tool_call>')
    content, calls = parse_tool_calls(text)
    assert content == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("weather", {"city": "Oslo", "days": 2}), ("time", {})]
    assert calls[0].to_openai(0)["function"]["name"] == "weather"


def test_a_block_that_is_not_a_call_stays_text():
    content, calls = parse_tool_calls("<tool_call>not json</tool_call> done")
    assert calls == [] and content == "<tool_call>not json</tool_call> done"


@pytest.mark.parametrize("template, name", [
    (HERMES, "hermes"), ("[TOOL_CALLS] {{ x }}", "mistral"), ("<|python_tag|>", "llama3_json"), ("{{ messages }}", "none"),
])
def test_the_template_format_is_recognised(template, name):
    assert template_format(template) == name


@pytest.mark.parametrize("tools, choice, template, words", [
    ([WEATHER], "auto", "[TOOL_CALLS]", "mistral tool-call format"),
    ([WEATHER], "auto", "{{ messages }}", "renders no tools"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, HERMES, "'nope'"),
    ([{"type": "retrieval"}], "auto", HERMES, "tools[0]"),
    ([WEATHER], "sometimes", HERMES, "tool_choice"),
    (None, "required", HERMES, "needs tools"),
])
def test_bad_tool_requests_are_refused(tools, choice, template, words):
    with pytest.raises(UserError, match=words.replace("[", r"\[")):
        check_tools(tools, choice, template)


def test_none_renders_no_tools_and_auto_is_unconstrained():
    assert check_tools([WEATHER], "none", "{{ messages }}") == ([], "none")
    tools, choice = check_tools([WEATHER], None, HERMES)
    assert choice == "auto" and call_constraint(tools, choice) is None


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_required_and_named_choices_always_give_valid_calls(choice):
    pytest.importorskip("llguidance")
    from tokenizers import Tokenizer

    from llmc.runtime.structured_output import GrammarCompiler, allowed

    path = Path(__file__).resolve().parents[2] / "examples" / "zen-llama" / "tokenizer.json"
    tokenizer, vocab = Tokenizer.from_file(str(path)), 384
    compiler = GrammarCompiler(path.read_text(), vocab, (1,))
    tools, choice = check_tools([WEATHER, TIME], choice, HERMES)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        matcher = compiler.matcher(call_constraint(tools, choice))
        row, out = np.zeros(matcher.words, np.int32), []
        for _ in range(300):
            matcher.fill_bitmask(row)
            logits = rng.normal(size=vocab) * 2
            logits[1] += 3  # end of sequence, once allowed
            logits[~allowed(row, vocab)] = -np.inf
            token = int(np.argmax(logits + rng.gumbel(size=vocab)))
            assert matcher.accept(token)
            if token == 1:
                break
            out.append(token)
        content, calls = parse_tool_calls(tokenizer.decode(out))
        assert content is None and calls, tokenizer.decode(out)
        for call in calls:
            args = json.loads(call.arguments)
            if isinstance(choice, dict):
                assert call.name == "weather"
            if call.name == "weather":
                assert args["city"] in ("Oslo", "Rome") and isinstance(args["days"], int)
