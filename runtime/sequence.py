"""One request as the scheduler sees it: its tokens, its KV blocks, its progress."""

from enum import Enum, auto

from llmc.runtime.sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """A request's token ids and state.

    `num_computed_tokens` counts the tokens whose KV is in the cache. A running sequence that
    is decoding has exactly one token not yet computed: the one it sampled last. Preemption
    frees the blocks and sets `num_computed_tokens` to 0; the prompt and the outputs so far
    are then prefilled again and sampling continues at index `len(output_token_ids)`.
    """

    def __init__(
        self,
        seq_id: int,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        seed: int | None = None,
        arrival: int | None = None,
    ):
        self.seq_id = seq_id
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        # The engine assigns a seed to requests that bring none; seq_id is a reproducible fallback.
        self.seed = params.seed if params.seed is not None else (seed if seed is not None else seq_id)
        self.arrival = seq_id if arrival is None else arrival
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

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
