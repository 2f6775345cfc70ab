/* cuda/: the GPU backend. Built only when nvcc is present (SL_HAVE_CUDA). Today it answers what
 * devices exist; the kernels and the sl_backend ops table arrive with the GPU-backend issue. */
#ifndef SL_CUDA_H
#define SL_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices usable by this process; 0 when there is no driver or no GPU (never an
 * error: a CPU-only box is normal). */
int sl_cuda_device_count(void);

/* One line describing device `dev` ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, 132 SMs") into buf.
 * Returns 0, or a negative SL_E_DEVICE when the runtime refuses. */
int sl_cuda_describe(int dev, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
