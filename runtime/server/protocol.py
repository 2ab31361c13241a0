"""OpenAI request bodies: every field llmc reads, and nothing else (an unknown field is a 400).

Besides OpenAI's fields, the bodies take these vLLM extras:

| field                        | endpoints   | llmc                                                    |
|------------------------------|-------------|---------------------------------------------------------|
| `top_k`                      | both        | honoured (-1 or 0: off)                                 |
| `ignore_eos`                 | both        | honoured                                                |
| `stop_token_ids`             | both        | honoured                                                |
| `include_stop_str_in_output` | both        | honoured: the stop string (or stop token) ends the text |
| `add_generation_prompt`      | chat        | honoured (default true)                                 |
| `min_p`                      | both        | honoured, in [0, 1]                                     |
| `repetition_penalty`         | both        | honoured, > 0 (prompt and output tokens, as vLLM)       |
| `min_tokens`                 | both        | honoured: EOS and stop_token_ids banned until then      |
| `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar` | both | honoured (llguidance; one at a time) |
| `echo`                       | chat        | false only                                              |

`params.sampling_params` turns a body into SamplingParams and refuses, by name, each field whose
value llmc does not serve yet (`params.NOT_YET`); `n` samples are choices with their `index`.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

MAX_STOP_STRINGS = 4


class ApiError(Exception):
    """An error the client sees as OpenAI's `{"error": {...}}` body with this HTTP status."""

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class _GenerationRequest(_Strict):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for the caller's own records; llmc keeps none
    logprobs: Any = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM's extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    guided_json: Any = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class CompletionRequest(_GenerationRequest):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id … reach the template as given
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    add_generation_prompt: bool = True
    echo: bool = False

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizeRequest(_Strict):
    """vLLM's /tokenize: a prompt, or chat messages rendered with the chat template first."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]


def prompt_of(request: CompletionRequest) -> str | list[int]:
    """The one prompt of a completion request: text, or token ids."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise invalid("prompt", f"one prompt per request is supported, got {len(prompt)}")
        prompt = prompt[0]
    if len(prompt) == 0:
        raise invalid("prompt", "prompt must not be empty")
    return prompt


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise ApiError(f"The model `{requested}` does not exist; this server serves `{served}`.",
                       param="model", code="model_not_found")


def invalid(param: str, message: str) -> ApiError:
    return ApiError(message, param=param, code="invalid_value")


def chat_messages(messages: list[ChatMessage]) -> list[dict]:
    """Messages as the template reads them: text parts joined into one string, and the arguments of
    earlier tool calls as objects (templates write them with `tojson`), as vLLM gives them."""
    out = []
    for message in messages:
        fields = message.model_dump(exclude_none=True)
        if isinstance(message.content, list):
            kinds = {part.get("type") for part in message.content} - {"text"}
            if kinds:
                raise invalid("messages", f"only text content parts are supported, got {sorted(map(str, kinds))}")
            fields["content"] = "".join(part.get("text", "") for part in message.content)
        if isinstance(fields.get("tool_calls"), list):
            fields["tool_calls"] = [_call_with_object_arguments(call) for call in fields["tool_calls"]]
        out.append(fields)
    return out


def _call_with_object_arguments(call):
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call
    return {**call, "function": {**function, "arguments": arguments}}
