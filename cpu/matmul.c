/* out (n, rows) = x (n, cols) . W^T over the pool. Work is split by blocks of weight rows so
 * each weight byte is read once per call and stays in cache across the n tokens. */
#include "cpu/internal.h"

enum { ROWS_PER_ITEM = 16 };

typedef struct {
    float *out;
    const float *x;
    const sl_weight *w;
    int n;
} matmul_job;

static void matmul_item(void *ctx, int item)
{
    const matmul_job *j = ctx;
    int r0 = item * ROWS_PER_ITEM;
    int r1 = r0 + ROWS_PER_ITEM < j->w->rows ? r0 + ROWS_PER_ITEM : j->w->rows;
    int cols = j->w->cols, rows = j->w->rows;
    for (int r = r0; r < r1; r++) {
        const float *wr = j->w->data + (size_t)r * cols;
        for (int t = 0; t < j->n; t++)
            j->out[(size_t)t * rows + r] = sl_cpu_dot(j->x + (size_t)t * cols, wr, cols);
    }
}

void sl_cpu_matmul(sl_backend *b, float *out, const float *x, const sl_weight *w, int n)
{
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
