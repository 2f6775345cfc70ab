// bench/kernels: the CUDA backend's matrix and attention kernels against the machine's own limits,
// measured in the same run (DESIGN.md, "Performance method"):
//   - GEMV (1..16 tokens) per weight format at 7168x2048 and 2048x7168, rotating over 64
//     distinct expert copies so L2 (50 MB on an H100) cannot hold them: achieved GB/s of weight
//     bytes, over the device-to-device copy bandwidth (bytes read + written) of a 1 GiB copy;
//     plain launches ("stream") and CUDA-graph replay ("graph"); every result checked (rel L2)
//     against cuBLAS SGEMM on the dequantized weight, output poisoned with NaN before each mode;
//   - the same GEMV on one 32768x7168 matrix: the streaming rate with launch costs amortised;
//   - the launch floor: an empty kernel per graph node;
//   - expert GEMM at 16, 128 and 1024 tokens per format, both activation modes, every path
//     (bench_gemm): TFLOP/s over cuBLAS bf16 (bf16 x bf16 -> fp32, tensor cores) on the same
//     shape, each checked against the SGEMM result on the dequantized weight (rel L2);
//   - MLA decode (absorbed form, 1 token, 128 heads, kv_lora 512, rope 64) at 4K and 32K context,
//     rotating over 8 layers' caches: GB/s of latent + rope-key bytes read;
//   - expert groups (model.h's expert_group): 8 experts of 2048x7168 gate/up and 7168x2048 down
//     per call, the given tokens each (default 1), rotating over 64 distinct experts (8 groups,
//     1.6-11.3 GB by format, so L2 holds none): GB/s of the group's weight bytes over the copy
//     rate, next to the per-expert loop of ops it replaces (gather, 3 matmuls, silu, scatter per
//     expert); the group is checked (rel L2) against the loop, its scratch poisoned with NaN.
// Prints a table and writes CSV (first lines: device, runtime, date as comments).
//
// Build: `make bench` (build/bench/kernels).
// Run: build/bench/kernels [out.csv [all|mm|gemv|mla [token counts]]]
//   default build/bench/kernels.csv, all; mm = GEMV and GEMM; gemv = GEMV only, at the
//   comma-separated token counts (default 1,2,4,8,16); gemv-experts = without the big matrix;
//   gemv-sweep = the experts under each of the ';'-separated SL_CUDA_GEMV settings in the next
//   argument (graph replay), e.g. "pdl=0;small=0;fill=3"; expert-group = the expert groups only,
//   at the token counts given (default 1). SL_CUDA_GEMV (cuda/internal.cuh) tunes the GEMV (and
//   the group's GEMV); with max=k, counts above k take the GEMM and are labelled so.
//   gemm = the expert GEMM only; gemm1 FMT ROWS COLS N BF16 PATH TILE = one matmul (for ncu).
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

static sl_backend *B;
static cudaStream_t S;
static FILE *CSV;

static void check_backend(const char *what)
{
    sl_error e = {0};
    if (sl_cuda_sync(B, &e)) {
        fprintf(stderr, "%s: %s\n", what, e.msg);
        exit(1);
    }
}

static void *dalloc(size_t bytes)
{
    void *p;
    if (B->ops->alloc(B, bytes, &p)) {
        fprintf(stderr, "out of backend memory for %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

static void *dput(const void *h, size_t bytes)
{
    void *p = dalloc(bytes);
    if (B->ops->upload(B, p, h, bytes)) {
        fprintf(stderr, "upload: %s\n", sl_cuda_backend_error(B));
        exit(1);
    }
    return p;
}

static float randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

static std::vector<float> randv(size_t n, float scale)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = scale * randn();
    return v;
}

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

static void row(const char *kind, const char *fmt, int rows, int cols, int tokens, int ctx,
                const char *mode, double us, double gbps, double tflops, const char *ref,
                double ratio, double check)
{
    printf("%-8s %-5s %5d x %-5d %4d tok %5d ctx %-6s %9.2f us %7.1f GB/s %6.2f TFLOP/s  %-11s %6.3f",
           kind, fmt, rows, cols, tokens, ctx, mode, us, gbps, tflops, ref, ratio);
    if (check >= 0)
        printf("  check %.1e", check);
    printf("\n");
    fprintf(CSV, "%s,%s,%d,%d,%d,%d,%s,%.3f,%.2f,%.4f,%s,%.4f,%.3g\n", kind, fmt, rows, cols,
            tokens, ctx, mode, us, gbps, tflops, ref, ratio, check);
    fflush(CSV); // a run stopped at its time limit keeps its rows
    fflush(stdout);
}

static double rel_l2_dev(const float *got_d, const float *want_d, size_t n)
{
    std::vector<float> g(n), w(n);
    CK(cudaStreamSynchronize(S)); // the compute stream does not order with cudaMemcpy's
    CK(cudaMemcpy(g.data(), got_d, n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(w.data(), want_d, n * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] - w[i];
        num += d * d;
        den += (double)w[i] * w[i];
    }
    return sqrt(num / den);
}

__global__ void f32_to_bf16(const float *in, __nv_bfloat16 *out, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}

__global__ void empty_kernel() {}

static void poison(float *p, size_t n) { CK(cudaMemsetAsync(p, 0xff, n * 4, S)); } // NaN

// GEMV per format at both expert shapes, rotating over 64 copies, at each token count in ns;
// then (big) one 32768x7168 matrix at 1 token; then the launch floor (an empty kernel per graph
// node).
static void bench_gemv(cublasHandle_t cb, double copy_gbps, const std::vector<int> &ns, int gemv_max,
                       bool big, const std::vector<std::string> &specs)
{
    const int shapes[2][2] = {{2048, 7168}, {7168, 2048}}; // gate/up, down
    enum { E = 64 };
    int nmax = 1;
    for (int n : ns)
        nmax = n > nmax ? n : nmax;
    for (int s = 0; s < 2; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        std::vector<float> wf = randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
        std::vector<float> x = randv((size_t)nmax * cols, 1.0f);
        float *dx = (float *)dput(x.data(), x.size() * 4);
        float *dout = (float *)dalloc((size_t)nmax * rows * 4), *dref = (float *)dalloc((size_t)nmax * rows * 4);
        for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
            const char *fname = sl_wformat_get(fmt)->name;
            size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
            std::vector<unsigned char> enc(nb);
            sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
            std::vector<float> deq((size_t)rows * cols);
            sl_dequantize_rows((sl_wformat)fmt, enc.data(), rows, cols, 0, rows, deq.data());
            float *dq = (float *)dput(deq.data(), deq.size() * 4); // what our kernels compute with
            std::vector<sl_weight> w(E);
            for (int k = 0; k < E; k++)
                w[k] = sl_weight{rows, cols, fmt, dput(enc.data(), nb)};
            for (int n : ns) {
                int reps = 4 * E;
                auto call = [&](int r) { B->ops->matmul(B, dout, dx, &w[r % E], n); };
                const float one = 1.0f, zero = 0.0f;
                CB(cublasSgemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, dq, cols, dx, cols,
                               &zero, dref, rows));
                for (const std::string &spec : specs) { // variants: graph replay only
                    std::string all = "max=16,pdl=1,pf=-1,fill=2,rows=0,small=1," + spec;
                    if (sl_cuda_gemv_tune(B, all.c_str()))
                        check_backend("gemv tune");
                    poison(dout, (size_t)n * rows);
                    double mg = time_graph_ms(reps, call);
                    double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                    double ggbps = (double)nb * reps / (mg * 1e-3) / 1e9;
                    row("gemv", fname, rows, cols, n, 0, spec.c_str(), mg * 1e3 / reps, ggbps,
                        2.0 * n * rows * cols * reps / (mg * 1e-3) / 1e12, "d2d-copy", ggbps / copy_gbps, chk);
                }
                if (!specs.empty())
                    continue;
                poison(dout, (size_t)n * rows);
                double m = time_ms(reps, call);
                double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                poison(dout, (size_t)n * rows);
                double mg = time_graph_ms(reps, call);
                double chk_g = rel_l2_dev(dout, dref, (size_t)n * rows);
                chk = chk_g > chk || chk_g != chk_g ? chk_g : chk;
                double gbps = (double)nb * reps / (m * 1e-3) / 1e9, ggbps = (double)nb * reps / (mg * 1e-3) / 1e9;
                double fl = 2.0 * n * rows * cols * reps / 1e12;
                // cuda/kernels_gemv.cu's per-format crossover, unless SL_CUDA_GEMV sets max=
                static const int by_fmt[SL_WF_COUNT] = {12, 6, 4, 4, 4};
                const char *kind = n <= (gemv_max > 0 ? gemv_max : by_fmt[fmt]) ? "gemv" : "gemm";
                row(kind, fname, rows, cols, n, 0, "stream", m * 1e3 / reps, gbps, fl / (m * 1e-3),
                    "d2d-copy", gbps / copy_gbps, chk);
                row(kind, fname, rows, cols, n, 0, "graph", mg * 1e3 / reps, ggbps, fl / (mg * 1e-3),
                    "d2d-copy", ggbps / copy_gbps, chk);
            }
            for (auto &k : w)
                B->ops->free(B, k.data);
            B->ops->free(B, dq);
        }
        B->ops->free(B, dx);
        B->ops->free(B, dout);
        B->ops->free(B, dref);
    }

    // one large matrix (32768 x 7168, 235 M weights, well past L2): the streaming rate with the
    // per-launch cost amortised
    const int brows = 32768, bcols = 7168;
    std::vector<float> bwf = big ? randv((size_t)brows * bcols, 1.0f / sqrtf((float)bcols)) : std::vector<float>();
    for (int fmt = 0; fmt < SL_WF_COUNT && big; fmt++) {
        const int rows = brows, cols = bcols;
        const char *fname = sl_wformat_get(fmt)->name;
        size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
        const std::vector<float> &wf = bwf;
        std::vector<unsigned char> enc(nb);
        sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
        sl_weight w = {rows, cols, fmt, dput(enc.data(), nb)};
        std::vector<float> x = randv(cols, 1.0f);
        float *dx = (float *)dput(x.data(), x.size() * 4), *dout = (float *)dalloc((size_t)rows * 4);
        int reps = 8;
        auto call = [&](int) { B->ops->matmul(B, dout, dx, &w, 1); };
        double mg = time_graph_ms(reps, call);
        double gbps = (double)nb * reps / (mg * 1e-3) / 1e9;
        row("gemv-big", fname, rows, cols, 1, 0, "graph", mg * 1e3 / reps, gbps,
            2.0 * rows * cols * reps / (mg * 1e-3) / 1e12, "d2d-copy", gbps / copy_gbps, -1);
        B->ops->free(B, w.data);
        B->ops->free(B, dx);
        B->ops->free(B, dout);
    }

    // the launch floor: what a graph node costs with no work in it
    int reps = 256;
    double mg = time_graph_ms(reps, [&](int) { empty_kernel<<<132, 256, 0, S>>>(); });
    row("launch", "-", 0, 0, 0, 0, "graph", mg * 1e3 / reps, 0, 0, "-", 0, -1);
}

// ---- expert GEMM: the many-token matmul against cuBLAS on the same shape ----------------------
// Per shape (gate/up 2048x7168, down 7168x2048), n = 16, 128, 1024, rotating over E_GEMM weight
// copies (L2 cannot hold them): cuBLAS bf16 (bf16 x bf16 -> fp32) and fp32 SGEMM on the f32
// weight; then per format the fp32 kernel ("before"), and the tensor-core path in both activation
// modes with each token tile worth trying and, on bf16 weights, cuBLAS on the stored weight. Times
// are CUDA-graph replays (kernel time without host launch cost, which a few-microsecond product
// would otherwise show); each result is checked against SGEMM on the dequantized weight (rel L2).
struct gemm_best {
    double ratio[2]; // best ratio to cuBLAS bf16, fp32 / bf16 activations
    char path[2][16];
};

static void set_path(int bf16, sl_cuda_gemm_path p, int tile)
{
    sl_error e = {0};
    if (sl_cuda_set_activations(B, bf16 ? SL_CUDA_ACT_BF16 : SL_CUDA_ACT_F32, &e) ||
        sl_cuda_set_gemm_path(B, p, tile, &e)) {
        fprintf(stderr, "gemm path: %s\n", e.msg);
        exit(1);
    }
}

static void bench_gemm(cublasHandle_t cb)
{
    const int shapes[2][2] = {{2048, 7168}, {7168, 2048}};
    enum { NN = 5 };
    const int gemm_n[NN] = {16, 64, 128, 256, 1024}; // the goal's 16, 128, 1024 and two crossovers
    const int fmts[4] = {SL_WF_BF16, SL_WF_FP8, SL_WF_Q8, SL_WF_Q4};
    enum { E_GEMM = 16 };
    sl_error e = {0};
    bool have_blas = sl_cuda_set_gemm_path(B, SL_CUDA_GEMM_CUBLAS, 0, &e) == 0;
    if (!have_blas)
        printf("gemm: no cuBLAS path (%s)\n", e.msg);
    gemm_best best[2][4][NN];
    double before[2][4][NN];
    for (int s = 0; s < 2; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        std::vector<float> wf = randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
        std::vector<float> x = randv((size_t)1024 * cols, 1.0f);
        float *dx = (float *)dput(x.data(), x.size() * 4);
        float *dout = (float *)dalloc((size_t)1024 * rows * 4), *dref = (float *)dalloc((size_t)1024 * rows * 4);
        std::vector<float *> wref(E_GEMM);
        std::vector<__nv_bfloat16 *> wbf(E_GEMM);
        for (int k = 0; k < E_GEMM; k++) {
            wref[k] = (float *)dput(wf.data(), wf.size() * 4);
            wbf[k] = (__nv_bfloat16 *)dalloc(wf.size() * 2);
            f32_to_bf16<<<1024, 256, 0, S>>>(wref[k], wbf[k], wf.size());
        }
        __nv_bfloat16 *xbf = (__nv_bfloat16 *)dalloc(x.size() * 2);
        f32_to_bf16<<<1024, 256, 0, S>>>(dx, xbf, x.size());
        CK(cudaGetLastError());
        const float one = 1.0f, zero = 0.0f;
        // out (n, rows) row-major = (rows, n) column-major = W (cols x rows col-major)^T . x
        auto sgemm = [&](int n, const float *w, float *out) {
            CB(cublasSgemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, w, cols, dx, cols,
                           &zero, out, rows));
        };
        auto bgemm = [&](int n, const __nv_bfloat16 *w, float *out) {
            CB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, w, CUDA_R_16BF, cols,
                            xbf, CUDA_R_16BF, cols, &zero, out, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
        };
        double cub16[NN];
        for (int i = 0; i < NN; i++) {
            int n = gemm_n[i], reps = n >= 1024 ? 32 : 128;
            double flops = 2.0 * n * rows * cols;
            double m32 = time_graph_ms(reps, [&](int r) { sgemm(n, wref[r % E_GEMM], dref); });
            double m16 = time_graph_ms(reps, [&](int r) { bgemm(n, wbf[r % E_GEMM], dref); });
            cub16[i] = flops * reps / (m16 * 1e-3) / 1e12;
            row("cublas", "f32", rows, cols, n, 0, "graph", m32 * 1e3 / reps, 0, flops * reps / (m32 * 1e-3) / 1e12,
                "-", 1, -1);
            row("cublas", "bf16", rows, cols, n, 0, "graph", m16 * 1e3 / reps, 0, cub16[i], "-", 1, -1);
        }
        for (int f = 0; f < 4; f++) {
            int fmt = fmts[f];
            const char *fname = sl_wformat_get(fmt)->name;
            size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
            std::vector<unsigned char> enc(nb);
            sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
            std::vector<float> deq((size_t)rows * cols);
            sl_dequantize_rows((sl_wformat)fmt, enc.data(), rows, cols, 0, rows, deq.data());
            float *dq = (float *)dput(deq.data(), deq.size() * 4); // what our kernels compute with
            std::vector<sl_weight> w(E_GEMM);
            for (int k = 0; k < E_GEMM; k++)
                w[k] = sl_weight{rows, cols, fmt, dput(enc.data(), nb)};
            for (int i = 0; i < NN; i++) {
                int n = gemm_n[i], reps = n >= 1024 ? 32 : 128;
                bool goal = n == 16 || n == 128 || n == 1024;
                sgemm(n, dq, dref);
                gemm_best &bst = best[s][f][i];
                bst.ratio[0] = bst.ratio[1] = 0;
                // (activation mode, path, tile): the fp32 kernel, the tensor-core tiles worth
                // trying at this n, cuBLAS on bf16 weights
                struct { int bf16; sl_cuda_gemm_path p; int tile; } v[16];
                int nv = 0;
                before[s][f][i] = 0;
                if (goal)
                    v[nv++] = {0, SL_CUDA_GEMM_SIMT, 0};
                for (int bf16 = 0; bf16 < 2; bf16++) {
                    v[nv++] = {bf16, SL_CUDA_GEMM_AUTO, 0};
                    v[nv++] = {bf16, SL_CUDA_GEMM_TC, 0};
                    for (int tile : {64, 128})
                        if (goal && n > 16 && tile <= n)
                            v[nv++] = {bf16, SL_CUDA_GEMM_TC, tile};
                    // cuBLAS: bf16 weights as stored; others copied to bf16 (bf16 mode only)
                    if (have_blas && n >= 64 && (fmt == SL_WF_BF16 || bf16))
                        v[nv++] = {bf16, SL_CUDA_GEMM_CUBLAS, 0};
                }
                for (int k = 0; k < nv; k++) {
                    set_path(v[k].bf16, v[k].p, v[k].tile);
                    auto call = [&](int r) { B->ops->matmul(B, dout, dx, &w[r % E_GEMM], n); };
                    double m = time_graph_ms(reps, call);
                    double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                    double tf = 2.0 * n * rows * cols * reps / (m * 1e-3) / 1e12, ratio = tf / cub16[i];
                    char mode[32];
                    const char *pn = v[k].p == SL_CUDA_GEMM_SIMT ? "simt" : v[k].p == SL_CUDA_GEMM_CUBLAS ? "cublas"
                                     : v[k].p == SL_CUDA_GEMM_AUTO ? "auto" : "tc";
                    if (v[k].tile)
                        snprintf(mode, sizeof mode, "%s-%s%d", v[k].bf16 ? "bf16" : "f32", pn, v[k].tile);
                    else
                        snprintf(mode, sizeof mode, "%s-%s", v[k].bf16 ? "bf16" : "f32", pn);
                    row("gemm", fname, rows, cols, n, 0, mode, m * 1e3 / reps, (double)nb * reps / (m * 1e-3) / 1e9,
                        tf, "cublas-bf16", ratio, chk);
                    if (v[k].p == SL_CUDA_GEMM_SIMT) {
                        before[s][f][i] = ratio;
                    } else if (ratio > bst.ratio[v[k].bf16]) {
                        bst.ratio[v[k].bf16] = ratio;
                        snprintf(bst.path[v[k].bf16], sizeof bst.path[0], "%s", mode + (v[k].bf16 ? 5 : 4));
                    }
                }
                set_path(0, SL_CUDA_GEMM_AUTO, 0);
            }
            for (auto &k : w)
                B->ops->free(B, k.data);
            B->ops->free(B, dq);
        }
        for (int k = 0; k < E_GEMM; k++) {
            B->ops->free(B, wref[k]);
            B->ops->free(B, wbf[k]);
        }
        B->ops->free(B, xbf);
        B->ops->free(B, dx);
        B->ops->free(B, dout);
        B->ops->free(B, dref);
    }
    printf("\nexpert GEMM, TFLOP/s over cuBLAS bf16 on the same shape (graph replay; best path):\n");
    printf("%-11s %-5s %5s %7s %16s %16s\n", "shape", "fmt", "n", "before", "f32 act", "bf16 act");
    for (int s = 0; s < 2; s++)
        for (int f = 0; f < 4; f++)
            for (int i = 0; i < NN; i++) {
                const gemm_best &b = best[s][f][i];
                char shape[16];
                snprintf(shape, sizeof shape, "%dx%d", shapes[s][0], shapes[s][1]);
                printf("%-11s %-5s %5d %7.3f %7.3f %-8s %7.3f %-8s\n", shape, sl_wformat_get(fmts[f])->name,
                       gemm_n[i], before[s][f][i], b.ratio[0], b.path[0], b.ratio[1], b.path[1]);
            }
}

// One matmul configuration, run a few times (for a profiler): fmt rows cols n bf16 path tile.
static void bench_gemm1(char **arg)
{
    int fmt = atoi(arg[0]), rows = atoi(arg[1]), cols = atoi(arg[2]), n = atoi(arg[3]);
    set_path(atoi(arg[4]), (sl_cuda_gemm_path)atoi(arg[5]), atoi(arg[6]));
    std::vector<float> wf = randv((size_t)rows * cols, 1.0f / sqrtf((float)cols)), x = randv((size_t)n * cols, 1.0f);
    size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
    std::vector<unsigned char> enc(nb);
    sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
    sl_weight w = {rows, cols, fmt, dput(enc.data(), nb)};
    float *dx = (float *)dput(x.data(), x.size() * 4), *dout = (float *)dalloc((size_t)n * rows * 4);
    enum { REPS = 20 };
    double ms = time_graph_ms(REPS, [&](int) { B->ops->matmul(B, dout, dx, &w, n); });
    printf("gemm1 fmt %d %dx%d n=%d bf16 %s path %s tile %s: %.2f us, %.1f TFLOP/s\n", fmt, rows,
           cols, n, arg[4], arg[5], arg[6], ms * 1e3 / REPS,
           2.0 * n * rows * cols * REPS / (ms * 1e-3) / 1e12);
}

// Expert groups per format at DeepSeek-V3 shapes: 8 experts a call, n tokens each (every expert
// takes all n), rotating over 64 experts; the grouped op and the per-expert loop it replaces.
static void bench_expert_group(double copy_gbps, const std::vector<int> &ns)
{
    enum { H = 7168, I = 2048, E = 64, G = 8 };
    int nmax = 1;
    for (int n : ns)
        nmax = n > nmax ? n : nmax;
    std::vector<float> wgu = randv((size_t)I * H, 1.0f / sqrtf((float)H));
    std::vector<float> wd = randv((size_t)H * I, 1.0f / sqrtf((float)I));
    std::vector<float> x = randv((size_t)nmax * H, 1.0f);
    float *dx = (float *)dput(x.data(), x.size() * 4);
    float *dout = (float *)dalloc((size_t)nmax * H * 4), *dref = (float *)dalloc((size_t)nmax * H * 4);
    // the loop's buffers, and the group's scratch for G * nmax rows
    float *ex = (float *)dalloc((size_t)nmax * H * 4), *eg = (float *)dalloc((size_t)nmax * I * 4);
    float *eu = (float *)dalloc((size_t)nmax * I * 4);
    float *scratch = (float *)dalloc((size_t)G * nmax * (2 * I + H) * 4);
    std::vector<int32_t> rows((size_t)G * nmax);
    std::vector<float> roww((size_t)G * nmax);
    for (int i = 0; i < G * nmax; i++)
        roww[i] = 0.05f + 0.3f * (float)rand() / RAND_MAX;
    float *drw = (float *)dput(roww.data(), roww.size() * 4);
    int32_t *drows = (int32_t *)dalloc(rows.size() * 4);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        const char *fname = sl_wformat_get(fmt)->name;
        size_t nb_gu = sl_wformat_bytes((sl_wformat)fmt, I, H), nb_d = sl_wformat_bytes((sl_wformat)fmt, H, I);
        std::vector<unsigned char> egu(nb_gu), ed(nb_d);
        sl_quantize((sl_wformat)fmt, wgu.data(), I, H, egu.data());
        sl_quantize((sl_wformat)fmt, wd.data(), H, I, ed.data());
        std::vector<sl_expert_weights> ew(E);
        for (int k = 0; k < E; k++)
            ew[k] = sl_expert_weights{sl_weight{I, H, fmt, dput(egu.data(), nb_gu)},
                                      sl_weight{I, H, fmt, dput(egu.data(), nb_gu)},
                                      sl_weight{H, I, fmt, dput(ed.data(), nb_d)}};
        const double bytes = (double)G * (2 * nb_gu + nb_d);
        for (int n : ns) {
            for (int i = 0; i < G; i++)
                for (int t = 0; t < n; t++)
                    rows[(size_t)i * n + t] = t;
            CK(cudaMemcpy(drows, rows.data(), (size_t)G * n * 4, cudaMemcpyHostToDevice));
            auto group_of = [&](int r) {
                sl_expert_group g;
                g.n = G;
                for (int i = 0; i < G; i++) {
                    g.w[i] = &ew[(r * G + i) % E];
                    g.start[i] = i * n;
                    g.count[i] = n;
                }
                return g;
            };
            auto grouped = [&](int r) {
                sl_expert_group g = group_of(r);
                B->ops->expert_group(B, dout, dx, drows, drw, &g, scratch);
            };
            auto loop = [&](int r) {
                sl_expert_group g = group_of(r);
                for (int i = 0; i < G; i++) {
                    const sl_expert_weights *w = g.w[i];
                    const int32_t *ri = drows + g.start[i];
                    B->ops->gather_rows(B, ex, dx, ri, n, H);
                    B->ops->matmul(B, eg, ex, &w->gate, n);
                    B->ops->matmul(B, eu, ex, &w->up, n);
                    B->ops->silu_mul(B, eg, eg, eu, (size_t)n * I);
                    B->ops->matmul(B, ex, eg, &w->down, n);
                    B->ops->scatter_add_rows(B, dout, ex, ri, drw + g.start[i], n, H);
                }
            };
            // check: one group from zero against the loop from zero, the scratch poisoned
            B->ops->zero(B, dout, (size_t)n * H);
            loop(0);
            CK(cudaMemcpyAsync(dref, dout, (size_t)n * H * 4, cudaMemcpyDeviceToDevice, S));
            poison(scratch, (size_t)G * n * (2 * I + H));
            B->ops->zero(B, dout, (size_t)n * H);
            grouped(0);
            check_backend("expert group");
            double chk = rel_l2_dev(dout, dref, (size_t)n * H);
            int reps = 8 * (E / G);
            const char *kinds[2] = {"exp-group", "exp-loop"};
            for (int k = 0; k < 2; k++) {
                double m = k == 0 ? time_ms(reps, grouped) : time_ms(reps, loop);
                double mg = k == 0 ? time_graph_ms(reps, grouped) : time_graph_ms(reps, loop);
                double fl = 2.0 * 3 * n * (double)I * H * G * reps / 1e12;
                for (int gmode = 0; gmode < 2; gmode++) {
                    double ms_ = gmode ? mg : m;
                    double gbps = bytes * reps / (ms_ * 1e-3) / 1e9;
                    row(kinds[k], fname, I, H, n, 0, gmode ? "graph" : "stream", ms_ * 1e3 / reps, gbps,
                        fl / (ms_ * 1e-3), "d2d-copy", gbps / copy_gbps, k == 0 ? chk : -1);
                }
            }
        }
        for (auto &w : ew) {
            B->ops->free(B, w.gate.data);
            B->ops->free(B, w.up.data);
            B->ops->free(B, w.down.data);
        }
    }
    void *bufs[] = {dx, dout, dref, ex, eg, eu, scratch, drw, drows};
    for (void *p : bufs)
        B->ops->free(B, p);
}

int main(int argc, char **argv)
{
    const char *csv_path = argc > 1 ? argv[1] : "build/bench/kernels.csv";
    const char *only = argc > 2 ? argv[2] : "all"; // all, mm, gemv, gemv-experts, gemv-sweep, gemm, gemm1, mla, expert-group
    bool eg_only = !strcmp(only, "expert-group");
    std::vector<int> ns;
    for (const char *p = argc > 3 ? argv[3] : eg_only ? "1" : "1,2,4,8,16"; p; p = strchr(p, ','), p = p ? p + 1 : p)
        if (atoi(p) > 0)
            ns.push_back(atoi(p));
    // gemv-sweep: SL_CUDA_GEMV variants, ';'-separated, each timed (graph replay) on the experts
    std::vector<std::string> specs;
    if (!strcmp(only, "gemv-sweep"))
        for (const char *p = argc > 4 ? argv[4] : ""; *p;) {
            const char *e = strchr(p, ';');
            specs.push_back(e ? std::string(p, e - p) : std::string(p));
            p = e ? e + 1 : p + strlen(p);
        }
    // the GEMV's token limit, as cuda/ reads it (labels: counts above it run the GEMM)
    int gemv_max = 0; // 0: cuda/kernels_gemv.cu's per-format defaults
    const char *tune = getenv("SL_CUDA_GEMV");
    if (tune && strstr(tune, "max="))
        gemv_max = atoi(strstr(tune, "max=") + 4);
    if (tune)
        printf("SL_CUDA_GEMV=%s\n", tune);
    if (sl_cuda_device_count() == 0) {
        fprintf(stderr, "bench/kernels: no CUDA device\n");
        return 2;
    }
    sl_error e = {0};
    // one matmul (for a profiler, which saves and restores the device memory a kernel may touch):
    // a small budget; else all free memory
    size_t budget = strcmp(only, "gemm1") == 0 ? (size_t)4 << 30 : 0;
    if (sl_cuda_backend_create(0, budget, &B, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    S = (cudaStream_t)sl_cuda_compute_stream(B);
    cublasHandle_t cb;
    CB(cublasCreate(&cb));
    CB(cublasSetStream(cb, S));
    CSV = fopen(csv_path, "w");
    if (!CSV) {
        perror(csv_path);
        return 1;
    }
    char dev[256];
    sl_cuda_describe(0, dev, sizeof dev);
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", gmtime(&now));
    printf("device: %s\ncuda runtime %d.%d, nvcc %d.%d, %s UTC\n", dev, rt / 1000, rt % 1000 / 10,
           __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, date);
    fprintf(CSV, "# device: %s\n# cuda runtime %d.%d, nvcc %d.%d, %s UTC\n", dev, rt / 1000,
            rt % 1000 / 10, __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, date);
    if (tune)
        fprintf(CSV, "# SL_CUDA_GEMV=%s\n", tune);
    fprintf(CSV, "kind,format,rows,cols,tokens,context,mode,time_us,gbps,tflops,reference,ratio,check\n");
    srand(1234);

    if (strcmp(only, "gemm1") == 0 && argc >= 10) {
        bench_gemm1(argv + 3);
        B->ops->destroy(B);
        return 0;
    }
    // ---- the copy bandwidth the GEMV is measured against ------------------------------------
    size_t cbytes = (size_t)1 << 30;
    void *c0 = dalloc(cbytes), *c1 = dalloc(cbytes);
    double ms = time_ms(10, [&](int) { CK(cudaMemcpyAsync(c1, c0, cbytes, cudaMemcpyDeviceToDevice, S)); });
    double copy_gbps = 2.0 * cbytes * 10 / (ms * 1e-3) / 1e9;
    row("d2d-copy", "-", 0, 0, 0, 0, "stream", ms * 1e3 / 10, copy_gbps, 0, "-", 1.0, -1);
    B->ops->free(B, c0);
    B->ops->free(B, c1);

    // ---- GEMV and expert GEMM per format ---------------------------------------------------------
    bool mm = !strcmp(only, "all") || !strcmp(only, "mm");
    if (mm || !strcmp(only, "gemv") || !strcmp(only, "gemv-experts") || !strcmp(only, "gemv-sweep"))
        bench_gemv(cb, copy_gbps, ns, gemv_max, !strcmp(only, "gemv") || mm, specs);
    if (mm || strcmp(only, "gemm") == 0)
        bench_gemm(cb);

    // ---- expert groups ---------------------------------------------------------------------------
    if (eg_only || !strcmp(only, "all"))
        bench_expert_group(copy_gbps, eg_only ? ns : std::vector<int>{1, 4});

    // ---- MLA decode (absorbed) ------------------------------------------------------------------
    sl_mla_dims d = {128, 128, 64, 128, 512, 0.135f};
    int qk = d.nope + d.rope, L = d.kv_lora;
    std::vector<float> kvb = randv((size_t)d.n_heads * (d.nope + d.v) * L, 1.0f / sqrtf((float)L));
    sl_weight kv_b = {d.n_heads * (d.nope + d.v), L, SL_WF_F32, dput(kvb.data(), kvb.size() * 4)};
    std::vector<float> q = randv((size_t)d.n_heads * qk, 1.0f);
    float *dq = (float *)dput(q.data(), q.size() * 4);
    float *dout = (float *)dalloc((size_t)d.n_heads * d.v * 4);
    for (int T : {4096, 32768}) {
        if (strcmp(only, "all") != 0 && strcmp(only, "mla") != 0)
            break;
        enum { LAYERS = 8 };
        std::vector<float> lat = randv((size_t)T * L, 1.0f), kr = randv((size_t)T * d.rope, 1.0f);
        float *dl[LAYERS], *dk[LAYERS];
        for (int k = 0; k < LAYERS; k++) {
            dl[k] = (float *)dput(lat.data(), lat.size() * 4);
            dk[k] = (float *)dput(kr.data(), kr.size() * 4);
        }
        float *scratch = (float *)dalloc(B->ops->mla_scratch_floats(&d, 1, T, true) * 4);
        int reps = 4 * LAYERS;
        auto call = [&](int r) {
            B->ops->mla_attention(B, dout, dq, dl[r % LAYERS], dk[r % LAYERS], &kv_b, 1, T - 1, &d,
                                  true, scratch);
        };
        double m = time_ms(reps, call), mg = time_graph_ms(reps, call);
        double bytes = (double)T * (L + d.rope) * 4;
        double flops = 4.0 * d.n_heads * T * (L + d.rope / 2.0);
        for (int k = 0; k < 2; k++) {
            double ms_ = k ? mg : m;
            double gbps = bytes * reps / (ms_ * 1e-3) / 1e9;
            row("mla-abs", "f32", d.n_heads, L, 1, T, k ? "graph" : "stream", ms_ * 1e3 / reps, gbps,
                flops * reps / (ms_ * 1e-3) / 1e12, "d2d-copy", gbps / copy_gbps, -1);
        }
        for (int k = 0; k < LAYERS; k++) {
            B->ops->free(B, dl[k]);
            B->ops->free(B, dk[k]);
        }
        B->ops->free(B, scratch);
    }
    check_backend("end");
    size_t cap, used, peak;
    sl_cuda_arena_stats(B, &cap, &used, &peak);
    printf("arena: %.2f GiB, peak use %.2f GiB\ncsv: %s\n", cap / 1073741824.0, peak / 1073741824.0,
           csv_path);
    fclose(CSV);
    cublasDestroy(cb);
    B->ops->destroy(B);
    return 0;
}
