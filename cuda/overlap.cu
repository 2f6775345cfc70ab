// The ops table's optional overlap entries (model/model.h): pinning host memory, and uploads on
// the copy stream ordered against compute by events. Thin adapters over cuda.h's sl_cuda_event
// functions; an sl_event here is an sl_cuda_event.
#include "cuda/internal.cuh"

static sl_cuda_event *cev(sl_event *ev) { return (sl_cuda_event *)ev; }

int sl_cuda_op_pin_host(sl_backend *b, void *p, size_t bytes, sl_error *e)
{
    sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    cudaError_t err = cudaSetDevice(c->device);
    if (err == cudaSuccess)
        err = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (err != cudaSuccess) {
        cudaGetLastError(); // a refused pin is reported here, not left sticky for the next op
        return sl_errorf(e, SL_E_DEVICE, "cuda: cannot page-lock %.2f GB of host memory: %s: %s",
                         bytes / 1e9, cudaGetErrorName(err), cudaGetErrorString(err));
    }
    return 0;
}

void sl_cuda_op_unpin_host(sl_backend *b, void *p)
{
    cudaSetDevice(sl_cuda_ctx_of(b)->device);
    if (cudaHostUnregister(p) != cudaSuccess)
        cudaGetLastError(); // teardown: nothing reads it
}

int sl_cuda_op_event_create(sl_backend *b, sl_event **out, sl_error *e)
{
    return sl_cuda_event_create(b, (sl_cuda_event **)out, e);
}

void sl_cuda_op_event_destroy(sl_backend *b, sl_event *ev)
{
    (void)b;
    sl_cuda_event_destroy(cev(ev));
}

int sl_cuda_op_upload_async(sl_backend *b, void *dst, const void *src, size_t bytes, sl_event *after,
                            sl_event *ready, sl_error *e)
{
    int rc = after ? sl_cuda_copy_wait(b, cev(after), e) : 0;
    return rc ? rc : sl_cuda_upload_async(b, dst, src, bytes, cev(ready), e);
}

int sl_cuda_op_compute_wait(sl_backend *b, sl_event *ev, sl_error *e)
{
    return sl_cuda_compute_wait(b, cev(ev), e);
}

int sl_cuda_op_compute_record(sl_backend *b, sl_event *ev, sl_error *e)
{
    return sl_cuda_compute_record(b, cev(ev), e);
}

int sl_cuda_op_event_done(sl_backend *b, sl_event *ev, bool block, sl_error *e)
{
    (void)b;
    if (block) {
        int rc = sl_cuda_event_wait(cev(ev), e);
        return rc ? rc : 1;
    }
    return sl_cuda_event_query(cev(ev), e);
}
