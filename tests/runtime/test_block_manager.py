import pytest
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.sampling_params import SamplingParams
from llmc.runtime.sequence import Sequence


def make_seq(seq_id=0, prompt_len=5):
    return Sequence(seq_id, f"req-{seq_id}", list(range(prompt_len)), SamplingParams())


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
    bm.allocate(make_seq(2), 1)  # lowest free id first
    assert bm.used_block_ids == {0, 2}


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
