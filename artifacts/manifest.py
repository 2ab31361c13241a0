"""The manifest contract (docs/FORMAT.md): version, root digest, and schema checks (plans: plan_schema.py).

Each `validate_*` takes any Python object and either returns it unchanged or raises
`BundleError` with one line naming the file and the field, e.g.
"manifest.json: field 'target.name' must be a string". The manifest, plans, the lock and the
kernel index are described as tables of (field, check) where their shape allows it.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Callable

from llmc.errors import BundleError

from .canonical import dumps

FORMAT_VERSION = 2  # 2: the root digest covers the whole manifest, not only its file table
MANIFEST = "manifest.json"

# dtype name -> bytes per element; the names are torch's without the "torch." prefix.
DTYPES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_GRANULARITY = re.compile(r"block[1-9][0-9]*|channel|tensor")


def root_digest(manifest: dict) -> str:
    """sha256 of the canonical JSON of the manifest without its `root_digest` field (FORMAT.md).

    The manifest lists every other file with its sha256 and size, so the root covers every byte
    of the bundle: signing the root signs the bundle.
    """
    body = {key: value for key, value in manifest.items() if key != "root_digest"}
    return hashlib.sha256(dumps(body)).hexdigest()


def is_safe_relpath(name: object) -> bool:
    """A relative POSIX path inside the bundle: no '..', '.', empty parts, backslash or NUL."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


# ---- field checkers: (description, predicate) -----------------------------------------------

Check = tuple[str, Callable[[Any], bool]]


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


STR: Check = ("a string", lambda v: isinstance(v, str))
NONEMPTY: Check = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
NONNEG: Check = ("a non-negative integer", lambda v: is_int(v) and v >= 0)
POS: Check = ("a positive integer", lambda v: is_int(v) and v > 0)
INT_OR_NULL: Check = ("an integer or null", lambda v: v is None or is_int(v))
INTS: Check = ("a list of non-negative integers", lambda v: isinstance(v, list) and all(is_int(x) and x >= 0 for x in v))
POS_INTS: Check = ("a list of positive integers", lambda v: isinstance(v, list) and all(is_int(x) and x > 0 for x in v))
DTYPE: Check = (f"a dtype name ({', '.join(DTYPES)})", lambda v: isinstance(v, str) and v in DTYPES)
HEX64: Check = ("a sha256 hex digest (64 lowercase hex characters)", lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)))
ARCH: Check = ("an integer, a string or null", lambda v: v is None or is_int(v) or isinstance(v, str))
STR_MAP: Check = ("an object of strings", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))
VERSIONS: Check = ("an object of version strings or null",
                   lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()))
PRIORITY: Check = ("an object mapping op names to lists of provider names",
                   lambda v: isinstance(v, dict) and all(isinstance(x, list) and all(isinstance(p, str) for p in x)
                                                         for x in v.values()))

# ---- the manifest, as tables: section -> {field: check} -------------------------------------

TARGET = {"name": NONEMPTY, "backend": NONEMPTY, "arch": ARCH, "warp_size": POS}
MODEL = {
    "architecture": NONEMPTY, "dtype": DTYPE, "vocab_size": POS, "hidden_size": POS, "num_layers": POS,
    "num_q_heads": POS, "num_kv_heads": POS, "head_dim": POS, "intermediate_size": POS,
    "max_position_embeddings": POS, "eos_token_ids": INTS, "bos_token_id": INT_OR_NULL, "sliding_window": NONNEG,
}
BUILD = {
    "dtype": DTYPE, "max_batch_size": POS, "max_seq_len": POS, "kv_block_size": POS,
    "max_num_batched_tokens": POS, "op_priority": PRIORITY, "decode_buckets": POS_INTS, "prefill_buckets": POS_INTS,
}
KV_CACHE = {"num_layers": POS, "block_size": POS, "num_kv_heads": POS, "head_dim": POS, "dtype": DTYPE}
SECTIONS = {"target": TARGET, "model": MODEL, "build": BUILD, "kv_cache": KV_CACHE}
TOP = {"llmc_version": NONEMPTY, "toolchain": VERSIONS, "build_key": NONEMPTY, "root_digest": HEX64}
QUANTIZATION = {  # optional: present when the bundle's linears are FP8 (aot/quantize.py)
    "weights": ("'fp8_e4m3'", lambda v: v == "fp8_e4m3"),
    "granularity": ("'block<N>', 'channel' or 'tensor'", lambda v: isinstance(v, str) and bool(_GRANULARITY.fullmatch(v))),
    "activations": ("'dynamic_per_token', 'dynamic_per_group' or 'none'",
                    lambda v: v in ("dynamic_per_token", "dynamic_per_group", "none")),
}

PARALLEL = {"tensor_parallel_size": POS}  # optional: present when the weights are split across ranks (weights/rank<r>/)


def fail(doc: str, field: str, what: str) -> None:
    raise BundleError(f"{doc}: field {field!r} {what}")


def need_dict(obj: object, doc: str, field: str) -> dict:
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        if not field:
            raise BundleError(f"{doc}: must be a JSON object")
        fail(doc, field, "must be an object")
    return obj


def get(obj: dict, key: str, doc: str, where: str = "") -> tuple[Any, str]:
    field = f"{where}.{key}" if where else key
    if key not in obj:
        fail(doc, field, "is missing")
    return obj[key], field


def check_fields(obj: dict, table: dict[str, Check], doc: str, where: str = "") -> None:
    for key, (description, ok) in table.items():
        value, field = get(obj, key, doc, where)
        if not ok(value):
            fail(doc, field, f"must be {description}")


def check_format_version(obj: object, doc: str = MANIFEST) -> int:
    """The bundle's format version, refusing a non-integer or one newer than this llmc reads."""
    version, _ = get(need_dict(obj, doc, ""), "format_version", doc)
    if not is_int(version):
        fail(doc, "format_version", "must be an integer")
    if version > FORMAT_VERSION:
        raise BundleError(f"bundle format {version} is newer than this llmc (reads {FORMAT_VERSION}): upgrade llmc")
    if version < 1:
        raise BundleError(f"bundle format {version} is not a valid format version (this llmc reads "
                          f"{FORMAT_VERSION}): rebuild the bundle")
    if version < FORMAT_VERSION:
        raise BundleError(f"bundle format {version} is older than this llmc reads ({FORMAT_VERSION}): its root "
                          "digest does not cover the manifest; rebuild the bundle with this llmc")
    return version


def validate_manifest(obj: object) -> dict:
    """Check the type of every required manifest field; return the manifest."""
    doc = MANIFEST
    check_format_version(obj, doc)
    check_fields(obj, TOP, doc)
    for section, table in SECTIONS.items():
        value, field = get(obj, section, doc)
        check_fields(need_dict(value, doc, field), table, doc, field)
    if "quantization" in obj:
        check_fields(need_dict(obj["quantization"], doc, "quantization"), QUANTIZATION, doc, "quantization")
    if "parallel" in obj:
        check_fields(need_dict(obj["parallel"], doc, "parallel"), PARALLEL, doc, "parallel")
    files, _ = get(obj, "files", doc)
    for name, entry in need_dict(files, doc, "files").items():
        field = f"files[{name!r}]"
        if not is_safe_relpath(name) or name == MANIFEST:
            fail(doc, field, "must name a file inside the bundle (a relative path without '..', not manifest.json)")
        check_fields(need_dict(entry, doc, field), {"sha256": HEX64, "size": NONNEG}, doc, field)
    return obj


def need_list(obj: object, doc: str, field: str) -> list:
    if not isinstance(obj, list):
        fail(doc, field, "must be a list")
    return obj


# ---- impls.lock.json and kernels/index.json ---------------------------------------------------

LOCK_NODE = {"op": NONEMPTY, "provider": NONEMPTY, "rejected": STR_MAP}
KERNEL = {
    "name": NONEMPTY, "target": NONEMPTY, "num_warps": POS, "num_ctas": POS, "shared": NONNEG,
    "global_scratch_size": NONNEG, "global_scratch_align": POS, "profile_scratch_size": NONNEG,
    "profile_scratch_align": POS,
}
KERNEL_PARAM = {"name": NONEMPTY, "type": NONEMPTY}


def validate_lock(obj: object) -> dict:
    """impls.lock.json: {"nodes": {"<plan>/<node>": {"op", "provider", "rejected": {provider: reason}}}}."""
    doc = "impls.lock.json"
    nodes, _ = get(need_dict(obj, doc, ""), "nodes", doc)
    for key, entry in need_dict(nodes, doc, "nodes").items():
        field = f"nodes[{key!r}]"
        if "/" not in key:
            fail(doc, field, "must be named '<plan>/<node>'")
        check_fields(need_dict(entry, doc, field), LOCK_NODE, doc, field)
    return obj


def validate_kernel_index(obj: object) -> dict:
    """kernels/index.json: kernel id (sha256 of the binary) -> file, entry name, ABI, launch metadata."""
    doc = "kernels/index.json"
    kernels, _ = get(need_dict(obj, doc, ""), "kernels", doc)
    for kid, entry in need_dict(kernels, doc, "kernels").items():
        field = f"kernels[{kid!r}]"
        if not HEX64[1](kid):
            fail(doc, field, "must be keyed by the kernel's sha256 (64 lowercase hex characters)")
        check_fields(need_dict(entry, doc, field), KERNEL, doc, field)
        file, ffield = get(entry, "file", doc, field)
        if not is_safe_relpath(file) or not file.startswith("kernels/"):
            fail(doc, ffield, "must be a path under kernels/")
        params, pfield = get(entry, "params", doc, field)
        for j, param in enumerate(need_list(params, doc, pfield)):
            check_fields(need_dict(param, doc, f"{pfield}[{j}]"), KERNEL_PARAM, doc, f"{pfield}[{j}]")
    return obj
