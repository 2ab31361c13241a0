/* A stand-in libamdhip64.so for exercising hip-python's real bindings without an AMD GPU:
   device memory is host memory, kernels are recorded (not run), graphs replay the launch count.
   Every call is logged to $FAKE_HIP_LOG; $FAKE_HIP_ARCH_OFFSET is where hipDeviceProp_t keeps
   gcnArchName (the test reads it from hip-python's own struct). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int hipError_t;
#define OK 0
static FILE *logf_;
static size_t used_;
static const size_t TOTAL = (size_t)192 << 30;
static int capturing_, captured_, launched_;

static int fails(const char *name) { const char *f = getenv("FAKE_HIP_FAIL"); return f && !strcmp(f, name); }
static void logc(const char *fmt, ...) {
  if (!logf_) { const char *p = getenv("FAKE_HIP_LOG"); logf_ = fopen(p ? p : "/dev/null", "a"); }
  va_list ap; va_start(ap, fmt); vfprintf(logf_, fmt, ap); va_end(ap); fputc('\n', logf_); fflush(logf_);
}

hipError_t hipInit(unsigned f) { logc("hipInit %u", f); return OK; }
hipError_t hipGetDeviceCount(int *n) { *n = 1; return OK; }
hipError_t hipDeviceGet(int *d, int o) { *d = o; logc("hipDeviceGet %d", o); return OK; }
hipError_t hipGetDevicePropertiesR0600(char *prop, int d) {
  const char *off = getenv("FAKE_HIP_ARCH_OFFSET");
  memset(prop, 0, 1472);
  strcpy(prop, "Fake AMD Instinct MI300X");
  strcpy(prop + (off ? atoi(off) : 1160), "gfx942:sramecc+:xnack-");
  logc("hipGetDeviceProperties %d", d); return OK; }
hipError_t hipDeviceTotalMem(size_t *b, int d) { *b = TOTAL; return OK; }
hipError_t hipDevicePrimaryCtxRetain(void **c, int d) { *c = (void *)0xC7; logc("hipDevicePrimaryCtxRetain %d", d); return OK; }
hipError_t hipDevicePrimaryCtxRelease(int d) { logc("hipDevicePrimaryCtxRelease %d", d); return OK; }
hipError_t hipCtxSetCurrent(void *c) { logc("hipCtxSetCurrent %p", c); return c == (void *)0xC7 ? OK : 201; }
hipError_t hipDeviceGetAttribute(int *v, int a, int d) { *v = 65536; logc("hipDeviceGetAttribute %d %d", a, d); return OK; }
hipError_t hipMemGetInfo(size_t *f, size_t *t) { *t = TOTAL; *f = TOTAL - used_; return OK; }
hipError_t hipMalloc(void **p, size_t n) {
  if (posix_memalign(p, 256, n ? n : 1)) return 2;
  used_ += n; logc("hipMalloc %zu -> %p", n, *p); return OK; }
hipError_t hipFree(void *p) { logc("hipFree %p", p); free(p); return OK; }
hipError_t hipHostMalloc(void **p, size_t n, unsigned f) { *p = malloc(n); logc("hipHostMalloc %zu %u -> %p", n, f, *p); return OK; }
hipError_t hipHostFree(void *p) { logc("hipHostFree %p", p); free(p); return OK; }
#define BIG ((size_t)64 << 20) /* larger fills and copies are only logged */
hipError_t hipMemsetD8Async(void *d, unsigned char v, size_t n, void *s) {
  if (n <= BIG) memset(d, v, n);
  logc("hipMemsetD8Async %p %u %zu", d, v, n); return OK; }
hipError_t hipMemcpyHtoDAsync(void *d, const void *s, size_t n, void *st) { memcpy(d, s, n); logc("hipMemcpyHtoDAsync %zu", n); return OK; }
hipError_t hipMemcpyDtoHAsync(void *d, const void *s, size_t n, void *st) { memcpy(d, s, n); logc("hipMemcpyDtoHAsync %zu", n); return OK; }
hipError_t hipMemcpyDtoDAsync(void *d, const void *s, size_t n, void *st) {
  if (n <= BIG) memcpy(d, s, n);
  logc("hipMemcpyDtoDAsync %zu", n); return OK; }
hipError_t hipStreamCreateWithFlags(void **s, unsigned f) { *s = (void *)0x57; logc("hipStreamCreateWithFlags %u", f); return OK; }
hipError_t hipStreamDestroy(void *s) { logc("hipStreamDestroy %p", s); return OK; }
hipError_t hipStreamSynchronize(void *s) { logc("hipStreamSynchronize %p", s); return s == (void *)0x57 ? OK : 400; }
hipError_t hipEventCreateWithFlags(void **e, unsigned f) { *e = malloc(1); logc("hipEventCreateWithFlags %u", f); return OK; }
hipError_t hipEventRecord(void *e, void *s) { logc("hipEventRecord"); return OK; }
hipError_t hipEventSynchronize(void *e) { logc("hipEventSynchronize"); return OK; }
hipError_t hipEventDestroy(void *e) { free(e); logc("hipEventDestroy"); return OK; }
hipError_t hipEventElapsedTime(float *ms, void *a, void *b) { *ms = 2.0f; return OK; }
hipError_t hipModuleLoadData(void **m, const void *image) {
  if (fails("hipModuleLoadData")) return 209; /* hipErrorNoBinaryForGpu */
  *m = strdup((const char *)image); logc("hipModuleLoadData %.40s", (const char *)image); return OK; }
hipError_t hipModuleUnload(void *m) { logc("hipModuleUnload"); free(m); return OK; }
hipError_t hipModuleGetFunction(void **f, void *m, const char *name) { *f = strdup(name); logc("hipModuleGetFunction %s", name); return OK; }
hipError_t hipFuncGetAttribute(int *v, int a, void *f) { *v = a == 0 ? 1024 : 0; logc("hipFuncGetAttribute %d %s", a, (char *)f); return OK; }
hipError_t hipFuncSetAttribute(const void *f, int a, int v) { logc("hipFuncSetAttribute %s %d %d", (const char *)f, a, v); return OK; }
hipError_t hipModuleLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned shm, void *s, void **params, void **extra) {
  if (!params || extra || fails("hipModuleLaunchKernel")) return 1;
  uint64_t first; memcpy(&first, params[0], 8);
  if (capturing_) captured_++; else launched_++;
  logc("hipModuleLaunchKernel %s grid %u %u %u block %u %u %u shared %u p0 %llx", (char *)f, gx, gy, gz, bx, by, bz, shm,
       (unsigned long long)first);
  return OK; }
hipError_t hipStreamBeginCapture(void *s, int mode) { capturing_ = 1; captured_ = 0; logc("hipStreamBeginCapture %d", mode); return OK; }
hipError_t hipStreamEndCapture(void *s, void **g) { capturing_ = 0; int *n = malloc(sizeof(int)); *n = captured_; *g = n; logc("hipStreamEndCapture %d", captured_); return OK; }
hipError_t hipGraphInstantiate(void **e, void *g, void **node, char *log, size_t size) {
  int *n = malloc(sizeof(int)); *n = *(int *)g; *e = n; logc("hipGraphInstantiate %d nodes", *n); return OK; }
hipError_t hipGraphUpload(void *e, void *s) { return OK; }
hipError_t hipGraphLaunch(void *e, void *s) { launched_ += *(int *)e; logc("hipGraphLaunch %d", *(int *)e); return OK; }
hipError_t hipGraphExecDestroy(void *e) { free(e); logc("hipGraphExecDestroy"); return OK; }
hipError_t hipGraphDestroy(void *g) { free(g); return OK; }
const char *hipGetErrorName(hipError_t e) { return e ? "hipErrorFake" : "hipSuccess"; }
const char *hipGetErrorString(hipError_t e) { return "fake"; }
