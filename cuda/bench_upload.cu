// Host -> VRAM upload for `sluice bench io --gpu`: the CPU_GPU path of NVIDIA's gdsio (read into
// pinned host memory, then cudaMemcpyAsync to the device). Bytes moved: each host buffer once
// over PCIe; the limit is the slower of the disk and the link (~25 GB/s for PCIe 4.0 x16,
// ~50 GB/s for 5.0 x16).
#include "cuda/upload.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sl_upload {
    unsigned n;
    void **host;
    size_t *lens;
    unsigned char *pinned;  // which host buffers we registered (to unregister)
    cudaEvent_t *ev;
    unsigned char *ev_live; // event has been recorded at least once
    void *dev[2];
    size_t dev_bytes;
    cudaStream_t stream;
    int stream_ok;
    char name[128];
};

static int cuda_fail(sl_error *e, cudaError_t err, const char *what)
{
    return sl_errorf(e, SL_E_DEVICE, "cuda: %s failed: %s (%s)", what, cudaGetErrorString(err),
                     cudaGetErrorName(err));
}

#define CK(call, what)                                                                            \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess)                                                                  \
            return cuda_fail(e, err_, what);                                                      \
    } while (0)

extern "C" void sl_upload_destroy(sl_upload *u)
{
    if (!u)
        return;
    if (u->stream_ok) {
        cudaStreamSynchronize(u->stream);
        cudaStreamDestroy(u->stream);
    }
    for (unsigned i = 0; i < u->n; i++) {
        if (u->ev && u->ev[i])
            cudaEventDestroy(u->ev[i]);
        if (u->pinned && u->pinned[i])
            cudaHostUnregister(u->host[i]);
    }
    for (int d = 0; d < 2; d++)
        if (u->dev[d])
            cudaFree(u->dev[d]);
    free(u->host);
    free(u->lens);
    free(u->pinned);
    free(u->ev);
    free(u->ev_live);
    free(u);
}

static int create(sl_upload *u, void *const *host, const size_t *lens, unsigned n, sl_error *e)
{
    int ndev = 0;
    CK(cudaGetDeviceCount(&ndev), "cudaGetDeviceCount");
    if (ndev == 0)
        return sl_errorf(e, SL_E_DEVICE, "cuda: no GPU found");
    int dev = 0;
    CK(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) == cudaSuccess) {
        strncpy(u->name, p.name, sizeof u->name - 1);
    }
    CK(cudaStreamCreateWithFlags(&u->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    u->stream_ok = 1;
    for (unsigned i = 0; i < n; i++) {
        u->host[i] = host[i];
        u->lens[i] = lens[i];
        if (lens[i] > u->dev_bytes)
            u->dev_bytes = lens[i];
        CK(cudaHostRegister(host[i], lens[i], cudaHostRegisterDefault), "cudaHostRegister (pinning a buffer)");
        u->pinned[i] = 1;
        CK(cudaEventCreateWithFlags(&u->ev[i], cudaEventDisableTiming), "cudaEventCreate");
    }
    for (int d = 0; d < 2; d++)
        CK(cudaMalloc(&u->dev[d], u->dev_bytes), "cudaMalloc (VRAM destination)");
    return 0;
}

extern "C" int sl_upload_create(void *const *host, const size_t *lens, unsigned n, sl_upload **out, sl_error *e)
{
    if (!host || !lens || n == 0 || !out)
        return sl_errorf(e, SL_E_ARG, "sl_upload_create: no buffers");
    sl_upload *u = (sl_upload *)calloc(1, sizeof *u);
    if (!u)
        return sl_errorf(e, SL_E_NOMEM, "sl_upload_create: out of memory");
    u->n = n;
    u->host = (void **)calloc(n, sizeof *u->host);
    u->lens = (size_t *)calloc(n, sizeof *u->lens);
    u->pinned = (unsigned char *)calloc(n, 1);
    u->ev = (cudaEvent_t *)calloc(n, sizeof *u->ev);
    u->ev_live = (unsigned char *)calloc(n, 1);
    if (!u->host || !u->lens || !u->pinned || !u->ev || !u->ev_live) {
        sl_upload_destroy(u);
        return sl_errorf(e, SL_E_NOMEM, "sl_upload_create: out of memory");
    }
    int r = create(u, host, lens, n, e);
    if (r) {
        sl_upload_destroy(u);
        return r;
    }
    *out = u;
    return 0;
}

extern "C" int sl_upload_copy(sl_upload *u, unsigned i, size_t bytes, sl_error *e)
{
    if (i >= u->n || bytes > u->lens[i])
        return sl_errorf(e, SL_E_ARG, "upload: buffer %u / %zu bytes out of range", i, bytes);
    CK(cudaMemcpyAsync(u->dev[i & 1], u->host[i], bytes, cudaMemcpyHostToDevice, u->stream), "cudaMemcpyAsync");
    CK(cudaEventRecord(u->ev[i], u->stream), "cudaEventRecord");
    u->ev_live[i] = 1;
    return 0;
}

extern "C" int sl_upload_wait(sl_upload *u, unsigned i, sl_error *e)
{
    if (i >= u->n)
        return sl_errorf(e, SL_E_ARG, "upload: buffer %u out of range", i);
    if (u->ev_live[i])
        CK(cudaEventSynchronize(u->ev[i]), "cudaEventSynchronize");
    return 0;
}

extern "C" int sl_upload_sync(sl_upload *u, sl_error *e)
{
    CK(cudaStreamSynchronize(u->stream), "cudaStreamSynchronize");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

extern "C" int sl_upload_h2d_gbps(sl_upload *u, size_t bytes, double seconds, double *gbps, sl_error *e)
{
    size_t moved = 0;
    int r = sl_upload_sync(u, e);
    if (r)
        return r;
    double t0 = now_s(), t;
    do {
        for (unsigned i = 0; i < u->n; i++) {
            size_t b = bytes < u->lens[i] ? bytes : u->lens[i];
            r = sl_upload_copy(u, i, b, e);
            if (r)
                return r;
            moved += b;
        }
        r = sl_upload_sync(u, e);
        if (r)
            return r;
        t = now_s() - t0;
    } while (t < seconds);
    *gbps = (double)moved / t / 1e9;
    return 0;
}

extern "C" const char *sl_upload_device_name(const sl_upload *u) { return u ? u->name : ""; }
