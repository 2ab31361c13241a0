"""The compatibility check's decisions: one sentence that says what to do, before anything loads."""

import pytest
from llmc.artifacts import FORMAT_VERSION
from llmc.errors import BundleError
from llmc.runtime.backends.cuda_driver import Driver, query_device
from llmc.runtime.compat import DeviceInfo, check_compat, runs_on, suggest_target

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", 9, 0, 80 << 30, 79 << 30)
A100 = DeviceInfo("NVIDIA A100-SXM4-80GB", 8, 0, 80 << 30, 79 << 30)
L40S = DeviceInfo("NVIDIA L40S", 8, 9, 48 << 30, 47 << 30)
RTX3090 = DeviceInfo("NVIDIA GeForce RTX 3090", 8, 6, 24 << 30, 23 << 30)
T4 = DeviceInfo("Tesla T4", 7, 5, 16 << 30, 15 << 30)
B200 = DeviceInfo("NVIDIA B200", 10, 0, 180 << 30, 179 << 30)
MI300X = DeviceInfo("AMD Instinct MI300X", 0, 0, 192 << 30, 191 << 30, backend="hip", gcn_arch="gfx942")


def manifest(name="sm90", backend="cuda", arch=90, version=FORMAT_VERSION):
    return {"format_version": version, "target": {"name": name, "backend": backend, "arch": arch, "warp_size": 32}}


CPU = manifest("cpu", "cpu", None)
SM80 = manifest("sm80", "cuda", 80)
SM89 = manifest("sm89", "cuda", 89)
SM90 = manifest()
GFX942 = manifest("gfx942", "hip", "gfx942")


@pytest.mark.parametrize("bundle, device", [(SM90, H100), (SM80, A100), (SM80, RTX3090), (SM80, L40S), (SM89, L40S)])
def test_runs(bundle, device):
    check_compat(bundle, device, "cuda")


def test_cpu_bundle_on_cpu_and_hip_bundle_on_amd_run():
    check_compat(CPU, None, "cpu")
    check_compat(GFX942, MI300X, "hip")


@pytest.mark.parametrize("bundle, device, runtime, message", [
    (SM90, A100, "cuda", "built for sm90; this GPU is sm80 (NVIDIA A100-SXM4-80GB): rebuild with --target sm80"),
    (SM80, H100, "cuda", "built for sm80; this GPU is sm90 (NVIDIA H100 80GB HBM3): rebuild with --target sm90"),
    (SM89, A100, "cuda", "built for sm89; this GPU is sm80 (NVIDIA A100-SXM4-80GB): rebuild with --target sm80"),
    (SM89, RTX3090, "cuda", "built for sm89; this GPU is sm86 (NVIDIA GeForce RTX 3090): rebuild with --target sm80"),
    (SM90, T4, "cuda", "built for sm90; this GPU is sm75 (Tesla T4): llmc has no target for it (known: sm80, sm89, sm90)"),
    (SM90, B200, "cuda", "built for sm90; this GPU is sm100 (NVIDIA B200): llmc has no target for it (known: sm80, sm89, sm90)"),
    (CPU, H100, "cuda", "built for the cpu target; rebuild with --target sm90 to run on this GPU, or use --device cpu"),
    (GFX942, H100, "cuda", "built for gfx942 (AMD GPUs, the hip backend); this GPU is sm90 (NVIDIA H100 80GB HBM3): "
                           "rebuild with --target sm90"),
    (SM90, MI300X, "hip", "built for sm90 (NVIDIA GPUs, the cuda backend); this GPU is gfx942 (AMD Instinct MI300X): "
                          "rebuild with --target gfx942"),
    (SM90, None, "cuda", "no NVIDIA driver was found (cuInit: CUDA_ERROR_NO_DEVICE); use --device cpu with a cpu "
                         "bundle, or run on a machine with an NVIDIA GPU"),
    (SM90, H100, "cpu", "built for sm90, which runs on the cuda backend: run it with --device cuda on a machine with "
                        "an NVIDIA GPU, or rebuild with --target cpu"),
])
def test_refuses_with_one_sentence_that_says_what_to_do(bundle, device, runtime, message):
    with pytest.raises(BundleError) as e:
        check_compat(bundle, device, runtime)
    assert str(e.value) == message


def test_a_newer_format_says_upgrade_before_looking_at_the_target():
    with pytest.raises(BundleError, match=f"bundle format {FORMAT_VERSION + 1} is newer than this llmc .*upgrade llmc"):
        check_compat(manifest(version=FORMAT_VERSION + 1), None, "cuda")


def test_the_no_device_reason_is_passed_through():
    with pytest.raises(BundleError, match=r"\(cuInit: libcuda.so could not be loaded\)"):
        check_compat(SM90, None, "cuda", no_device_reason="cuInit: libcuda.so could not be loaded")


def test_sass_compatibility_rule():
    assert runs_on(80, 80) and runs_on(80, 86) and runs_on(80, 89) and runs_on(90, 90)
    assert not runs_on(89, 80) and not runs_on(90, 100) and not runs_on(80, 90) and not runs_on(90, 91)
    assert suggest_target(H100) == "sm90" and suggest_target(RTX3090) == "sm80" and suggest_target(T4) is None


class _NoDriverLib:
    """cuda-python without libcuda.so raises its own error from the first call."""

    class CUresult:
        CUDA_SUCCESS = 0

    def cuInit(self, flags):
        raise OSError('"cuda" is an NVIDIA driver library and can only be found via system search')


class _NoDevice(_NoDriverLib):
    class CUresult:
        CUDA_SUCCESS = 0

    def cuInit(self, flags):
        return (type("E", (), {"name": "CUDA_ERROR_NO_DEVICE", "__ne__": lambda s, o: True})(),)

    def cuGetErrorString(self, err):
        return (0, b"no CUDA-capable device is detected")


def test_query_device_reports_why_there_is_no_device():
    assert query_device(Driver(_NoDriverLib())) == (None, "cuInit: libcuda.so could not be loaded")
    assert query_device(Driver(_NoDevice())) == (None, "cuInit: CUDA_ERROR_NO_DEVICE")
