/* cuda/upload: host -> VRAM copies for `sluice bench io --gpu` (and, later, stream/'s upload
 * stage). Host buffers the caller allocated (e.g. sl_io_buffer_alloc) are pinned in place with
 * cudaHostRegister, so the same memory is an io_uring fixed buffer and a DMA source: a read lands
 * once and is copied once, over PCIe, on one copy stream; one event per buffer says when it may
 * be reused. Built only with CUDA (SL_HAVE_CUDA). All functions return 0 or SL_E_DEVICE / SL_E_ARG
 * with the CUDA error text in `e`. */
#ifndef SL_CUDA_UPLOAD_H
#define SL_CUDA_UPLOAD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "base/base.h" /* a C header: its functions keep C linkage when this is compiled as CUDA C++ */

typedef struct sl_upload sl_upload;

/* Pin host[0..n) (lens bytes each) and allocate 2 device buffers of the largest length on the
 * current device, a non-blocking copy stream and n events. Cost: pinning is O(bytes), ~ms/GB. */
int sl_upload_create(void *const *host, const size_t *lens, unsigned n, sl_upload **out, sl_error *e);

/* Queue a copy of the first `bytes` of host buffer i to VRAM on the copy stream and record
 * buffer i's event after it. Returns at once. */
int sl_upload_copy(sl_upload *u, unsigned i, size_t bytes, sl_error *e);

/* Block until the last copy queued from host buffer i has finished (it may be overwritten). */
int sl_upload_wait(sl_upload *u, unsigned i, sl_error *e);

/* Block until every queued copy has finished. */
int sl_upload_sync(sl_upload *u, sl_error *e);

/* PCIe alone: copy the host buffers round-robin (`bytes` of each) for about `seconds`, keeping
 * the stream busy, and report GB/s (1e9 bytes/s). */
int sl_upload_h2d_gbps(sl_upload *u, size_t bytes, double seconds, double *gbps, sl_error *e);

/* Device name for reports ("NVIDIA H100 80GB HBM3"), or "" when unknown. */
const char *sl_upload_device_name(const sl_upload *u);

/* Wait for copies, unpin, free. NULL is fine. */
void sl_upload_destroy(sl_upload *u);

#ifdef __cplusplus
}
#endif

#endif
