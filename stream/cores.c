/* Layer cores that stream: when the backend budget cannot hold every layer's non-expert weights,
 * each core travels like an expert, but on a schedule known in advance (layers run in order).
 *
 *   core chunk ──read+decode+widen (core thread)──► host images (LRU ring ahead of compute)
 *              ──upload──► 2 backend core slots: layer L computes from one while L+1 uploads
 *
 * The core thread keeps the host images of the next layers the compute will reach (L, L+1, ...
 * wrapping to layer 0 for the next token) loaded; when the host budget holds every core, they
 * are read once. layer_begin(L) takes L's image into a backend slot (already there when it was
 * uploaded during L-1) and queues L+1's upload into the other slot, behind the compute that last
 * read it ("freed" event). All under st->mu, like the expert tiers. */
#include "stream/stream_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensor lookup over a core chunk (model/'s sl_tensor_lookup) ---- */

typedef struct core_lookup {
    const sl_stream *st;
    size_t chunk;
    const uint8_t *decoded; /* NULL: formats and sizes only */
} core_lookup;

static int lookup(void *ctx, const char *name, int64_t rows, int64_t cols, int *fmt,
                  const void **data, sl_error *e)
{
    const core_lookup *l = ctx;
    const sl_sluice_chunk *ch = sl_sluice_chunk_at(l->st->file, l->chunk);
    for (uint32_t i = 0; i < ch->n_tensors; i++) {
        const sl_sluice_tensor *t = sl_sluice_tensor_at(l->st->file, ch->first_tensor + i);
        if (strcmp(t->name, name))
            continue;
        if (t->rows != rows || t->cols != cols) {
            char label[256];
            sl_sluice_chunk_label(l->st->file, l->chunk, label, sizeof label);
            return sl_errorf(e, SL_E_FORMAT, "%s: \"%s\" is %lldx%lld, the config implies %lldx%lld",
                             label, name, (long long)t->rows, (long long)t->cols, (long long)rows,
                             (long long)cols);
        }
        *fmt = t->format;
        *data = l->decoded ? l->decoded + t->offset : NULL;
        return 0;
    }
    char label[256];
    sl_sluice_chunk_label(l->st->file, l->chunk, label, sizeof label);
    return sl_errorf(e, SL_E_FORMAT, "%s: layer core lacks \"%s\"", label, name);
}

int sl_stream_core_image_bytes(sl_stream *st, int layer, size_t *bytes, sl_error *e)
{
    core_lookup l = {st, (size_t)st->core_chunk[layer], NULL};
    return sl_model_core_image(st->model, layer, lookup, &l, NULL, bytes, e);
}

/* ---- the core thread ---- */

/* Layers the compute reaches next, nearest first: need, need+1, ... (wrapping), n of them. */
static int window_layer(const sl_stream *st, int k) { return (st->core_need + k) % st->layers; }

static bool in_window(const sl_stream *st, int layer)
{
    int n = st->nc2 < st->layers ? st->nc2 : st->layers;
    int d = (layer - st->core_need + st->layers) % st->layers;
    return d < n;
}

/* The next core to load and a host slot for it; false when there is none now. */
static bool pick_core_job(sl_stream *st, int *layer, int *slot)
{
    int n = st->nc2 < st->layers ? st->nc2 : st->layers;
    for (int k = 0; k < n; k++) {
        int L = window_layer(st, k);
        if (st->c2_of[L] >= 0)
            continue;
        int best = -1;
        for (int i = 0; i < st->nc2; i++) {
            core_host *h = &st->c2[i];
            if (h->layer < 0) {
                best = i;
                break;
            }
            if (h->state == T2_READY && h->users == 0 && !in_window(st, h->layer) &&
                (best < 0 || h->tick < st->c2[best].tick))
                best = i;
        }
        if (best < 0)
            return false;
        *layer = L;
        *slot = best;
        return true;
    }
    return false;
}

static void *core_thread_main(void *arg)
{
    sl_stream *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        int L = -1, slot = -1;
        while (!st->quit && (st->failed || !pick_core_job(st, &L, &slot)))
            pthread_cond_wait(&st->work_cv, &st->mu);
        if (st->quit)
            break;
        core_host *h = &st->c2[slot];
        if (h->layer >= 0)
            st->c2_of[h->layer] = -1;
        h->layer = L;
        h->state = T2_LOADING;
        st->c2_of[L] = slot;
        size_t chunk = (size_t)st->core_chunk[L];
        pthread_mutex_unlock(&st->mu);

        sl_error e = {0};
        double t0 = sl_now();
        int rc = sl_sluice_read_chunk(st->file, chunk, st->core_stage, st->core_decoded, &e);
        core_lookup l = {st, chunk, st->core_decoded};
        size_t bytes = 0;
        if (rc == 0)
            rc = sl_model_core_image(st->model, L, lookup, &l, h->mem, &bytes, &e);
        if (rc == 0 && bytes != st->core_size[L])
            rc = sl_errorf(&e, SL_E_FORMAT, "layer %d: core image of %zu bytes, %zu expected", L, bytes,
                           st->core_size[L]);
        double t1 = sl_now();
        sl_trace_add(st, "core read+decode", L * st->E, st->n_workers + 1, t0, t1);

        pthread_mutex_lock(&st->mu);
        if (rc) {
            h->layer = -1;
            h->state = T2_EMPTY;
            st->c2_of[L] = -1;
            if (!st->failed) {
                st->failed = true;
                st->err = e;
            }
        } else {
            h->state = T2_READY;
            h->tick = ++st->tick;
            st->stats.core_reads++;
            st->stats.core_bytes_read += sl_sluice_padded(sl_sluice_chunk_at(st->file, chunk)->stored_size);
        }
        pthread_cond_broadcast(&st->done_cv);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

int sl_stream_cores_start(sl_stream *st, sl_error *e)
{
    if (pthread_create(&st->core_thread, NULL, core_thread_main, st) != 0)
        return sl_errorf(e, SL_E_NOMEM, "cannot start the layer-core thread");
    st->core_thread_started = true;
    return 0;
}

/* ---- the compute side ---- */

/* Uploads of cores that have finished free their host images. Under the lock. */
static void reap_core_uploads(sl_stream *st, bool block)
{
    for (int s = 0; s < 2; s++) {
        core_slot *c = &st->c1[s];
        if (c->src < 0)
            continue;
        sl_error e = {0};
        int done = st->b->ops->event_done(st->b, c->ready, block, &e);
        if (done == 0)
            continue;
        if (done < 0 && !st->failed) {
            st->failed = true;
            st->err = e;
        }
        st->c2[c->src].users--;
        c->src = -1;
        pthread_cond_broadcast(&st->work_cv);
    }
}

/* Queue layer L's image (READY in the host ring) into backend core slot s. Under the lock;
 * drops it around the copy when it is synchronous. */
static int upload_core(sl_stream *st, int s, int L, sl_error *e)
{
    core_slot *c = &st->c1[s];
    const sl_backend_ops *op = st->b->ops;
    if (c->src >= 0) { /* the slot's last upload may still read a host image: settle it */
        sl_error de = {0};
        if (op->event_done(st->b, c->ready, true, &de) < 0)
            return sl_errorf(e, SL_E_DEVICE, "layer %d core: %s", L, de.msg);
        st->c2[c->src].users--;
        c->src = -1;
    }
    int h = st->c2_of[L];
    core_host *img = &st->c2[h];
    img->users++;
    img->tick = ++st->tick;
    c->layer = -1;
    core_lookup l = {st, (size_t)st->core_chunk[L], NULL};
    int rc = sl_model_core_bind(st->model, L, lookup, &l, c->mem, &c->lw, e);
    if (rc) {
        img->users--;
        return rc;
    }
    double t0 = sl_now();
    sl_error ue = {0};
    if (st->overlap) {
        rc = op->upload_async(st->b, c->mem, img->mem, st->core_size[L], c->freed, c->ready, &ue);
        if (rc == 0)
            c->src = h;
        else
            img->users--;
    } else {
        pthread_mutex_unlock(&st->mu);
        rc = op->upload(st->b, c->mem, img->mem, st->core_size[L]);
        pthread_mutex_lock(&st->mu);
        img->users--;
    }
    sl_trace_add(st, st->overlap ? "core upload (queued)" : "core upload", L * st->E, 0, t0, sl_now());
    if (rc)
        return sl_errorf(e, rc, "upload of layer %d's core to %s failed%s%s", L, op->name,
                         ue.msg[0] ? ": " : "", ue.msg);
    c->layer = L;
    st->stats.core_uploads++;
    return 0;
}

/* The next layer's image, once the host has it, goes into the other slot behind that slot's
 * last reader, while this layer computes. Under the lock; overlap only. */
static int upload_ahead(sl_stream *st, sl_error *e)
{
    if (!st->overlap || st->core_cur < 0)
        return 0;
    int L = st->core_cur, next = (L + 1) % st->layers, o = 1 - st->core_slot;
    int rc = 0;
    if (next != L && st->c1[o].layer != next && st->c2_of[next] >= 0 &&
        st->c2[st->c2_of[next]].state == T2_READY)
        rc = upload_core(st, o, next, e);
    reap_core_uploads(st, false);
    return rc;
}

void sl_stream_core_ahead(sl_stream *st)
{
    if (!st->stream_cores || !st->overlap)
        return;
    pthread_mutex_lock(&st->mu);
    sl_error e = {0};
    if (upload_ahead(st, &e) && !st->failed) {
        st->failed = true;
        st->err = e;
    }
    pthread_mutex_unlock(&st->mu);
}

int sl_stream_core_begin(sl_stream *st, int L, const sl_layer_weights **lw, sl_error *e)
{
    pthread_mutex_lock(&st->mu);
    st->core_need = L;
    pthread_cond_broadcast(&st->work_cv);
    int rc = 0;
    int s = st->c1[0].layer == L ? 0 : st->c1[1].layer == L ? 1 : -1;
    if (s < 0) { /* not uploaded ahead: wait for its image, then upload into the other slot */
        st->stats.core_misses++;
        for (;;) {
            if (st->failed) {
                *e = st->err;
                rc = st->err.code ? st->err.code : SL_E_IO;
                goto out;
            }
            int h = st->c2_of[L];
            if (h >= 0 && st->c2[h].state == T2_READY)
                break;
            if (st->overlap)
                reap_core_uploads(st, true);
            double t0 = sl_now();
            pthread_cond_wait(&st->done_cv, &st->mu);
            st->stats.core_wait_seconds += sl_now() - t0;
            sl_trace_add(st, "core wait", L * st->E, 0, t0, sl_now());
        }
        s = st->c1[0].layer == st->core_cur ? 1 : 0; /* keep the slot the last layer used */
        if ((rc = upload_core(st, s, L, e)))
            goto out;
    }
    const sl_backend_ops *op = st->b->ops;
    if (st->overlap && (rc = op->compute_wait(st->b, st->c1[s].ready, e)))
        goto out;
    st->core_cur = L;
    st->core_slot = s;
    *lw = &st->c1[s].lw;

    rc = upload_ahead(st, e);
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void sl_stream_core_end(sl_stream *st, int L)
{
    if (!st->overlap)
        return;
    pthread_mutex_lock(&st->mu);
    sl_error e = {0};
    if ((st->b->ops->compute_record(st->b, st->c1[st->core_slot].freed, &e) || upload_ahead(st, &e)) &&
        !st->failed) {
        st->failed = true;
        st->err = e;
    }
    pthread_mutex_unlock(&st->mu);
}

void sl_stream_cores_stop(sl_stream *st)
{
    if (st->core_thread_started)
        pthread_join(st->core_thread, NULL); /* st->quit is set and broadcast by the caller */
    if (st->overlap && st->c2) {
        pthread_mutex_lock(&st->mu);
        reap_core_uploads(st, true);
        pthread_mutex_unlock(&st->mu);
    }
    for (int s = 0; s < 2; s++) {
        if (st->c1[s].ready)
            st->b->ops->event_destroy(st->b, st->c1[s].ready);
        if (st->c1[s].freed)
            st->b->ops->event_destroy(st->b, st->c1[s].freed);
    }
}
