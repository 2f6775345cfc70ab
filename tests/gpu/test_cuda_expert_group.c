/* The CUDA backend's expert_group (a layer's routed experts in one grouped GEMV per step)
 * against the CPU backend's per-expert loop (gather_rows, matmul gate and up, silu_mul, matmul
 * down, scatter_add_rows, expert after expert), on fresh random inputs (seed printed):
 *   - DeepSeek-V3 shapes (hidden 7168, expert width 2048), 8 experts, 1 token each (decode: all
 *     on one token) and 4 tokens each, every weight format, both one-token GEMV kernels;
 *   - the largest group (32 experts), ragged counts including ones past the GEMV's token limit
 *     (GEMM inside the group), mixed formats and odd shapes (the fallbacks), column splits;
 *   - the forward pass with and without the op on the transformers fixtures.
 * The scratch is filled with NaN first, so a read of anything not written shows; `out` starts
 * from random values (the op adds into it) and its rows no expert touches must come back bit for
 * bit. The added part must be within rel L2 2e-5 of the CPU's (two chained fp32 products with
 * different summation orders). Skips without a CUDA device. */
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

/* One expert: host weights for the CPU, device copies for the GPU. */
typedef struct {
    sl_expert_weights host, dev;
} xg_expert;

static sl_weight xg_encode(int fmt, int rows, int cols)
{
    float *f = gh_randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
    size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
    void *enc = malloc(nb);
    cr_assert(enc);
    sl_quantize((sl_wformat)fmt, f, rows, cols, enc);
    free(f);
    return (sl_weight){rows, cols, fmt, enc};
}

static sl_weight xg_upload(sl_backend *g, const sl_weight *h)
{
    size_t nb = sl_wformat_bytes((sl_wformat)h->fmt, h->rows, h->cols);
    return (sl_weight){h->rows, h->cols, h->fmt, gh_put(g, h->data, nb)};
}

/* A group case: n experts of (I, H) / (H, I), formats fmts[i]; expert i takes count[i] distinct
 * tokens of T in a random order; the blocks of rows in rows/row_w are in a shuffled order. */
typedef struct {
    int n, T, H, I, R;
    xg_expert x[SL_EXPERT_GROUP_MAX];
    sl_expert_group hg, dg; /* host weights / device weights, same starts and counts */
    int32_t *rows;
    float *row_w;
} xg_case;

static void xg_make(sl_backend *g, xg_case *c, int n, int T, int H, int I, const int *count,
                    const int *fmts)
{
    memset(c, 0, sizeof *c);
    c->n = n, c->T = T, c->H = H, c->I = I;
    for (int i = 0; i < n; i++)
        c->R += count[i];
    c->rows = malloc((size_t)c->R * sizeof(int32_t));
    c->row_w = malloc((size_t)c->R * sizeof(float));
    int order[SL_EXPERT_GROUP_MAX], at[SL_EXPERT_GROUP_MAX];
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int k = 0, pos = 0; k < n; k++) {
        at[order[k]] = pos;
        pos += count[order[k]];
    }
    c->hg.n = c->dg.n = n;
    int *perm = malloc((size_t)T * sizeof(int));
    for (int i = 0; i < n; i++) {
        xg_expert *x = &c->x[i];
        x->host = (sl_expert_weights){xg_encode(fmts[i], I, H), xg_encode(fmts[i], I, H),
                                      xg_encode(fmts[i], H, I)};
        x->dev = (sl_expert_weights){xg_upload(g, &x->host.gate), xg_upload(g, &x->host.up),
                                     xg_upload(g, &x->host.down)};
        c->hg.w[i] = &x->host;
        c->dg.w[i] = &x->dev;
        c->hg.start[i] = c->dg.start[i] = at[i];
        c->hg.count[i] = c->dg.count[i] = count[i];
        cr_assert(count[i] >= 1 && count[i] <= T);
        for (int t = 0; t < T; t++)
            perm[t] = t;
        for (int t = T - 1; t > 0; t--) {
            int j = rand() % (t + 1), v = perm[t];
            perm[t] = perm[j], perm[j] = v;
        }
        for (int k = 0; k < count[i]; k++) {
            c->rows[at[i] + k] = perm[k];
            c->row_w[at[i] + k] = 0.05f + 0.3f * (float)rand() / RAND_MAX;
        }
    }
    free(perm);
}

static void xg_free(sl_backend *g, xg_case *c)
{
    for (int i = 0; i < c->n; i++) {
        sl_weight *h[3] = {&c->x[i].host.gate, &c->x[i].host.up, &c->x[i].host.down};
        sl_weight *d[3] = {&c->x[i].dev.gate, &c->x[i].dev.up, &c->x[i].dev.down};
        for (int k = 0; k < 3; k++) {
            free(h[k]->data);
            g->ops->free(g, d[k]->data);
        }
    }
    free(c->rows);
    free(c->row_w);
}

/* The CPU's per-expert loop into out (T, H). */
static void xg_cpu_loop(const xg_case *c, const float *x, float *out)
{
    sl_backend *b;
    sl_error e = {0};
    cr_assert_eq(sl_cpu_backend_create(0, &b, &e), 0, "%s", e.msg);
    const sl_backend_ops *op = b->ops;
    int T = c->T, H = c->H, I = c->I;
    float *xe = malloc((size_t)T * H * sizeof(float)), *ge = malloc((size_t)T * I * sizeof(float));
    float *ue = malloc((size_t)T * I * sizeof(float));
    for (int i = 0; i < c->n; i++) {
        const sl_expert_weights *w = c->hg.w[i];
        int cnt = c->hg.count[i], s = c->hg.start[i];
        op->gather_rows(b, xe, x, c->rows + s, cnt, H);
        op->matmul(b, ge, xe, &w->gate, cnt);
        op->matmul(b, ue, xe, &w->up, cnt);
        op->silu_mul(b, ge, ge, ue, (size_t)cnt * I);
        op->matmul(b, xe, ge, &w->down, cnt);
        op->scatter_add_rows(b, out, xe, c->rows + s, c->row_w + s, cnt, H);
    }
    free(xe), free(ge), free(ue);
    b->ops->destroy(b);
}

/* Run the group on the GPU (`runs` times from the same start, which must agree bit for bit)
 * and check it against the CPU loop. */
static void xg_check(sl_backend *g, xg_case *c, const char *what, int runs)
{
    int T = c->T, H = c->H;
    size_t nout = (size_t)T * H, sf = sl_expert_group_scratch_floats(&c->dg);
    cr_assert_eq(sf, (size_t)c->R * (2 * c->I + H));
    float *x = gh_randv(nout, 1.0f), *out0 = gh_randv(nout, 1.0f);
    float *want = malloc(nout * sizeof(float)), *got = malloc(nout * sizeof(float));
    float *first = malloc(nout * sizeof(float));
    memcpy(want, out0, nout * sizeof(float));
    xg_cpu_loop(c, x, want);

    float *nan = malloc(sf * sizeof(float));
    for (size_t i = 0; i < sf; i++)
        nan[i] = NAN;
    float *dx = gh_put(g, x, nout * sizeof(float)), *dout = gh_put(g, out0, nout * sizeof(float));
    float *dscratch = gh_put(g, nan, sf * sizeof(float));
    int32_t *drows = gh_put(g, c->rows, (size_t)c->R * sizeof(int32_t));
    float *dw = gh_put(g, c->row_w, (size_t)c->R * sizeof(float));
    for (int run = 0; run < runs; run++) {
        cr_assert_eq(g->ops->upload(g, dout, out0, nout * sizeof(float)), 0);
        cr_assert_eq(g->ops->upload(g, dscratch, nan, sf * sizeof(float)), 0);
        g->ops->expert_group(g, dout, dx, drows, dw, &c->dg, dscratch);
        cr_assert_eq(g->ops->download(g, got, dout, nout * sizeof(float)), 0, "%s: %s", what,
                     sl_cuda_backend_error(g));
        if (run == 0)
            memcpy(first, got, nout * sizeof(float));
        else
            cr_assert_arr_eq(got, first, nout * sizeof(float), "%s: run %d differs from run 0", what, run);
    }

    bool *touched = calloc((size_t)T, 1);
    for (int j = 0; j < c->R; j++)
        touched[c->rows[j]] = true;
    double num = 0, den = 0;
    for (int t = 0; t < T; t++) {
        const float *gr = got + (size_t)t * H, *wr = want + (size_t)t * H, *o0 = out0 + (size_t)t * H;
        if (!touched[t]) {
            cr_assert_arr_eq(gr, o0, (size_t)H * sizeof(float), "%s: token %d has no expert but changed",
                             what, t);
            continue;
        }
        for (int i = 0; i < H; i++) {
            if (!isfinite(gr[i]))
                cr_assert_fail("%s: token %d element %d is %f (a NaN scratch value was read)", what,
                               t, i, (double)gr[i]);
            double d = (double)gr[i] - wr[i], a = (double)wr[i] - o0[i];
            num += d * d;
            den += a * a;
        }
    }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    cr_log_info("%s: rel L2 of the added part %.3g", what, err);
    cr_expect_leq(err, 2e-5, "%s: rel L2 %.3g > 2e-5 against the CPU loop", what, err);
    free(touched);
    free(x), free(out0), free(want), free(got), free(first), free(nan);
    g->ops->free(g, dx);
    g->ops->free(g, dout);
    g->ops->free(g, dscratch);
    g->ops->free(g, drows);
    g->ops->free(g, dw);
}

/* ---- DeepSeek-V3 shapes: 8 experts, 1 and 4 tokens each ---------------------------------- */

enum { XG_H = 7168, XG_I = 2048 };

static void xg_deepseek(int fmt)
{
    gh_seed();
    size_t wbytes = 8 * (2 * sl_wformat_bytes((sl_wformat)fmt, XG_I, XG_H) +
                         sl_wformat_bytes((sl_wformat)fmt, XG_H, XG_I));
    sl_backend *g = gh_gpu(wbytes + ((size_t)512 << 20));
    cr_assert(g->ops->expert_group, "the CUDA backend has expert_group");
    int fmts[8], ones[8], fours[8];
    for (int i = 0; i < 8; i++)
        fmts[i] = fmt, ones[i] = 1, fours[i] = 4;
    static xg_case c; /* weights made once, reused by every sub-case */
    xg_make(g, &c, 8, 1, XG_H, XG_I, ones, fmts);
    char what[128];
    /* one token: the split kernel in each of its one-token shapes, then (q4) the tensor-core one
     * with its loads through registers (the default) and through rings of 4 and 6 steps */
    static const char *const tunes[] = {"wide=0,deep=0,tc=0", "wide=1,deep=0,tc=0",
                                        "wide=0,deep=1,tc=0", "wide=1,deep=0,tc=1,ring=0",
                                        "tc=1,ring=4",        "tc=1,ring=6"};
    for (int k = 0; k < 6; k++) {
        cr_assert_eq(sl_cuda_gemv_tune(g, tunes[k]), 0);
        snprintf(what, sizeof what, "%s, 8 experts on one token (%s)", gh_fmt_name(fmt), tunes[k]);
        xg_check(g, &c, what, 2);
    }
    cr_assert_eq(sl_cuda_gemv_tune(g, "wide=1,deep=0,tc=1,ring=-1"), 0); /* the defaults */

    /* 1 token each on 8 different tokens, then 4 each of 6 tokens, with the same weights */
    c.T = 8;
    for (int i = 0; i < 8; i++)
        c.rows[c.hg.start[i]] = i;
    snprintf(what, sizeof what, "%s, 8 experts on 8 tokens", gh_fmt_name(fmt));
    xg_check(g, &c, what, 1);
    free(c.rows);
    free(c.row_w);
    c.T = 6;
    c.R = 32;
    c.rows = malloc(32 * sizeof(int32_t));
    c.row_w = malloc(32 * sizeof(float));
    for (int i = 0; i < 8; i++) {
        c.hg.count[i] = c.dg.count[i] = fours[i];
        c.hg.start[i] = c.dg.start[i] = 4 * ((i * 5) % 8); /* blocks out of group order */
        int perm[6] = {0, 1, 2, 3, 4, 5};
        for (int t = 5; t > 0; t--) {
            int j = rand() % (t + 1), v = perm[t];
            perm[t] = perm[j], perm[j] = v;
        }
        for (int k = 0; k < 4; k++) {
            c.rows[c.hg.start[i] + k] = perm[k];
            c.row_w[c.hg.start[i] + k] = 0.05f + 0.3f * (float)rand() / RAND_MAX;
        }
    }
    snprintf(what, sizeof what, "%s, 8 experts x 4 of 6 tokens", gh_fmt_name(fmt));
    xg_check(g, &c, what, 2);
    xg_free(g, &c);
    g->ops->destroy(g);
}

Test(cuda_expert_group, deepseek_shapes_f32) { xg_deepseek(SL_WF_F32); }
Test(cuda_expert_group, deepseek_shapes_bf16) { xg_deepseek(SL_WF_BF16); }
Test(cuda_expert_group, deepseek_shapes_fp8) { xg_deepseek(SL_WF_FP8); }
Test(cuda_expert_group, deepseek_shapes_q8) { xg_deepseek(SL_WF_Q8); }
Test(cuda_expert_group, deepseek_shapes_q4) { xg_deepseek(SL_WF_Q4); }

/* ---- the largest group, ragged counts, the fallbacks --------------------------------------- */

Test(cuda_expert_group, largest_group_ragged_counts_every_format)
{
    gh_seed();
    sl_backend *g = gh_gpu((size_t)1536 << 20);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        int fmts[SL_EXPERT_GROUP_MAX], count[SL_EXPERT_GROUP_MAX];
        for (int i = 0; i < SL_EXPERT_GROUP_MAX; i++) {
            fmts[i] = fmt;
            count[i] = 1 + rand() % 16; /* up to the GEMV's limit and past the default 12 */
        }
        count[3] = 20; /* the GEMM inside the group */
        static xg_case c;
        xg_make(g, &c, SL_EXPERT_GROUP_MAX, 24, 1024, 256, count, fmts);
        char what[96];
        snprintf(what, sizeof what, "%s, 32 experts, 1..20 of 24 tokens", gh_fmt_name(fmt));
        xg_check(g, &c, what, 2);
        xg_free(g, &c);
    }
    g->ops->destroy(g);
}

Test(cuda_expert_group, mixed_formats_take_the_fallback_in_the_same_group)
{
    gh_seed();
    sl_backend *g = gh_gpu((size_t)1024 << 20);
    int fmts[12], count[12];
    for (int i = 0; i < 12; i++) {
        fmts[i] = i < 6 ? SL_WF_FP8 : (i % SL_WF_COUNT); /* the first six group, the rest vary */
        count[i] = 1 + rand() % 4;
    }
    static xg_case c;
    xg_make(g, &c, 12, 5, 2048, 512, count, fmts);
    xg_check(g, &c, "fp8 group with f32/bf16/q8/q4 experts mixed in", 2);
    xg_free(g, &c);
    g->ops->destroy(g);
}

Test(cuda_expert_group, odd_shapes_take_the_generic_kernels)
{
    gh_seed();
    sl_backend *g = gh_gpu((size_t)512 << 20);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        int fmts[5], count[5] = {1, 3, 2, 1, 4};
        for (int i = 0; i < 5; i++)
            fmts[i] = fmt;
        static xg_case c;
        xg_make(g, &c, 5, 4, 200, 72, count, fmts); /* the fixtures' hidden and expert width */
        char what[96];
        snprintf(what, sizeof what, "%s, 200 x 72", gh_fmt_name(fmt));
        xg_check(g, &c, what, 1);
        xg_free(g, &c);
        xg_make(g, &c, 5, 4, 330, 100, count, fmts);
        snprintf(what, sizeof what, "%s, 330 x 100", gh_fmt_name(fmt));
        xg_check(g, &c, what, 1);
        xg_free(g, &c);
    }
    g->ops->destroy(g);
}

/* Few rows a matrix (64): the launch has few row tiles, so the columns split and the split sums
 * go through the workspace and the arrival counters, per matrix. */
Test(cuda_expert_group, column_splits_per_matrix_are_exact_and_repeatable)
{
    gh_seed();
    sl_backend *g = gh_gpu((size_t)512 << 20);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        int fmts[3] = {fmt, fmt, fmt}, count[3] = {2, 1, 3};
        static xg_case c;
        xg_make(g, &c, 3, 3, 4096, 64, count, fmts);
        char what[96];
        snprintf(what, sizeof what, "%s, 3 experts of 64 x 4096 (split)", gh_fmt_name(fmt));
        xg_check(g, &c, what, 3);
        xg_free(g, &c);
    }
    g->ops->destroy(g);
}

Test(cuda_expert_group, bad_groups_are_sticky_errors_naming_the_op)
{
    sl_backend *g = gh_gpu((size_t)64 << 20);
    int fmts[2] = {SL_WF_BF16, SL_WF_BF16}, count[2] = {1, 1};
    static xg_case c;
    xg_make(g, &c, 2, 1, 256, 64, count, fmts);
    c.x[1].dev.down.cols = 32; /* not the first expert's shape */
    float *d = NULL;
    cr_assert_eq(g->ops->alloc(g, 1 << 20, (void **)&d), 0);
    g->ops->expert_group(g, d, d, (const int32_t *)d, d, &c.dg, d);
    float h;
    cr_assert_neq(g->ops->download(g, &h, d, sizeof h), 0, "a bad group must be an error");
    cr_assert(strstr(sl_cuda_backend_error(g), "expert_group"), "error names the op: %s",
              sl_cuda_backend_error(g));
    c.x[1].dev.down.cols = 64;
    g->ops->free(g, d);
    xg_free(g, &c);
    g->ops->destroy(g);
}

/* ---- the forward pass with and without the op -------------------------------------------- */

static sl_backend_ops xg_plain_ops;

static float *xg_forward(sl_backend *b, const char *fixture, int *rows, int *vocab)
{
    char src[256];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    sl_error e = {0};
    sl_model *m;
    cr_assert_eq(sl_model_load_hf(src, b, 16, &m, &e), 0, "%s", e.msg);
    const int32_t prompt[] = {5, 77, 301, 12, 190, 44, 9};
    enum { NP = 7, NG = 6 };
    *vocab = sl_model_config(m)->vocab_size;
    *rows = NP + NG;
    float *lg = malloc((size_t)*rows * *vocab * sizeof(float));
    sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_create(m, 32, &kv, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_model_forward(m, &kv, prompt, NP, true, lg, &e), 0, "%s / %s", e.msg,
                 sl_cuda_backend_error(b));
    for (int i = 0; i < NG; i++) {
        int32_t t = (int32_t)(i * 37 % *vocab); /* fixed ids: both runs see the same tokens */
        cr_assert_eq(sl_model_forward(m, &kv, &t, 1, false, lg + (size_t)(NP + i) * *vocab, &e), 0,
                     "%s / %s", e.msg, sl_cuda_backend_error(b));
    }
    sl_kv_cache_destroy(m, &kv);
    sl_model_free(m);
    return lg;
}

static void xg_check_forward(const char *fixture)
{
    sl_backend *g = gh_gpu((size_t)1 << 30), *p = gh_gpu((size_t)1 << 30);
    xg_plain_ops = *p->ops;
    xg_plain_ops.expert_group = NULL;
    p->ops = &xg_plain_ops;
    int rows, vocab, rows2, vocab2;
    float *grouped = xg_forward(g, fixture, &rows, &vocab);
    float *single = xg_forward(p, fixture, &rows2, &vocab2);
    cr_assert_eq(rows, rows2);
    for (int r = 0; r < rows; r++) {
        double num = 0, den = 0;
        for (int v = 0; v < vocab; v++) {
            double a = grouped[(size_t)r * vocab + v], b = single[(size_t)r * vocab + v];
            cr_assert(isfinite(a), "%s row %d: logit %d is not finite", fixture, r, v);
            num += (a - b) * (a - b);
            den += b * b;
        }
        cr_expect_leq(sqrt(num / den), 1e-5, "%s row %d: grouped vs one at a time rel L2 %.3g",
                      fixture, r, sqrt(num / den));
    }
    free(grouped);
    free(single);
    g->ops->destroy(g);
    p->ops->destroy(p);
}

Test(cuda_expert_group, forward_grouped_matches_one_at_a_time_tiny_a_bf16) { xg_check_forward("tiny-a-bf16"); }
Test(cuda_expert_group, forward_grouped_matches_one_at_a_time_tiny_b_fp8) { xg_check_forward("tiny-b-fp8"); }
