"""The cuda backend end to end against a fake driver module: module loading, graphs, the decode
step's driver calls, input checks, errors, compatibility before loading. No GPU needed."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from fake_cuda import (
    BINARIES,
    BLOCK,
    H,
    V,
    TABLE,
    WEIGHTS,
    CUresult,
    bundle,  # noqa: F401  (fixture)
    fake_driver,
    step_inputs,
)
from llmc.errors import BundleError
from llmc.runtime.backends.cuda import KV_RESERVE, CudaBackend
from llmc.runtime.backends.cuda_driver import CudaError

# ---- the backend end to end against the fake --------------------------------------------------


def test_open_loads_each_module_once_captures_one_graph_per_decode_plan_and_sizes_kv(bundle):
    fake = fake_driver()
    backend = CudaBackend.open(bundle, driver_module=fake)
    try:
        assert sorted(fake.modules_loaded) == sorted(BINARIES.values())
        assert fake.graphs_instantiated == 2 == backend.load_summary["num_graphs"]
        assert fake.calls.count("cuStreamBeginCapture") == 2
        assert backend.plans["prefill_t8"].graph is None
        assert [a for a in fake.func_attrs_set] == [("kv_write_kernel", 8, 232448)]  # > 48 KiB only
        assert backend.num_kv_blocks == 2**21  # a 1 GiB fake holds more than the block count limit
        s = backend.load_summary
        assert s["kv_tokens"] == 2**21 * BLOCK and s["kv_limited_by"] == "block count limit"
        assert s["weights_bytes"] == 278 and s["arena_bytes"] == 1024 and s["num_modules"] == 3
        assert fake.read(backend.weights + 512, 16) == WEIGHTS[2][3]
    finally:
        backend.close()
    assert not fake.mem and not fake.host and fake.live_graph_execs == 0
    assert fake.calls.count("cuModuleUnload") == 3
    backend.close()  # idempotent


@pytest.mark.parametrize("total_mb, utilization", [(400, 0.9), (600, 0.5), (1024, 0.3)])
def test_the_kv_pool_fills_the_granted_share_of_free_memory(bundle, total_mb, utilization):
    fake = fake_driver(total=total_mb << 20)
    with CudaBackend.open(bundle, driver_module=fake, gpu_memory_utilization=utilization) as backend:
        s = backend.load_summary
        free = (total_mb << 20) - (s["device_bytes"] - s["kv_bytes"])  # after weights, arena, inputs, scratch
        budget = int(free * utilization) - KV_RESERVE
        assert s["kv_limited_by"] == "gpu memory" and s["kv_bytes"] <= budget
        assert backend.kv.total_bytes(backend.num_kv_blocks + 1) > budget  # not one block more fits
        assert backend.num_kv_blocks > 2 * 4  # far past largest batch x context


def test_decode_is_one_copy_in_one_graph_launch_one_copy_out(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=5) as backend:
        assert backend.num_kv_blocks == 5 and backend.load_summary["kv_limited_by"] == "requested"
        plan = bundle.plan("decode_b2")
        fake.calls.clear()
        fake.launches.clear()
        tokens, logits = backend.run(plan, step_inputs(plan, [3, 9], [5, 17]), want_logits=False)
        assert fake.calls == ["cuMemcpyHtoDAsync", "cuGraphLaunch", "cuMemcpyDtoHAsync", "cuStreamSynchronize"]
        assert tokens.dtype == np.int32 and tokens.tolist() == [4, 10] and logits is None
        # the graph replayed the captured launches with the pointers of this plan
        names = [name for name, *_ in fake.launches]
        assert names == ["embed_kernel", "kv_write_kernel", "sample_kernel"]
        _, grid, block, shared, values = fake.launches[1]
        assert grid == (2, 1, 1) and block == (128, 1, 1) and shared == 65536
        k_pool = backend.kv.pointer(backend.kv_base, 5, 0, "k")
        v_pool = backend.kv.pointer(backend.kv_base, 5, 0, "v")
        assert values[0] == backend.arena + 0 and values[1:3] == [k_pool, v_pool] and values[4] == 2
        assert v_pool - k_pool == 5 * BLOCK * H * 4 + (-(5 * BLOCK * H * 4) % 256)
        assert fake.read(k_pool + 16 * 17, 16) == TABLE[9].tobytes()  # KV written at slot 17

        tokens, logits = backend.run(plan, step_inputs(plan, [0, 15], [1, -1]), want_logits=True)
        assert tokens.tolist() == [1, 0]
        assert logits.dtype == np.float32 and logits.shape == (2, V)
        assert logits.argmax(axis=1).tolist() == [1, 0]
        assert fake.calls[-3:] == ["cuMemcpyDtoHAsync", "cuMemcpyDtoHAsync", "cuStreamSynchronize"]


def test_prefill_runs_eagerly_and_reads_logits_indices(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("prefill_t8")
        fake.calls.clear()
        fake.launches.clear()
        inputs = step_inputs(plan, [1, 2, 3, 4, 5, 6], list(range(6)), logits_indices=[2, 5])
        tokens, _ = backend.run(plan, inputs, want_logits=False)
        assert tokens.tolist() == [4, 7]
        assert fake.calls.count("cuLaunchKernel") == 3 and "cuGraphLaunch" not in fake.calls
        # the prefill plan's own input block: the sample kernel read logits_indices from it
        sample = fake.launches[2][4]
        assert sample[1] == backend.plans["prefill_t8"].dev_inputs + _offset(plan, "logits_indices")
        assert sample[7] % 128 == 0  # aligned global scratch


def _offset(plan, key):
    from llmc.runtime.backends.cuda_memory import input_offsets

    return input_offsets(plan)[0][key]


def test_run_refuses_bad_inputs_before_touching_the_gpu(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan = bundle.plan("decode_b2")
        fake.calls.clear()
        with pytest.raises(ValueError, match="input_ids holds values outside"):
            backend.run(plan, step_inputs(plan, [3, V], [0, 1]), want_logits=False)
        with pytest.raises(ValueError, match="input_ids holds values outside"):
            backend.run(plan, step_inputs(plan, [3, -1], [0, 1]), want_logits=False)
        with pytest.raises(ValueError, match=r"slot_mapping holds values outside \[-1, 32\)"):
            backend.run(plan, step_inputs(plan, [3, 4], [0, 8 * BLOCK]), want_logits=False)
        with pytest.raises(ValueError, match="slot_mapping holds values outside"):
            backend.run(plan, step_inputs(plan, [3, 4], [0, -2]), want_logits=False)
        backend.run(plan, step_inputs(plan, [3, 4], [8 * BLOCK - 1, -1]), want_logits=False)  # the edges are fine
        bad = step_inputs(plan, [1, 2], [0, 1])
        bad["block_tables"] = np.zeros((2, 5), dtype=np.int32)
        with pytest.raises(ValueError, match="has shape"):
            backend.run(plan, bad, want_logits=False)
        del bad["block_tables"]
        with pytest.raises(ValueError, match="'block_tables' is missing"):
            backend.run(plan, bad, want_logits=False)
        assert fake.calls.count("cuGraphLaunch") == 1  # only the last, valid step ran


def test_run_from_another_thread_makes_the_context_current(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("decode_b1")
        result = {}
        t = threading.Thread(target=lambda: result.update(out=backend.run(plan, step_inputs(plan, [7], [0]), False)))
        t.start()
        t.join()
        assert result["out"][0].tolist() == [8]
        assert len(set(fake.ctx_set_threads)) == 2


def test_errors_name_the_function_the_error_and_the_plan(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("prefill_t8")
        fake.fail["cuLaunchKernel"] = CUresult.CUDA_ERROR_INVALID_VALUE
        with pytest.raises(CudaError, match=r"cuLaunchKernel: CUDA_ERROR_INVALID_VALUE \(fake description\) at "
                                            r"prefill_t8 step 0 \(embed\) kernel embed_kernel while running plan prefill_t8"):
            backend.run(plan, step_inputs(plan, [1], [0]), want_logits=False)
        del fake.fail["cuLaunchKernel"]
        fake.fail["cuStreamSynchronize"] = CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        with pytest.raises(CudaError, match="cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS.*decode_b1"):
            backend.run(bundle.plan("decode_b1"), step_inputs(bundle.plan("decode_b1"), [1], [0]), want_logits=False)
        del fake.fail["cuStreamSynchronize"]


def test_a_failed_load_frees_everything(bundle):
    fake = fake_driver()
    fake.fail["cuGraphInstantiate"] = CUresult.CUDA_ERROR_OUT_OF_MEMORY
    with pytest.raises(CudaError, match="cuGraphInstantiate: CUDA_ERROR_OUT_OF_MEMORY"):
        CudaBackend.open(bundle, driver_module=fake)
    assert not fake.mem and not fake.host


def test_a_cubin_for_another_gpu_says_rebuild(bundle):
    fake = fake_driver()
    fake.fail["cuModuleLoadData"] = CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
    with pytest.raises(BundleError, match="does not load on sm90 .*update the NVIDIA driver"):
        CudaBackend.open(bundle, driver_module=fake)


def test_compat_is_checked_before_anything_is_loaded(bundle):
    fake = fake_driver(cc=(8, 0), name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(BundleError, match=r"^built for sm90; this GPU is sm80 \(NVIDIA A100-SXM4-80GB\): "
                                          r"rebuild with --target sm80$"):
        CudaBackend.open(bundle, driver_module=fake)
    assert "cuMemAlloc" not in fake.calls and "cuDevicePrimaryCtxRetain" not in fake.calls
    nodev = fake_driver(init_error=CUresult.CUDA_ERROR_NO_DEVICE)
    with pytest.raises(BundleError, match=r"^no NVIDIA driver was found \(cuInit: CUDA_ERROR_NO_DEVICE\); "):
        CudaBackend.open(bundle, driver_module=nodev)


def test_copy_bandwidth_counts_bytes_read_and_written(bundle):
    fake = fake_driver(total=4 << 30)
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        bw = backend.measure_copy_bandwidth(nbytes=256 << 20)
        assert bw == pytest.approx(2 * (256 << 20) * 10 / 2e-3)  # the fake's events say 2 ms


def test_the_cuda_path_imports_no_torch_triton_or_transformers():
    code = ("import sys, llmc.runtime, llmc.runtime.backends.cuda, llmc.runtime.compat, llmc.runtime.bench\n"
            "bad = [m for m in ('torch', 'triton', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_device_needs_only_the_manifest(bundle):
    from llmc.runtime.backends.cuda import check_device

    _, device = check_device(bundle.manifest, driver_module=fake_driver())
    assert device.target_name == "sm90" and device.name == "NVIDIA H100 80GB HBM3"
    with pytest.raises(BundleError, match="^built for sm90; this GPU is sm89 .*rebuild with --target sm89$"):
        check_device(bundle.manifest, driver_module=fake_driver(cc=(8, 9), name="NVIDIA L40S"))



def test_overlapped_steps_feed_sampled_tokens_on_the_device(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan = bundle.plan("decode_b2")
        first_inputs = backend.inputs("decode_b2")
        for key, value in step_inputs(plan, [3, 9], [5, 17]).items():
            first_inputs[key][...] = value
        fake.calls.clear()
        first = backend.launch("decode_b2", [], False)
        second_inputs = backend.inputs("decode_b2")
        assert second_inputs["input_ids"] is not first_inputs["input_ids"]  # the other pinned slot
        for key, value in step_inputs(plan, [0, 0], [6, 18]).items():
            second_inputs[key][...] = value
        second = backend.launch("decode_b2", [(0, 0), (1, 1)], False)  # both rows come from `first`
        assert backend.wait(first)[0].tolist() == [4, 10]
        assert backend.wait(second)[0].tolist() == [5, 11]
        assert fake.calls.count("cuMemcpyDtoDAsync") == 1  # one copy for the run of two rows
        assert fake.calls.count("cuStreamSynchronize") == 0
