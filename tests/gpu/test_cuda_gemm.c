/* The many-token matmul (n > 8) of the CUDA backend against the CPU backend, on fresh random
 * inputs (seed printed), in both activation modes (sl_cuda_set_activations):
 *   - fp32 activations (x split into two bf16 terms): relative L2 error <= 1e-5, as fp32 paths;
 *   - bf16 activations (x rounded to bf16): <= 6e-3 (rounding x alone gives ~1.7e-3 on random
 *     data: 2^-9 relative error a term, rms; with the weight copy rounded too, every element is
 *     within ~2^-8 = 3.9e-3, which a 1x1 weight, averaging nothing, can reach on some seeds).
 * At the DeepSeek-V3 expert shapes (2048 x 7168 and 7168 x 2048) for n = 16, 128, 1024 and every
 * tensor-core weight format; every token tile pinned; cuBLAS pinned (bf16 weights as stored;
 * quantized ones copied to bf16, in bf16 mode, which also rounds the weights: ~2.4e-3 expected); the fp32 kernel pinned; odd and misaligned shapes; token counts past one workspace load; and every
 * weight code decoded exactly. Every GPU output is filled with NaN first and checked to be all
 * written and finite. Skips without a CUDA device. */
#include "tests/gpu/harness.h"
#include "cpu/cpu.h"
#include "cuda/cuda.h"
#include "model/model.h"
#include "quant/quant.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TG_BUDGET ((size_t)1536 << 20)
#define TG_TOL_F32 1e-5
#define TG_TOL_BF16 6e-3

static void tg_mode(sl_backend *g, int bf16, sl_cuda_gemm_path path, int tile)
{
    sl_error e = {0};
    cr_assert_eq(sl_cuda_set_activations(g, bf16 ? SL_CUDA_ACT_BF16 : SL_CUDA_ACT_F32, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_set_gemm_path(g, path, tile, &e), 0, "%s", e.msg);
}

/* A weight encoded in fmt (host and device copies), the device copy `misalign` bytes past an
 * arena block's 256-byte alignment. */
typedef struct {
    sl_weight host, dev;
    void *dev_base;
} tg_weight;

static void tg_weight_from(sl_backend *g, tg_weight *w, int fmt, int rows, int cols, void *enc,
                           size_t misalign)
{
    size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
    cr_assert_eq(g->ops->alloc(g, nb + misalign, &w->dev_base), 0);
    cr_assert_eq(g->ops->upload(g, (char *)w->dev_base + misalign, enc, nb), 0, "upload: %s",
                 sl_cuda_backend_error(g));
    w->host = (sl_weight){rows, cols, fmt, enc};
    w->dev = (sl_weight){rows, cols, fmt, (char *)w->dev_base + misalign};
}

static void tg_weight_make(sl_backend *g, tg_weight *w, int fmt, int rows, int cols, size_t misalign)
{
    float *f = gh_randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
    void *enc = malloc(sl_wformat_bytes((sl_wformat)fmt, rows, cols));
    cr_assert(enc);
    sl_quantize((sl_wformat)fmt, f, rows, cols, enc);
    free(f);
    tg_weight_from(g, w, fmt, rows, cols, enc, misalign);
}

static void tg_weight_free(sl_backend *g, tg_weight *w)
{
    free(w->host.data);
    g->ops->free(g, w->dev_base);
}

/* GPU matmul of n tokens into a NaN-poisoned buffer; the result, all of it written and finite. */
static float *tg_gpu_matmul(sl_backend *g, const float *dx, const tg_weight *w, int n, const char *what)
{
    size_t cnt = (size_t)n * w->dev.rows;
    float *h = malloc(cnt * sizeof(float));
    cr_assert(h);
    for (size_t i = 0; i < cnt; i++)
        h[i] = NAN;
    float *dout = gh_put(g, h, cnt * sizeof(float));
    g->ops->matmul(g, dout, dx, &w->dev, n);
    cr_assert_eq(g->ops->download(g, h, dout, cnt * sizeof(float)), 0, "%s: %s", what,
                 sl_cuda_backend_error(g));
    g->ops->free(g, dout);
    for (size_t i = 0; i < cnt; i++)
        if (!isfinite(h[i]))
            cr_assert_fail("%s: element %zu is %f (not written, or not finite)", what, i, (double)h[i]);
    return h;
}

static void tg_expect(const float *got, const float *want, size_t cnt, double tol, const char *what)
{
    double err = gh_rel_l2(got, want, cnt);
    cr_expect_leq(err, tol, "%s: rel L2 %.3g > %.1g", what, err, tol);
    cr_log_info("%s: rel L2 %.3g", what, err);
}

/* One weight, several token counts: the CPU once per n, then the GPU in both activation modes
 * through the automatic path, plus (when `all_paths`) every pinned tile, cuBLAS and the fp32
 * kernel. */
static void tg_check(sl_backend *g, sl_backend *c, int fmt, int rows, int cols, const int *ns,
                     int nn, size_t misalign, bool all_paths)
{
    tg_weight w;
    tg_weight_make(g, &w, fmt, rows, cols, misalign);
    int nmax = 0;
    for (int i = 0; i < nn; i++)
        nmax = ns[i] > nmax ? ns[i] : nmax;
    float *x = gh_randv((size_t)nmax * cols, 1.0f);
    float *dx = gh_put(g, x, (size_t)nmax * cols * sizeof(float));
    sl_error e = {0};
    bool blas = sl_cuda_set_gemm_path(g, SL_CUDA_GEMM_CUBLAS, 0, &e) == 0;
    for (int i = 0; i < nn; i++) {
        int n = ns[i];
        size_t cnt = (size_t)n * rows;
        float *want = malloc(cnt * sizeof(float));
        cr_assert(want);
        c->ops->matmul(c, want, x, &w.host, n);
        for (int bf16 = 0; bf16 < 2; bf16++) {
            double tol = bf16 ? TG_TOL_BF16 : TG_TOL_F32;
            const char *mode = bf16 ? "bf16" : "f32";
            char what[160];
            static const int tiles[] = {0, 16, 32, 64, 128};
            for (int t = 0; t < (all_paths ? 5 : 1); t++) {
                tg_mode(g, bf16, SL_CUDA_GEMM_AUTO, tiles[t]);
                snprintf(what, sizeof what, "matmul %s %dx%d n=%d misalign %zu, %s activations, tile %d",
                         sl_wformat_get(fmt)->name, rows, cols, n, misalign, mode, tiles[t]);
                float *got = tg_gpu_matmul(g, dx, &w, n, what);
                tg_expect(got, want, cnt, tol, what);
                free(got);
            }
            if (all_paths && blas && (fmt == SL_WF_BF16 || bf16)) { /* quantized: bf16 mode only */
                tg_mode(g, bf16, SL_CUDA_GEMM_CUBLAS, 0);
                snprintf(what, sizeof what, "matmul %s %dx%d n=%d, %s activations, cuBLAS",
                         sl_wformat_get(fmt)->name, rows, cols, n, mode);
                float *got = tg_gpu_matmul(g, dx, &w, n, what);
                tg_expect(got, want, cnt, tol, what);
                free(got);
            }
        }
        if (all_paths) { /* wgmma (sm_90, bf16 mode; elsewhere the call falls back), both tiles */
            for (int bn = 128; bn <= 256; bn *= 2) {
                tg_mode(g, 1, SL_CUDA_GEMM_WGMMA, bn);
                char what[160];
                snprintf(what, sizeof what, "matmul %s %dx%d n=%d misalign %zu, bf16 activations, wgmma %d",
                         sl_wformat_get(fmt)->name, rows, cols, n, misalign, bn);
                float *got = tg_gpu_matmul(g, dx, &w, n, what);
                tg_expect(got, want, cnt, TG_TOL_BF16, what);
                free(got);
            }
        }
        if (all_paths) { /* the fp32 kernel ignores the activation mode */
            tg_mode(g, 1, SL_CUDA_GEMM_SIMT, 0);
            char what[160];
            snprintf(what, sizeof what, "matmul %s %dx%d n=%d, fp32 kernel", sl_wformat_get(fmt)->name,
                     rows, cols, n);
            float *got = tg_gpu_matmul(g, dx, &w, n, what);
            tg_expect(got, want, cnt, TG_TOL_F32, what);
            free(got);
        }
        tg_mode(g, 0, SL_CUDA_GEMM_AUTO, 0);
        free(want);
    }
    free(x);
    g->ops->free(g, dx);
    tg_weight_free(g, &w);
}

/* Both expert shapes, n = 16, 128, 1024 (one token tile of 16, one of 128, eight of 128). */
static void tg_deepseek(int fmt)
{
    gh_seed();
    sl_backend *g = gh_gpu(TG_BUDGET), *c = gh_cpu();
    static const int ns[] = {16, 128, 1024};
    tg_check(g, c, fmt, 2048, 7168, ns, 3, 0, false);
    tg_check(g, c, fmt, 7168, 2048, ns, 3, 0, false);
    static const int ns_paths[] = {130};
    tg_check(g, c, fmt, 2048, 7168, ns_paths, 1, 0, true);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

Test(cuda_gemm, deepseek_expert_shapes_bf16) { tg_deepseek(SL_WF_BF16); }
Test(cuda_gemm, deepseek_expert_shapes_fp8) { tg_deepseek(SL_WF_FP8); }
Test(cuda_gemm, deepseek_expert_shapes_q8) { tg_deepseek(SL_WF_Q8); }
Test(cuda_gemm, deepseek_expert_shapes_q4) { tg_deepseek(SL_WF_Q4); }

/* Ragged row blocks, partial token tiles, k not a multiple of 64 (aligned rows: the cp.async path
 * with a short last chunk) and odd or misaligned planes (the byte-gather path), every path. */
Test(cuda_gemm, odd_shapes_every_format_and_path)
{
    gh_seed();
    sl_backend *g = gh_gpu(TG_BUDGET), *c = gh_cpu();
    static const int ns[] = {9, 17, 70, 200};
    static const int shapes[][2] = {{384, 1024}, {259, 1088}, {130, 96}, {37, 203}, {5, 24}, {1, 1}, {33, 17}};
    for (int fmt = SL_WF_BF16; fmt < SL_WF_COUNT; fmt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t mis = 0; mis <= 4; mis += 4)
                tg_check(g, c, fmt, shapes[s][0], shapes[s][1], ns, 4, mis, s == 0 && mis == 0);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* A 256 MiB budget has a 32 MiB workspace: 600 tokens of 7168 fp32-mode activations (28 KiB each)
 * take two loads of it. */
Test(cuda_gemm, token_count_past_one_workspace_load)
{
    gh_seed();
    sl_backend *g = gh_gpu((size_t)256 << 20), *c = gh_cpu();
    static const int ns[] = {600};
    tg_check(g, c, SL_WF_FP8, 512, 7168, ns, 1, 0, false);
    tg_check(g, c, SL_WF_Q4, 512, 7168, ns, 1, 0, false);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* Every code of every quantized format (and random bf16 values), read through one-hot activations:
 * out[t][r] = W[r][t] exactly, in both modes (a one-hot x is exact in bf16). Scales are powers of
 * two, so products are exact too. */
Test(cuda_gemm, every_weight_code_decodes_exactly)
{
    gh_seed();
    sl_backend *g = gh_gpu(TG_BUDGET), *c = gh_cpu();
    enum { ROWS = 256, COLS = 128, N = 16 };
    float *x = calloc((size_t)N * COLS, sizeof(float));
    cr_assert(x);
    for (int t = 0; t < N; t++)
        x[t * COLS + t * 3] = 1.0f; /* columns 0, 3, .., 45: both 32-column groups of stage 0 */
    float *dx = gh_put(g, x, (size_t)N * COLS * sizeof(float));
    for (int fmt = SL_WF_BF16; fmt < SL_WF_COUNT; fmt++) {
        size_t nb = sl_wformat_bytes((sl_wformat)fmt, ROWS, COLS);
        uint8_t *enc = malloc(nb);
        cr_assert(enc);
        if (fmt == SL_WF_BF16) {
            float *f = gh_randv((size_t)ROWS * COLS, 1.0f);
            sl_quantize(SL_WF_BF16, f, ROWS, COLS, enc);
            free(f);
        } else if (fmt == SL_WF_FP8) {
            for (int r = 0; r < ROWS; r++)
                for (int k = 0; k < COLS; k++) {
                    uint8_t code = (uint8_t)(r + k);
                    enc[r * COLS + k] = (code & 0x7f) == 0x7f ? 0 : code; /* no NaN codes */
                }
            float *sc = (float *)(enc + ROWS * COLS); /* 2 x 1 blocks */
            sc[0] = 0.25f, sc[1] = 8.0f;
        } else if (fmt == SL_WF_Q8) {
            for (int r = 0; r < ROWS; r++)
                for (int k = 0; k < COLS; k++)
                    enc[r * COLS + k] = (uint8_t)(r + k); /* -128..127 */
            uint16_t *sc = (uint16_t *)(enc + ROWS * COLS);
            for (int i = 0; i < ROWS * COLS / 32; i++)
                sc[i] = i % 3 == 0 ? 0x3800 : i % 3 == 1 ? 0x4400 : 0xbc00; /* 0.5, 4, -1 */
        } else {
            for (int r = 0; r < ROWS; r++)
                for (int k = 0; k < COLS / 2; k++)
                    enc[r * COLS / 2 + k] = (uint8_t)(r * 7 + k * 3);
            uint16_t *sc = (uint16_t *)(enc + ROWS * COLS / 2);
            for (int i = 0; i < ROWS * COLS / 32; i++)
                sc[i] = i % 2 ? 0x3800 : 0xc000; /* 0.5, -2 */
        }
        tg_weight w;
        tg_weight_from(g, &w, fmt, ROWS, COLS, enc, 0);
        float *want = malloc((size_t)N * ROWS * sizeof(float));
        cr_assert(want);
        c->ops->matmul(c, want, x, &w.host, N);
        for (int v = 0; v < 3; v++) { /* f32, bf16, bf16 on wgmma (where there is one) */
            int bf16 = v > 0;
            tg_mode(g, bf16, v == 2 ? SL_CUDA_GEMM_WGMMA : SL_CUDA_GEMM_AUTO, 0);
            char what[96];
            snprintf(what, sizeof what, "every %s code, %s activations%s", sl_wformat_get(fmt)->name,
                     bf16 ? "bf16" : "f32", v == 2 ? ", wgmma" : "");
            float *got = tg_gpu_matmul(g, dx, &w, N, what);
            for (int i = 0; i < N * ROWS; i++)
                if (got[i] != want[i])
                    cr_assert_fail("%s: token %d row %d is %.9g, CPU %.9g", what, i / ROWS, i % ROWS,
                                   (double)got[i], (double)want[i]);
            free(got);
        }
        free(want);
        tg_weight_free(g, &w);
    }
    free(x);
    g->ops->free(g, dx);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

Test(cuda_gemm, settings_reject_bad_values)
{
    sl_backend *g = gh_gpu((size_t)64 << 20);
    sl_error e = {0};
    cr_expect_eq(sl_cuda_set_activations(g, (sl_cuda_act)2, &e), SL_E_ARG);
    cr_expect_eq(sl_cuda_set_gemm_path(g, (sl_cuda_gemm_path)9, 0, &e), SL_E_ARG);
    cr_expect_eq(sl_cuda_set_gemm_path(g, SL_CUDA_GEMM_TC, 48, &e), SL_E_ARG);
    cr_expect_eq(sl_cuda_set_activations(g, SL_CUDA_ACT_BF16, &e), 0);
    cr_expect_eq(sl_cuda_set_gemm_path(g, SL_CUDA_GEMM_TC, 64, &e), 0);
    g->ops->destroy(g);
}
