"""Hardware targets: what each can run, and which impl each op prefers there.

The priority list is the only thing that picks an impl (see STYLE.md habit 2); users override it
per op with `--op-priority op=provider[,provider...]`, which lands in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from llmc.errors import UserError

from .launch_context import LaunchContext

IMPL_PACKAGES = ("llmc.kernels",)  # packages whose import registers kernel impls on the IR's ops

KERNEL_PROVIDERS = ("triton",)

# Per-op preference on GPU targets; ops not listed prefer ("triton",).
GPU_PRIORITY: dict[str, tuple[str, ...]] = {
    "linear": ("triton_gemv", "triton_wgmma", "triton_gemm"),
    "norm_linear": ("triton_gemv", "triton_wgmma", "triton_gemm"),
    "silu_mul_linear": ("triton_gemv", "triton_wgmma", "triton_gemm"),
    "gelu_tanh_mul_linear": ("triton_gemv", "triton_wgmma", "triton_gemm"),
    "lm_head": ("triton_gemv", "triton_wgmma", "triton_gemm"),
    # FP8 tensor cores where the target has them (sm89, sm90), else the weight-only kernels
    **{op: ("triton_fp8_gemv", "triton_fp8_gemm", "triton_w8_gemv", "triton_w8_gemm")
       for op in ("fp8_linear", "fp8_norm_linear", "fp8_silu_mul_linear")},
    "paged_attention": ("triton_split_kv", "triton_decode", "triton_prefill"),
    "softcap_paged_attention": ("triton_decode", "triton_prefill"),
    "fused_moe": ("triton_decode", "triton_grouped"),
    "sample": ("triton",),
    "all_reduce": ("nccl",), "all_gather": ("nccl",), "all_reduce_add_rms_norm": ("nccl",),  # collectives: NCCL calls (RCCL's on hip), no kernel of ours
}


@dataclass(frozen=True)
class Target:
    name: str  # cpu, sm80, sm89, sm90, gfx942
    backend: str  # cpu | cuda | hip
    arch: int | str | None  # 80, 89, 90, "gfx942"
    warp_size: int
    capabilities: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    num_sms: int = 1  # streaming multiprocessors (NVIDIA) or compute units (AMD) of the reference GPU
    shared_mem_per_block: int = 0  # bytes of shared memory (LDS) one block may use, opt-in maximum

    @property
    def compiles_kernels(self) -> bool:
        return self.backend in ("cuda", "hip")

    @property
    def binary_suffix(self) -> str:
        return {"cuda": "cubin", "hip": "hsaco"}.get(self.backend, "")

    def launch_context(self) -> LaunchContext:
        return LaunchContext(self.name, self.num_sms, self.warp_size, self.shared_mem_per_block, self.capabilities)

    def default_priority(self, op: str) -> tuple[str, ...]:
        if not self.compiles_kernels:
            return ("native",)
        return GPU_PRIORITY.get(op, ("triton",))

    def priority(self, op: str, overrides: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        return tuple(overrides.get(op, self.default_priority(op)))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("cpu", "cpu", None, 1, frozenset(), "reference backend: the ops' native torch functions"),
        Target("sm80", "cuda", 80, 32, frozenset({"bf16", "mma", "cp_async"}), "NVIDIA Ampere (A100)", 108, 166912),
        Target("sm89", "cuda", 89, 32, frozenset({"bf16", "mma", "cp_async", "fp8"}), "NVIDIA Ada (L40S, RTX 4090)", 142, 101376),
        Target("sm90", "cuda", 90, 32, frozenset({"bf16", "mma", "cp_async", "fp8", "wgmma", "tma"}), "NVIDIA Hopper (H100, H200)",
               132, 232448),
        Target("gfx942", "hip", "gfx942", 64, frozenset({"bf16", "mfma", "fp8"}), "AMD CDNA3 (MI300X)", 304, 65536),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UserError(f"--target {name!r} is not a known target; choose one of {', '.join(TARGETS)}") from None


def parse_op_priority(text: str | None) -> dict[str, tuple[str, ...]]:
    """'rms_norm=native,linear=triton_gemm|native' -> {op: providers}; '|' separates a list."""
    from .ir import OPS

    load_impls()  # every impl registered, so every provider is known

    result: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        op, sep, providers = item.partition("=")
        if not sep or not providers:
            raise UserError(f"--op-priority item {item!r} must look like op=provider (e.g. rms_norm=native)")
        if op not in OPS:
            raise UserError(f"--op-priority names op {op!r}, which does not exist; ops: {', '.join(sorted(OPS))}")
        names = tuple(p.strip() for p in providers.split("|") if p.strip())
        unknown = [p for p in names if p not in OPS[op].impls]
        if unknown:
            raise UserError(
                f"--op-priority: op {op!r} has no impl {unknown[0]!r}; it has {', '.join(sorted(OPS[op].impls))}"
            )
        result[op] = names
    return result


def load_impls() -> None:
    """Import the kernel packages, which register their impls (the compiler never imports them by name)."""
    import importlib

    for package in IMPL_PACKAGES:
        importlib.import_module(package)
