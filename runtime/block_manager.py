"""Paged KV cache bookkeeping: fixed-size blocks, a free list, a block table per sequence."""

import heapq

from llmc.errors import UserError
from llmc.runtime.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise UserError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise UserError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_block_ids = list(range(num_blocks))  # a heap: the lowest free id goes first
        self.used_block_ids: set[int] = set()

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return len(self.used_block_ids)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def num_new_blocks(self, seq: Sequence, num_new_tokens: int) -> int:
        """Blocks `seq` must gain to hold its computed tokens plus `num_new_tokens`."""
        return max(0, self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.num_new_blocks(seq, num_new_tokens) <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        n = self.num_new_blocks(seq, num_new_tokens)
        if n > self.num_free_blocks:
            raise RuntimeError(f"{seq} needs {n} more KV blocks; {self.num_free_blocks} are free")
        for _ in range(n):
            block_id = heapq.heappop(self.free_block_ids)
            self.used_block_ids.add(block_id)
            seq.block_table.append(block_id)

    def free(self, seq: Sequence) -> None:
        for block_id in seq.block_table:
            if block_id not in self.used_block_ids:
                raise RuntimeError(f"block {block_id} of {seq} is already free")
            self.used_block_ids.remove(block_id)
            heapq.heappush(self.free_block_ids, block_id)
        seq.block_table = []

    def slot(self, seq: Sequence, position: int) -> int:
        """Index of the KV slot that holds token `position` of `seq`, in a pool of num_blocks * block_size."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
