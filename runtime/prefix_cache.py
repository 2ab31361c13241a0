"""Automatic prefix caching: full KV blocks found by their content, kept after their sequences end.

A full block's key is sha256 of its parent's key and its token ids, so the same tokens after
different prefixes get different keys, and a key names the whole prefix up to the block's end
(a strong hash, as in vLLM, so a crafted prompt cannot collide with another user's blocks).
A cached block no sequence holds stays cached until the pool needs it: then the least recently
released one is evicted first.
"""

import hashlib
from array import array
from collections import OrderedDict

ROOT = b""  # the parent key of a sequence's first block


def block_hash(parent: bytes, token_ids: list[int]) -> bytes:
    return hashlib.sha256(parent + array("q", token_ids).tobytes()).digest()


class PrefixCache:
    def __init__(self):
        self.block_ids: dict[bytes, int] = {}  # key -> cached block
        self.keys: dict[int, bytes] = {}  # cached block -> key
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached blocks no sequence holds, LRU first

    def get(self, key: bytes) -> int | None:
        return self.block_ids.get(key)

    def add(self, block_id: int, key: bytes) -> None:
        """Cache a held block under `key`, unless a block with that content is cached already."""
        if key not in self.block_ids and block_id not in self.keys:
            self.block_ids[key] = block_id
            self.keys[block_id] = key

    def holds(self, block_id: int) -> bool:
        return block_id in self.keys

    def acquire(self, block_id: int) -> None:
        """A sequence takes a cached block: it can no longer be evicted."""
        self.evictable.pop(block_id, None)

    def release(self, block_id: int) -> None:
        """The last sequence holding a cached block let it go: it is now the most recently used."""
        self.evictable[block_id] = None

    def evict(self) -> int:
        """Forget the least recently released cached block and return it for reuse."""
        block_id, _ = self.evictable.popitem(last=False)
        del self.block_ids[self.keys.pop(block_id)]
        return block_id
