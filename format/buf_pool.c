/* A small pool of malloc'd buffers for the converter: best fit on get, bounded on put. */
#include "format/sluice_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define POOL_SLOTS 64

struct sl_buf_pool {
    pthread_mutex_t mu;
    size_t keep, max_buf, held;
    int n;
    void *buf[POOL_SLOTS];
    size_t cap[POOL_SLOTS];
};

sl_buf_pool *sl_buf_pool_create(size_t keep_bytes, size_t max_buf)
{
    sl_buf_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->keep = keep_bytes;
    p->max_buf = max_buf;
    return p;
}

void *sl_buf_pool_get(sl_buf_pool *p, size_t need, size_t *cap)
{
    pthread_mutex_lock(&p->mu);
    int best = -1;
    for (int i = 0; i < p->n; i++)
        if (p->cap[i] >= need && (best < 0 || p->cap[i] < p->cap[best]))
            best = i;
    if (best >= 0) {
        void *b = p->buf[best];
        *cap = p->cap[best];
        p->held -= p->cap[best];
        p->n--;
        p->buf[best] = p->buf[p->n];
        p->cap[best] = p->cap[p->n];
        pthread_mutex_unlock(&p->mu);
        return b;
    }
    pthread_mutex_unlock(&p->mu);
    *cap = need;
    return malloc(need ? need : 1);
}

void sl_buf_pool_put(sl_buf_pool *p, void *buf, size_t cap)
{
    if (!buf)
        return;
    if (cap > p->max_buf) {
        free(buf);
        return;
    }
    pthread_mutex_lock(&p->mu);
    /* Full: drop the smallest buffers first; the big ones are the expensive ones to fault in. */
    while (p->n > 0 && (p->n == POOL_SLOTS || p->held + cap > p->keep)) {
        int small = 0;
        for (int i = 1; i < p->n; i++)
            if (p->cap[i] < p->cap[small])
                small = i;
        if (p->cap[small] > cap)
            break;
        free(p->buf[small]);
        p->held -= p->cap[small];
        p->n--;
        p->buf[small] = p->buf[p->n];
        p->cap[small] = p->cap[p->n];
    }
    if (p->n < POOL_SLOTS && p->held + cap <= p->keep) {
        p->buf[p->n] = buf;
        p->cap[p->n++] = cap;
        p->held += cap;
        buf = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    free(buf);
}

void sl_buf_pool_destroy(sl_buf_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        free(p->buf[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
