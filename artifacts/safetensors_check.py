"""Check a user's safetensors checkpoint before anything loads it.

Reads only the headers. Every problem is a `UserError` of one line naming the file and the
tensor or field, e.g. "model.safetensors: tensor 'lm_head.weight' has 1000 bytes of data but
shape [64, 32] of BF16 needs 4096".
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from llmc.errors import UserError

from .canonical import load_file
from .manifest import is_int, is_safe_relpath

MAX_HEADER = 100_000_000  # bytes, the limit of the safetensors library
INDEX = "model.safetensors.index.json"
DTYPES = {  # safetensors dtype -> bytes per element
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}
_CORRUPT = "the file is truncated or corrupt: download or convert it again"


class _Pairs(list):
    """A JSON object as its list of (key, value) pairs, so duplicate keys stay visible."""


def check_safetensors(path: str | os.PathLike, label: str | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Validate one .safetensors file's header against its size; return name -> (dtype, shape)."""
    return {name: (dtype, shape) for name, (dtype, shape, _, _) in tensor_spans(path, label).items()}


def tensor_spans(path: str | os.PathLike, label: str | None = None) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """Validate one .safetensors file's header; return name -> (dtype, shape, begin, end), offsets in the file."""
    path = Path(path)
    label = label or path.name
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{label}: file is {size} bytes, too short for a safetensors header; {_CORRUPT}")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise UserError(f"{label}: header length {n} bytes is over the 100 MB limit; {_CORRUPT}")
            if 8 + n > size:
                raise UserError(f"{label}: header length {n} bytes is longer than the {size - 8} bytes after the "
                                f"length field; {_CORRUPT}")
            raw = f.read(n)
    except FileNotFoundError:
        raise UserError(f"{label}: file not found") from None
    except OSError as e:
        raise UserError(f"{label}: cannot be read ({e.strerror})") from None
    pairs = _parse_header(raw, label)
    return _check_tensors(pairs, size - 8 - n, label, 8 + n)


def _parse_header(raw: bytes, label: str) -> _Pairs:
    try:
        pairs = json.loads(raw.decode("utf-8"), object_pairs_hook=_Pairs)
    except UnicodeDecodeError:
        raise UserError(f"{label}: the header is not valid UTF-8; {_CORRUPT}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{label}: invalid JSON in the header ({e.msg} at char {e.pos}); {_CORRUPT}") from None
    except (ValueError, RecursionError):
        raise UserError(f"{label}: invalid JSON in the header; {_CORRUPT}") from None
    if not isinstance(pairs, _Pairs):
        raise UserError(f"{label}: the header must be a JSON object; {_CORRUPT}")
    return pairs


def _as_dict(pairs: object, label: str, where: str) -> dict:
    if not isinstance(pairs, _Pairs):
        raise UserError(f"{label}: {where} must be a JSON object; {_CORRUPT}")
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise UserError(f"{label}: {where} has field {key!r} twice; {_CORRUPT}")
    return dict(pairs)


def _check_tensors(pairs: _Pairs, data_size: int, label: str, start: int) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    spans = []
    for name, entry in pairs:
        if name == "__metadata__":
            meta = _as_dict(entry, label, "'__metadata__'")
            if not all(isinstance(v, str) for v in meta.values()):
                raise UserError(f"{label}: '__metadata__' must map names to strings; {_CORRUPT}")
            continue
        if name in tensors:
            raise UserError(f"{label}: tensor {name!r} appears twice in the header; {_CORRUPT}")
        where = f"tensor {name!r}"
        entry = _as_dict(entry, label, where)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise UserError(f"{label}: {where} has dtype {dtype!r}, which llmc does not read "
                            f"(it reads {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise UserError(f"{label}: {where}: field 'shape' must be a list of non-negative integers; {_CORRUPT}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise UserError(f"{label}: {where}: field 'data_offsets' must be [begin, end] with "
                            f"0 <= begin <= end; {_CORRUPT}")
        begin, end = offsets
        if end > data_size:
            raise UserError(f"{label}: {where} has data_offsets [{begin}, {end}] past the end of the data "
                            f"({data_size} bytes); {_CORRUPT}")
        need = math.prod(shape) * DTYPES[dtype]
        if end - begin != need:
            raise UserError(f"{label}: {where} has {end - begin} bytes of data but shape {shape} of {dtype} "
                            f"needs {need}; {_CORRUPT}")
        tensors[name] = (dtype, tuple(shape), start + begin, start + end)
        spans.append((begin, end, name))
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            raise UserError(f"{label}: tensor {name!r} (bytes {begin}..{end}) overlaps tensor {prev!r} "
                            f"(ending at byte {pos}); {_CORRUPT}")
        if begin > pos:
            raise UserError(f"{label}: bytes {pos}..{begin} of the data belong to no tensor (a gap before "
                            f"tensor {name!r}); {_CORRUPT}")
        pos, prev = end, name
    if pos != data_size:
        raise UserError(f"{label}: the last {data_size - pos} bytes of the data belong to no tensor; {_CORRUPT}")
    return tensors


def check_sharded_index(model_dir: str | os.PathLike) -> dict[str, str]:
    """Parse model.safetensors.index.json; refuse bad JSON or a missing shard. Return tensor -> shard."""
    model_dir = Path(model_dir)
    index = load_file(model_dir / INDEX, INDEX, UserError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{INDEX}: field 'weight_map' must be an object mapping tensor names to shard files")
    for shard in sorted(set(weight_map.values())):
        if not is_safe_relpath(shard):
            raise UserError(f"{INDEX}: field 'weight_map' names shard {shard!r}, which is not a file inside "
                            f"{model_dir}")
        if not (model_dir / shard).is_file():
            raise UserError(f"{INDEX}: names shard {shard!r}, which is missing from {model_dir}; "
                            "download the checkpoint again")
    return weight_map


def check_checkpoint(model_dir: str | os.PathLike) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """Check every weight file of a checkpoint (single or sharded): tensor -> (file, dtype, shape)."""
    model_dir = Path(model_dir)
    weight_map = check_sharded_index(model_dir) if (model_dir / INDEX).exists() else None
    if weight_map is not None:
        shards = sorted(set(weight_map.values()))
    elif (model_dir / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise UserError(f"{model_dir}: has neither model.safetensors nor {INDEX}; pass a Hugging Face "
                        "checkpoint directory with safetensors weights")
    found: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    for shard in shards:
        for name, (dtype, shape) in check_safetensors(model_dir / shard, shard).items():
            if name in found:
                raise UserError(f"{shard}: tensor {name!r} is also in {found[name][0]}; the checkpoint is "
                                "inconsistent: download it again")
            found[name] = (shard, dtype, shape)
    for name, shard in (weight_map or {}).items():
        if found.get(name, (None,))[0] != shard:
            raise UserError(f"{INDEX}: maps tensor {name!r} to {shard}, which does not hold it")
    return found
