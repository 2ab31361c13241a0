"""A weight's bytes as the streamed writer takes them, for every rank of tensor, 0-d included."""

import struct

import torch

from llmc.aot.bundle_write import _entry


def test_a_scalar_weight_streams_its_four_bytes():
    entry = _entry("scale", torch.tensor(3.0))
    assert entry.shape == () and bytes(entry.data()) == struct.pack("<f", 3.0)


def test_a_matrix_streams_row_major():
    weight = torch.arange(6, dtype=torch.int32).reshape(2, 3).t()  # not contiguous
    assert bytes(_entry("w", weight).data()) == struct.pack("<6i", 0, 3, 1, 4, 2, 5)
