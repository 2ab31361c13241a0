"""The cuda backend through cuda-python's real bindings, over a stand-in libcuda.so.1: no GPU needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fake_cuda import write_fake_bundle

# ---- against cuda-python's real bindings, over a stand-in libcuda.so.1 ---------------------------
# The fakes above stand in for the Python module; this stands in for the driver library under it,
# so every argument crosses cuda-python's real marshalling (types, return tuples, enums).

FAKE_LIBCUDA = r'''/* A stand-in libcuda.so.1 for exercising cuda-python's real bindings without a GPU:
   device memory is host memory, kernels are recorded (their first pointer parameter is checked
   to be readable), graphs replay the launch count. Every call is logged to $FAKE_CUDA_LOG. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef uint64_t CUdeviceptr;
#define OK 0
static FILE *logf_;
static size_t used_;
static const size_t TOTAL = (size_t)80 << 30;
static int capturing_, captured_, launched_;

static int fails(const char *name) { const char *f = getenv("FAKE_CUDA_FAIL"); return f && !strcmp(f, name); }
static void logc(const char *fmt, ...) {
  if (!logf_) { const char *p = getenv("FAKE_CUDA_LOG"); logf_ = fopen(p ? p : "/dev/null", "a"); }
  va_list ap; va_start(ap, fmt); vfprintf(logf_, fmt, ap); va_end(ap); fputc('\n', logf_); fflush(logf_);
}

CUresult cuInit(unsigned f) { logc("cuInit %u", f); return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *d, int o) { *d = o; logc("cuDeviceGet %d", o); return OK; }
CUresult cuDeviceGetName(char *s, int len, int d) { snprintf(s, len, "Fake NVIDIA H100"); logc("cuDeviceGetName %d %d", len, d); return OK; }
CUresult cuDeviceGetAttribute(int *v, int a, int d) {
  *v = a == 75 ? 9 : a == 76 ? 0 : a == 97 ? 232448 : 0; logc("cuDeviceGetAttribute %d %d", a, d); return OK; }
CUresult cuDeviceTotalMem(size_t *b, int d) { *b = TOTAL; return OK; }
CUresult cuDevicePrimaryCtxRetain(void **c, int d) { *c = (void *)0xC7; logc("cuDevicePrimaryCtxRetain %d", d); return OK; }
CUresult cuDevicePrimaryCtxRelease(int d) { logc("cuDevicePrimaryCtxRelease %d", d); return OK; }
CUresult cuCtxSetCurrent(void *c) { logc("cuCtxSetCurrent %p", c); return c == (void *)0xC7 ? OK : 201; }
CUresult cuMemGetInfo(size_t *f, size_t *t) { *t = TOTAL; *f = TOTAL - used_; return OK; }
CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
  void *m = NULL; if (posix_memalign(&m, 256, n ? n : 1)) return 2;
  used_ += n; *p = (CUdeviceptr)(uintptr_t)m; logc("cuMemAlloc %zu -> %p", n, m); return OK; }
CUresult cuMemFree(CUdeviceptr p) { logc("cuMemFree %p", (void *)(uintptr_t)p); free((void *)(uintptr_t)p); return OK; }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned f) { *p = malloc(n); logc("cuMemHostAlloc %zu %u -> %p", n, f, *p); return OK; }
CUresult cuMemFreeHost(void *p) { logc("cuMemFreeHost %p", p); free(p); return OK; }
#define BIG ((size_t)64 << 20) /* larger copies are only timed (bandwidth), not done */
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *s) {
  if (n <= BIG) { memset((void *)(uintptr_t)d, v, n); }
  logc("cuMemsetD8Async %p %u %zu", (void *)(uintptr_t)d, v, n); return OK; }
CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, void *st) {
  memcpy((void *)(uintptr_t)d, s, n); logc("cuMemcpyHtoDAsync %p %p %zu", (void *)(uintptr_t)d, s, n); return OK; }
CUresult cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, void *st) {
  memcpy(d, (void *)(uintptr_t)s, n); logc("cuMemcpyDtoHAsync %p %p %zu", d, (void *)(uintptr_t)s, n); return OK; }
CUresult cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) {
  if (n <= BIG) { memcpy((void *)(uintptr_t)d, (void *)(uintptr_t)s, n); }
  logc("cuMemcpyDtoDAsync %zu", n); return OK; }
CUresult cuStreamCreate(void **s, unsigned f) { *s = (void *)0x57; logc("cuStreamCreate %u", f); return OK; }
CUresult cuStreamDestroy(void *s) { logc("cuStreamDestroy %p", s); return OK; }
CUresult cuStreamSynchronize(void *s) { logc("cuStreamSynchronize %p", s); return s == (void *)0x57 ? OK : 400; }
CUresult cuEventCreate(void **e, unsigned f) { *e = malloc(1); logc("cuEventCreate %u", f); return OK; }
CUresult cuEventRecord(void *e, void *s) { logc("cuEventRecord"); return OK; }
CUresult cuEventSynchronize(void *e) { return OK; }
CUresult cuEventDestroy(void *e) { free(e); return OK; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { *ms = 2.0f; logc("cuEventElapsedTime"); return OK; }
CUresult cuModuleLoadData(void **m, const void *image) {
  if (fails("cuModuleLoadData")) return 209;
  *m = strdup((const char *)image); logc("cuModuleLoadData %.40s", (const char *)image); return OK; }
CUresult cuModuleUnload(void *m) { logc("cuModuleUnload"); free(m); return OK; }
CUresult cuModuleGetFunction(void **f, void *m, const char *name) { *f = strdup(name); logc("cuModuleGetFunction %s", name); return OK; }
CUresult cuFuncGetAttribute(int *v, int a, void *f) { *v = a == 0 ? 1024 : 0; logc("cuFuncGetAttribute %d %s", a, (char *)f); return OK; }
CUresult cuFuncSetAttribute(void *f, int a, int v) { logc("cuFuncSetAttribute %s %d %d", (char *)f, a, v); return OK; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shm, void *s, void **params, void **extra) {
  if (!params || extra || fails("cuLaunchKernel")) return 1;
  uint64_t first; memcpy(&first, params[0], 8);  /* the driver copies every parameter now */
  if (capturing_) captured_++; else launched_++;
  logc("cuLaunchKernel %s grid %u %u %u block %u %u %u shared %u p0 %llx", (char *)f, gx, gy, gz, bx, by, bz, shm,
       (unsigned long long)first);
  return OK; }
CUresult cuStreamBeginCapture(void *s, int mode) { capturing_ = 1; captured_ = 0; logc("cuStreamBeginCapture %d", mode); return OK; }
CUresult cuStreamEndCapture(void *s, void **g) { capturing_ = 0; int *n = malloc(sizeof(int)); *n = captured_; *g = n; logc("cuStreamEndCapture %d", captured_); return OK; }
CUresult cuGraphInstantiateWithFlags(void **e, void *g, unsigned long long fl) {
  int *n = malloc(sizeof(int)); *n = *(int *)g; *e = n; logc("cuGraphInstantiate %d nodes", *n); return OK; }
CUresult cuGraphUpload(void *e, void *s) { return OK; }
CUresult cuGraphLaunch(void *e, void *s) { launched_ += *(int *)e; logc("cuGraphLaunch %d", *(int *)e); return OK; }
CUresult cuGraphExecDestroy(void *e) { free(e); logc("cuGraphExecDestroy"); return OK; }
CUresult cuGraphDestroy(void *g) { free(g); return OK; }
CUresult cuGetErrorName(CUresult e, const char **s) { *s = e ? "CUDA_ERROR_FAKE" : "CUDA_SUCCESS"; return OK; }
CUresult cuGetErrorString(CUresult e, const char **s) { *s = "fake"; return OK; }

#define F(name) {#name, (void *)name}
static struct { const char *name; void *fn; } table[] = {
  F(cuInit), F(cuDriverGetVersion), F(cuDeviceGetCount), F(cuDeviceGet), F(cuDeviceGetName), F(cuDeviceGetAttribute),
  F(cuDeviceTotalMem), F(cuDevicePrimaryCtxRetain), F(cuDevicePrimaryCtxRelease), F(cuCtxSetCurrent), F(cuMemGetInfo),
  F(cuMemAlloc), F(cuMemFree), F(cuMemHostAlloc), F(cuMemFreeHost), F(cuMemsetD8Async), F(cuMemcpyHtoDAsync),
  F(cuMemcpyDtoHAsync), F(cuMemcpyDtoDAsync), F(cuStreamCreate), F(cuStreamDestroy), F(cuStreamSynchronize),
  F(cuEventCreate), F(cuEventRecord), F(cuEventSynchronize), F(cuEventDestroy), F(cuEventElapsedTime),
  F(cuModuleLoadData), F(cuModuleUnload), F(cuModuleGetFunction), F(cuFuncGetAttribute), F(cuFuncSetAttribute),
  F(cuLaunchKernel), F(cuStreamBeginCapture), F(cuStreamEndCapture), F(cuGraphInstantiateWithFlags),
  {"cuGraphInstantiate", (void *)cuGraphInstantiateWithFlags}, F(cuGraphUpload), F(cuGraphLaunch),
  F(cuGraphExecDestroy), F(cuGraphDestroy), F(cuGetErrorName), F(cuGetErrorString),
};

CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status) {
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (!strcmp(table[i].name, sym)) { *pfn = table[i].fn; if (status) *status = 0; return OK; }
  *pfn = NULL; if (status) *status = 1; return 500;
}
CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags) { return cuGetProcAddress_v2(sym, pfn, ver, flags, NULL); }
'''

CHILD = """
import json, sys
import numpy as np
from llmc.artifacts import Bundle
from llmc.runtime.backends.cuda import CudaBackend
bundle = Bundle.open(sys.argv[1])
zeros = lambda plan: {k: np.zeros(v["shape"], v["dtype"]) for k, v in plan["inputs"].items()}
with CudaBackend.open(bundle) as backend:
    tokens, logits = backend.run(bundle.plan("decode_b2"), zeros(bundle.plan("decode_b2")), True)
    assert tokens.shape == (2,) and tokens.dtype == np.int32 and logits.shape == (2, 16), (tokens, logits)
    backend.run(bundle.plan("prefill_t8"), zeros(bundle.plan("prefill_t8")), False)
    print(json.dumps({"summary": backend.load_summary, "bandwidth": backend.measure_copy_bandwidth()}))
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory):
    import shutil

    pytest.importorskip("cuda.bindings.driver")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libcuda.so.1")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "fakecuda.c").write_text(FAKE_LIBCUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "libcuda.so.1"), str(d / "fakecuda.c")], check=True)
    return d


def run_over_fake_libcuda(libdir, bundle_dir, fail=None):
    import os

    log = libdir / f"log-{fail}"
    log.unlink(missing_ok=True)
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir), "FAKE_CUDA_LOG": str(log), "FAKE_CUDA_FAIL": fail or ""}
    done = subprocess.run([sys.executable, "-c", CHILD, str(bundle_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_the_real_bindings_accept_every_call(fake_libcuda, tmp_path):
    write_fake_bundle(tmp_path / "b.llmc")
    done, log = run_over_fake_libcuda(fake_libcuda, tmp_path / "b.llmc")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["summary"]["device"] == "Fake NVIDIA H100" and out["summary"]["num_graphs"] == 2
    assert out["bandwidth"] == pytest.approx(2 * (1 << 30) * 10 / 2e-3)
    assert [line for line in log if line.startswith("cuGraphInstantiate")] == ["cuGraphInstantiate 3 nodes"] * 2
    assert "cuFuncSetAttribute kv_write_kernel 8 232448" in log
    assert any(line.startswith("cuLaunchKernel sample_kernel grid 2 1 1 block 128 1 1 shared 1024") for line in log)
    assert log.count("cuGraphLaunch 3") == 1  # the decode step after the warm-ups
    count = lambda prefix: sum(line.startswith(prefix) for line in log)
    assert count("cuMemAlloc ") == count("cuMemFree ") and count("cuMemHostAlloc ") == count("cuMemFreeHost ")
    assert count("cuModuleLoadData") == count("cuModuleUnload") == 3
    assert log[-1] == "cuDevicePrimaryCtxRelease 0"


@pytest.mark.parametrize("fail, message", [
    ("cuModuleLoadData", "does not load on sm90 (Fake NVIDIA H100): cuModuleLoadData: CUDA_ERROR_NO_BINARY_FOR_GPU"),
    ("cuLaunchKernel", "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE (fake) at decode_b1 step 0 (embed) kernel embed_kernel "
                       "while warming up plan decode_b1"),
])
def test_driver_errors_through_the_real_bindings(fake_libcuda, tmp_path, fail, message):
    write_fake_bundle(tmp_path / "b.llmc")
    done, _ = run_over_fake_libcuda(fake_libcuda, tmp_path / "b.llmc", fail)
    assert done.returncode != 0 and message in done.stderr, done.stderr


