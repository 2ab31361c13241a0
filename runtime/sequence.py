"""One request as the scheduler sees it: its tokens, its KV blocks, its progress."""

from enum import Enum, auto

from llmc.runtime.sampling_params import SamplingParams

PENDING = -1  # an output token sampled by a step whose result the host has not read yet


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """A request's token ids and state.

    `num_computed_tokens` counts the tokens whose KV is in the cache or being written by a step
    already scheduled (the scheduler advances it when it schedules). A running sequence that is
    decoding has exactly one token not yet computed: the one it sampled last, which may still be
    `PENDING` while its step runs. Preemption frees the blocks and sets `num_computed_tokens` to 0;
    the prompt and the outputs so far are then prefilled again and sampling continues at index
    `len(output_token_ids)`.

    Sample `index` of a request with `n` samples draws with `seed` = the request's seed + index
    (mod 2**63), so it equals that request run alone with that seed and n = 1. Samples after the
    first wait for the first (`parent`) to write the prompt's full blocks, then share them.
    """

    def __init__(
        self,
        seq_id: int,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        seed: int | None = None,
        arrival: int | None = None,
        index: int = 0,
        parent: "Sequence | None" = None,
    ):
        self.seq_id = seq_id
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        # The engine gives each sample its seed; else the request's, else seq_id (reproducible).
        self.seed = seed if seed is not None else (params.seed if params.seed is not None else seq_id)
        self.index, self.parent = index, parent
        self.arrival = seq_id if arrival is None else arrival
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.num_written_blocks = 0  # leading full blocks whose KV is written: shareable
        self.block_hashes: list[bytes] = []  # prefix-cache keys of the leading full blocks hashed so far
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache at admission
        self.num_preemptions = 0
        self.finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
        self.num_prompt_logprobs = 0  # prompt positions whose logprob rows a step has launched
        self.prompt_logprobs: list = []  # TokenLogprob of prompt tokens 1, 2, ... as steps return them
        self.logprobs: list = []  # TokenLogprob of each output token (SamplingParams.logprobs)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def tokens(self, start: int, end: int) -> list[int]:
        """token_ids[start:end] without building the whole history."""
        n = len(self.prompt_token_ids)
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]

    def token_at(self, position: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[position] if position < n else self.output_token_ids[position - n]

    def prompt_logprob_positions(self, start: int, end: int) -> range:
        """Positions in [start, end) whose logits give a prompt logprob still wanted (position p predicts
        prompt token p + 1); the first sample of a request reports them, once, even if recomputed."""
        if self.params.prompt_logprobs is None or self.index:
            return range(0)
        return range(max(start, self.num_prompt_logprobs), min(end, len(self.prompt_token_ids) - 1))

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Sequence(seq_id={self.seq_id}, request_id={self.request_id!r}, {self.status.name}, "
            f"tokens={self.num_tokens}, computed={self.num_computed_tokens}, blocks={self.block_table})"
        )
