"""Log probabilities in OpenAI's two shapes, and what `echo` and `max_tokens: 0` make of a choice.

Completions (legacy): `{"tokens", "token_logprobs", "top_logprobs" (token -> logprob dicts, the
chosen token among them), "text_offset"}`; with `echo` the prompt comes first, its first token's
logprob and top dict null. Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`.
Token strings are the tokens decoded one by one; text offsets run on over them, as in vLLM.
"""

from __future__ import annotations

from llmc.artifacts.plan_schema import MAX_LOGPROBS

from .protocol import ApiError, ChatCompletionRequest, invalid


def logprob_fields(request) -> dict:
    """SamplingParams' logprobs and prompt_logprobs for a request body (absent: not asked)."""
    fields = {}
    if isinstance(request, ChatCompletionRequest):
        if request.echo:
            raise ApiError("echo is not supported for chat completions", param="echo", code="unsupported_value")
        if request.logprobs not in (None, False, True):
            raise invalid("logprobs", f"logprobs must be true or false for chat completions, got {request.logprobs!r}")
        if request.top_logprobs is not None:
            if not request.logprobs:
                raise invalid("top_logprobs", "top_logprobs needs logprobs: true")
            _check_count("top_logprobs", request.top_logprobs)
        if request.logprobs:
            fields["logprobs"] = request.top_logprobs or 0
        return fields
    if request.top_logprobs is not None:
        raise ApiError("top_logprobs is a chat completions field; completions take logprobs: <count>",
                       param="top_logprobs", code="unsupported_value")
    if request.logprobs is not None and request.logprobs is not False:
        _check_count("logprobs", request.logprobs)
        fields["logprobs"] = request.logprobs
        if request.echo:
            fields["prompt_logprobs"] = request.logprobs
    return fields


def _check_count(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        raise invalid(field, f"{field} must be an integer in [0, {MAX_LOGPROBS}], got {value!r}")


class ChoiceShaper:
    """Per request: the text and logprobs each engine output adds to its choice. `echo_text`: the prompt
    text that opens each choice (completions' echo); `drop_generated`: max_tokens 0, so the one token
    the engine generates is not shown."""

    def __init__(self, decode, chat: bool, prompt_token_ids: list[int], echo_text: str | None = None,
                 drop_generated: bool = False):
        self.decode, self.chat, self.prompt_token_ids = decode, chat, prompt_token_ids
        self.echo_text, self.drop_generated = echo_text, drop_generated
        self._offsets: dict[int, int] = {}  # per choice: text offset of its next token

    def piece(self, out) -> tuple[str, dict | None]:
        """(text, logprobs fragment or None) that `out` adds to choice `out.index`."""
        generated, prompt = getattr(out, "logprobs", None), getattr(out, "prompt_logprobs", None)
        text, entries, opening = out.new_text, list(generated or ()), out.index not in self._offsets
        self._offsets.setdefault(out.index, 0)
        if self.drop_generated:
            text, entries = "", []
        if opening and prompt is not None:
            entries = list(prompt) + entries
        if opening and self.echo_text is not None:
            text = self.echo_text + text
        if generated is None and prompt is None:
            return text, None
        return text, (self._chat(entries) if self.chat else self._completion(entries, out.index))

    def _token(self, token_id: int) -> str:
        return self.decode([token_id])

    def _completion(self, entries: list, index: int) -> dict:
        tokens, logprobs, tops, offsets = [], [], [], []
        for entry in entries:
            if entry is None:  # the first prompt token: nothing predicts it
                token, logprob, top = self._token(self.prompt_token_ids[0]), None, None
            else:
                token, logprob = self._token(entry.token_id), entry.logprob
                top = {self._token(t): v for t, v in entry.top}
                top.setdefault(token, logprob)
            tokens.append(token)
            logprobs.append(logprob)
            tops.append(top)
            offsets.append(self._offsets[index])
            self._offsets[index] += len(token)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}

    def _chat(self, entries: list) -> dict:
        return {"content": [{**self._chat_token(e.token_id, e.logprob),
                             "top_logprobs": [self._chat_token(t, v) for t, v in e.top]}
                            for e in entries if e is not None]}

    def _chat_token(self, token_id: int, logprob: float) -> dict:
        token = self._token(token_id)
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def merge(fragments: list[dict]) -> dict | None:
    """One choice's logprobs from its fragments (a whole, non-streamed response)."""
    if not fragments:
        return None
    merged = {key: [] for key in fragments[0]}
    for fragment in fragments:
        for key, values in fragment.items():
            merged[key] += values
    return merged
