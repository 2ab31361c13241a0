"""The schema of plans/<name>.json (docs/FORMAT.md): fields, buffers, and every argument reference.

Checks of form only; whether a plan can run with this bundle's weights, KV cache and kernels is
validate.py's.
"""

from __future__ import annotations

import math

from .manifest import (DTYPE, DTYPES, INTS, NONEMPTY, NONNEG, POS, POS_INTS, check_fields, fail, get, is_int,
                       is_number, need_dict, need_list)

PLAN = {"name": NONEMPTY, "kind": ("'decode' or 'prefill'", lambda v: v in ("decode", "prefill")),
        "num_tokens": POS, "num_seqs": POS, "num_logits": POS, "max_blocks_per_seq": POS, "arena_bytes": NONNEG}
TENSOR = {"shape": INTS, "dtype": DTYPE}
BUFFER = {"offset": NONNEG, "shape": INTS, "dtype": DTYPE}
STEP = {"node": NONEMPTY, "op": NONEMPTY, "provider": NONEMPTY}
# a step's NCCL call between tensor-parallel ranks, run before its launches: send/recv are arena buffers
COLLECTIVE = {"op": ("'all_reduce' or 'all_gather'", lambda v: v in ("all_reduce", "all_gather")), "dtype": DTYPE,
              "count": POS}
LAUNCH = {"kernel": NONEMPTY, "grid": ("1 to 3 positive integers",
                                       lambda v: POS_INTS[1](v) and 1 <= len(v) <= 3)}
ARENA_ALIGN = 256
MAX_LOGPROBS = 20  # top-logprob slots per logits row (vLLM's default max_logprobs)
LOGPROB_OUTPUTS = ("token_logprobs", "top_token_ids", "top_logprobs")  # a plan's logprobs outputs, in op order
MIN_LOGIT_EDITS, LOGIT_EDITS_PER_ROW = 8192, 512


def logit_edit_capacity(num_logits: int) -> int:
    """Entries of a plan's logit edits (penalties, logit_bias, min_tokens bans) over all its rows."""
    return max(MIN_LOGIT_EDITS, LOGIT_EDITS_PER_ROW * num_logits)
# name -> dtype of the per-step inputs the runtime fills, in the order the traced graph takes them
STEP_INPUTS = {
    "input_ids": "int32", "positions": "int32", "slot_mapping": "int32", "block_tables": "int32",
    "seq_lens": "int32", "query_start_loc": "int32", "logits_indices": "int32", "temperature": "float32",
    "top_k": "int32", "top_p": "float32", "min_p": "float32", "uniform": "float32", "logprob_token_ids": "int32",
    "num_logprobs": "int32", "logit_edit_index": "int32", "logit_edit_values": "float32", "allowed_bitmask": "int32",
    "bitmask_on": "int32",
}


# docs/FORMAT.md's padding of the step inputs' unused entries; every other input pads with 0
INPUT_PADS = {"slot_mapping": -1, "top_p": 1.0, "logprob_token_ids": -1, "num_logprobs": -1, "logit_edit_index": -1}


def step_input_shapes(t: int, b: int, r: int, max_blocks_per_seq: int, vocab: int) -> dict[str, list[int]]:
    """Each step input's shape in a plan of T tokens, B sequences and R logits rows."""
    e = logit_edit_capacity(r)
    return {"input_ids": [t], "positions": [t], "slot_mapping": [t], "block_tables": [b, max_blocks_per_seq],
            "seq_lens": [b], "query_start_loc": [b + 1], "logits_indices": [r], "temperature": [r], "top_k": [r],
            "top_p": [r], "min_p": [r], "uniform": [r], "logprob_token_ids": [r], "num_logprobs": [r],
            "logit_edit_index": [e, 2], "logit_edit_values": [e, 3], "allowed_bitmask": [r, -(-vocab // 32)],
            "bitmask_on": [r]}


def step_input_specs(t: int, b: int, r: int, max_blocks_per_seq: int, vocab: int) -> dict:
    """name -> {"shape", "dtype"} of every step input a plan of these dims declares."""
    shapes = step_input_shapes(t, b, r, max_blocks_per_seq, vocab)
    return {key: {"shape": shapes[key], "dtype": dtype} for key, dtype in STEP_INPUTS.items()}


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
    for i, step in enumerate(need_list(steps, doc, "steps")):
        where = f"steps[{i}]"
        check_fields(need_dict(step, doc, where), STEP, doc, where)
        args, field = get(step, "args", doc, where)
        for j, arg in enumerate(need_list(args, doc, field)):
            _check_ref(arg, ARG_FORMS, plan, doc, f"{field}[{j}]", allow_list=True)
        outs, field = get(step, "outputs", doc, where)
        for j, ref in enumerate(need_list(outs, doc, field)):
            _buffer_name(ref, plan, doc, f"{field}[{j}]")
        if "collective" in step:
            _check_collective(step["collective"], plan, doc, f"{where}.collective")
        for k, launch in enumerate(need_list(step.get("launches", []), doc, f"{where}.launches")):
            lwhere = f"{where}.launches[{k}]"
            check_fields(need_dict(launch, doc, lwhere), LAUNCH, doc, lwhere)
            params, field = get(launch, "params", doc, lwhere)
            for j, param in enumerate(need_list(params, doc, field)):
                _check_ref(param, PARAM_FORMS, plan, doc, f"{field}[{j}]")
    return plan


def _check_collective(obj: object, plan: dict, doc: str, where: str) -> None:
    """{"op", "send": {"buffer"}, "recv": {"buffer"}, "dtype", "count"}: count elements of dtype sent per rank."""
    check_fields(need_dict(obj, doc, where), COLLECTIVE, doc, where)
    for key in ("send", "recv"):
        ref, field = get(obj, key, doc, where)
        _check_ref(ref, ("buffer",), plan, doc, field)
        buf = plan["buffers"][ref["buffer"]]
        if math.prod(buf["shape"]) * DTYPES[buf["dtype"]] < obj["count"] * DTYPES[obj["dtype"]]:
            fail(doc, field, f"names a buffer smaller than count {obj['count']} of {obj['dtype']}")


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


