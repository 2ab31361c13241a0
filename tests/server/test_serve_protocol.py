"""Request checks and chat templates, without a server."""

import pytest

from llmc.errors import UserError
from llmc.runtime.server.chat import ChatTemplate, ChatTemplateError
from llmc.runtime.server.params import NOT_YET, sampling_params
from llmc.runtime.server.protocol import (
    ApiError, ChatCompletionRequest, CompletionRequest, chat_messages, check_model, prompt_of,
)


def params_of(num_prompt_tokens=4, max_model_len=32, **body):
    return sampling_params(CompletionRequest(prompt="x", **body), num_prompt_tokens, max_model_len)


def test_given_fields_reach_sampling_params():
    params = params_of(max_tokens=5, temperature=0.5, top_p=0.9, top_k=3, seed=7, stop="\n")
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.seed, params.stop) == (
        5, 0.5, 0.9, 3, 7, ("\n",))


def test_omitted_max_tokens_fills_the_context():
    assert params_of(num_prompt_tokens=10, max_model_len=32).max_tokens == 22


def test_chat_prefers_max_completion_tokens():
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=9, max_completion_tokens=3)
    assert sampling_params(body, 4, 32).max_tokens == 3


@pytest.mark.parametrize("body, param, message", [
    ({"temperature": 2.5}, "temperature", "temperature must be between 0 and 2"),
    ({"temperature": -0.1}, "temperature", "temperature must be between 0 and 2"),
    ({"top_p": 0}, "top_p", "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1]"),
    ({"top_k": -2}, "top_k", "top_k must be -1"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens must be at least 1"),
    ({"n": 65}, "n", "n must be between 1 and 64"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "stop takes at most 4"),
    ({"seed": -1}, "seed", "seed must be in"),
    ({"logprobs": 21}, "logprobs", "logprobs must be an integer in [0, 20]"),
])
def test_out_of_range_values_name_their_field(body, param, message):
    with pytest.raises(ApiError) as caught:
        params_of(**body)
    assert (caught.value.status, caught.value.param) == (400, param)
    assert caught.value.message.startswith(message)


def test_context_length_message():
    with pytest.raises(ApiError) as caught:
        params_of(num_prompt_tokens=30, max_model_len=32, max_tokens=5)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.message.startswith("This model's maximum context length is 32 tokens; you asked for 35 tokens")


def test_a_prompt_that_fills_the_context_leaves_nothing_to_generate():
    with pytest.raises(ApiError, match="maximum context length is 32 tokens; you asked for 33"):
        params_of(num_prompt_tokens=32, max_model_len=32)


def test_unknown_model():
    check_model(None, "zen")
    check_model("zen", "zen")
    with pytest.raises(ApiError) as caught:
        check_model("gpt-4", "zen")
    assert caught.value.code == "model_not_found" and "gpt-4" in caught.value.message


@pytest.mark.parametrize("prompt, expected", [("hi", "hi"), ([1, 2], [1, 2]), (["hi"], "hi"), ([[3]], [3])])
def test_one_prompt(prompt, expected):
    assert prompt_of(CompletionRequest(prompt=prompt)) == expected


@pytest.mark.parametrize("prompt", ["", [], ["a", "b"]])
def test_bad_prompts(prompt):
    with pytest.raises(ApiError):
        prompt_of(CompletionRequest(prompt=prompt))


def test_content_parts_are_joined():
    body = ChatCompletionRequest(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert chat_messages(body.messages) == [{"role": "user", "content": "ab"}]
    image = ChatCompletionRequest(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(ApiError, match="only text"):
        chat_messages(image.messages)


def test_template_renders_special_tokens_and_generation_prompt():
    source = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}" \
             "{% if add_generation_prompt %}<assistant>{% endif %}"
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    messages = [{"role": "user", "content": "hi"}]
    assert template.render(messages) == "<s><user>hi</s><assistant>"
    assert template.render(messages, add_generation_prompt=False) == "<s><user>hi</s>"


def test_template_raise_exception_is_a_user_error():
    template = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('must start with user') }}{% endif %}")
    with pytest.raises(ChatTemplateError, match="must start with user"):
        template.render([{"role": "assistant", "content": "x"}])


def test_template_is_sandboxed():
    template = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatTemplateError):
        template.render([])


def test_template_tojson_is_plain_json():
    assert ChatTemplate("{{ messages[0] | tojson }}").render([{"a": "<é>"}]) == '{"a": "<é>"}'


def test_template_syntax_error_is_reported_at_load():
    with pytest.raises(UserError, match="chat template line 1"):
        ChatTemplate("{% for %}")


HONOURED = {  # fields that change the output, or (model, user, stream options) that need nothing more
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
    "stop", "stop_token_ids", "ignore_eos", "include_stop_str_in_output", "n", "stream", "stream_options", "user",
    "tools", "tool_choice", "add_generation_prompt", "logprobs", "top_logprobs", "echo",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "min_p", "min_tokens", "logit_bias",
    "response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
}


def test_every_field_is_honoured_or_refused_until_served():
    fields = set(CompletionRequest.model_fields) | set(ChatCompletionRequest.model_fields)
    assert fields == HONOURED | set(NOT_YET), "a new field must be honoured, or listed in params.NOT_YET"
