/* The CUDA backend against the CPU backend (the oracle), op by op, on fresh random inputs (seed
 * printed): every weight format in matmul and embed, at DeepSeek-V3 shapes (hidden 7168, expert
 * width 2048, 128 heads, kv_lora 512, rope 64, nope 128, v 128) and at small odd shapes that take
 * the generic (unaligned) kernels. Every GPU output buffer is filled with NaN first, and every
 * element the op must write is checked to be finite (and the ones it must not touch to still be
 * NaN). fp32 paths: relative L2 error <= 1e-5 against the CPU. Skips without a CUDA device. */
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

/* 1.5 GiB per test process: Criterion runs tests in parallel processes, one context each. */
#define CU_BUDGET ((size_t)1536 << 20)

/* A weight encoded in fmt: host copy (for the CPU) and device copy at `misalign` bytes past a
 * 256-byte boundary (to take the GPU's unaligned paths). */
typedef struct {
    sl_weight host, dev;
    void *dev_base;
} cu_weight;

static void cu_weight_make(sl_backend *g, cu_weight *w, int fmt, int rows, int cols, size_t misalign)
{
    float *f = gh_randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
    size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
    void *enc = malloc(nb);
    cr_assert(enc);
    sl_quantize((sl_wformat)fmt, f, rows, cols, enc);
    free(f);
    cr_assert_eq(g->ops->alloc(g, nb + misalign, &w->dev_base), 0);
    cr_assert_eq(g->ops->upload(g, (char *)w->dev_base + misalign, enc, nb), 0, "upload: %s",
                 sl_cuda_backend_error(g));
    w->host = (sl_weight){rows, cols, fmt, enc};
    w->dev = (sl_weight){rows, cols, fmt, (char *)w->dev_base + misalign};
}

static void cu_weight_free(sl_backend *g, cu_weight *w)
{
    free(w->host.data);
    g->ops->free(g, w->dev_base);
}

/* ---- matmul --------------------------------------------------------------------------------- */

static void cu_check_matmul(sl_backend *g, sl_backend *c, int fmt, int rows, int cols,
                            const int *ns, int nn, size_t misalign)
{
    cu_weight w;
    cu_weight_make(g, &w, fmt, rows, cols, misalign);
    int nmax = 0;
    for (int i = 0; i < nn; i++)
        nmax = ns[i] > nmax ? ns[i] : nmax;
    float *x = gh_randv((size_t)nmax * cols, 1.0f);
    float *dx = gh_put(g, x, (size_t)nmax * cols * sizeof(float));
    for (int i = 0; i < nn; i++) {
        int n = ns[i];
        size_t cnt = (size_t)n * rows;
        float *want = malloc(cnt * sizeof(float));
        c->ops->matmul(c, want, x, &w.host, n);
        float *dout = gh_poisoned(g, cnt);
        g->ops->matmul(g, dout, dx, &w.dev, n);
        float *got = gh_get(g, dout, cnt);
        char what[128];
        snprintf(what, sizeof what, "matmul %s %dx%d n=%d misalign %zu", gh_fmt_name(fmt), rows,
                 cols, n, misalign);
        gh_all_finite(got, cnt, what);
        double err = gh_rel_l2(got, want, cnt);
        cr_expect_leq(err, 1e-5, "%s: rel L2 %.3g > 1e-5", what, err);
        free(want);
        free(got);
        g->ops->free(g, dout);
    }
    free(x);
    g->ops->free(g, dx);
    cu_weight_free(g, &w);
}

/* GEMV (up to 12 tokens: every token-count kernel, 9 and 11 on a wider one with zero tokens)
 * and tiled GEMM (from 13 tokens: small, medium and large token tiles), both DeepSeek-V3 expert
 * shapes: gate/up (2048 x 7168: split along columns) and down (7168 x 2048: not split). */
static void cu_matmul_deepseek(int fmt)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 16, 17, 40, 130};
    int nn = (int)(sizeof ns / sizeof ns[0]);
    cu_check_matmul(g, c, fmt, 2048, 7168, ns, nn, 0);
    cu_check_matmul(g, c, fmt, 7168, 2048, ns, nn, 0);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

Test(cuda_ops, matmul_deepseek_shapes_f32) { cu_matmul_deepseek(SL_WF_F32); }
Test(cuda_ops, matmul_deepseek_shapes_bf16) { cu_matmul_deepseek(SL_WF_BF16); }
Test(cuda_ops, matmul_deepseek_shapes_fp8) { cu_matmul_deepseek(SL_WF_FP8); }
Test(cuda_ops, matmul_deepseek_shapes_q8) { cu_matmul_deepseek(SL_WF_Q8); }
Test(cuda_ops, matmul_deepseek_shapes_q4) { cu_matmul_deepseek(SL_WF_Q4); }

/* Odd shapes (ragged scale groups, rows not a multiple of the block's 4, columns not a multiple
 * of the 16-byte chunk) and misaligned weight planes: the generic kernels. */
Test(cuda_ops, matmul_odd_shapes_and_misaligned_every_format)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int ns[] = {1, 3, 8, 9, 17, 70};
    static const int shapes[][2] = {{37, 203}, {5, 24}, {130, 72}, {1, 1}, {33, 17}, {259, 136}};
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t mis = 0; mis <= 4; mis += 4)
                cu_check_matmul(g, c, fmt, shapes[s][0], shapes[s][1], ns, 6, mis);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* The GEMV's fast path on shapes that leave ragged ends: row tiles past the last row (and fp8
 * scale blocks cut short), a last sweep of chunks with idle lanes, a last split with fewer
 * chunks; and, with at most 128 rows per launch, the multi-launch path of split GEMVs. */
static void cu_gemv_ragged(void)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int ns[] = {1, 2, 3, 7, 12, 16};
    static const int shapes[][2] = {{100, 1024}, {300, 2560}, {129, 4608}, {1000, 512}};
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            cu_check_matmul(g, c, fmt, shapes[s][0], shapes[s][1], ns, 6, 0);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

Test(cuda_ops, gemv_ragged_tiles_sweeps_and_splits) { cu_gemv_ragged(); }

Test(cuda_ops, gemv_ragged_in_launches_of_128_rows)
{
    /* read when the backend is made (this process only); max=16 keeps 13..16 tokens on the GEMV */
    setenv("SL_CUDA_GEMV", "rows=128,max=16", 1);
    cu_gemv_ragged();
}

/* One token takes a 4-rows-a-block kernel for f32, bf16 and fp8; the split kernel (q8, q4, and
 * every format from two tokens) must be right there too, in each of its one-token shapes (4 rows
 * a warp, 8 rows a warp, 4 rows with two sweeps of loads in flight), and q4's tensor-core kernel
 * (gemv_tc.cuh: rows of whole 128-column steps; 1056 columns take the split kernel) with its
 * loads through registers and through rings of 4 and 6 steps in shared memory. */
Test(cuda_ops, gemv_split_kernel_at_one_token)
{
    setenv("SL_CUDA_GEMV", "small=0", 1); /* read when the backend is made (this process only) */
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int ns[] = {1};
    static const char *const shapes[] = {"wide=0,deep=0,tc=0", "wide=1,deep=0,tc=0",
                                         "wide=0,deep=1,tc=0", "wide=1,deep=0,tc=1,ring=0",
                                         "tc=1,ring=4",        "tc=1,ring=6"};
    for (int k = 0; k < 6; k++) {
        cr_assert_eq(sl_cuda_gemv_tune(g, shapes[k]), 0);
        for (int fmt = k >= 3 ? SL_WF_Q4 : 0; fmt < SL_WF_COUNT; fmt++) {
            cu_check_matmul(g, c, fmt, 2048, 7168, ns, 1, 0);
            cu_check_matmul(g, c, fmt, 7168, 2048, ns, 1, 0);
            cu_check_matmul(g, c, fmt, 300, 2560, ns, 1, 0);
            cu_check_matmul(g, c, fmt, 100, 1024, ns, 1, 0);
            cu_check_matmul(g, c, fmt, 77, 1056, ns, 1, 0);
        }
    }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* Split sums are added in a fixed order, whatever order the blocks finish in: two runs give the
 * same bits. */
Test(cuda_ops, gemv_split_results_are_bit_identical_across_runs)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        cu_weight w;
        cu_weight_make(g, &w, fmt, 2048, 7168, 0);
        int n = 4;
        float *x = gh_randv((size_t)n * 7168, 1.0f);
        float *dx = gh_put(g, x, (size_t)n * 7168 * sizeof(float));
        float *d1 = gh_poisoned(g, (size_t)n * 2048), *d2 = gh_poisoned(g, (size_t)n * 2048);
        g->ops->matmul(g, d1, dx, &w.dev, n);
        g->ops->matmul(g, d2, dx, &w.dev, n);
        float *a = gh_get(g, d1, (size_t)n * 2048), *b = gh_get(g, d2, (size_t)n * 2048);
        gh_all_finite(a, (size_t)n * 2048, "first run");
        cr_assert(memcmp(a, b, (size_t)n * 2048 * sizeof(float)) == 0, "%s: runs differ",
                  gh_fmt_name(fmt));
        free(x), free(a), free(b);
        g->ops->free(g, dx), g->ops->free(g, d1), g->ops->free(g, d2);
        cu_weight_free(g, &w);
    }
    g->ops->destroy(g);
}

/* Back-to-back GEMVs where each reads what the one before wrote, and writes what the one before
 * read (ping-pong buffers), with a plain kernel in between: with programmatic dependent launch
 * a GEMV starts before its predecessor ends, and must still see its output. */
Test(cuda_ops, gemv_chain_sees_each_previous_output)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    enum { STEPS = 8, H = 7168, F = 2048 };
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++)
        for (int n = 1; n <= 16; n *= 4) {
            cu_weight up, down;
            cu_weight_make(g, &up, fmt, F, H, 0);
            cu_weight_make(g, &down, fmt, H, F, 0);
            float *h = gh_randv((size_t)n * H, 1.0f), *f = malloc((size_t)n * F * sizeof(float));
            float *bias = gh_randv((size_t)n * F, 0.1f);
            cr_assert(f);
            float *dh = gh_put(g, h, (size_t)n * H * sizeof(float));
            float *df = gh_poisoned(g, (size_t)n * F);
            float *dbias = gh_put(g, bias, (size_t)n * F * sizeof(float));
            for (int s = 0; s < STEPS; s++) {
                c->ops->matmul(c, f, h, &up.host, n);
                c->ops->add(c, f, bias, (size_t)n * F);
                c->ops->matmul(c, h, f, &down.host, n);
                g->ops->matmul(g, df, dh, &up.dev, n);
                g->ops->add(g, df, dbias, (size_t)n * F);
                g->ops->matmul(g, dh, df, &down.dev, n);
            }
            float *got = gh_get(g, dh, (size_t)n * H);
            char what[64];
            snprintf(what, sizeof what, "chain %s n=%d", gh_fmt_name(fmt), n);
            gh_all_finite(got, (size_t)n * H, what);
            double err = gh_rel_l2(got, h, (size_t)n * H);
            /* 16 products in a row; a stale read gives O(1). n = 16 takes the tensor-core GEMM
             * (x as bf16 hi + lo, ~2.5e-6 per product), which compounds to ~1e-5 here */
            cr_expect_leq(err, 5e-5, "%s: rel L2 %.3g > 5e-5", what, err);
            free(h), free(f), free(bias), free(got);
            g->ops->free(g, dh), g->ops->free(g, df), g->ops->free(g, dbias);
            cu_weight_free(g, &up);
            cu_weight_free(g, &down);
        }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- embed: decoding is exact, so rows must match bit for bit ---------------------------------- */

Test(cuda_ops, embed_every_format_bit_exact)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int shapes[][2] = {{300, 203}, {1000, 7168}, {129, 72}};
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            cu_weight w;
            cu_weight_make(g, &w, fmt, rows, cols, s == 2 ? 4 : 0);
            enum { N = 7 };
            int32_t ids[N] = {0, rows - 1, rows / 2, 1, rows - 1, 0, 0};
            for (int i = 5; i < N; i++)
                ids[i] = rand() % rows;
            int32_t *dids = gh_put(g, ids, sizeof ids);
            float *want = malloc((size_t)N * cols * sizeof(float));
            c->ops->embed(c, want, &w.host, ids, N);
            float *dout = gh_poisoned(g, (size_t)N * cols);
            g->ops->embed(g, dout, &w.dev, dids, N);
            float *got = gh_get(g, dout, (size_t)N * cols);
            gh_all_finite(got, (size_t)N * cols, "embed");
            for (size_t i = 0; i < (size_t)N * cols; i++)
                if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
                    cr_assert_fail("embed %s %dx%d: element %zu is %.9g, CPU %.9g",
                                   gh_fmt_name(fmt), rows, cols, i, (double)got[i], (double)want[i]);
            free(want);
            free(got);
            g->ops->free(g, dout);
            g->ops->free(g, dids);
            cu_weight_free(g, &w);
        }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- rmsnorm, rope ------------------------------------------------------------------------------- */

/* Strided rows as the model uses them (kv_a's latent part: read stride L + rope, written dense),
 * the gaps in the output left alone; and in place. */
Test(cuda_ops, rmsnorm_strided_rows_and_in_place)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    static const int cases[][4] = {{5, 7168, 7300, 7200}, {3, 512, 576, 512}, {7, 203, 211, 203}};
    for (size_t k = 0; k < 3; k++) {
        int n = cases[k][0], dim = cases[k][1], xs = cases[k][2], os = cases[k][3];
        float *x = gh_randv((size_t)n * xs, 3.0f), *w = gh_randv(dim, 1.0f);
        for (int i = 0; i < dim; i++)
            w[i] += 1.0f;
        float *want = malloc((size_t)n * os * sizeof(float));
        for (size_t i = 0; i < (size_t)n * os; i++)
            want[i] = NAN;
        c->ops->rmsnorm(c, want, os, x, xs, w, n, dim, 1e-6f);
        float *dx = gh_put(g, x, (size_t)n * xs * sizeof(float)), *dw = gh_put(g, w, dim * sizeof(float));
        float *dout = gh_poisoned(g, (size_t)n * os);
        g->ops->rmsnorm(g, dout, os, dx, xs, dw, n, dim, 1e-6f);
        float *got = gh_get(g, dout, (size_t)n * os);
        for (int t = 0; t < n; t++) {
            gh_all_finite(got + (size_t)t * os, dim, "rmsnorm row");
            for (int i = dim; i < os; i++)
                cr_assert(isnan(got[(size_t)t * os + i]), "rmsnorm wrote the gap at row %d col %d", t, i);
            double err = gh_rel_l2(got + (size_t)t * os, want + (size_t)t * os, dim);
            /* 1e-5: the CPU sums dim squares one by one in fp32, itself ~1e-6 off at 7168 */
            cr_expect_leq(err, 1e-5, "rmsnorm dim %d row %d: rel L2 %.3g", dim, t, err);
        }
        /* in place, dense rows */
        float *xd = gh_randv((size_t)n * dim, 2.0f);
        float *want2 = malloc((size_t)n * dim * sizeof(float));
        c->ops->rmsnorm(c, want2, dim, xd, dim, w, n, dim, 1e-6f);
        float *dxd = gh_put(g, xd, (size_t)n * dim * sizeof(float));
        g->ops->rmsnorm(g, dxd, dim, dxd, dim, dw, n, dim, 1e-6f);
        float *got2 = gh_get(g, dxd, (size_t)n * dim);
        double err = gh_rel_l2(got2, want2, (size_t)n * dim);
        cr_expect_leq(err, 1e-5, "rmsnorm in place dim %d: rel L2 %.3g", dim, err);
        free(x), free(w), free(want), free(got), free(xd), free(want2), free(got2);
        g->ops->free(g, dx), g->ops->free(g, dw), g->ops->free(g, dout), g->ops->free(g, dxd);
    }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* The q layout (128 heads of nope 128 + rope 64, rope part at offset 128) and the k layout (one
 * head, hs 0, inside kv_a's rows of 512 + 64): rotated lanes match, the rest is untouched. */
Test(cuda_ops, rope_q_and_k_layouts)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    enum { N = 5, R = 64 };
    static const int lay[][4] = {/* heads, ts, hs, offset */ {128, 128 * 192, 192, 128},
                                 {1, 576, 0, 512},
                                 {3, 3 * 20, 20, 14}};
    float inv[R / 2];
    for (int i = 0; i < R / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * i / R) * (1.0f + 0.01f * gh_randn());
    int32_t pos[N] = {0, 1, 4095, 32767, rand() % 30000};
    for (int k = 0; k < 3; k++) {
        int heads = lay[k][0], ts = lay[k][1], hs = lay[k][2], off = lay[k][3];
        int rope = k == 2 ? 6 : R;
        size_t cnt = (size_t)N * ts;
        float *x = gh_randv(cnt, 1.0f), *want = malloc(cnt * sizeof(float));
        memcpy(want, x, cnt * sizeof(float));
        c->ops->rope(c, want + off, N, heads, ts, hs, rope, pos, inv, 1.23f);
        float *dx = gh_put(g, x, cnt * sizeof(float));
        int32_t *dpos = gh_put(g, pos, sizeof pos);
        float *dinv = gh_put(g, inv, sizeof inv);
        g->ops->rope(g, dx + off, N, heads, ts, hs, rope, dpos, dinv, 1.23f);
        float *got = gh_get(g, dx, cnt);
        double worst = 0;
        for (size_t i = 0; i < cnt; i++) {
            double d = fabs((double)got[i] - want[i]);
            worst = d > worst ? d : worst;
        }
        cr_expect_leq(worst, 1e-6, "rope layout %d: max abs difference %.3g", k, worst);
        for (int t = 0; t < N; t++) /* lanes outside every head's rope part are bit-identical */
            for (int i = 0; i < ts; i++) {
                int in_head = hs ? i % hs : i, head = hs ? i / hs : 0;
                bool rotated = head < heads && in_head >= off && in_head < off + rope;
                if (!rotated)
                    cr_assert_eq(got[(size_t)t * ts + i], x[(size_t)t * ts + i],
                                 "rope layout %d changed lane %d of token %d", k, i, t);
            }
        free(x), free(want), free(got);
        g->ops->free(g, dx), g->ops->free(g, dpos), g->ops->free(g, dinv);
    }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- element-wise and row ops ---------------------------------------------------------------- */

Test(cuda_ops, silu_mul_add_zero)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    size_t n = 2048 * 37 + 5;
    float *a = gh_randv(n, 4.0f), *b = gh_randv(n, 1.0f), *want = malloc(n * sizeof(float));
    float *da = gh_put(g, a, n * 4), *db = gh_put(g, b, n * 4), *dout = gh_poisoned(g, n);
    c->ops->silu_mul(c, want, a, b, n);
    g->ops->silu_mul(g, dout, da, db, n);
    float *got = gh_get(g, dout, n);
    gh_all_finite(got, n, "silu_mul");
    cr_expect_leq(gh_rel_l2(got, want, n), 1e-6, "silu_mul: rel L2 %.3g", gh_rel_l2(got, want, n));
    float *silu = got;

    memcpy(want, a, n * 4);
    c->ops->add(c, want, b, n);
    g->ops->add(g, da, db, n);
    got = gh_get(g, da, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "add element %zu", i);
    free(got);

    g->ops->zero(g, dout, n - 3); /* the last 3 keep silu_mul's values */
    got = gh_get(g, dout, n);
    for (size_t i = 0; i < n; i++)
        cr_assert(i < n - 3 ? got[i] == 0.0f && !signbit(got[i]) : got[i] == silu[i],
                  "zero: element %zu is %f", i, (double)got[i]);
    free(got);
    free(silu);
    free(a), free(b), free(want);
    g->ops->free(g, da), g->ops->free(g, db), g->ops->free(g, dout);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* copy_rows with strides (the k-rope copy into the cache), gather of expert rows, and the
 * weighted scatter-add back (rows distinct within a call, as one expert's token list). */
Test(cuda_ops, copy_gather_scatter_rows)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    enum { T = 50, DIM = 7168, SS = 576, DS = 64, RD = 64 };
    /* copy_rows: 50 rows of 64 from stride 576 to stride 64 */
    float *src = gh_randv((size_t)T * SS, 1.0f), *want = malloc((size_t)T * DS * 4);
    c->ops->copy_rows(c, want, DS, src + 512, SS, T, RD);
    float *dsrc = gh_put(g, src, (size_t)T * SS * 4), *ddst = gh_poisoned(g, (size_t)T * DS);
    g->ops->copy_rows(g, ddst, DS, dsrc + 512, SS, T, RD);
    float *got = gh_get(g, ddst, (size_t)T * DS);
    cr_assert_eq(memcmp(got, want, (size_t)T * DS * 4), 0, "copy_rows differs");
    free(src), free(want), free(got);
    g->ops->free(g, dsrc), g->ops->free(g, ddst);

    /* gather 17 distinct rows of x (T, DIM), scatter-add them back weighted into y */
    enum { K = 17 };
    int32_t rows[K];
    int perm[T];
    for (int i = 0; i < T; i++)
        perm[i] = i;
    for (int i = T - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0; i < K; i++)
        rows[i] = perm[i];
    float *x = gh_randv((size_t)T * DIM, 1.0f), *y = gh_randv((size_t)T * DIM, 1.0f);
    float *wts = gh_randv(K, 1.0f), *xg = gh_randv((size_t)K * DIM, 1.0f);
    float *wantg = malloc((size_t)K * DIM * 4), *wanty = malloc((size_t)T * DIM * 4);
    c->ops->gather_rows(c, wantg, x, rows, K, DIM);
    memcpy(wanty, y, (size_t)T * DIM * 4);
    c->ops->scatter_add_rows(c, wanty, xg, rows, wts, K, DIM);
    float *dx = gh_put(g, x, (size_t)T * DIM * 4), *dy = gh_put(g, y, (size_t)T * DIM * 4);
    float *dw = gh_put(g, wts, K * 4), *dxg = gh_put(g, xg, (size_t)K * DIM * 4);
    int32_t *drows = gh_put(g, rows, sizeof rows);
    float *dg = gh_poisoned(g, (size_t)K * DIM);
    g->ops->gather_rows(g, dg, dx, drows, K, DIM);
    g->ops->scatter_add_rows(g, dy, dxg, drows, dw, K, DIM);
    float *gotg = gh_get(g, dg, (size_t)K * DIM), *goty = gh_get(g, dy, (size_t)T * DIM);
    cr_assert_eq(memcmp(gotg, wantg, (size_t)K * DIM * 4), 0, "gather_rows differs");
    double err = gh_rel_l2(goty, wanty, (size_t)T * DIM);
    cr_expect_leq(err, 1e-7, "scatter_add_rows: rel L2 %.3g", err);
    free(x), free(y), free(wts), free(xg), free(wantg), free(wanty), free(gotg), free(goty);
    g->ops->free(g, dx), g->ops->free(g, dy), g->ops->free(g, dw), g->ops->free(g, dxg);
    g->ops->free(g, drows), g->ops->free(g, dg);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- router --------------------------------------------------------------------------------- */

static int cu_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Same experts in the same order and the same weights; where the GPU's sigmoid (expf to 2 ulp)
 * reorders two choice scores closer than 1e-6, the sorted choice scores must still agree. */
static void cu_check_route(sl_backend *g, sl_backend *c, int n, int E, int G, int TG, int K,
                           bool norm, float scale, bool with_bias)
{
    float *lg = gh_randv((size_t)n * E, 2.0f), *bias = with_bias ? gh_randv(E, 0.05f) : NULL;
    int32_t *wi = malloc((size_t)n * K * 4), *gi;
    float *ww = malloc((size_t)n * K * 4), *gw;
    c->ops->moe_route(c, wi, ww, lg, bias, n, E, G, TG, K, norm, scale);
    float *dlg = gh_put(g, lg, (size_t)n * E * 4), *dbias = bias ? gh_put(g, bias, E * 4) : NULL;
    int32_t *didx;
    cr_assert_eq(g->ops->alloc(g, (size_t)n * K * 4, (void **)&didx), 0);
    float *dw = gh_poisoned(g, (size_t)n * K);
    g->ops->moe_route(g, didx, dw, dlg, dbias, n, E, G, TG, K, norm, scale);
    gi = (int32_t *)gh_get(g, didx, (size_t)n * K);
    gw = gh_get(g, dw, (size_t)n * K);
    gh_all_finite(gw, (size_t)n * K, "moe_route weights");
    int near_ties = 0;
    for (int t = 0; t < n; t++) {
        if (memcmp(gi + t * K, wi + t * K, K * 4) == 0) {
            for (int k = 0; k < K; k++)
                cr_expect_float_eq(gw[t * K + k], ww[t * K + k], 1e-6f * (1 + fabsf(ww[t * K + k])),
                                   "E %d token %d weight %d: %g vs %g", E, t, k, (double)gw[t * K + k],
                                   (double)ww[t * K + k]);
            continue;
        }
        float cg[64], cc[64];
        for (int k = 0; k < K; k++) {
            int a = gi[t * K + k], b = wi[t * K + k];
            cr_assert(a >= 0 && a < E, "E %d token %d: expert index %d", E, t, a);
            cg[k] = 1.0f / (1.0f + expf(-lg[(size_t)t * E + a])) + (bias ? bias[a] : 0.0f);
            cc[k] = 1.0f / (1.0f + expf(-lg[(size_t)t * E + b])) + (bias ? bias[b] : 0.0f);
        }
        qsort(cg, K, sizeof(float), cu_cmp_float);
        qsort(cc, K, sizeof(float), cu_cmp_float);
        for (int k = 0; k < K; k++)
            cr_assert_float_eq(cg[k], cc[k], 1e-6f, "E %d token %d: the GPU picked other experts", E, t);
        near_ties++;
    }
    cr_expect_leq(near_ties, n / 20 + 1, "E %d: %d of %d tokens routed differently", E, near_ties, n);
    free(lg), free(bias), free(wi), free(ww), free(gi), free(gw);
    g->ops->free(g, dlg), g->ops->free(g, didx), g->ops->free(g, dw);
    if (dbias)
        g->ops->free(g, dbias);
}

Test(cuda_ops, moe_route_deepseek_and_small_configs)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    cu_check_route(g, c, 64, 256, 8, 4, 8, true, 2.5f, true);   /* DeepSeek-V3 */
    cu_check_route(g, c, 33, 256, 8, 4, 8, false, 1.0f, false);
    cu_check_route(g, c, 20, 9, 3, 2, 3, true, 1.5f, true);     /* tiny-b */
    cu_check_route(g, c, 20, 8, 4, 2, 2, true, 2.5f, true);     /* tiny-a */
    cu_check_route(g, c, 9, 1024, 64, 7, 13, true, 1.0f, true); /* the kernel's limits */
    cu_check_route(g, c, 5, 7, 7, 3, 2, true, 1.0f, true);      /* one expert per group */
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- MLA attention ---------------------------------------------------------------------------- */

static void cu_check_mla(sl_backend *g, sl_backend *c, sl_mla_dims d, int n, int pos0,
                         bool absorbed, int fmt, double tol)
{
    int T = pos0 + n, nh = d.n_heads, qk = d.nope + d.rope, L = d.kv_lora;
    float *q = gh_randv((size_t)n * nh * qk, 1.0f), *lat = gh_randv((size_t)T * L, 1.0f);
    float *kr = gh_randv((size_t)T * d.rope, 1.0f);
    cu_weight w;
    cu_weight_make(g, &w, fmt, nh * (d.nope + d.v), L, 0);
    size_t cnt = (size_t)n * nh * d.v;
    float *want = malloc(cnt * 4);
    float *cs = malloc(c->ops->mla_scratch_floats(&d, n, T, absorbed) * 4);
    cr_assert(want && cs);
    c->ops->mla_attention(c, want, q, lat, kr, &w.host, n, pos0, &d, absorbed, cs);
    float *dq = gh_put(g, q, (size_t)n * nh * qk * 4), *dlat = gh_put(g, lat, (size_t)T * L * 4);
    float *dkr = gh_put(g, kr, (size_t)T * d.rope * 4);
    float *dscratch = gh_poisoned(g, g->ops->mla_scratch_floats(&d, n, T, absorbed));
    float *dout = gh_poisoned(g, cnt);
    g->ops->mla_attention(g, dout, dq, dlat, dkr, &w.dev, n, pos0, &d, absorbed, dscratch);
    float *got = gh_get(g, dout, cnt);
    char what[160];
    snprintf(what, sizeof what, "mla %s heads %d nope %d rope %d v %d L %d n %d pos0 %d kv_b %s",
             absorbed ? "absorbed" : "naive", nh, d.nope, d.rope, d.v, L, n, pos0, gh_fmt_name(fmt));
    gh_all_finite(got, cnt, what);
    double err = gh_rel_l2(got, want, cnt);
    cr_expect_leq(err, tol, "%s: rel L2 %.3g > %.1g", what, err, tol);
    cr_log_info("%s: rel L2 %.3g", what, err);
    free(q), free(lat), free(kr), free(want), free(cs), free(got);
    g->ops->free(g, dq), g->ops->free(g, dlat), g->ops->free(g, dkr), g->ops->free(g, dscratch);
    g->ops->free(g, dout);
    cu_weight_free(g, &w);
}

static const sl_mla_dims cu_deepseek_mla = {128, 128, 64, 128, 512, 0.1352337f /* 192^-0.5 * mscale(40, 1)^2 */};

Test(cuda_ops, mla_absorbed_decode_4k_and_32k_context)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    cu_check_mla(g, c, cu_deepseek_mla, 1, 4095, true, SL_WF_F32, 1e-5);
    cu_check_mla(g, c, cu_deepseek_mla, 1, 32767, true, SL_WF_F32, 1e-5);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* A prefill chunk over a cache prefix, both forms; the naive form with kv_b in every format. */
Test(cuda_ops, mla_prefill_both_forms_deepseek_dims)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    cu_check_mla(g, c, cu_deepseek_mla, 6, 90, true, SL_WF_F32, 1e-5);
    cu_check_mla(g, c, cu_deepseek_mla, 6, 90, false, SL_WF_F32, 1e-5);
    cu_check_mla(g, c, cu_deepseek_mla, 20, 0, false, SL_WF_BF16, 1e-5);
    cu_check_mla(g, c, cu_deepseek_mla, 3, 40, false, SL_WF_FP8, 1e-5);
    g->ops->destroy(g);
    c->ops->destroy(c);
}

Test(cuda_ops, mla_odd_dims_every_format)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET), *c = gh_cpu();
    sl_mla_dims d = {3, 5, 6, 7, 9, 0.3f};
    sl_mla_dims a = {4, 32, 16, 32, 136, 0.2f}; /* tiny-a */
    sl_mla_dims b = {2, 48, 32, 40, 96, 0.15f}; /* tiny-b */
    cu_check_mla(g, c, d, 7, 3, true, SL_WF_F32, 1e-5);
    cu_check_mla(g, c, a, 11, 0, true, SL_WF_F32, 1e-5);
    cu_check_mla(g, c, b, 1, 25, true, SL_WF_F32, 1e-5);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        cu_check_mla(g, c, d, 7, 3, false, fmt, 1e-5);
        cu_check_mla(g, c, a, 11, 0, false, fmt, 1e-5);
        cu_check_mla(g, c, b, 2, 25, false, fmt, 1e-5);
    }
    g->ops->destroy(g);
    c->ops->destroy(c);
}

/* ---- errors, memory, events ------------------------------------------------------------------ */

/* An op that fails (it returns void) makes the next download fail with SL_E_DEVICE and a message
 * naming the op; later ops are skipped and the error stays. */
Test(cuda_ops, errors_are_sticky_and_name_the_op)
{
    sl_backend *g = gh_gpu(CU_BUDGET);
    float h[64] = {0};
    float *x = gh_put(g, h, sizeof h), *out = gh_put(g, h, sizeof h);
    sl_weight bad = {4, 16, 99, x};
    g->ops->matmul(g, out, x, &bad, 1);
    float back[64];
    cr_assert_eq(g->ops->download(g, back, out, sizeof back), SL_E_DEVICE);
    cr_assert(strstr(sl_cuda_backend_error(g), "matmul"), "message: %s", sl_cuda_backend_error(g));
    g->ops->add(g, out, x, 64);
    cr_assert_eq(g->ops->download(g, back, out, sizeof back), SL_E_DEVICE);
    cr_assert_eq(g->ops->upload(g, out, h, sizeof h), SL_E_DEVICE);
    sl_error e = {0};
    cr_assert_eq(sl_cuda_sync(g, &e), SL_E_DEVICE);
    cr_assert(strstr(e.msg, "matmul"), "sync message: %s", e.msg);
    g->ops->destroy(g);

    /* a token id outside the table, found by the kernel */
    g = gh_gpu(CU_BUDGET);
    float tab[4 * 8] = {0};
    int32_t ids[2] = {1, 4};
    sl_weight t = {4, 8, SL_WF_F32, gh_put(g, tab, sizeof tab)};
    int32_t *dids = gh_put(g, ids, sizeof ids);
    float *eo = gh_poisoned(g, 16);
    g->ops->embed(g, eo, &t, dids, 2);
    cr_assert_eq(g->ops->download(g, back, eo, 16 * 4), SL_E_DEVICE);
    cr_assert(strstr(sl_cuda_backend_error(g), "embed"), "message: %s", sl_cuda_backend_error(g));
    g->ops->destroy(g);

    /* freeing a pointer the arena did not hand out */
    g = gh_gpu(CU_BUDGET);
    g->ops->free(g, (void *)h);
    cr_assert_eq(sl_cuda_sync(g, &e), SL_E_DEVICE);
    cr_assert(strstr(e.msg, "free"), "message: %s", e.msg);
    g->ops->destroy(g);
}

Test(cuda_ops, arena_reuses_and_merges_freed_blocks)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET);
    size_t cap, used, peak;
    sl_cuda_arena_stats(g, &cap, &used, &peak);
    cr_assert_eq(used, 0);
    enum { N = 200 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g->ops->alloc(g, 1 + (size_t)(rand() % 100000), &p[i]), 0);
        cr_assert_eq((uintptr_t)p[i] % 256, 0, "alignment");
    }
    for (int i = 0; i < N; i += 2) /* free every other block, then the rest in random order */
        g->ops->free(g, p[i]);
    for (int i = N - 1; i > 0; i -= 2)
        g->ops->free(g, p[i]);
    sl_cuda_arena_stats(g, &cap, &used, &peak);
    cr_assert_eq(used, 0, "%zu bytes still in use", used);
    void *all;
    cr_assert_eq(g->ops->alloc(g, cap, &all), 0, "the whole arena in one block after merging");
    void *more;
    cr_assert_eq(g->ops->alloc(g, 1, &more), SL_E_NOMEM);
    g->ops->free(g, all);
    cr_assert_eq(g->ops->alloc(g, cap + 1, &more), SL_E_NOMEM);
    sl_error e = {0};
    cr_assert_eq(sl_cuda_sync(g, &e), 0, "%s", e.msg);
    g->ops->destroy(g);
}

/* upload on the copy stream -> "ready" -> compute waits, adds, records "free" -> host waits. */
Test(cuda_ops, events_order_copy_and_compute_streams)
{
    gh_seed();
    sl_backend *g = gh_gpu(CU_BUDGET);
    sl_error e = {0};
    size_t n = 1 << 20;
    float *a = gh_randv(n, 1.0f), *b = gh_randv(n, 1.0f);
    float *da = gh_put(g, a, n * 4), *db;
    cr_assert_eq(g->ops->alloc(g, n * 4, (void **)&db), 0);
    sl_cuda_event *ready, *done;
    cr_assert_eq(sl_cuda_event_create(g, &ready, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_event_create(g, &done, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_event_query(done, &e), 1, "an unrecorded event counts as complete");
    cr_assert_eq(sl_cuda_upload_async(g, db, b, n * 4, ready, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_compute_wait(g, ready, &e), 0, "%s", e.msg);
    g->ops->add(g, da, db, n);
    cr_assert_eq(sl_cuda_compute_record(g, done, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_copy_wait(g, done, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_event_wait(done, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_cuda_event_query(done, &e), 1);
    float *got = gh_get(g, da, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], a[i] + b[i], "element %zu", i);
    sl_cuda_event_destroy(ready);
    sl_cuda_event_destroy(done);
    free(a), free(b), free(got);
    g->ops->destroy(g);
}
