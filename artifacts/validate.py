"""Is a bundle that verifies also runnable? Checks of meaning, after the checks of form in manifest.py.

A manifest or plan can be well-formed (and re-digested after an edit) yet name a weight the
weights lack, a KV layer that does not exist, a kernel built for another target, or an arena of
2**62 bytes. These checks read only JSON and the weights' safetensors headers, so they are cheap
and run at load before anything is allocated. Each refusal is one BundleError line naming the
file and field.
"""

from __future__ import annotations

import functools
import math

from llmc.errors import BundleError, UserError

from .manifest import DTYPES, MANIFEST
from .plan_schema import ARENA_ALIGN, MAX_LOGPROBS, STEP_INPUTS, step_input_shapes
from .safetensors_check import check_safetensors

MALFORMED = "the bundle is malformed: rebuild it with llmc build"
BACKENDS = ("cpu", "cuda", "hip")

# Upper bounds on what a manifest may ask the runtime to allocate or loop over.
LIMITS = {
    "model.vocab_size": 1 << 24, "model.hidden_size": 1 << 20, "model.num_layers": 4096,
    "model.num_q_heads": 4096, "model.num_kv_heads": 4096, "model.head_dim": 4096,
    "model.intermediate_size": 1 << 22, "model.max_position_embeddings": 1 << 24,
    "build.max_seq_len": 1 << 20, "build.max_batch_size": 1 << 16, "build.kv_block_size": 4096,
    "build.max_num_batched_tokens": 1 << 22,
    "kv_cache.num_layers": 4096, "kv_cache.block_size": 4096, "kv_cache.num_kv_heads": 4096, "kv_cache.head_dim": 4096,
}
GRID_LIMITS = (2**31 - 1, 65535, 65535)
ARENA_ROWS_PER_TOKEN, MIN_ARENA_LIMIT = 64, 64 << 20
MAX_THREADS = 1024
MAX_SHARED = 256 << 10
MAX_SCRATCH = 1 << 30
SCALAR_TYPES = {"i1": "i32", "i8": "i32", "i16": "i32", "i32": "i32", "u32": "i32", "i64": "i64", "u64": "i64",
                "fp16": "fp32", "bf16": "fp32", "fp32": "fp32", "fp64": "fp32"}


def validate_bundle(bundle) -> None:
    """Raise BundleError (one line) for the first thing in `bundle` the runtime could not run."""
    try:
        _validate(bundle)
    except BundleError as e:
        raise BundleError(f"{bundle.label}: {e}; {MALFORMED}") from None


def _validate(bundle) -> None:
    manifest = bundle.manifest
    check_manifest(manifest)
    weights = weight_names(bundle)
    check_ranks(bundle)
    index = bundle.kernel_index()["kernels"]
    check_kernel_index(index, manifest)
    plans = bundle.plans()
    if not plans:
        raise BundleError(f"{MANIFEST}: field 'files' lists no plans/*.json")
    for kind in ("decode", "prefill"):
        if not any(name.startswith(f"{kind}_") for name in plans):
            raise BundleError(f"{MANIFEST}: field 'files' lists no {kind} plan (plans/{kind}_*.json)")
    for name in plans:
        try:
            plan = bundle.plan(name)
        except BundleError as e:  # already names the bundle and what to do: drop both, they are added back
            raise BundleError(str(e).removeprefix(f"{bundle.label}: ").removesuffix(f"; {MALFORMED}")) from None
        check_plan(plan, name, manifest, index, weights)


# ---- the manifest -----------------------------------------------------------------------------

def check_manifest(manifest: dict) -> None:
    for path, limit in LIMITS.items():
        section, key = path.split(".")
        if manifest[section][key] > limit:
            _fail(MANIFEST, path, f"is {manifest[section][key]}, over the limit of {limit}")
    target, model, build, kv = manifest["target"], manifest["model"], manifest["build"], manifest["kv_cache"]
    if build["max_seq_len"] < 2:
        _fail(MANIFEST, "build.max_seq_len", "must be at least 2 (one prompt token and one generated)")
    if target["backend"] not in BACKENDS:
        _fail(MANIFEST, "target.backend", f"must be one of {', '.join(BACKENDS)}")
    if model["num_q_heads"] % model["num_kv_heads"]:
        _fail(MANIFEST, "model.num_q_heads", f"({model['num_q_heads']}) must be a multiple of model.num_kv_heads "
                                             f"({model['num_kv_heads']})")
    for i, token in enumerate(model["eos_token_ids"]):
        if token >= model["vocab_size"]:
            _fail(MANIFEST, f"model.eos_token_ids[{i}]", f"({token}) must be below model.vocab_size ({model['vocab_size']})")
    bos = model["bos_token_id"]
    if bos is not None and not 0 <= bos < model["vocab_size"]:
        _fail(MANIFEST, "model.bos_token_id", f"({bos}) must be in 0..{model['vocab_size'] - 1}")
    if kv["block_size"] != build["kv_block_size"]:
        _fail(MANIFEST, "kv_cache.block_size", f"({kv['block_size']}) must equal build.kv_block_size "
                                               f"({build['kv_block_size']})")
    for key, most in (("decode_buckets", build["max_batch_size"]), ("prefill_buckets", build["max_num_batched_tokens"])):
        for i, size in enumerate(build[key]):
            if size > most:
                _fail(MANIFEST, f"build.{key}[{i}]", f"({size}) is over its maximum ({most})")


# ---- weights and kernels ----------------------------------------------------------------------

def weight_names(bundle) -> set[str]:
    """Every tensor name in the bundle's weights/*.safetensors, from their headers only."""
    names: set[str] = set()
    for rel in sorted(f for f in bundle.manifest["files"] if f.startswith("weights/") and f.endswith(".safetensors")):
        try:
            names.update(check_safetensors(bundle.file(rel), rel))
        except BundleError:
            raise
        except UserError as e:
            raise BundleError(str(e).split("; ")[0]) from None
    return names


def tensor_parallel_size(manifest: dict) -> int:
    return manifest.get("parallel", {}).get("tensor_parallel_size", 1)


def check_ranks(bundle) -> None:
    """A tensor-parallel bundle holds weights/rank<r>/ for every rank and nothing else under weights/; every rank
    holds the same tensor names (the plans are shared); a single-rank bundle holds no rank folders."""
    size = tensor_parallel_size(bundle.manifest)
    files = sorted(f for f in bundle.manifest["files"] if f.startswith("weights/") and f.endswith(".safetensors"))
    by_rank: dict[int, list[str]] = {}
    for rel in files:
        folder = rel.split("/")[1]
        rank = int(folder[4:]) if folder.startswith("rank") and folder[4:].isdigit() and rel.count("/") == 2 else None
        if (rank is None) != (size == 1) or (rank is not None and rank >= size):
            _fail(MANIFEST, f"files[{rel!r}]", f"is not a weights file of a bundle with parallel.tensor_parallel_size {size}")
        by_rank.setdefault(rank, []).append(rel)
    if size == 1:
        return
    first = None
    for rank in range(size):
        if rank not in by_rank:
            _fail(MANIFEST, "files", f"lists no weights/rank{rank}/*.safetensors for rank {rank} of {size}")
        names: set[str] = set()
        for rel in by_rank[rank]:
            names.update(check_safetensors(bundle.file(rel), rel))
        if first is not None and names != first:
            _fail(by_rank[rank][0], "tensors", f"differ from rank 0's ({', '.join(sorted(names ^ first)[:3])}); "
                  "the rank's file is from another build")
        first = names if first is None else first


def check_kernel_index(index: dict, manifest: dict) -> None:
    doc, target = "kernels/index.json", manifest["target"]
    if index and target["backend"] == "cpu":
        _fail(doc, "kernels", "must be empty: the cpu target runs no compiled kernels")
    for kid, entry in index.items():
        field = f"kernels[{kid!r}]"
        if entry["target"] != target["name"]:
            _fail(doc, f"{field}.target", f"is {entry['target']!r}; the bundle is built for {target['name']!r}")
        threads = entry["num_warps"] * target["warp_size"]
        if threads > MAX_THREADS:
            _fail(doc, f"{field}.num_warps", f"gives {threads} threads per block, over {MAX_THREADS}")
        if entry["shared"] > MAX_SHARED:
            _fail(doc, f"{field}.shared", f"({entry['shared']} bytes) is over {MAX_SHARED}")
        for kind in ("global", "profile"):
            if entry[f"{kind}_scratch_size"] > MAX_SCRATCH:
                _fail(doc, f"{field}.{kind}_scratch_size", f"is over {MAX_SCRATCH} bytes")
            align = entry[f"{kind}_scratch_align"]
            if align & (align - 1) or align > 4096:
                _fail(doc, f"{field}.{kind}_scratch_align", "must be a power of two, at most 4096")


# ---- plans ------------------------------------------------------------------------------------

def check_plan(plan: dict, name: str, manifest: dict, index: dict, weights: set[str]) -> None:
    doc = f"plans/{name}.json"
    build, kv = manifest["build"], manifest["kv_cache"]
    t, b, r = plan["num_tokens"], plan["num_seqs"], plan["num_logits"]
    if not name.startswith(plan["kind"] + "_"):
        _fail(doc, "kind", f"is {plan['kind']!r}; the plan's name says otherwise")
    if b > build["max_batch_size"]:
        _fail(doc, "num_seqs", f"({b}) is over build.max_batch_size ({build['max_batch_size']})")
    if t > max(build["max_num_batched_tokens"], build["max_batch_size"]):
        _fail(doc, "num_tokens", f"({t}) is over build.max_num_batched_tokens ({build['max_num_batched_tokens']})")
    if r > t or (plan["kind"] == "decode" and t != b):
        _fail(doc, "num_logits", "must be at most num_tokens (and a decode plan has one token per sequence)")
    blocks = -(-build["max_seq_len"] // build["kv_block_size"])
    if plan["max_blocks_per_seq"] != blocks:
        _fail(doc, "max_blocks_per_seq", f"must be {blocks} (build.max_seq_len / build.kv_block_size, rounded up)")
    _check_inputs(plan, doc, manifest["model"]["vocab_size"])
    _check_arena(plan, doc, manifest["model"])
    _check_outputs(plan, doc, manifest["model"]["vocab_size"])
    gpu = manifest["target"]["backend"] != "cpu"
    for i, step in enumerate(plan["steps"]):
        where = f"steps[{i}]"
        launches = step.get("launches", [])
        if gpu and not launches and "collective" not in step:
            _fail(doc, f"{where}.launches", f"is empty: node {step['node']!r} (op {step['op']}, provider "
                  f"{step['provider']}) runs no kernel, which the {manifest['target']['backend']} runtime needs")
        if not gpu and (step["provider"] != "native" or launches):
            _fail(doc, f"{where}.provider", f"is {step['provider']!r}; the cpu runtime runs native steps only")
        if not gpu and step["op"] not in _cpu_ops():
            _fail(doc, f"{where}.op", f"names op {step['op']!r}, which this llmc does not have")
        for j, arg in enumerate(step["args"]):
            _check_ref(arg, f"{where}.args[{j}]", doc, kv, weights)
        for k, launch in enumerate(launches):
            lwhere = f"{where}.launches[{k}]"
            _check_launch(launch, index[launch["kernel"]], lwhere, doc)
            for j, param in enumerate(launch["params"]):
                _check_ref(param, f"{lwhere}.params[{j}]", doc, kv, weights)


@functools.cache
def _cpu_ops() -> frozenset[str]:
    """The ops the cpu runtime can run (their native functions); needs the build extra, as that runtime does."""
    try:
        from llmc.aot.ir import OPS
    except ImportError:  # no torch: the cpu runtime cannot load anything, and says so itself
        return _ANY_OP
    return frozenset(OPS)


class _Everything(frozenset):
    def __contains__(self, item) -> bool:
        return True


_ANY_OP = _Everything()


def _check_inputs(plan: dict, doc: str, vocab: int) -> None:
    shapes = step_input_shapes(plan["num_tokens"], plan["num_seqs"], plan["num_logits"], plan["max_blocks_per_seq"], vocab)
    missing = [key for key in STEP_INPUTS if key not in plan["inputs"]]
    if missing:
        _fail(doc, "inputs", f"lacks {', '.join(missing)}, which this llmc fills each step: an older llmc built it")
    for key, spec in plan["inputs"].items():
        if key not in STEP_INPUTS:
            _fail(doc, f"inputs.{key}", f"is not a step input the runtime fills ({', '.join(STEP_INPUTS)})")
        if spec["shape"] != shapes[key] or spec["dtype"] != STEP_INPUTS[key]:
            _fail(doc, f"inputs.{key}", f"must be {shapes[key]} {STEP_INPUTS[key]}, not {spec['shape']} {spec['dtype']}")


def _check_arena(plan: dict, doc: str, model: dict) -> None:
    need = sum(-(-math.prod(s["shape"]) * DTYPES[s["dtype"]] // ARENA_ALIGN) * ARENA_ALIGN
               for s in plan["buffers"].values())
    if plan["arena_bytes"] > need + ARENA_ALIGN:
        _fail(doc, "arena_bytes", f"({plan['arena_bytes']}) is more than its buffers need ({need})")
    # A step's activations are a few rows of the model's widths per token; far more is no real plan.
    width = (model["vocab_size"] + model["hidden_size"] + model["intermediate_size"]
             + (model["num_q_heads"] + 2 * model["num_kv_heads"]) * model["head_dim"])
    most = max(MIN_ARENA_LIMIT, ARENA_ROWS_PER_TOKEN * plan["num_tokens"] * width * 4)
    if plan["arena_bytes"] > most:
        _fail(doc, "arena_bytes", f"({plan['arena_bytes']}) is over {most}, far more than {plan['num_tokens']} tokens "
                                  "of this model need")


def _check_outputs(plan: dict, doc: str, vocab: int) -> None:
    r = plan["num_logits"]
    expect = {"logits": ([r, vocab], None), "next_tokens": ([r], "int32"), "token_logprobs": ([r], "float32"),
              "top_token_ids": ([r, MAX_LOGPROBS], "int32"), "top_logprobs": ([r, MAX_LOGPROBS], "float32")}
    for key, (shape, dtype) in expect.items():
        if key not in plan["outputs"]:
            if key in ("logits", "next_tokens"):  # logprobs outputs are optional: older bundles lack them
                _fail(doc, f"outputs.{key}", "is missing")
            continue
        got = plan["buffers"][plan["outputs"][key]]
        if got["shape"] != shape or (dtype is not None and got["dtype"] != dtype):
            _fail(doc, f"outputs.{key}", f"names a buffer of shape {got['shape']} {got['dtype']}; it must be {shape}"
                  + (f" {dtype}" if dtype else ""))


def _check_ref(ref, field: str, doc: str, kv: dict, weights: set[str]) -> None:
    if isinstance(ref, list):
        for j, item in enumerate(ref):
            _check_ref(item, f"{field}[{j}]", doc, kv, weights)
    elif "weight" in ref and ref["weight"] not in weights:
        _fail(doc, f"{field}.weight", f"names {ref['weight']!r}, which no weights/*.safetensors holds")
    elif "kv_cache" in ref and ref["layer"] >= kv["num_layers"]:
        _fail(doc, f"{field}.layer", f"({ref['layer']}) must be below kv_cache.num_layers ({kv['num_layers']})")


def _check_launch(launch: dict, entry: dict, where: str, doc: str) -> None:
    for axis, (size, most) in enumerate(zip(launch["grid"], GRID_LIMITS)):
        if size > most:
            _fail(doc, f"{where}.grid[{axis}]", f"({size}) is over the GPU's limit of {most}")
    abi, params = entry["params"], launch["params"]
    if not 0 <= len(abi) - len(params) <= 2:
        _fail(doc, f"{where}.params", f"has {len(params)} parameters; kernel {entry['name']} takes {len(abi)} "
                                      "(including up to 2 trailing scratch pointers)")
    for j, (ref, spec) in enumerate(zip(params, abi)):
        kind = spec["type"]
        if kind.startswith("*"):
            if "scalar" in ref:
                _fail(doc, f"{where}.params[{j}]", f"is a scalar; kernel {entry['name']} takes a pointer ({kind})")
        elif "scalar" not in ref:
            _fail(doc, f"{where}.params[{j}]", f"must be a scalar; kernel {entry['name']} takes {kind}")
        elif kind in SCALAR_TYPES and SCALAR_TYPES[kind] != ref["type"] and "fp32" in (SCALAR_TYPES[kind], ref["type"]):
            _fail(doc, f"{where}.params[{j}].type", f"is {ref['type']}; kernel {entry['name']} takes {kind}")
    for tail in abi[len(params):]:
        if not tail["type"].startswith("*"):
            _fail(doc, f"{where}.params", f"lacks parameter {tail['name']!r} ({tail['type']}) of kernel {entry['name']}")


def _fail(doc: str, field: str, what: str) -> None:
    raise BundleError(f"{doc}: field {field!r} {what}")
