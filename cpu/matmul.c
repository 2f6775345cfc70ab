/* out (n, rows) = x (n, cols) . W^T over the pool, for every weight format. Work is split into
 * blocks of weight rows; each row is decoded once (into a per-thread fp32 row) and dotted with
 * all n tokens, so every weight byte is read once per call. */
#include "cpu/internal.h"
#include "quant/quant.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROWS_PER_ITEM = 16 };

typedef struct {
    float *out;
    const float *x;
    const sl_weight *w;
    int n;
} matmul_job;

/* One decode row per thread, grown on demand and freed when the thread ends: steady-state calls
 * allocate nothing. */
static pthread_key_t row_key;
static pthread_once_t row_once = PTHREAD_ONCE_INIT;
typedef struct {
    size_t cap;
    float v[];
} row_buf;

static void row_key_make(void) { pthread_key_create(&row_key, free); }

static float *decode_row_buf(int cols)
{
    pthread_once(&row_once, row_key_make);
    row_buf *r = pthread_getspecific(row_key);
    if (!r || r->cap < (size_t)cols) {
        row_buf *g = realloc(r, sizeof *r + (size_t)cols * sizeof(float));
        if (!g)
            abort(); /* a few KB; out of memory here leaves no sane way on */
        g->cap = (size_t)cols;
        pthread_setspecific(row_key, g);
        r = g;
    }
    return r->v;
}

static void matmul_item(void *ctx, int item)
{
    const matmul_job *j = ctx;
    const sl_weight *w = j->w;
    int r0 = item * ROWS_PER_ITEM;
    int r1 = r0 + ROWS_PER_ITEM < w->rows ? r0 + ROWS_PER_ITEM : w->rows;
    int cols = w->cols, rows = w->rows;
    float *dec = w->fmt == SL_WF_F32 ? NULL : decode_row_buf(cols);
    for (int r = r0; r < r1; r++) {
        const float *wr;
        if (dec) {
            sl_dequantize_rows((sl_wformat)w->fmt, w->data, rows, cols, r, 1, dec);
            wr = dec;
        } else {
            wr = (const float *)w->data + (size_t)r * cols;
        }
        for (int t = 0; t < j->n; t++)
            j->out[(size_t)t * rows + r] = sl_cpu_dot(j->x + (size_t)t * cols, wr, cols);
    }
}

/* bf16 nearest even (as torch's .to(torch.bfloat16) and the CUDA backend's __float2bfloat16_rn);
 * NaN and infinities pass through. */
static float round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

void sl_cpu_set_bf16_inputs(sl_backend *b, const int above[SL_WF_COUNT])
{
    sl_cpu_ctx *c = b->ctx;
    c->bf16_inputs = above != NULL;
    for (int f = 0; above && f < SL_WF_COUNT; f++)
        c->bf16_above[f] = above[f];
}

/* x rounded to bf16 in the context's buffer, when the mode asks it for this product. */
static const float *inputs_for(sl_cpu_ctx *c, const float *x, const sl_weight *w, int n)
{
    if (!c->bf16_inputs || w->fmt == SL_WF_F32 || w->fmt < 0 || w->fmt >= SL_WF_COUNT ||
        n <= c->bf16_above[w->fmt])
        return x;
    size_t len = (size_t)n * (size_t)w->cols;
    if (c->x_bf16_cap < len) {
        float *g = realloc(c->x_bf16, len * sizeof(float));
        if (!g) {
            fprintf(stderr, "sluice: cpu bf16 inputs: out of memory for %zu floats\n", len);
            abort();
        }
        c->x_bf16 = g;
        c->x_bf16_cap = len;
    }
    for (size_t i = 0; i < len; i++)
        c->x_bf16[i] = round_bf16(x[i]);
    return c->x_bf16;
}

void sl_cpu_matmul(sl_backend *b, float *out, const float *x, const sl_weight *w, int n)
{
    x = inputs_for(b->ctx, x, w, n);
    matmul_job j = {out, x, w, n};
    int items = (w->rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM;
    /* small products are not worth waking the workers */
    if ((size_t)w->rows * (size_t)w->cols * (size_t)n < 65536) {
        for (int i = 0; i < items; i++)
            matmul_item(&j, i);
        return;
    }
    sl_pool_for(sl_cpu_pool(b), items, matmul_item, &j);
}
