"""A request body's SamplingParams, or a 400 naming the first field llmc cannot serve as asked."""

from llmc.errors import UserError
from llmc.runtime import SamplingParams

from ..structured_output import Constraint
from .guided import logit_bias, structured_output
from .logprobs import logprob_fields
from .protocol import MAX_STOP_STRINGS, ApiError, invalid

MAX_N = 64  # samples of one request: each is a sequence in the batch

# Fields llmc does not honour yet: each takes only the value that asks for nothing (the neutral one).
NOT_YET = {
    "best_of": lambda v: v is None or v == 1,
    "suffix": lambda v: v is None,
    "parallel_tool_calls": lambda v: v is None or v is True,
}
WHY = {
    "parallel_tool_calls": "only true (the model may call several tools) is supported",
}


def refuse_unserved(request) -> None:
    """ApiError(400) naming the first field whose value llmc does not serve yet."""
    for field, neutral in NOT_YET.items():
        if field in type(request).model_fields and not neutral(getattr(request, field)):
            why = WHY.get(field, "only its neutral value is accepted")
            raise ApiError(f"{field} is not supported by this server: {why}", param=field, code="unsupported_value")


def sampling_params(request, num_prompt_tokens: int, max_model_len: int,
                    tool_constraint: Constraint | None = None) -> SamplingParams:
    """The request's SamplingParams, or ApiError(400) naming the first field out of range. `tool_constraint`:
    the output chat's tool_choice asks for."""
    refuse_unserved(request)
    if not 1 <= request.n <= MAX_N:
        raise invalid("n", f"n must be between 1 and {MAX_N}, got {request.n}")
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise invalid("temperature", f"temperature must be between 0 and 2, got {request.temperature}")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise invalid("top_p", f"top_p must be in (0, 1], got {request.top_p}")
    if request.top_k is not None and request.top_k < -1:
        raise invalid("top_k", f"top_k must be -1 (off), 0 (off) or positive, got {request.top_k}")
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP_STRINGS:
        raise invalid("stop", f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}")

    max_tokens = request.requested_max_tokens()
    echo_only = max_tokens == 0 and getattr(request, "echo", False)  # the prompt's logprobs, no completion
    if max_tokens is not None and max_tokens < 1 and not echo_only:
        raise invalid("max_tokens", f"max_tokens must be at least 1 (0 only with echo), got {max_tokens}")
    max_tokens = 1 if echo_only else max_tokens  # the one token sampled is not shown
    _check_context(num_prompt_tokens, max_tokens, max_model_len)
    if max_tokens is None:
        max_tokens = max_model_len - num_prompt_tokens

    given = {
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "seed": request.seed, "stop_token_ids": request.stop_token_ids, "n": request.n,
        "presence_penalty": request.presence_penalty, "frequency_penalty": request.frequency_penalty,
        "repetition_penalty": request.repetition_penalty, "min_p": request.min_p, "min_tokens": request.min_tokens,
        "logit_bias": logit_bias(request.logit_bias) or None,
        "structured_output": structured_output(request, tool_constraint), **logprob_fields(request),
    }
    kwargs = {key: value for key, value in given.items() if value is not None}
    try:
        return SamplingParams(max_tokens=max_tokens, stop=tuple(stop), ignore_eos=request.ignore_eos,
                              include_stop_str_in_output=request.include_stop_str_in_output, **kwargs)
    except UserError as e:
        raise ApiError(str(e), param=_field_named_in(str(e), kwargs), code="invalid_value") from None


def _check_context(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    wanted = num_prompt_tokens + (max_tokens if max_tokens is not None else 1)
    if wanted > max_model_len:
        completion = f"{max_tokens} for the completion" if max_tokens is not None else "at least 1 to generate"
        raise ApiError(
            f"This model's maximum context length is {max_model_len} tokens; you asked for {wanted} tokens "
            f"({num_prompt_tokens} in the prompt, {completion}). Shorten the prompt or lower max_tokens.",
            param="max_tokens" if max_tokens is not None else "prompt", code="context_length_exceeded",
        )


def _field_named_in(message: str, fields) -> str | None:
    names = sorted({"max_tokens", "stop", "ignore_eos", *fields}, key=len, reverse=True)  # stop_token_ids before stop
    return next((field for field in names if message.startswith(field)), None)
