// bench/kernels: the many-token matmul (expert GEMM) against cuBLAS bf16 on the same shape —
// see bench/kernels.cu for the method.
#include "bench/kernels.h"

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

void bench_gemm(cublasHandle_t cb)
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
                    if (bf16 && n >= 64) // Hopper's wgmma (elsewhere the call falls back)
                        for (int tile : {128, 256})
                            v[nv++] = {bf16, SL_CUDA_GEMM_WGMMA, tile};
                }
                for (int k = 0; k < nv; k++) {
                    set_path(v[k].bf16, v[k].p, v[k].tile);
                    auto call = [&](int r) { B->ops->matmul(B, dout, dx, &w[r % E_GEMM], n); };
                    double m = time_graph_ms(reps, call);
                    double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                    double tf = 2.0 * n * rows * cols * reps / (m * 1e-3) / 1e12, ratio = tf / cub16[i];
                    char mode[32];
                    const char *pn = v[k].p == SL_CUDA_GEMM_SIMT ? "simt" : v[k].p == SL_CUDA_GEMM_CUBLAS ? "cublas"
                                     : v[k].p == SL_CUDA_GEMM_AUTO ? "auto" : v[k].p == SL_CUDA_GEMM_WGMMA ? "wgmma" : "tc";
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
void bench_gemm1(char **arg)
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
