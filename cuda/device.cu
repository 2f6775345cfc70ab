// Device discovery through the CUDA runtime. Every call's status is checked; a missing driver
// is reported as zero devices, not an error.
#include "cuda/cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int sl_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no driver" status
        return 0;
    }
    return n;
}

extern "C" int sl_cuda_describe(int dev, char *buf, size_t n)
{
    cudaDeviceProp p;
    cudaError_t err = cudaGetDeviceProperties(&p, dev);
    if (err != cudaSuccess) {
        snprintf(buf, n, "device %d: %s", dev, cudaGetErrorString(err));
        return -9; // SL_E_DEVICE
    }
    snprintf(buf, n, "%s, sm_%d%d, %.1f GiB, %d SMs", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.multiProcessorCount);
    return 0;
}
