"""Each kernel impl accepts the arguments real builds give its op, except where it is meant not to.

The kernel tests generate only the shapes an impl supports, so a `supports_args` that refused too
much would shrink them silently (and send builds to another impl). Here every node's arguments,
in every bucket, from lowering the example and the test families for sm90 in bfloat16, are put
to every kernel impl of the node's op; the only refusals allowed are the ones in REFUSES.
"""

from pathlib import Path

import pytest
from checkpoints import FAMILIES, make_checkpoint

from llmc.aot.build import BuildConfig, build
from llmc.aot.ir import OPS, Impl
from llmc.kernels.linear import GEMV_MAX_ROWS
from llmc.kernels.moe import DECODE_MAX_ROWS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "zen-llama"
CONFIG = BuildConfig(target="sm90", dtype="bfloat16", max_seq_len=256, max_batch_size=4, max_num_batched_tokens=128)


def arg(op: str, args: tuple, name: str):
    """The argument called `name` in the op's signature, or None when the op has none."""
    names = list(OPS[op].signature.parameters)
    return args[names.index(name)] if name in names else None


def rows(op, args) -> int:
    indices = arg(op, args, "logits_indices")
    return (indices if indices is not None else args[0]).shape[0]


def _wgmma_refuses(op, args) -> bool:
    n, k = arg(op, args, "weight").shape[-2:]
    return rows(op, args) < 64 or n % 16 or k % 16  # 64-row tiles of 16-aligned N and K


REFUSES = {  # (op or None for any, provider) -> when it is meant to refuse
    (None, "triton_gemv"): lambda op, args: rows(op, args) > GEMV_MAX_ROWS,  # W streamed once for a few rows
    (None, "triton_wgmma"): _wgmma_refuses,
    ("paged_attention", "triton_decode"): lambda op, args: arg(op, args, "max_query_len") > 1,
    ("softcap_paged_attention", "triton_decode"): lambda op, args: arg(op, args, "max_query_len") > 1,
    # split-KV: decode only, and only a context long enough to split (2 x 256 keys)
    ("paged_attention", "triton_split_kv"): lambda op, args: (
        arg(op, args, "max_query_len") > 1 or arg(op, args, "block_tables").shape[1] * arg(op, args, "k_cache").shape[1] < 512),
    ("fused_moe", "triton_decode"): lambda op, args: arg(op, args, "topk_ids").numel() > DECODE_MAX_ROWS,
}


def refuses(op: str, provider: str, args: tuple) -> bool:
    rule = REFUSES.get((op, provider)) or REFUSES.get((None, provider))
    return bool(rule and rule(op, args))


def lowered_calls(model_dir, tmp_path, monkeypatch) -> list[tuple[str, tuple]]:
    """(op, args) of every node lowering offered to an impl, each node and bucket once."""
    seen: dict[int, tuple[str, tuple]] = {}
    supports = Impl.supports

    def recording(impl, *args):
        seen.setdefault(id(args), (impl.op.name, args))
        return supports(impl, *args)

    monkeypatch.setattr(Impl, "supports", recording)
    build(model_dir, tmp_path / "bundle", CONFIG, stop_after="lower")
    monkeypatch.undo()
    return list(seen.values())


@pytest.fixture(params=["zen-llama", *sorted(FAMILIES)])
def model_dir(request, tmp_path):
    return EXAMPLE if request.param == "zen-llama" else make_checkpoint(request.param, tmp_path / "hf")


def test_impls_accept_the_shapes_builds_give_them(model_dir, tmp_path, monkeypatch):
    calls = lowered_calls(model_dir, tmp_path, monkeypatch)
    ops = {op for op, _ in calls} | ({"paged_attention"} if any(op == "softcap_paged_attention" for op, _ in calls) else set())
    assert ops >= {"linear", "norm_linear", "paged_attention", "lm_head", "sample"}
    wrong = []
    for op, args in calls:
        for provider, impl in OPS[op].impls.items():
            if not impl.launches:
                continue
            meant = not refuses(op, provider, args)
            if impl.supports(*args) != meant:
                shapes = [tuple(a.shape) if hasattr(a, "shape") else a for a in args]
                wrong.append(f"{op}/{provider} {'refuses' if meant else 'accepts'} {shapes}")
    assert not wrong, f"{len(wrong)} calls: " + "; ".join(wrong[:5])
