"""How one request is sampled and when it stops."""

import math
from dataclasses import dataclass

import numpy as np

from llmc.artifacts.plan_schema import MAX_LOGPROBS
from llmc.errors import UserError

from .structured_output import Constraint


INT32_MAX = 2**31 - 1
MIN_TEMPERATURE = 1e-5  # below it logits / temperature overflows float32; use 0 for greedy
MAX_TEMPERATURE = 1e6
MAX_STOPS = 64
MAX_STOP_CHARS = 1024
MAX_PENALTY = 2.0  # presence and frequency penalties, as OpenAI bounds them
MAX_REPETITION_PENALTY = 1e6
MAX_LOGIT_BIAS = 100.0
MAX_LOGIT_BIAS_ENTRIES = 1024


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 (or -1) = off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1  # samples of the prompt; sample i draws with seed + i (see Sequence)
    include_stop_str_in_output: bool = False  # the text ends after the stop string, not before it
    presence_penalty: float = 0.0  # subtracted from the logit of each token already in the output
    frequency_penalty: float = 0.0  # subtracted once per occurrence in the output
    repetition_penalty: float = 1.0  # divides positive / multiplies negative logits of prompt and output tokens
    min_p: float = 0.0  # keeps tokens at least min_p times as likely as the likeliest
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit), sorted; a dict is accepted
    min_tokens: int = 0  # EOS and stop_token_ids are banned until this many tokens are out
    structured_output: Constraint | None = None  # what the output must match (its mask applied on the device)
    logprobs: int | None = None  # per generated token: its logprob and this many top ones (0: its own only)
    prompt_logprobs: int | None = None  # the same per prompt token after the first

    def __post_init__(self):
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

        _check_int("max_tokens", self.max_tokens)
        if not 1 <= self.max_tokens <= INT32_MAX:
            raise UserError(f"max_tokens must be in [1, {INT32_MAX}], got {self.max_tokens}")
        _check_number("temperature", self.temperature)
        if not (math.isfinite(self.temperature) and (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature
                                                     <= MAX_TEMPERATURE)):
            raise UserError(f"temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE:g}], "
                            f"got {self.temperature}")
        _check_number("top_p", self.top_p)
        if not (0 < self.top_p <= 1 and np.float32(self.top_p) > 0):  # the kernels read float32
            raise UserError(f"top_p must be in (0, 1] (and not round to 0 in float32), got {self.top_p}")
        _check_int("top_k", self.top_k)
        if not 0 <= self.top_k <= INT32_MAX:  # the kernels read an int32
            raise UserError(f"top_k must be in [0, {INT32_MAX}] (or -1 for off), got {self.top_k}")
        _check_int("n", self.n)
        if self.n < 1:
            raise UserError(f"n must be >= 1, got {self.n}")
        if self.seed is not None:
            _check_int("seed", self.seed)
            if not 0 <= self.seed < 2**63:
                raise UserError(f"seed must be in [0, 2**63), got {self.seed}")
        if len(stop) > MAX_STOPS or len(self.stop_token_ids) > MAX_STOPS:
            raise UserError(f"stop and stop_token_ids take at most {MAX_STOPS} entries each")
        for s in stop:
            if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
                raise UserError(f"stop must be non-empty strings of at most {MAX_STOP_CHARS} characters, got {s!r:.80}")
        for t in self.stop_token_ids:
            _check_int("stop_token_ids", t)
            if not 0 <= t <= INT32_MAX:
                raise UserError(f"stop_token_ids must be in [0, {INT32_MAX}], got {t}")
        if not isinstance(self.ignore_eos, (bool, np.bool_)):
            raise UserError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        if not isinstance(self.include_stop_str_in_output, (bool, np.bool_)):
            raise UserError(f"include_stop_str_in_output must be true or false, got {self.include_stop_str_in_output!r}")
        for field in ("logprobs", "prompt_logprobs"):
            value = getattr(self, field)
            if value is not None:
                _check_int(field, value)
                if not 0 <= value <= MAX_LOGPROBS:
                    raise UserError(f"{field} must be in [0, {MAX_LOGPROBS}], got {value}")
        if self.prompt_logprobs is not None and self.n > 1:
            raise UserError("prompt_logprobs (echo) takes n = 1; send the samples as separate requests")
        self._check_logit_processing()

    def _check_logit_processing(self) -> None:
        for field in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, field)
            _check_number(field, value)
            if not -MAX_PENALTY <= value <= MAX_PENALTY:
                raise UserError(f"{field} must be in [-{MAX_PENALTY:g}, {MAX_PENALTY:g}], got {value}")
        _check_number("repetition_penalty", self.repetition_penalty)
        if not (0 < self.repetition_penalty <= MAX_REPETITION_PENALTY and np.float32(self.repetition_penalty) > 0):
            raise UserError(f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY:g}] (1: off), "
                            f"got {self.repetition_penalty}")
        _check_number("min_p", self.min_p)
        if not 0 <= self.min_p <= 1:
            raise UserError(f"min_p must be in [0, 1], got {self.min_p}")
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        try:
            bias = tuple(sorted((token, value) for token, value in bias))
        except (TypeError, ValueError):
            raise UserError("logit_bias must map token ids to numbers") from None
        if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise UserError(f"logit_bias takes at most {MAX_LOGIT_BIAS_ENTRIES} tokens, got {len(bias)}")
        for token, value in bias:
            _check_int("logit_bias", token)
            _check_number("logit_bias", value)
            if not 0 <= token <= INT32_MAX:
                raise UserError(f"logit_bias token ids must be in [0, {INT32_MAX}], got {token}")
            if not -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS:
                raise UserError(f"logit_bias values must be in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}], "
                                f"got {value} for token {token}")
        if len({token for token, _ in bias}) != len(bias):
            raise UserError("logit_bias names a token id twice")
        object.__setattr__(self, "logit_bias", bias)
        _check_int("min_tokens", self.min_tokens)
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise UserError(f"min_tokens must be in [0, max_tokens ({self.max_tokens})], got {self.min_tokens}")
        if self.structured_output is not None and not isinstance(self.structured_output, Constraint):
            raise UserError("structured_output must be a Constraint")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def reads_output_tokens(self) -> bool:
        """The logits of its next token depend on the values of its earlier output tokens."""
        return (self.structured_output is not None or self.repetition_penalty != 1 or self.presence_penalty != 0
                or self.frequency_penalty != 0)


def uniform_draw(seed: int, index: int) -> float:
    """The uniform number in [0, 1) that samples the index-th generated token of a request.

    A function of (seed, index) only, so a request's output does not depend on the batch it
    ran in or on being preempted and recomputed. SplitMix64 of the pair: a few integer
    operations, where seeding a numpy generator per token cost tens of microseconds.
    """
    x = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xD1B54A32D192ED03) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    x ^= x >> 31
    return (x >> 11) * 2.0**-53


_MASK64 = (1 << 64) - 1


def _check_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{field} must be an integer, got {value!r}")


def _check_number(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"{field} must be a number, got {value!r}")
