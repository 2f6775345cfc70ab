// The CUDA backend's context and its sl_backend_ops table: device memory (one cudaMalloc, an
// arena inside), the compute and copy streams, the sticky error, host <-> device copies, and
// the event API stream/ will use to overlap uploads with compute. The kernels live in
// kernels_*.cu; this file only wires them up.
#include "cuda/internal.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- errors ----------------------------------------------------------------------------------

static void record_v(sl_cuda_ctx *c, int code, const char *func, const char *file, int line,
                     const char *fmt, va_list ap)
{
    pthread_mutex_lock(&c->mu);
    if (!c->err) {
        const char *base = strrchr(file, '/');
        int k = snprintf(c->errmsg, sizeof c->errmsg, "cuda: %s (%s:%d): ", func,
                         base ? base + 1 : file, line);
        if (k > 0 && (size_t)k < sizeof c->errmsg)
            vsnprintf(c->errmsg + k, sizeof c->errmsg - (size_t)k, fmt, ap);
        c->err = code;
    }
    pthread_mutex_unlock(&c->mu);
}

void sl_cuda_record(sl_cuda_ctx *c, int code, const char *func, const char *file, int line,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_v(c, code, func, file, line, fmt, ap);
    va_end(ap);
}

void sl_cuda_record_cuda(sl_cuda_ctx *c, cudaError_t err, const char *call, const char *func,
                         const char *file, int line)
{
    sl_cuda_record(c, SL_E_DEVICE, func, file, line, "%s: %s: %s%s", call, cudaGetErrorName(err),
                   cudaGetErrorString(err),
                   c->sync_each ? "" : " (a kernel fault shows at the next sync: rerun with "
                                       "SL_CUDA_SYNC=1 to name the op)");
}

static int ctx_err(sl_cuda_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int e = c->err;
    pthread_mutex_unlock(&c->mu);
    return e;
}

sl_cuda_ctx *sl_cuda_enter(sl_backend *b)
{
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    if (ctx_err(c))
        return NULL;
    CUDA_CHECK_RET(c, cudaSetDevice(c->device), NULL);
    return c;
}

// After a synchronisation: turn bits kernels set in the device error word into the sticky error.
static void check_deverr(sl_cuda_ctx *c)
{
    int bits = *(volatile int *)c->deverr_host;
    if (!bits)
        return;
    if (bits & SL_CUDA_DEVERR_EMBED_ID)
        sl_cuda_record(c, SL_E_ARG, "embed", __FILE__, __LINE__,
                       "a token id outside the embedding table (row left as NaN)");
    if (bits & SL_CUDA_DEVERR_ROUTE)
        sl_cuda_record(c, SL_E_ARG, "moe_route", __FILE__, __LINE__,
                       "the kept groups hold fewer experts than top_k (index -1, weight NaN)");
}

// Wait for the compute stream; then the sticky error, if any.
static int sync_compute(sl_cuda_ctx *c)
{
    CUDA_CHECK(c, cudaStreamSynchronize(c->compute));
    check_deverr(c);
    return ctx_err(c);
}

// ---- memory ----------------------------------------------------------------------------------

static int op_alloc(sl_backend *b, size_t bytes, void **out)
{
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    pthread_mutex_lock(&c->mu);
    int rc = sl_cuda_arena_alloc(&c->arena, bytes, out);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void op_free(sl_backend *b, void *p)
{
    if (!p)
        return;
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    pthread_mutex_lock(&c->mu);
    int rc = sl_cuda_arena_free(&c->arena, p);
    pthread_mutex_unlock(&c->mu);
    if (rc)
        sl_cuda_record(c, SL_E_ARG, __func__, __FILE__, __LINE__,
                       "free of %p, which this backend did not allocate (or freed already)", p);
}

// Copies go on the compute stream and wait for it, so they are ordered after every queued op
// and the host buffer may be reused at once (a pinned source would otherwise still be read).
static int op_upload(sl_backend *b, void *dst, const void *src, size_t bytes)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return SL_E_DEVICE;
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->compute));
    return sync_compute(c) ? SL_E_DEVICE : 0;
}

static int op_download(sl_backend *b, void *dst, const void *src, size_t bytes)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return SL_E_DEVICE;
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->compute));
    return sync_compute(c) ? SL_E_DEVICE : 0;
}

static void op_destroy(sl_backend *b)
{
    if (!b)
        return;
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    if (c) {
        cudaSetDevice(c->device);
        // teardown: statuses are not recorded (nothing reads them after this)
        if (c->compute_ok) {
            cudaStreamSynchronize(c->compute);
            cudaStreamDestroy(c->compute);
        }
        if (c->copy_ok) {
            cudaStreamSynchronize(c->copy);
            cudaStreamDestroy(c->copy);
        }
        if (c->vram)
            cudaFree(c->vram);
        if (c->deverr_host)
            cudaFreeHost(c->deverr_host);
        sl_cuda_blas_close(c->blas);
        sl_cuda_arena_fini(&c->arena);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
    free(b);
}

static bool op_supports(sl_backend *b, int fmt) { return fmt >= 0 && fmt < SL_WF_COUNT; }

static void op_matmul(sl_backend *b, float *out, const float *x, const sl_weight *w, int n)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (c)
        sl_cuda_matmul(c, out, x, w, n);
}

// cuda/overlap.cu: the optional copy/compute overlap entries.
int sl_cuda_op_pin_host(sl_backend *b, void *p, size_t bytes, sl_error *e);
void sl_cuda_op_unpin_host(sl_backend *b, void *p);
int sl_cuda_op_event_create(sl_backend *b, sl_event **out, sl_error *e);
void sl_cuda_op_event_destroy(sl_backend *b, sl_event *ev);
int sl_cuda_op_upload_async(sl_backend *b, void *dst, const void *src, size_t bytes, sl_event *after,
                            sl_event *ready, sl_error *e);
int sl_cuda_op_compute_wait(sl_backend *b, sl_event *ev, sl_error *e);
int sl_cuda_op_compute_record(sl_backend *b, sl_event *ev, sl_error *e);
int sl_cuda_op_event_done(sl_backend *b, sl_event *ev, bool block, sl_error *e);

// Filled field by field (not positionally) so a reordered model.h cannot shift ops silently.
static sl_backend_ops make_ops(void)
{
    sl_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.alloc = op_alloc;
    o.free = op_free;
    o.upload = op_upload;
    o.download = op_download;
    o.destroy = op_destroy;
    o.supports = op_supports;
    o.embed = sl_cuda_embed;
    o.rmsnorm = sl_cuda_rmsnorm;
    o.matmul = op_matmul;
    o.rope = sl_cuda_rope;
    o.mla_attention = sl_cuda_mla_attention;
    o.mla_scratch_floats = sl_cuda_mla_scratch_floats;
    o.silu_mul = sl_cuda_silu_mul;
    o.zero = sl_cuda_zero;
    o.add = sl_cuda_add;
    o.copy_rows = sl_cuda_copy_rows;
    o.gather_rows = sl_cuda_gather_rows;
    o.scatter_add_rows = sl_cuda_scatter_add_rows;
    o.moe_route = sl_cuda_moe_route;
    o.pin_host = sl_cuda_op_pin_host;
    o.unpin_host = sl_cuda_op_unpin_host;
    o.event_create = sl_cuda_op_event_create;
    o.event_destroy = sl_cuda_op_event_destroy;
    o.upload_async = sl_cuda_op_upload_async;
    o.compute_wait = sl_cuda_op_compute_wait;
    o.compute_record = sl_cuda_op_compute_record;
    o.event_done = sl_cuda_op_event_done;
    o.expert_group = sl_cuda_expert_group;
    return o;
}
static const sl_backend_ops cuda_ops = make_ops();

// ---- create ----------------------------------------------------------------------------------

static int create_fail(sl_backend *b, sl_error *e, int code, const char *what, cudaError_t err)
{
    int rc = sl_errorf(e, code, "cuda backend: %s: %s: %s", what, cudaGetErrorName(err),
                       cudaGetErrorString(err));
    op_destroy(b);
    return rc;
}

extern "C" int sl_cuda_backend_create(int device, size_t vram_budget, sl_backend **out, sl_error *e)
{
    int n = sl_cuda_device_count();
    if (device < 0 || device >= n)
        return sl_errorf(e, SL_E_ARG, "cuda backend: device %d does not exist (%d devices)", device, n);
    sl_backend *b = (sl_backend *)calloc(1, sizeof *b);
    sl_cuda_ctx *c = (sl_cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return sl_errorf(e, SL_E_NOMEM, "cuda backend: no host memory for the context");
    }
    b->ops = &cuda_ops;
    b->ctx = c;
    pthread_mutex_init(&c->mu, NULL);
    c->device = device;
    const char *sync = getenv("SL_CUDA_SYNC");
    c->sync_each = sync && sync[0] == '1';

    cudaError_t err;
    if ((err = cudaSetDevice(device)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaSetDevice", err);
    if ((err = cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaDeviceGetAttribute(SM count)", err);
    if ((err = cudaDeviceGetAttribute(&c->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                      device)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaDeviceGetAttribute(shared memory per block)", err);
    int ccmaj = 0, ccmin = 0;
    if ((err = cudaDeviceGetAttribute(&ccmaj, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess ||
        (err = cudaDeviceGetAttribute(&ccmin, cudaDevAttrComputeCapabilityMinor, device)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaDeviceGetAttribute(compute capability)", err);
    c->cc = 10 * ccmaj + ccmin;
    const char *wg = getenv("SL_CUDA_WGMMA");
    if (wg) {
        const char *p = strstr(wg, "stages="), *f = strstr(wg, "fill=");
        c->wg_stages = p ? atoi(p + 7) : 0;
        c->wg_fill = f ? atoi(f + 5) : 0;
    }
    if ((err = cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaStreamCreate(compute)", err);
    c->compute_ok = true;
    if ((err = cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaStreamCreate(copy)", err);
    c->copy_ok = true;
    if ((err = cudaHostAlloc((void **)&c->deverr_host, sizeof(int), cudaHostAllocMapped)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaHostAlloc(error word)", err);
    *c->deverr_host = 0;
    if ((err = cudaHostGetDevicePointer((void **)&c->deverr_dev, c->deverr_host, 0)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaHostGetDevicePointer(error word)", err);

    size_t free_b = 0, total_b = 0;
    if ((err = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "cudaMemGetInfo", err);
    const size_t reserve = (size_t)1 << 30;
    if (vram_budget == 0)
        vram_budget = free_b > 2 * reserve ? free_b - reserve : free_b / 2;
    vram_budget = vram_budget / SL_CUDA_ALIGN * SL_CUDA_ALIGN;
    if (vram_budget < ((size_t)16 << 20)) {
        op_destroy(b);
        return sl_errorf(e, SL_E_ARG, "cuda backend: a VRAM budget of %zu bytes is below 16 MiB",
                         vram_budget);
    }
    if ((err = cudaMalloc((void **)&c->vram, vram_budget)) != cudaSuccess) {
        cudaGetLastError();
        c->vram = NULL;
        int rc = sl_errorf(e, SL_E_NOMEM,
                           "cuda backend: cannot allocate a VRAM budget of %.2f GiB on device %d "
                           "(%.2f GiB free of %.2f): %s",
                           vram_budget / 1073741824.0, device, free_b / 1073741824.0,
                           total_b / 1073741824.0, cudaGetErrorString(err));
        op_destroy(b);
        return rc;
    }
    c->vram_bytes = vram_budget;
    // the split-K workspace sits at the top of the budget; the arena gets the rest
    size_t work = vram_budget / 8 < ((size_t)64 << 20) ? vram_budget / 8 : ((size_t)64 << 20);
    work = work / SL_CUDA_ALIGN * SL_CUDA_ALIGN;
    c->work = (float *)(c->vram + vram_budget - work);
    // its top holds the GEMV's split-K counters
    size_t counters = SL_CUDA_GEMV_COUNTERS * sizeof(unsigned);
    c->gemv_count = (unsigned *)(c->vram + vram_budget - counters);
    c->work_floats = (work - counters) / sizeof(float);
    if ((err = sl_cuda_gemv_init(c)) != cudaSuccess)
        return create_fail(b, e, SL_E_DEVICE, "GEMV setup", err);
    if (sl_cuda_arena_init(&c->arena, c->vram, vram_budget - work)) {
        op_destroy(b);
        return sl_errorf(e, SL_E_NOMEM, "cuda backend: no host memory for the arena table");
    }
    *out = b;
    return 0;
}

// ---- the public extras of cuda.h ---------------------------------------------------------------

extern "C" const char *sl_cuda_backend_error(sl_backend *b)
{
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    return ctx_err(c) ? c->errmsg : "";
}

static int report(sl_cuda_ctx *c, sl_error *e)
{
    int rc = ctx_err(c);
    return rc ? sl_errorf(e, SL_E_DEVICE, "%s", c->errmsg) : 0;
}

extern "C" int sl_cuda_sync(sl_backend *b, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (c) {
        CUDA_CHECK(c, cudaStreamSynchronize(c->copy));
        sync_compute(c);
    }
    return report(sl_cuda_ctx_of(b), e);
}

extern "C" void sl_cuda_arena_stats(sl_backend *b, size_t *capacity, size_t *used, size_t *peak)
{
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    pthread_mutex_lock(&c->mu);
    if (capacity)
        *capacity = c->arena.size;
    if (used)
        *used = c->arena.used;
    if (peak)
        *peak = c->arena.peak;
    pthread_mutex_unlock(&c->mu);
}

extern "C" void *sl_cuda_compute_stream(sl_backend *b) { return (void *)sl_cuda_ctx_of(b)->compute; }

extern "C" int sl_cuda_set_activations(sl_backend *b, sl_cuda_act act, sl_error *e)
{
    if (act != SL_CUDA_ACT_F32 && act != SL_CUDA_ACT_BF16)
        return sl_errorf(e, SL_E_ARG, "cuda: activation mode %d is neither f32 (0) nor bf16 (1)", (int)act);
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    pthread_mutex_lock(&c->mu);
    c->act_bf16 = act == SL_CUDA_ACT_BF16;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

extern "C" int sl_cuda_set_gemm_path(sl_backend *b, sl_cuda_gemm_path path, int token_tile, sl_error *e)
{
    if (path < SL_CUDA_GEMM_AUTO || path > SL_CUDA_GEMM_WGMMA)
        return sl_errorf(e, SL_E_ARG, "cuda: no matmul path %d", (int)path);
    if (token_tile != 0 && token_tile != 16 && token_tile != 32 && token_tile != 64 && token_tile != 128 &&
        token_tile != 256)
        return sl_errorf(e, SL_E_ARG, "cuda: token tile %d is not 0, 16, 32, 64, 128 or 256", token_tile);
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    if (path == SL_CUDA_GEMM_CUBLAS && !sl_cuda_blas_get(c))
        return sl_errorf(e, SL_E_UNSUPPORTED, "cuda: cuBLAS: %s", c->blas_msg);
    pthread_mutex_lock(&c->mu);
    c->gemm_path = path;
    c->gemm_tile = token_tile;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

struct sl_cuda_event {
    cudaEvent_t ev;
    int device;
};

static int event_fail(sl_error *e, cudaError_t err, const char *what)
{
    return sl_errorf(e, SL_E_DEVICE, "cuda: %s: %s: %s", what, cudaGetErrorName(err),
                     cudaGetErrorString(err));
}

extern "C" int sl_cuda_event_create(sl_backend *b, sl_cuda_event **out, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return report(sl_cuda_ctx_of(b), e);
    sl_cuda_event *ev = (sl_cuda_event *)calloc(1, sizeof *ev);
    if (!ev)
        return sl_errorf(e, SL_E_NOMEM, "cuda: no host memory for an event");
    cudaError_t err = cudaEventCreateWithFlags(&ev->ev, cudaEventDisableTiming);
    if (err != cudaSuccess) {
        free(ev);
        return event_fail(e, err, "cudaEventCreate");
    }
    ev->device = c->device;
    *out = ev;
    return 0;
}

extern "C" void sl_cuda_event_destroy(sl_cuda_event *ev)
{
    if (!ev)
        return;
    cudaEventDestroy(ev->ev);
    free(ev);
}

extern "C" int sl_cuda_upload_async(sl_backend *b, void *dst, const void *src, size_t bytes,
                                    sl_cuda_event *ready, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return report(sl_cuda_ctx_of(b), e);
    cudaError_t err;
    if (bytes && (err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->copy)) != cudaSuccess)
        return event_fail(e, err, "cudaMemcpyAsync(copy stream)");
    if (ready && (err = cudaEventRecord(ready->ev, c->copy)) != cudaSuccess)
        return event_fail(e, err, "cudaEventRecord(copy stream)");
    return 0;
}

extern "C" int sl_cuda_compute_wait(sl_backend *b, sl_cuda_event *ev, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return report(sl_cuda_ctx_of(b), e);
    cudaError_t err = cudaStreamWaitEvent(c->compute, ev->ev, 0);
    return err == cudaSuccess ? 0 : event_fail(e, err, "cudaStreamWaitEvent(compute)");
}

extern "C" int sl_cuda_compute_record(sl_backend *b, sl_cuda_event *ev, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return report(sl_cuda_ctx_of(b), e);
    cudaError_t err = cudaEventRecord(ev->ev, c->compute);
    return err == cudaSuccess ? 0 : event_fail(e, err, "cudaEventRecord(compute)");
}

extern "C" int sl_cuda_copy_wait(sl_backend *b, sl_cuda_event *ev, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return report(sl_cuda_ctx_of(b), e);
    cudaError_t err = cudaStreamWaitEvent(c->copy, ev->ev, 0);
    return err == cudaSuccess ? 0 : event_fail(e, err, "cudaStreamWaitEvent(copy)");
}

extern "C" int sl_cuda_event_query(sl_cuda_event *ev, sl_error *e)
{
    cudaError_t err = cudaEventQuery(ev->ev);
    if (err == cudaSuccess)
        return 1;
    if (err == cudaErrorNotReady) {
        cudaGetLastError(); // not an error: clear it
        return 0;
    }
    return event_fail(e, err, "cudaEventQuery");
}

extern "C" int sl_cuda_event_wait(sl_cuda_event *ev, sl_error *e)
{
    cudaError_t err = cudaEventSynchronize(ev->ev);
    return err == cudaSuccess ? 0 : event_fail(e, err, "cudaEventSynchronize");
}

// ---- weight views ----------------------------------------------------------------------------

sl_wdev sl_cuda_wdev(const sl_weight *w)
{
    sl_wdev d;
    d.data = (const uint8_t *)w->data;
    d.rows = w->rows;
    d.cols = w->cols;
    d.fmt = w->fmt;
    d.ncb = (d.cols + 127) / 128;
    d.ng = (d.cols + 31) / 32;
    switch (w->fmt) {
    case SL_WF_F32: d.rb = d.cols * 4; break;
    case SL_WF_BF16: d.rb = d.cols * 2; break;
    case SL_WF_Q4: d.rb = (d.cols + 1) / 2; break;
    default: d.rb = d.cols; break;
    }
    d.scales = d.data + d.rb * d.rows;
    return d;
}
