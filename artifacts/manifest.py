"""The manifest contract (docs/FORMAT.md): version, root digest, and schema checks.

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

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# dtype name -> bytes per element; the names are torch's without the "torch." prefix.
DTYPES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}

_HEX64 = re.compile(r"[0-9a-f]{64}")


def root_digest(files: dict) -> str:
    """sha256 over the sorted (name, sha256, size) triples of `files` (FORMAT.md)."""
    text = "".join(f"{name}\0{files[name]['sha256']}\0{files[name]['size']}\n" for name in sorted(files))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    return version


def validate_manifest(obj: object) -> dict:
    """Check the type of every required manifest field; return the manifest."""
    doc = MANIFEST
    check_format_version(obj, doc)
    check_fields(obj, TOP, doc)
    for section, table in SECTIONS.items():
        value, field = get(obj, section, doc)
        check_fields(need_dict(value, doc, field), table, doc, field)
    files, _ = get(obj, "files", doc)
    for name, entry in need_dict(files, doc, "files").items():
        field = f"files[{name!r}]"
        if not is_safe_relpath(name) or name == MANIFEST:
            fail(doc, field, "must name a file inside the bundle (a relative path without '..', not manifest.json)")
        check_fields(need_dict(entry, doc, field), {"sha256": HEX64, "size": NONNEG}, doc, field)
    return obj


# ---- plans/<name>.json ------------------------------------------------------------------------

PLAN = {"name": NONEMPTY, "kind": ("'decode' or 'prefill'", lambda v: v in ("decode", "prefill")),
        "num_tokens": POS, "num_seqs": POS, "num_logits": POS, "max_blocks_per_seq": POS, "arena_bytes": NONNEG}
TENSOR = {"shape": INTS, "dtype": DTYPE}
BUFFER = {"offset": NONNEG, "shape": INTS, "dtype": DTYPE}
STEP = {"node": NONEMPTY, "op": NONEMPTY, "provider": NONEMPTY}
LAUNCH = {"kernel": NONEMPTY, "grid": ("1 to 3 positive integers",
                                       lambda v: POS_INTS[1](v) and 1 <= len(v) <= 3)}
ARENA_ALIGN = 256
SCALAR_RANGE = {"i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1), "fp32": None}
ARG_FORMS = ("buffer", "input", "weight", "kv_cache", "const")  # the op's arguments (cpu backend)
PARAM_FORMS = ("buffer", "input", "weight", "kv_cache", "scalar", "null")  # a kernel's parameters


def validate_plan(obj: object, name: str) -> dict:
    """Check a launch plan's structure and that every buffer reference names a buffer."""
    doc = f"plans/{name}.json"
    plan = need_dict(obj, doc, "")
    check_fields(plan, PLAN, doc)
    if plan["name"] != name:
        fail(doc, "name", f"must be {name!r}, the plan's file name")
    for section, table in (("inputs", TENSOR), ("buffers", BUFFER)):
        value, field = get(plan, section, doc)
        for key, spec in need_dict(value, doc, field).items():
            check_fields(need_dict(spec, doc, f"{field}.{key}"), table, doc, f"{field}.{key}")
    for key, buf in plan["buffers"].items():
        nbytes = math.prod(buf["shape"]) * DTYPES[buf["dtype"]]
        if buf["offset"] % ARENA_ALIGN:
            fail(doc, f"buffers.{key}.offset", f"must be a multiple of {ARENA_ALIGN}")
        if buf["offset"] + nbytes > plan["arena_bytes"]:
            fail(doc, f"buffers.{key}", f"ends at byte {buf['offset'] + nbytes}, past arena_bytes {plan['arena_bytes']}")
    outputs, _ = get(plan, "outputs", doc)
    for key, ref in need_dict(outputs, doc, "outputs").items():
        _buffer_name(ref, plan, doc, f"outputs.{key}")
    steps, _ = get(plan, "steps", doc)
    for i, step in enumerate(_need_list(steps, doc, "steps")):
        where = f"steps[{i}]"
        check_fields(need_dict(step, doc, where), STEP, doc, where)
        args, field = get(step, "args", doc, where)
        for j, arg in enumerate(_need_list(args, doc, field)):
            _check_ref(arg, ARG_FORMS, plan, doc, f"{field}[{j}]", allow_list=True)
        outs, field = get(step, "outputs", doc, where)
        for j, ref in enumerate(_need_list(outs, doc, field)):
            _buffer_name(ref, plan, doc, f"{field}[{j}]")
        for k, launch in enumerate(_need_list(step.get("launches", []), doc, f"{where}.launches")):
            lwhere = f"{where}.launches[{k}]"
            check_fields(need_dict(launch, doc, lwhere), LAUNCH, doc, lwhere)
            params, field = get(launch, "params", doc, lwhere)
            for j, param in enumerate(_need_list(params, doc, field)):
                _check_ref(param, PARAM_FORMS, plan, doc, f"{field}[{j}]")
    return plan


def _need_list(obj: object, doc: str, field: str) -> list:
    if not isinstance(obj, list):
        fail(doc, field, "must be a list")
    return obj


def _buffer_name(ref: object, plan: dict, doc: str, field: str) -> None:
    if not isinstance(ref, str) or ref not in plan["buffers"]:
        fail(doc, field, "must name a buffer of 'buffers'")


def _is_const(v: object, depth: int = 0) -> bool:
    if v is None or isinstance(v, bool) or is_number(v):
        return True
    return isinstance(v, list) and depth < 4 and all(_is_const(x, depth + 1) for x in v)


def _check_ref(ref: object, forms: tuple[str, ...], plan: dict, doc: str, field: str, allow_list: bool = False):
    """One argument reference of FORMAT.md: {"buffer": name}, {"kv_cache": "k", "layer": 0}, ..."""
    if allow_list and isinstance(ref, list):  # a list-of-tensors argument (concat)
        for j, item in enumerate(ref):
            _check_ref(item, forms, plan, doc, f"{field}[{j}]")
        return
    keys = set(ref) if isinstance(ref, dict) else set()
    form = next((f for f in forms if f in keys), None)
    extra = {"kv_cache": {"layer"}, "scalar": {"type"}}.get(form, set())
    if form is None or keys != {form} | extra:
        fail(doc, field, "must be one of " + ", ".join(_FORM_TEXT[f] for f in forms))
    value = ref[form]
    if form == "buffer":
        _buffer_name(value, plan, doc, f"{field}.buffer")
    elif form == "input" and (not isinstance(value, str) or value not in plan["inputs"]):
        fail(doc, f"{field}.input", "must name an input of 'inputs'")
    elif form == "weight" and not NONEMPTY[1](value):
        fail(doc, f"{field}.weight", "must be a non-empty string")
    elif form == "kv_cache":
        if value not in ("k", "v"):
            fail(doc, f"{field}.kv_cache", "must be 'k' or 'v'")
        if not NONNEG[1](ref["layer"]):
            fail(doc, f"{field}.layer", "must be a non-negative integer")
    elif form == "const" and not _is_const(value):
        fail(doc, f"{field}.const", "must be a number, a list of numbers, or null")
    elif form == "scalar":
        kind = ref["type"]
        if not isinstance(kind, str) or kind not in SCALAR_RANGE:
            fail(doc, f"{field}.type", "must be 'i32', 'i64' or 'fp32'")
        bounds = SCALAR_RANGE[kind]
        if bounds is None and not is_number(value):
            fail(doc, f"{field}.scalar", "must be a finite number")
        if bounds is not None and not (is_int(value) and bounds[0] <= value <= bounds[1]):
            fail(doc, f"{field}.scalar", f"must be an integer in {kind} range")
    elif form == "null" and value is not True:
        fail(doc, f"{field}.null", "must be true")


_FORM_TEXT = {
    "buffer": '{"buffer": name}', "input": '{"input": name}', "weight": '{"weight": name}',
    "kv_cache": '{"kv_cache": "k"|"v", "layer": i}', "const": '{"const": value}',
    "scalar": '{"scalar": value, "type": "i32"|"i64"|"fp32"}', "null": '{"null": true}',
}


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
        for j, param in enumerate(_need_list(params, doc, pfield)):
            check_fields(need_dict(param, doc, f"{pfield}[{j}]"), KERNEL_PARAM, doc, f"{pfield}[{j}]")
    return obj
