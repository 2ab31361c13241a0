"""Per request: the text of its output tokens, stop strings, and what each step returns.

The scheduler stops a sequence on tokens (EOS, stop_token_ids, lengths); text-level stops
need the detokenized output, which lives here, one `StopChecker` per request.
"""

from __future__ import annotations

from typing import NamedTuple

from .logprobs import prompt_logprobs
from .sequence import Sequence
from .stop import StopChecker


class RequestOutput(NamedTuple):
    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    error: str | None = None  # why the request failed (finish_reason "error")
    index: int = 0  # which sample of the request (SamplingParams.n)
    logprobs: list | None = None  # TokenLogprob of each new token (SamplingParams.logprobs)
    prompt_logprobs: list | None = None  # with the first token: per prompt token, None for the first


class OutputProcessor:
    def __init__(self, decode):
        self.decode = decode
        self._text: dict[int, StopChecker] = {}

    def add(self, seq: Sequence) -> None:
        self._text[seq.seq_id] = StopChecker(self.decode, seq.params.stop, seq.prompt_token_ids,
                                             seq.params.include_stop_str_in_output)

    def remove(self, seq: Sequence) -> None:
        self._text.pop(seq.seq_id, None)

    def append(self, seq: Sequence, token_id: int) -> bool:
        """Detokenize one new output token; True when the text now holds a stop string. The token that
        stopped the sequence (EOS, stop_token_ids) adds no text unless include_stop_str_in_output, as in vLLM."""
        if seq.is_finished and seq.finish_reason == "stop" and not seq.params.include_stop_str_in_output:
            return False
        return self._text[seq.seq_id].append(token_id)

    def output(self, seq: Sequence, new_token_ids: list[int], num_outputs: int | None = None,
               error: str | None = None, logprob=None) -> RequestOutput:
        """What the step returns for `seq` with `num_outputs` tokens known so far; forgets a finished request."""
        if num_outputs is None:
            num_outputs = len(seq.output_token_ids)
        text = self._text[seq.seq_id].delta(finished=seq.is_finished) if seq.seq_id in self._text else ""
        out = RequestOutput(seq.request_id, new_token_ids, text, seq.is_finished, seq.finish_reason,
                            seq.num_prompt_tokens, num_outputs, error, seq.index,
                            None if logprob is None else [logprob], prompt_logprobs(seq) if num_outputs == 1 else None)
        if seq.is_finished:
            self.remove(seq)
        return out
