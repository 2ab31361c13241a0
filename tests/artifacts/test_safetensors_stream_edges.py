"""The streamed weight writer on its own: byte-equal to `safetensors.torch.save` for every dtype, name
and shape it can meet, the digest and size it returns are the file's, and a tensor whose bytes do not
match its shape is refused by name."""

import hashlib
import itertools
import json
import struct
import time
import types

import pytest
import safetensors.torch
import torch
from llmc.artifacts import safetensors_stream
from llmc.artifacts.safetensors_stream import DTYPE_ORDER, Entry, header, ordered, write

ST_DTYPES = {
    torch.uint64: "U64", torch.int64: "I64", torch.float64: "F64", torch.float32: "F32", torch.uint32: "U32",
    torch.int32: "I32", torch.bfloat16: "BF16", torch.float16: "F16", torch.uint16: "U16", torch.int16: "I16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _entry(name, tensor, calls=None):
    def data():
        if calls is not None:
            calls.append(name)
        return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else memoryview(b"")

    return Entry(name, ST_DTYPES[tensor.dtype], tuple(tensor.shape), data)


def _random(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, torch.empty((), dtype=dtype).element_size()), dtype=torch.uint8,
                         generator=g).view(dtype).reshape(shape)


def _check(tmp_path, tensors: dict):
    path = tmp_path / "model.safetensors"
    sha, size = write(path, [_entry(name, t) for name, t in tensors.items()])
    data = path.read_bytes()
    assert data == safetensors.torch.save(tensors)
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    return data


def test_every_dtype_in_the_librarys_order(tmp_path):
    # names sort the other way round from the dtypes, so only the dtype order can put them right
    tensors = {f"{len(ST_DTYPES) - i:02d}.{st}": _random(dtype, (3, 5), i)
               for i, (dtype, st) in enumerate(ST_DTYPES.items())}
    data = _check(tmp_path, tensors)
    (n,) = struct.unpack("<Q", data[:8])
    fields = json.loads(data[8:8 + n])
    assert [f["dtype"] for f in fields.values()] == list(DTYPE_ORDER)
    assert set(ST_DTYPES.values()) == set(DTYPE_ORDER)


def test_names_within_a_dtype_in_sorted_order_and_offsets_back_to_back(tmp_path):
    tensors = {name: _random(torch.float32, (2, i + 1), i) for i, name in enumerate(["b.w", "a.w", "c", "a"])}
    data = _check(tmp_path, tensors)
    (n,) = struct.unpack("<Q", data[:8])
    fields = json.loads(data[8:8 + n])
    assert list(fields) == ["a", "a.w", "b.w", "c"]
    spans = [f["data_offsets"] for f in fields.values()]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans)) and spans[-1][1] == len(data) - 8 - n
    assert safetensors.torch.load(data)["b.w"].equal(tensors["b.w"])


@pytest.mark.parametrize("name_length", range(8))
def test_header_padded_with_spaces_to_a_multiple_of_8(tmp_path, name_length):
    data = _check(tmp_path, {"w" * (name_length + 1): _random(torch.bfloat16, (4,), name_length)})
    (n,) = struct.unpack("<Q", data[:8])
    text = data[8:8 + n]
    assert n % 8 == 0 and text.rstrip(b" ").endswith(b"}") and len(text) - len(text.rstrip(b" ")) < 8


def test_a_scalar_an_empty_tensor_and_a_non_ascii_name(tmp_path):
    tensors = {"scale": torch.tensor(2.5), "empty": torch.zeros(0, 4, dtype=torch.float16),
               "poids.é": _random(torch.int8, (7,), 1)}
    data = _check(tmp_path, tensors)
    assert "poids.é".encode() in data[:200]
    assert header(ordered([_entry(k, v) for k, v in tensors.items()])) == data[:len(data) - 4 - 7]  # less the scalar's 4 bytes and the 7 int8s


def test_each_tensors_bytes_are_made_once_in_file_order(tmp_path):
    calls = []
    entries = [_entry(name, _random(dtype, (2,), i), calls)
               for i, (name, dtype) in enumerate([("z", torch.float32), ("a", torch.int8), ("m", torch.float32)])]
    write(tmp_path / "w.safetensors", entries)
    assert calls == ["m", "z", "a"]



def test_files_side_by_side_are_each_as_written_alone_their_tensors_made_position_by_position(tmp_path):
    calls = []
    files = [{f"{k}.{name}": _random(dtype, (k + 2, 3), 3 * k + i) for i, (name, dtype) in enumerate(tensors)}
             for k, tensors in enumerate([[("b", torch.float32), ("a", torch.int8)],
                                          [("b", torch.float32), ("a", torch.int8), ("c", torch.int8)],
                                          [("b", torch.float32)]])]
    paths = [tmp_path / f"{k}.safetensors" for k in range(len(files))]
    got = safetensors_stream.write_side_by_side(paths, [[_entry(n, t, calls) for n, t in f.items()] for f in files])
    for path, tensors, (sha, size) in zip(paths, files, got):
        data = path.read_bytes()
        assert data == safetensors.torch.save(tensors)
        assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert calls == ["0.b", "1.b", "2.b", "0.a", "1.a", "1.c"]

def test_nbytes_is_elements_times_width():
    entry = Entry("w", "BF16", (3, 5), lambda: memoryview(b""))
    assert entry.nbytes == 30
    assert Entry("s", "F64", (), lambda: memoryview(b"")).nbytes == 8


@pytest.mark.parametrize("made", [29, 31])
def test_a_tensor_whose_bytes_do_not_fit_its_shape_is_refused_by_name(tmp_path, made):
    entries = [_entry("ok", torch.ones(2)), Entry("layers.0.w", "BF16", (3, 5), lambda: memoryview(bytes(made)))]
    with pytest.raises(ValueError) as e:
        write(tmp_path / "w.safetensors", entries)
    assert str(e.value) == f"tensor 'layers.0.w': {made} bytes made, its shape [3, 5] of BF16 needs 30"


class _SlowFirstUpdate:
    """sha256 whose first update is slow: a second hashing thread would hash the next slice before it."""

    def __init__(self):
        self.real, self.calls = hashlib.sha256(), 0

    def update(self, piece):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.05)
        self.real.update(piece)

    def hexdigest(self):
        return self.real.hexdigest()


def test_slices_are_hashed_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_stream, "SLICE", 5)  # the header and each tensor: several slices
    monkeypatch.setattr(safetensors_stream, "hashlib", types.SimpleNamespace(sha256=_SlowFirstUpdate))
    tensors = {"a": _random(torch.float32, (3, 5), 0), "b": _random(torch.int8, (3,), 1), "c": torch.ones(1)}
    path = tmp_path / "w.safetensors"
    sha, size = write(path, [_entry(name, t) for name, t in tensors.items()])
    assert path.read_bytes() == safetensors.torch.save(tensors)
    assert (sha, size) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
