/* Element-wise and row ops of the CPU backend: each is one pass over its bytes. */
#include "cpu/internal.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sl_cpu_rmsnorm(float *out, int os, const float *x, int xs, const float *w, int n, int dim,
                    float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * xs;
        float *orow = out + (size_t)t * os;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++)
            ss += xr[i] * xr[i];
        /* transformers: x * rsqrt(mean(x^2) + eps), then weight * x, all fp32 */
        float r = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++)
            orow[i] = w[i] * (xr[i] * r);
    }
}

void sl_cpu_rope(float *x, int n, int n_heads, int ts, int hs, int rope_dim, const int32_t *pos,
                 const float *inv_freq, float attn_factor)
{
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < rope_dim / 2; i++) {
            float ang = (float)pos[t] * inv_freq[i]; /* fp32 product, as transformers */
            float c = (float)cos((double)ang) * attn_factor;
            float s = (float)sin((double)ang) * attn_factor;
            for (int h = 0; h < n_heads; h++) {
                float *p = x + (size_t)t * ts + (size_t)h * hs + 2 * i;
                float a = p[0], bb = p[1];
                p[0] = a * c - bb * s;
                p[1] = bb * c + a * s;
            }
        }
    }
}

static bool op_supports(sl_backend *b, int fmt) { return sl_wformat_get(fmt) != NULL; }

static void op_embed(sl_backend *b, float *out, const sl_weight *table, const int32_t *ids, int n)
{
    for (int t = 0; t < n; t++)
        sl_dequantize_rows((sl_wformat)table->fmt, table->data, table->rows, table->cols, ids[t], 1,
                           out + (size_t)t * table->cols);
}

static void op_rmsnorm(sl_backend *b, float *out, int os, const float *x, int xs, const float *w,
                       int n, int dim, float eps)
{
    sl_cpu_rmsnorm(out, os, x, xs, w, n, dim, eps);
}

static void op_rope(sl_backend *b, float *x, int n, int n_heads, int ts, int hs, int rope_dim,
                    const int32_t *pos, const float *inv_freq, float attn_factor)
{
    sl_cpu_rope(x, n, n_heads, ts, hs, rope_dim, pos, inv_freq, attn_factor);
}

static void op_silu_mul(sl_backend *b, float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

static void op_zero(sl_backend *b, float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

static void op_add(sl_backend *b, float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void op_copy_rows(sl_backend *b, float *dst, int ds, const float *src, int ss, int n,
                         int dim)
{
    for (int t = 0; t < n; t++)
        memcpy(dst + (size_t)t * ds, src + (size_t)t * ss, (size_t)dim * sizeof(float));
}

static void op_gather_rows(sl_backend *b, float *out, const float *x, const int32_t *rows,
                           int n_rows, int dim)
{
    for (int j = 0; j < n_rows; j++)
        memcpy(out + (size_t)j * dim, x + (size_t)rows[j] * dim, (size_t)dim * sizeof(float));
}

static void op_scatter_add_rows(sl_backend *b, float *y, const float *x, const int32_t *rows,
                                const float *weights, int n_rows, int dim)
{
    for (int j = 0; j < n_rows; j++) {
        float *yr = y + (size_t)rows[j] * dim;
        const float *xr = x + (size_t)j * dim;
        for (int i = 0; i < dim; i++)
            yr[i] += weights[j] * xr[i];
    }
}

/* The group as the per-expert loop the forward pass would run, through b->ops so that a backend
 * wrapping this one sees every op (tests/test_stream.c's deferred copies). Scratch, per expert
 * at its row offset r in the group: gate (R, inter), up (R, inter), gathered x / down (R, H). */
static void op_expert_group(sl_backend *b, float *out, const float *x, const int32_t *rows,
                            const float *row_w, const sl_expert_group *g, float *scratch)
{
    const sl_backend_ops *op = b->ops;
    size_t R = 0;
    for (int i = 0; i < g->n; i++)
        R += (size_t)g->count[i];
    for (int i = 0, r = 0; i < g->n; r += g->count[i++]) {
        const sl_expert_weights *w = g->w[i];
        int I = w->gate.rows, H = w->gate.cols, cnt = g->count[i];
        float *gt = scratch + (size_t)r * I, *up = scratch + R * I + (size_t)r * I;
        float *xy = scratch + 2 * R * I + (size_t)r * H;
        op->gather_rows(b, xy, x, rows + g->start[i], cnt, H);
        op->matmul(b, gt, xy, &w->gate, cnt);
        op->matmul(b, up, xy, &w->up, cnt);
        op->silu_mul(b, gt, gt, up, (size_t)cnt * I);
        op->matmul(b, xy, gt, &w->down, cnt);
        op->scatter_add_rows(b, out, xy, rows + g->start[i], row_w + g->start[i], cnt, H);
    }
}

static void op_moe_route(sl_backend *b, int32_t *idx, float *wts, const float *logits,
                         const float *bias, int n, int n_experts, int n_group, int topk_group,
                         int top_k, bool norm, float scale)
{
    sl_cpu_moe_route(idx, wts, logits, bias, n, n_experts, n_group, topk_group, top_k, norm, scale);
}

/* memory: plain aligned host allocations */
static int op_alloc(sl_backend *b, size_t bytes, void **out)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return SL_E_NOMEM;
    *out = p;
    return 0;
}
static void op_free(sl_backend *b, void *p) { free(p); }
static int op_copy(sl_backend *b, void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
    return 0;
}

static void op_destroy(sl_backend *b)
{
    if (!b)
        return;
    sl_cpu_ctx *c = b->ctx;
    sl_pool_destroy(c->pool);
    free(c->x_bf16);
    free(c);
    free(b);
}

static const sl_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = op_alloc,
    .free = op_free,
    .upload = op_copy,
    .download = op_copy,
    .destroy = op_destroy,
    .supports = op_supports,
    .embed = op_embed,
    .rmsnorm = op_rmsnorm,
    .matmul = sl_cpu_matmul,
    .rope = op_rope,
    .mla_attention = sl_cpu_mla_attention,
    .mla_scratch_floats = sl_cpu_mla_scratch_floats,
    .silu_mul = op_silu_mul,
    .zero = op_zero,
    .add = op_add,
    .copy_rows = op_copy_rows,
    .gather_rows = op_gather_rows,
    .scatter_add_rows = op_scatter_add_rows,
    .moe_route = op_moe_route,
    .expert_group = op_expert_group,
};

int sl_cpu_backend_create(int n_threads, sl_backend **out, sl_error *e)
{
    sl_backend *b = calloc(1, sizeof *b);
    sl_cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c || sl_pool_create(n_threads, &c->pool) != 0) {
        free(b);
        free(c);
        return sl_errorf(e, SL_E_NOMEM, "cpu backend: cannot create %d worker threads", n_threads);
    }
    b->ops = &cpu_ops;
    b->ctx = c;
    *out = b;
    return 0;
}
