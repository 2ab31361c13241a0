"""Can this bundle run here? Decided before anything is loaded, in one sentence that says what to do.

Pure logic over the manifest and a `DeviceInfo` (which the backend queries from the driver), so
every decision is tested without a GPU:

    built for sm90; this GPU is sm80 (NVIDIA A100-SXM4-80GB): rebuild with --target sm80
"""

from __future__ import annotations

from dataclasses import dataclass

from llmc.errors import BundleError

VENDOR = {"cuda": "NVIDIA", "hip": "AMD"}


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # "NVIDIA H100 80GB HBM3"
    major: int  # compute capability (cuda); for hip, 0
    minor: int
    total_memory: int  # bytes
    free_memory: int  # bytes, when queried
    ordinal: int = 0
    backend: str = "cuda"
    gcn_arch: str = ""  # hip only: "gfx942"

    @property
    def arch(self) -> int | str:
        return self.gcn_arch if self.backend == "hip" else self.major * 10 + self.minor

    @property
    def target_name(self) -> str:
        return self.gcn_arch if self.backend == "hip" else f"sm{self.arch}"

    def describe(self) -> str:
        return f"{self.target_name} ({self.name})"


def runs_on(target_arch: int, device_arch: int) -> bool:
    """Whether a cubin for `target_arch` runs on a GPU of `device_arch`.

    SASS runs on its own major version at an equal or higher minor (sm80 on sm86/sm89); from
    sm90 on Triton emits arch-specific code (sm_90a), which runs on that exact arch only.
    """
    if target_arch == device_arch:
        return True
    major, minor = divmod(target_arch, 10)
    dev_major, dev_minor = divmod(device_arch, 10)
    return major < 9 and major == dev_major and minor <= dev_minor


def suggest_target(device: DeviceInfo) -> str | None:
    """The known target that runs best on `device`, or None if llmc has none for it."""
    from llmc.aot.target import TARGETS  # plain data, no torch

    known = [t for t in TARGETS.values() if t.backend == device.backend]
    if device.backend == "hip":
        return next((t.name for t in known if t.arch == device.gcn_arch), None)
    fits = [t for t in known if isinstance(t.arch, int) and runs_on(t.arch, device.arch)]
    return max(fits, key=lambda t: t.arch).name if fits else None


def known_targets(backend: str) -> str:
    from llmc.aot.target import TARGETS

    return ", ".join(t.name for t in TARGETS.values() if t.backend == backend)


def _rebuild_hint(device: DeviceInfo) -> str:
    best = suggest_target(device)
    if best is None:
        return f"llmc has no target for it (known: {known_targets(device.backend)})"
    return f"rebuild with --target {best}"


def check_compat(
    manifest: dict,
    device: DeviceInfo | None,
    runtime_backend: str,
    *,
    no_device_reason: str = "cuInit: CUDA_ERROR_NO_DEVICE",
) -> None:
    """Raise BundleError unless the bundle described by `manifest` can run on `device` with
    `runtime_backend` ("cuda", "hip" or "cpu"). `device` is None when no GPU or driver was
    found; `no_device_reason` then says what the driver answered."""
    from llmc.artifacts.manifest import check_format_version

    check_format_version(manifest)
    target = manifest["target"]
    name, backend, arch = target["name"], target["backend"], target.get("arch")
    if runtime_backend == "cpu":
        if backend != "cpu":
            raise BundleError(
                f"built for {name}, which runs on the {backend} backend: run it with --device {backend} on a "
                f"machine with an {VENDOR.get(backend, backend)} GPU, or rebuild with --target cpu")
        return
    if runtime_backend not in VENDOR:
        raise BundleError(f"unknown device backend {runtime_backend!r}; use cuda, hip or cpu")
    vendor = VENDOR[runtime_backend]
    if device is None:
        what = "use --device cpu with a cpu bundle" if backend != "cpu" else "use --device cpu"
        raise BundleError(
            f"no {vendor} driver was found ({no_device_reason}); {what}, or run on a machine with an {vendor} GPU")
    if backend == "cpu":
        best = suggest_target(device)
        how = f"rebuild with --target {best}" if best else _rebuild_hint(device)
        raise BundleError(f"built for the cpu target; {how} to run on this GPU, or use --device cpu")
    if backend != runtime_backend:
        raise BundleError(
            f"built for {name} ({VENDOR.get(backend, backend)} GPUs, the {backend} backend); this GPU is "
            f"{device.describe()}: {_rebuild_hint(device)}")
    if runtime_backend == "cuda":
        ok = isinstance(arch, int) and runs_on(arch, device.arch)
    else:
        ok = arch == device.gcn_arch
    if not ok:
        raise BundleError(f"built for {name}; this GPU is {device.describe()}: {_rebuild_hint(device)}")
