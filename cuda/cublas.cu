// cuBLAS for the many-token matmul on bf16 weights (kernels_tc_path.cu), loaded with dlopen the
// first time it is wanted: libcublas and libcublasLt are ~600 MB that a process maps only if it
// uses them, the runtime here is linked statically, and a machine without the library still runs
// every other path. Its scratch is a fixed slice of the backend's workspace, so it allocates no
// device memory after the handle is made.
#include "cuda/internal.cuh"

#include <cublas_v2.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

struct sl_cuda_blas {
    void *lib;
    cublasHandle_t h;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t); // the C cublasGemmEx
};

#define SL_STR2(x) #x
#define SL_STR(x) SL_STR2(x)

static sl_cuda_blas *blas_open(sl_cuda_ctx *c)
{
    const char *name = "libcublas.so." SL_STR(CUBLAS_VER_MAJOR);
    cudaError_t err = cudaSetDevice(c->device);
    if (err != cudaSuccess) {
        snprintf(c->blas_msg, sizeof c->blas_msg, "cudaSetDevice: %s", cudaGetErrorString(err));
        return NULL;
    }
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(c->blas_msg, sizeof c->blas_msg, "cannot load %s: %s", name, dlerror());
        return NULL;
    }
    sl_cuda_blas *bl = (sl_cuda_blas *)calloc(1, sizeof *bl);
    if (!bl) {
        dlclose(lib);
        snprintf(c->blas_msg, sizeof c->blas_msg, "no host memory");
        return NULL;
    }
    bl->lib = lib;
    bl->create = (decltype(bl->create))dlsym(lib, "cublasCreate_v2");
    bl->destroy = (decltype(bl->destroy))dlsym(lib, "cublasDestroy_v2");
    bl->set_stream = (decltype(bl->set_stream))dlsym(lib, "cublasSetStream_v2");
    bl->set_workspace = (decltype(bl->set_workspace))dlsym(lib, "cublasSetWorkspace_v2");
    bl->gemm_ex = (decltype(bl->gemm_ex))dlsym(lib, "cublasGemmEx");
    size_t work = c->work_floats * sizeof(float);
    const char *fail = NULL;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    if (!bl->create || !bl->destroy || !bl->set_stream || !bl->set_workspace || !bl->gemm_ex)
        fail = "a symbol is missing";
    else if (work < (size_t)2 * SL_CUDA_BLAS_WS)
        fail = "the backend's workspace is too small to share with it";
    else if ((s = bl->create(&bl->h)) != CUBLAS_STATUS_SUCCESS)
        fail = "cublasCreate";
    else if ((s = bl->set_stream(bl->h, c->compute)) != CUBLAS_STATUS_SUCCESS)
        fail = "cublasSetStream";
    else if ((s = bl->set_workspace(bl->h, (char *)c->work + work - SL_CUDA_BLAS_WS, SL_CUDA_BLAS_WS)) !=
             CUBLAS_STATUS_SUCCESS)
        fail = "cublasSetWorkspace";
    if (fail) {
        snprintf(c->blas_msg, sizeof c->blas_msg, "%s: %s (status %d)", name, fail, (int)s);
        sl_cuda_blas_close(bl);
        return NULL;
    }
    return bl;
}

sl_cuda_blas *sl_cuda_blas_get(sl_cuda_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->blas_state == 0) {
        c->blas = blas_open(c);
        c->blas_state = c->blas ? 1 : -1;
    }
    sl_cuda_blas *bl = c->blas;
    pthread_mutex_unlock(&c->mu);
    return bl;
}

void sl_cuda_blas_close(sl_cuda_blas *bl)
{
    if (!bl)
        return;
    if (bl->h)
        bl->destroy(bl->h);
    dlclose(bl->lib);
    free(bl);
}

void sl_cuda_blas_gemm_bf16(sl_cuda_ctx *c, int m, int n, int k, const void *w, int ldw,
                            const void *x, int ldx, float *out, int ldo, float beta)
{
    const float one = 1.0f;
    cublasStatus_t s = c->blas->gemm_ex(c->blas->h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w,
                                        CUDA_R_16BF, ldw, x, CUDA_R_16BF, ldx, &beta, out,
                                        CUDA_R_32F, ldo, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        sl_cuda_record(c, SL_E_DEVICE, __func__, __FILE__, __LINE__,
                       "cublasGemmEx (%d x %d x %d, bf16): status %d", m, n, k, (int)s);
        return;
    }
    CUDA_LAUNCHED(c, "matmul (cublas)");
}
