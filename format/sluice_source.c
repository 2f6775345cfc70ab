/* A .sluice file as a weight source. Loaders ask for tensors in roughly file order, and a chunk
 * holds several of them (a layer core ~15), so the last decoded chunk is kept: each chunk is read
 * and verified once. A tensor that is a whole chunk (the embedding) is handed over without a
 * copy. */
#include "format/format.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Staging buffers above this are released after use rather than kept for the next read. */
#define KEEP_STAGE_BYTES ((size_t)256 << 20)

typedef struct sluice_source {
    sl_weight_source base;
    sl_sluice *f;
    pthread_mutex_t mu;
    int64_t cached;       /* chunk whose decoded bytes are in buf, or -1 */
    void *buf;
    void *stage;          /* 4096-aligned, stage_cap bytes */
    size_t stage_cap;
} sluice_source;

static int load_chunk(sluice_source *s, uint32_t ci, sl_error *e)
{
    if (s->cached == (int64_t)ci)
        return 0;
    const sl_sluice_chunk *c = sl_sluice_chunk_at(s->f, ci);
    char what[512];
    sl_sluice_chunk_label(s->f, ci, what, sizeof what);
    free(s->buf);
    s->cached = -1;
    if (!(s->buf = malloc(c->decoded_size ? c->decoded_size : 1)))
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for %llu decoded bytes", what,
                         (unsigned long long)c->decoded_size);
    size_t need = sl_sluice_padded(c->stored_size);
    if (need > s->stage_cap) {
        free(s->stage);
        s->stage = NULL;
        s->stage_cap = 0;
        if (posix_memalign(&s->stage, 4096, need) != 0) {
            s->stage = NULL;
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory for %zu stored bytes", what, need);
        }
        s->stage_cap = need;
    }
    int rc = sl_sluice_read_chunk(s->f, ci, s->stage, s->buf, e);
    if (s->stage_cap > KEEP_STAGE_BYTES) {
        free(s->stage);
        s->stage = NULL;
        s->stage_cap = 0;
    }
    if (rc)
        return rc;
    s->cached = ci;
    return 0;
}

static int sluice_get(sl_weight_source *src, const char *name, int64_t rows, int64_t cols, int *fmt,
                      void **buf, size_t *nbytes, sl_error *e)
{
    sluice_source *s = (sluice_source *)src;
    const sl_sluice_tensor *t = sl_sluice_find(s->f, name);
    if (!t)
        return sl_errorf(e, SL_E_MISSING, "%s: missing tensor \"%s\"", src->path, name);
    if (t->rows != rows || t->cols != cols) {
        char got[64], want[64];
        snprintf(got, sizeof got, t->cols ? "[%lld, %lld]" : "[%lld]", (long long)t->rows, (long long)t->cols);
        snprintf(want, sizeof want, cols ? "[%lld, %lld]" : "[%lld]", (long long)rows, (long long)cols);
        return sl_errorf(e, SL_E_SHAPE, "%s: tensor \"%s\" has shape %s, config implies %s", src->path,
                         name, got, want);
    }
    pthread_mutex_lock(&s->mu);
    int rc = load_chunk(s, t->chunk, e);
    if (rc == 0) {
        const sl_sluice_chunk *c = sl_sluice_chunk_at(s->f, t->chunk);
        if (t->offset == 0 && t->nbytes == c->decoded_size) {
            *buf = s->buf; /* the whole chunk: hand it over */
            s->buf = NULL;
            s->cached = -1;
        } else if ((*buf = malloc(t->nbytes ? t->nbytes : 1))) {
            memcpy(*buf, (const char *)s->buf + t->offset, t->nbytes);
        } else {
            rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory for tensor \"%s\"", src->path, name);
        }
    } else if (e && strlen(e->msg) + strlen(name) + 24 < sizeof e->msg) {
        size_t k = strlen(e->msg);
        snprintf(e->msg + k, sizeof e->msg - k, " (reading \"%s\")", name);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) {
        *fmt = t->format;
        *nbytes = t->nbytes;
    }
    return rc;
}

static void sluice_close(sl_weight_source *src)
{
    sluice_source *s = (sluice_source *)src;
    if (!s)
        return;
    sl_sluice_close(s->f);
    free(s->buf);
    free(s->stage);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int sl_sluice_source_open(const char *path, sl_weight_source **out, sl_error *e)
{
    sluice_source *s = calloc(1, sizeof *s);
    if (!s)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", path);
    int rc = sl_sluice_open(path, &s->f, e);
    if (rc) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->cached = -1;
    s->base.path = sl_sluice_path(s->f);
    s->base.config = sl_sluice_config(s->f);
    s->base.get = sluice_get;
    s->base.close = sluice_close;
    *out = &s->base;
    return 0;
}
