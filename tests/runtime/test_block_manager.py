import pytest
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.sampling_params import SamplingParams
from llmc.runtime.sequence import Sequence, SequenceStatus


def make_seq(seq_id=0, prompt_len=5, prompt=None):
    prompt = list(range(prompt_len)) if prompt is None else prompt
    return Sequence(seq_id, f"req-{seq_id}", prompt, SamplingParams())


def written(bm, seq):
    """Admit `seq` and mark every computed token of it written (its step ran)."""
    assert bm.admit(seq)
    bm.mark_written(seq, seq.num_tokens)
    return seq


def test_blocks_needed():
    bm = BlockManager(num_blocks=8, block_size=4)
    assert [bm.blocks_needed(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_allocate_grows_the_block_table_and_free_returns_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    a, b = make_seq(0), make_seq(1)
    bm.allocate(a, 5)
    bm.allocate(b, 3)
    assert a.block_table == [0, 1] and b.block_table == [2]
    assert bm.num_used_blocks == 3 and bm.num_free_blocks == 5
    bm.free(a)
    assert a.block_table == [] and bm.num_free_blocks == 7
    c = make_seq(2)
    bm.allocate(c, 1)  # lowest free id first
    assert c.block_table == [0] and bm.ref_counts[:3] == [1, 0, 1]


def test_decode_allocates_only_when_crossing_a_block_boundary():
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(prompt_len=4)
    bm.allocate(seq, 4)
    seq.num_computed_tokens = 4
    for step in range(8):  # tokens 4..11: new blocks at 4 and 8
        assert bm.can_allocate(seq, 1)
        bm.allocate(seq, 1)
        assert len(seq.block_table) == bm.blocks_needed(seq.num_computed_tokens + 1)
        seq.num_computed_tokens += 1
    assert seq.block_table == [0, 1, 2]
    bm.allocate(seq, 0)
    assert seq.block_table == [0, 1, 2]


def test_can_allocate_counts_blocks_the_sequence_already_holds():
    bm = BlockManager(num_blocks=3, block_size=4)
    seq = make_seq()
    bm.allocate(seq, 8)
    seq.num_computed_tokens = 8
    assert bm.can_allocate(seq, 4) and not bm.can_allocate(seq, 5)
    with pytest.raises(RuntimeError):
        bm.allocate(seq, 5)
    assert seq.block_table == [0, 1]


def test_double_free_is_caught():
    bm = BlockManager(num_blocks=4, block_size=4)
    seq = make_seq()
    bm.allocate(seq, 4)
    table = list(seq.block_table)
    bm.free(seq)
    seq.block_table = table
    with pytest.raises(RuntimeError, match="already free"):
        bm.free(seq)


def test_slot_mapping():
    bm = BlockManager(num_blocks=8, block_size=4)
    other, seq = make_seq(0), make_seq(1)
    bm.allocate(other, 4)
    bm.allocate(seq, 10)
    assert seq.block_table == [1, 2, 3]
    assert [bm.slot(seq, p) for p in range(10)] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    bm.free(other)
    seq2 = make_seq(2)
    bm.allocate(seq2, 2)
    assert [bm.slot(seq2, p) for p in range(2)] == [0, 1]
    assert len({bm.slot(s, p) for s, n in ((seq, 10), (seq2, 2)) for p in range(n)}) == 12


# -- prefix caching ----------------------------------------------------------------------------


def test_a_prompt_shares_the_written_full_blocks_of_an_equal_prefix_and_computes_the_rest():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    a = written(bm, make_seq(0, prompt=list(range(10))))  # blocks [0..3] [4..7] and a partial one
    b = make_seq(1, prompt=list(range(9)) + [99, 98])
    assert bm.admit(b)
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] not in a.block_table
    assert b.num_computed_tokens == 8 and b.num_cached_tokens == 8
    assert [bm.ref_counts[i] for i in a.block_table] == [2, 2, 1]
    assert (bm.prefix_cache_queries, bm.prefix_cache_hits) == (10 + 11, 8)


def test_at_least_the_last_token_is_computed():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    written(bm, make_seq(0, prompt=list(range(8))))
    again = make_seq(1, prompt=list(range(8)))  # two full blocks, both cached: the second is computed
    assert bm.admit(again) and again.num_computed_tokens == 4


def test_blocks_are_not_shared_before_they_are_written():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    a = make_seq(0, prompt=list(range(9)))
    assert bm.admit(a)
    bm.mark_written(a, 7)  # the step that writes tokens 7, 8 has not run yet
    b = make_seq(1, prompt=list(range(9)))
    assert bm.admit(b) and b.block_table[:1] == a.block_table[:1] and b.num_computed_tokens == 4


def test_the_same_block_tokens_after_different_prefixes_do_not_match():
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    written(bm, make_seq(0, prompt=[1, 2, 3, 4, 5, 6, 7, 8, 9]))
    b = make_seq(1, prompt=[0, 2, 3, 4, 5, 6, 7, 8, 9])  # second block equal, first not
    assert bm.admit(b) and b.num_computed_tokens == 0
    assert bm.cache.get(bm._key(b, 1)) is None  # not even looked up by its own tokens


def test_chained_hashes_name_the_whole_prefix():
    bm = BlockManager(num_blocks=16, block_size=2, enable_prefix_caching=True)
    a, b = make_seq(0, prompt=[1, 2, 5, 6, 7]), make_seq(1, prompt=[3, 4, 5, 6, 7])
    keys = [[bm._key(s, i) for i in range(2)] for s in (a, b)]
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]  # block 1 holds [5, 6] in both
    assert bm._key(make_seq(2, prompt=[1, 2, 5, 6]), 1) == keys[0][1]


def test_freed_cached_blocks_stay_cached_and_are_reused():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    a = written(bm, make_seq(0, prompt=list(range(9))))
    table = list(a.block_table)
    bm.free(a)
    assert bm.num_used_blocks == 0 and bm.num_free_blocks == 8  # cached blocks count as free
    b = make_seq(1, prompt=list(range(9)) + [7])
    assert bm.admit(b) and b.block_table[:2] == table[:2] and b.num_computed_tokens == 8
    assert bm.ref_counts[table[0]] == 1 and bm.num_used_blocks == 3


def test_eviction_is_least_recently_released_first_and_a_chain_tail_goes_before_its_head():
    bm = BlockManager(num_blocks=6, block_size=2, enable_prefix_caching=True)
    a = written(bm, make_seq(0, prompt=[1, 2, 3, 4, 5]))  # blocks 0, 1 full; 2 partial
    b = written(bm, make_seq(1, prompt=[6, 7, 8, 9, 5]))  # blocks 3, 4 full; 5 partial
    bm.free(b)
    bm.free(a)
    assert list(bm.cache.evictable) == [4, 3, 1, 0]  # b released first; each chain tail first
    c = make_seq(2, prompt=[0] * 5)
    assert bm.admit(c) and c.block_table == [2, 5, 4]  # empty blocks first, then the LRU cached one
    d = make_seq(3, prompt=[6, 7, 8, 9, 5])
    assert bm.admit(d) and d.block_table[:1] == [3] and d.num_computed_tokens == 2  # its tail block was evicted


def test_eviction_never_takes_a_block_a_sequence_holds():
    bm = BlockManager(num_blocks=4, block_size=2, enable_prefix_caching=True)
    a = written(bm, make_seq(0, prompt=[1, 2, 3, 4, 5]))
    b = make_seq(1, prompt=[1, 2, 3, 4, 6])
    assert bm.admit(b) and b.block_table[:2] == a.block_table[:2]
    bm.free(a)  # blocks 0, 1 still held by b; block 2 freed without a key
    assert not bm.cache.evictable and bm.num_free_blocks == 1
    assert not bm.admit(make_seq(2, prompt=[9, 9, 9, 9]))  # needs 2 blocks, 1 is free
    c = make_seq(3, prompt=[9, 9])
    assert bm.admit(c) and set(c.block_table).isdisjoint(b.block_table)


def test_admission_counts_cached_blocks_it_takes_from_the_free_pool():
    bm = BlockManager(num_blocks=3, block_size=2, enable_prefix_caching=True)
    bm.free(written(bm, make_seq(0, prompt=[1, 2, 3, 4, 5])))  # 2 cached blocks, evictable
    b = make_seq(1, prompt=[1, 2, 3, 4, 5, 6, 7])  # shares 2, needs 2 more: 4 > 3 blocks
    assert not bm.admit(b) and b.block_table == [] and len(bm.cache.evictable) == 2
    c = make_seq(2, prompt=[1, 2, 3, 4, 5])
    assert bm.admit(c) and c.num_computed_tokens == 4 and bm.num_free_blocks == 0


def test_without_prefix_caching_nothing_is_shared_or_counted():
    bm = BlockManager(num_blocks=8, block_size=4)
    written(bm, make_seq(0, prompt=list(range(9))))
    b = make_seq(1, prompt=list(range(9)))
    assert bm.admit(b) and b.num_computed_tokens == 0 and bm.prefix_cache_queries == 0


def test_a_later_sample_shares_the_written_blocks_of_the_first_without_prefix_caching():
    bm = BlockManager(num_blocks=8, block_size=4)
    first = make_seq(0, prompt=list(range(9)))
    assert bm.admit(first)
    first.status = SequenceStatus.RUNNING
    bm.mark_written(first, 9)
    second = Sequence(1, "req-0", list(range(9)), SamplingParams(), index=1, parent=first)
    assert bm.admit(second) and second.block_table[:2] == first.block_table[:2]
    bm.free(first)
    bm.free(second)
    assert bm.num_free_blocks == 8 and bm.ref_counts == [0] * 8
