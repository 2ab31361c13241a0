"""Paged KV cache bookkeeping: fixed-size blocks with reference counts, a block table per sequence,
and (optionally) automatic prefix caching.

A block is held by the sequences whose tables name it (its reference count). Blocks are shared
only when full and written: by prefix caching, or between the samples of one request (`n`).
A sequence never writes into a block it shares: its computation starts after its shared blocks,
and at least its last token is always computed, so the step that admits it yields logits.
"""

import heapq

from llmc.errors import UserError
from llmc.runtime.prefix_cache import ROOT, PrefixCache, block_hash
from llmc.runtime.sequence import Sequence, SequenceStatus


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = False):
        if num_blocks < 1:
            raise UserError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise UserError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self.free_block_ids = list(range(num_blocks))  # a heap of blocks holding nothing cached: lowest id first
        self.cache = PrefixCache() if enable_prefix_caching else None
        self.prefix_cache_queries = 0  # prompt tokens looked up, at each request's first admission
        self.prefix_cache_hits = 0  # of those, tokens found in the cache

    @property
    def num_free_blocks(self) -> int:
        """Blocks a sequence can take now: empty ones, and cached ones no sequence holds."""
        return len(self.free_block_ids) + (len(self.cache.evictable) if self.cache is not None else 0)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

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
            block_id = heapq.heappop(self.free_block_ids) if self.free_block_ids else self.cache.evict()
            self.ref_counts[block_id] = 1
            seq.block_table.append(block_id)

    def admit(self, seq: Sequence) -> bool:
        """Blocks for all the tokens of a waiting `seq`, sharing those of its longest written prefix
        (from the cache, or from the first sample of its request); sets `num_computed_tokens`.
        Returns False, changing nothing, when the pool cannot hold the rest now."""
        shared = self._shared_prefix(seq)
        taken = sum(self.ref_counts[b] == 0 for b in shared)  # cached blocks leaving the evictable pool
        if self.blocks_needed(seq.num_tokens) - len(shared) + taken > self.num_free_blocks:
            return False
        for block_id in shared:
            if self.ref_counts[block_id] == 0:
                self.cache.acquire(block_id)
            self.ref_counts[block_id] += 1
        seq.block_table = list(shared)
        seq.num_written_blocks = len(shared)
        seq.num_computed_tokens = len(shared) * self.block_size
        self.allocate(seq, seq.num_tokens - seq.num_computed_tokens)
        if self.cache is not None and seq.num_preemptions == 0:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += seq.num_computed_tokens
            seq.num_cached_tokens = seq.num_computed_tokens
        return True

    def _shared_prefix(self, seq: Sequence) -> list[int]:
        limit = (seq.num_tokens - 1) // self.block_size  # full blocks before the last token
        if seq.prompt_logprob_positions(0, seq.num_tokens):  # each prompt position's logits are wanted
            return []
        if self.cache is not None:
            found = []
            for i in range(limit):
                block_id = self.cache.get(self._key(seq, i))
                if block_id is None:
                    break
                found.append(block_id)
            return found
        parent = seq.parent  # the first sample: only blocks of the prompt alone are the same
        if parent is not None and parent.status == SequenceStatus.RUNNING:
            return parent.block_table[: min(parent.num_written_blocks, limit, seq.num_prompt_tokens // self.block_size)]
        return []

    def mark_written(self, seq: Sequence, num_tokens: int) -> None:
        """The KV of `seq`'s first `num_tokens` tokens is in the cache: its full blocks among them
        can be shared from now on (and are cached, with prefix caching)."""
        end = num_tokens // self.block_size
        if self.cache is not None:
            for i in range(seq.num_written_blocks, end):
                self.cache.add(seq.block_table[i], self._key(seq, i))
        seq.num_written_blocks = max(seq.num_written_blocks, end)

    def _key(self, seq: Sequence, i: int) -> bytes:
        """The cache key of `seq`'s block i (its tokens known); keys are kept on the sequence."""
        keys, bs = seq.block_hashes, self.block_size
        while len(keys) <= i:
            j = len(keys)
            keys.append(block_hash(keys[j - 1] if j else ROOT, seq.tokens(j * bs, (j + 1) * bs)))
        return keys[i]

    def free(self, seq: Sequence) -> None:
        # Released last block first: a chain's tail is evicted before its head, which all its blocks need.
        for block_id in reversed(seq.block_table):
            if self.ref_counts[block_id] < 1:
                raise RuntimeError(f"block {block_id} of {seq} is already free")
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                if self.cache is not None and self.cache.holds(block_id):
                    self.cache.release(block_id)
                else:
                    heapq.heappush(self.free_block_ids, block_id)
        seq.block_table = []
        seq.num_written_blocks = 0

    def slot(self, seq: Sequence, position: int) -> int:
        """Index of the KV slot that holds token `position` of `seq`, in a pool of num_blocks * block_size."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
