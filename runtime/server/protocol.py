"""OpenAI request bodies, and their checks that turn a body into SamplingParams."""

from typing import Any

from pydantic import BaseModel, ConfigDict

from llmc.errors import UserError
from llmc.runtime import SamplingParams

MAX_STOP_STRINGS = 4


class ApiError(Exception):
    """An error the client sees as OpenAI's `{"error": {...}}` body with this HTTP status."""

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Accepted so that clients sending their defaults work; anything else is refused.
    logprobs: Any = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

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
    model_config = ConfigDict(extra="allow")  # name, tool_calls, … reach the template as given
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def sampling_params(request: _GenerationRequest, num_prompt_tokens: int, max_model_len: int) -> SamplingParams:
    """The request's SamplingParams, or ApiError(400) naming the first field out of range."""
    _refuse_unsupported(request)
    if request.n != 1:
        raise _invalid("n", f"n must be 1, got {request.n}")
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise _invalid("temperature", f"temperature must be between 0 and 2, got {request.temperature}")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise _invalid("top_p", f"top_p must be in (0, 1], got {request.top_p}")
    if request.top_k is not None and request.top_k < -1:
        raise _invalid("top_k", f"top_k must be -1 (off), 0 (off) or positive, got {request.top_k}")
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP_STRINGS:
        raise _invalid("stop", f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}")

    max_tokens = request.requested_max_tokens()
    if max_tokens is not None and max_tokens < 1:
        raise _invalid("max_tokens", f"max_tokens must be at least 1, got {max_tokens}")
    _check_context(num_prompt_tokens, max_tokens, max_model_len)
    if max_tokens is None:
        max_tokens = max_model_len - num_prompt_tokens

    given = {
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "seed": request.seed, "stop_token_ids": request.stop_token_ids,
    }
    kwargs = {key: value for key, value in given.items() if value is not None}
    try:
        return SamplingParams(max_tokens=max_tokens, stop=tuple(stop), ignore_eos=request.ignore_eos, **kwargs)
    except UserError as e:
        raise ApiError(str(e), param=_field_named_in(str(e), kwargs), code="invalid_value") from None


def prompt_of(request: CompletionRequest) -> str | list[int]:
    """The one prompt of a completion request: text, or token ids."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise _invalid("prompt", f"one prompt per request is supported, got {len(prompt)}")
        prompt = prompt[0]
    if len(prompt) == 0:
        raise _invalid("prompt", "prompt must not be empty")
    return prompt


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise ApiError(f"The model `{requested}` does not exist; this server serves `{served}`.",
                       param="model", code="model_not_found")


def _check_context(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    wanted = num_prompt_tokens + (max_tokens if max_tokens is not None else 1)
    if wanted > max_model_len:
        completion = f"{max_tokens} for the completion" if max_tokens is not None else "at least 1 to generate"
        raise ApiError(
            f"This model's maximum context length is {max_model_len} tokens; you asked for {wanted} tokens "
            f"({num_prompt_tokens} in the prompt, {completion}). Shorten the prompt or lower max_tokens.",
            param="max_tokens" if max_tokens is not None else "prompt", code="context_length_exceeded",
        )


def _refuse_unsupported(request: _GenerationRequest) -> None:
    unsupported = {
        "logprobs": request.logprobs not in (None, False, 0),
        "top_logprobs": request.top_logprobs not in (None, 0),
        "presence_penalty": request.presence_penalty not in (None, 0),
        "frequency_penalty": request.frequency_penalty not in (None, 0),
        "logit_bias": bool(request.logit_bias),
        "echo": getattr(request, "echo", False),
        "best_of": getattr(request, "best_of", None) not in (None, 1),
        "suffix": getattr(request, "suffix", None) is not None,
    }
    for field, refused in unsupported.items():
        if refused:
            raise _invalid(field, f"{field} is not supported by this server")


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(message, param=param, code="invalid_value")


def _field_named_in(message: str, fields) -> str | None:
    return next((field for field in ("max_tokens", "stop", *fields) if message.startswith(field)), None)


def chat_messages(messages: list[ChatMessage]) -> list[dict]:
    """Messages as the template reads them: content parts of type text joined into one string."""
    out = []
    for message in messages:
        fields = message.model_dump(exclude_none=True)
        if isinstance(message.content, list):
            kinds = {part.get("type") for part in message.content} - {"text"}
            if kinds:
                raise _invalid("messages", f"only text content parts are supported, got {sorted(map(str, kinds))}")
            fields["content"] = "".join(part.get("text", "") for part in message.content)
        out.append(fields)
    return out
