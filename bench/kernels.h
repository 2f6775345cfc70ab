// bench/kernels: what its files share — error checks that end the run, the backend and stream
// every benchmark uses, device buffers, random inputs, timing (plain and CUDA-graph replay), the
// printed/CSV row, a relative-L2 check on device buffers. The benchmarks: bench/kernels.cu (main,
// copy bandwidth, MLA decode), bench/kernels_gemv.cu (GEMV, expert groups), bench/kernels_gemm.cu
// (many-token matmul against cuBLAS).
#ifndef SL_BENCH_KERNELS_H
#define SL_BENCH_KERNELS_H

#include "cuda/cuda.h"

extern "C" {
#include "quant/quant.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <string>
#include <vector>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CB(call)                                                                                   \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #call, (int)s_);  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

extern sl_backend *B;  // the CUDA backend under test (all free memory)
extern cudaStream_t S; // its compute stream
extern FILE *CSV;

void check_backend(const char *what);       // exit with the backend's error if it has one
void *dalloc(size_t bytes);                 // backend memory, or exit
void *dput(const void *h, size_t bytes);    // backend memory holding a copy of h, or exit
std::vector<float> randv(size_t n, float scale);
void row(const char *kind, const char *fmt, int rows, int cols, int tokens, int ctx, const char *mode,
         double us, double gbps, double tflops, const char *ref, double ratio, double check);
double rel_l2_dev(const float *got_d, const float *want_d, size_t n);
void poison(float *p, size_t n);            // n floats of NaN, on S
bool fmt_wanted(int fmt);                   // SL_BENCH_FMTS unset, or it names fmt ("q4,fp8")
__global__ void f32_to_bf16(const float *in, __nv_bfloat16 *out, size_t n);

// Milliseconds of `fn` repeated `reps` times on the compute stream (after one warm-up call).
template <class F> static double time_ms(int reps, F fn)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    fn(0);
    CK(cudaEventRecord(a, S));
    for (int i = 0; i < reps; i++)
        fn(i);
    CK(cudaEventRecord(b, S));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    check_backend("timed op");
    return ms;
}

// The same, with the `reps` calls captured once into a CUDA graph and replayed: kernel time
// without the host's per-launch cost (what a decode step captured as a graph would see).
template <class F> static double time_graph_ms(int reps, F fn)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(S, cudaStreamCaptureModeRelaxed));
    for (int i = 0; i < reps; i++)
        fn(i);
    CK(cudaStreamEndCapture(S, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, S)); // warm-up
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaEventRecord(a, S));
    CK(cudaGraphLaunch(ge, S));
    CK(cudaEventRecord(b, S));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    check_backend("graph-timed op");
    return ms;
}

// bench/kernels_gemv.cu
void bench_gemv(cublasHandle_t cb, double copy_gbps, const std::vector<int> &ns, int gemv_max, bool big,
                const std::vector<std::string> &specs);
void bench_expert_group(double copy_gbps, const std::vector<int> &ns);
// bench/kernels_gemm.cu
void bench_gemm(cublasHandle_t cb);
void bench_gemm1(char **arg);

#endif
