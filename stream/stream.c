/* The streaming engine: two cache tiers over a .sluice file's expert chunks, filled by workers.
 *
 * Keys: an expert is key = layer * E + expert. Tier 2 (host cache) slots go EMPTY -> LOADING (a
 * worker reads + decodes + checksums the chunk into the slot) -> READY; tier 1 slots (backend
 * memory) are filled from READY tier-2 slots by the compute thread. Where the backend has the
 * overlap ops (cuda/), the host cache is page-locked and an upload is only queued: the copy
 * stream waits for the slot's "freed" event (its previous expert's compute), copies, records
 * "ready", and the compute stream waits for "ready" — the compute thread never blocks on a copy.
 * The tier-2 slot stays in use until "ready" completes (sl_stream_reap_uploads). Replacement is LRU in both
 * tiers: with uniform-looking routing nothing better is known without history, and LRU keeps the
 * experts of the last few tokens, which is where decode reuse comes from (measured hit rates
 * are in bench/results/). One mutex guards all state; the slow parts (read, decode, upload) run
 * outside it. */
#include "stream/stream_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- queue ---- */

static void push_job(sl_stream *st, int key, bool demand)
{
    if (st->queued[key] == 2 || (st->queued[key] == 1 && !demand))
        return;
    int *q = demand ? st->dq : st->pq;
    long *tail = demand ? &st->dq_tail : &st->pq_tail;
    q[*tail % st->q_cap] = key;
    (*tail)++;
    st->queued[key] = demand ? 2 : 1;
    pthread_cond_signal(&st->work_cv);
}

/* Next job under the lock: demand first; a key already cached or in flight is dropped. */
static int pop_job(sl_stream *st, bool *demand)
{
    for (;;) {
        int key;
        if (st->dq_head < st->dq_tail) {
            key = st->dq[st->dq_head++ % st->q_cap];
            *demand = true;
        } else if (st->pq_head < st->pq_tail) {
            key = st->pq[st->pq_head++ % st->q_cap];
            *demand = false;
            if (st->queued[key] == 2) /* promoted: its demand entry will come */
                continue;
        } else {
            return -1;
        }
        st->queued[key] = 0;
        if (st->t2_of[key] >= 0 || st->t1_of[key] >= 0)
            continue;
        return key;
    }
}

/* A tier-2 slot to load into: an EMPTY one, else the least recently used READY one nobody is
 * uploading from. -1 when every slot is loading or busy. */
static int take_t2(sl_stream *st)
{
    int best = -1;
    for (int i = 0; i < st->n2; i++) {
        t2_slot *s = &st->t2[i];
        if (s->state == T2_EMPTY)
            return i;
        /* tier 2 stays LRU: prefetched chunks have no requests yet and LFU would drop them first
         * (measured: bench/results/cache-policy-2026-11-24.md) */
        if (s->state == T2_READY && s->users == 0 && !st->wanted[s->key] &&
            (best < 0 || s->tick < st->t2[best].tick))
            best = i;
    }
    if (best < 0 && st->overlap) { /* slots held only by finished uploads free up here */
        int pending = 0;
        for (int i = 0; i < st->n1; i++)
            pending += st->t1[i].src_t2 >= 0;
        if (pending) {
            sl_stream_reap_uploads(st, false);
            for (int i = 0; i < st->n2; i++) {
                t2_slot *s = &st->t2[i];
                if (s->state == T2_READY && s->users == 0 && !st->wanted[s->key] &&
                    (best < 0 || s->tick < st->t2[best].tick))
                    best = i;
            }
        }
    }
    if (best >= 0) {
        st->t2_of[st->t2[best].key] = -1;
        st->t2[best].state = T2_EMPTY;
        st->stats.tier2_evictions++;
    }
    return best;
}

void sl_stream_reap_uploads(sl_stream *st, bool block)
{
    bool freed = false;
    for (int i = 0; i < st->n1; i++) {
        t1_slot *s = &st->t1[i];
        if (s->src_t2 < 0)
            continue;
        sl_error e = {0};
        int done = st->b->ops->event_done(st->b, s->ready, block, &e);
        if (done == 0)
            continue;
        if (done < 0 && !st->failed) { /* the device failed: stop, and let the next call say why */
            st->failed = true;
            st->err = e;
        }
        st->t2[s->src_t2].users--;
        s->src_t2 = -1;
        freed = true;
    }
    if (freed)
        pthread_cond_broadcast(&st->done_cv);
}

/* Read chunk i's stored bytes (padded) into the worker's stage and decode + verify into dst. */
static int read_chunk(sl_stream *st, sl_stream_worker *w, size_t i, void *dst, sl_error *e)
{
    if (!w->io)
        return sl_sluice_read_chunk(st->file, i, w->stage, dst, e);
    const sl_sluice_chunk *ch = sl_sluice_chunk_at(st->file, i);
    sl_io_extent x = {.file = w->io_file, .buf = 0, .offset = ch->offset,
                      .len = sl_sluice_padded(ch->stored_size), .buf_off = 0};
    sl_error ie = {0};
    if (sl_io_read_extents(w->io, &x, 1, &ie)) {
        char label[256];
        sl_sluice_chunk_label(st->file, i, label, sizeof label);
        return sl_errorf(e, ie.code ? ie.code : SL_E_IO, "%s: read failed: %s", label, ie.msg);
    }
    return sl_sluice_decode_chunk(st->file, i, w->stage, dst, e);
}

static void *worker_main(void *arg)
{
    sl_stream_worker *w = arg;
    sl_stream *st = w->st;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        bool demand = false;
        int key = -1, slot = -1;
        while (!st->quit) {
            if (st->failed) { /* stop loading after an error; the compute thread reports it */
                pthread_cond_wait(&st->work_cv, &st->mu);
                continue;
            }
            key = pop_job(st, &demand);
            if (key < 0) {
                pthread_cond_wait(&st->work_cv, &st->mu);
                continue;
            }
            slot = take_t2(st);
            if (slot >= 0)
                break;
            if (!demand)
                continue; /* a prefetch never waits for room: drop it */
            push_job(st, key, demand); /* every slot busy: wait for one to free up */
            pthread_cond_wait(&st->done_cv, &st->mu);
        }
        if (st->quit)
            break;
        t2_slot *s = &st->t2[slot];
        s->state = T2_LOADING;
        s->key = key;
        st->t2_of[key] = slot;
        if (!demand)
            st->stats.prefetch_issued++;
        s->prefetched = !demand;
        size_t chunk = (size_t)st->chunk_of[key];
        if (st->inflight++ == 0)
            st->busy_since = sl_now();
        pthread_mutex_unlock(&st->mu);

        sl_error e = {0};
        double t0 = sl_now();
        int rc = read_chunk(st, w, chunk, s->mem, &e);
        double t1 = sl_now();
        const sl_sluice_chunk *ch = sl_sluice_chunk_at(st->file, chunk);
        sl_trace_add(st, demand ? "read+decode (demand)" : "read+decode (prefetch)", key, w->index + 1, t0, t1);

        pthread_mutex_lock(&st->mu);
        st->stats.read_seconds += t1 - t0;
        if (--st->inflight == 0)
            st->stats.busy_seconds += sl_now() - st->busy_since;
        if (rc) {
            s->state = T2_EMPTY;
            st->t2_of[key] = -1;
            if (!st->failed) {
                st->failed = true;
                st->err = e;
            }
        } else {
            s->state = T2_READY;
            s->tick = ++st->tick;
            st->stats.chunks_read++;
            st->stats.bytes_read += sl_sluice_padded(ch->stored_size);
            st->stats.bytes_decoded += ch->decoded_size;
        }
        pthread_cond_broadcast(&st->done_cv);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* ---- the provider the forward pass calls ---- */

static int sp_layer_begin(sl_weight_provider *p, int layer, const sl_layer_weights **lw, sl_error *e)
{
    sl_stream *st = (sl_stream *)p;
    st->t_layer = sl_now();
    if (st->stream_cores)
        return sl_stream_core_begin(st, layer, lw, e);
    return st->core->layer_begin(st->core, layer, lw, e); /* layer cores are resident */
}

static void sp_layer_end(sl_weight_provider *p, int layer)
{
    sl_stream *st = (sl_stream *)p;
    if (st->stream_cores)
        sl_stream_core_end(st, layer);
    sl_trace_add(st, "layer", layer * st->E, 0, st->t_layer, sl_now());
}

static int sp_experts_request(sl_weight_provider *p, int layer, const int32_t *experts, int n,
                              sl_error *e)
{
    sl_stream *st = (sl_stream *)p;
    pthread_mutex_lock(&st->mu);
    st->layer = layer;
    st->n_want = n;
    st->n_given = 0;
    for (int i = 0; i < n; i++) {
        int key = layer * st->E + experts[i];
        st->want[i] = experts[i];
        st->given[i] = 0;
        st->wanted[key] = 1;
        st->freq[key]++;
        if (!st->touched[key]) {
            st->touched[key] = 1;
            st->stats.distinct++;
        }
        st->stats.requests++;
        st->stats.bytes_needed += sl_sluice_chunk_at(st->file, (size_t)st->chunk_of[key])->decoded_size;
        if (st->hinted[key]) {
            st->stats.predicted_right++;
            st->hinted[key] = 0;
        }
        int t1 = st->t1_of[key], t2 = st->t2_of[key];
        if (t1 >= 0) {
            st->t1[t1].refs++; /* pinned until handed out and done */
            st->stats.tier1_hits++;
        } else if (t2 >= 0 && st->t2[t2].state == T2_READY) {
            st->stats.tier2_hits++;
        } else {
            st->stats.misses++;
            if (t2 < 0)
                push_job(st, key, true);
        }
        if (t2 >= 0 && st->t2[t2].prefetched) {
            st->stats.prefetch_used++;
            st->t2[t2].prefetched = false;
        }
    }
    /* a hint for this layer that was not requested is stale now */
    for (int x = 0; x < st->E; x++)
        st->hinted[layer * st->E + x] = 0;
    pthread_mutex_unlock(&st->mu);
    sl_stream_core_ahead(st); /* mid-layer: the next core may be in by now */
    return 0;
}

/* A tier-1 slot for a new expert: free, else LRU among unpinned. Under the lock. */
static int take_t1(sl_stream *st)
{
    int best = -1;
    for (int i = 0; i < st->n1; i++) {
        t1_slot *s = &st->t1[i];
        if (s->key < 0)
            return i;
        if (s->refs == 0 &&
            (best < 0 || sl_stream_evict_before(st, s->key, s->tick, st->t1[best].key, st->t1[best].tick)))
            best = i;
    }
    if (best >= 0) {
        st->t1_of[st->t1[best].key] = -1;
        st->t1[best].key = -1;
        st->stats.tier1_evictions++;
    }
    return best;
}

/* Point a slot's weights at the expert's tensors inside its decoded chunk. */
static int bind_weights(sl_stream *st, t1_slot *s, int key, sl_error *e)
{
    const sl_sluice_chunk *ch = sl_sluice_chunk_at(st->file, (size_t)st->chunk_of[key]);
    sl_weight *dst[3] = {&s->w.gate, &s->w.up, &s->w.down};
    int found = 0;
    for (uint32_t i = 0; i < ch->n_tensors; i++) {
        const sl_sluice_tensor *t = sl_sluice_tensor_at(st->file, ch->first_tensor + i);
        size_t l = strlen(t->name);
        int which = l >= 16 && !strcmp(t->name + l - 16, "gate_proj.weight") ? 0
                  : l >= 14 && !strcmp(t->name + l - 14, "up_proj.weight")   ? 1
                  : l >= 16 && !strcmp(t->name + l - 16, "down_proj.weight") ? 2
                                                                             : -1;
        if (which < 0)
            continue;
        *dst[which] = (sl_weight){(int)t->rows, (int)t->cols, t->format, (char *)s->mem + t->offset};
        found |= 1 << which;
    }
    if (found != 7) {
        char label[256];
        sl_sluice_chunk_label(st->file, (size_t)st->chunk_of[key], label, sizeof label);
        return sl_errorf(e, SL_E_FORMAT, "%s: expert chunk lacks gate/up/down_proj", label);
    }
    return 0;
}

/* Under the lock: hand out up to `max` requested experts that are ready without waiting for a
 * worker, into experts[] / w[]. First those already in a backend slot (pinned at request); only
 * when there are none, those in the host cache, each uploaded into a slot as long as one is
 * unpinned. Hits go out on their own because their compute can start at once: the copies the
 * next call queues then overlap it, where a group mixing both would wait for the last copy.
 * Returns how many were handed out, or a negative code with the reason in e when the first
 * upload failed (one failing after others went out returns those: the next call meets it). */
static int hand_out(sl_stream *st, int layer, int max, int *experts, const sl_expert_weights **w,
                    sl_error *e)
{
    const sl_backend_ops *op = st->b->ops;
    int n = 0;
    /* 1. already in a backend slot (pinned at request) */
    for (int i = 0; i < st->n_want && n < max; i++) {
        int key = layer * st->E + st->want[i];
        if (!st->given[i] && st->t1_of[key] >= 0) {
            t1_slot *s = &st->t1[st->t1_of[key]];
            s->tick = ++st->tick;
            st->given[i] = 1;
            st->wanted[key] = 0;
            st->n_given++;
            experts[n] = st->want[i];
            w[n++] = &s->w;
        }
    }
    if (n > 0) {
        st->t_given = sl_now();
        return n;
    }
    /* 2. ready in the host cache: upload into backend slots */
    for (int i = 0; i < st->n_want && n < max; i++) {
        int key = layer * st->E + st->want[i];
        int t2 = st->t2_of[key];
        if (st->given[i] || t2 < 0 || st->t2[t2].state != T2_READY)
            continue;
        int t1 = take_t1(st);
        if (t1 < 0)
            break; /* every slot holds an expert handed out in this call (or pinned): enough */
        t2_slot *src = &st->t2[t2];
        t1_slot *dst = &st->t1[t1];
        if (dst->src_t2 >= 0) { /* its last upload may still read a host slot: settle it */
            sl_error de = {0};
            if (op->event_done(st->b, dst->ready, true, &de) < 0 && !st->failed) {
                st->failed = true;
                st->err = de;
            }
            st->t2[dst->src_t2].users--;
            dst->src_t2 = -1;
        }
        src->users++; /* until the copy has read it: at once, or when `ready` completes */
        src->tick = ++st->tick;
        size_t bytes = sl_sluice_chunk_at(st->file, (size_t)st->chunk_of[key])->decoded_size;
        pthread_mutex_unlock(&st->mu);
        double t0 = sl_now();
        int rc;
        sl_error ue = {0};
        if (st->overlap) {
            /* copy stream: after the slot's last reader, copy, mark ready; compute waits */
            rc = op->upload_async(st->b, dst->mem, src->mem, bytes, dst->freed, dst->ready, &ue);
            if (rc == 0)
                rc = op->compute_wait(st->b, dst->ready, &ue);
        } else {
            rc = op->upload(st->b, dst->mem, src->mem, bytes);
        }
        sl_trace_add(st, st->overlap ? "upload (queued)" : "upload", key, 0, t0, sl_now());
        pthread_mutex_lock(&st->mu);
        if (st->overlap && rc == 0)
            dst->src_t2 = t2;
        else
            src->users--;
        if (rc == 0)
            rc = bind_weights(st, dst, key, e);
        else
            sl_errorf(e, rc, "upload of layer %d expert %d to %s failed%s%s", layer, st->want[i],
                      op->name, ue.msg[0] ? ": " : "", ue.msg);
        pthread_cond_broadcast(&st->done_cv); /* a worker may wait for src to be free */
        if (rc)
            return n > 0 ? n : rc;
        dst->key = key;
        dst->refs = 1;
        dst->tick = ++st->tick;
        st->t1_of[key] = t1;
        st->given[i] = 1;
        st->wanted[key] = 0;
        st->n_given++;
        experts[n] = st->want[i];
        w[n++] = &dst->w;
    }
    if (n > 0)
        st->t_given = sl_now();
    return n;
}

/* Block until hand_out gives at least one of `max` (or all were handed out: *n = 0). */
static int next_ready(sl_stream *st, int layer, int max, int *experts, const sl_expert_weights **w,
                      int *n, sl_error *e)
{
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->failed) {
            if (e)
                *e = st->err;
            pthread_mutex_unlock(&st->mu);
            return st->err.code ? st->err.code : SL_E_IO;
        }
        if (st->n_given == st->n_want || max < 1) {
            *n = 0;
            pthread_mutex_unlock(&st->mu);
            return 0;
        }
        int got = hand_out(st, layer, max, experts, w, e);
        if (got != 0) {
            pthread_mutex_unlock(&st->mu);
            if (got < 0)
                return got;
            *n = got;
            return 0;
        }
        /* 3. wait for a worker; re-queue anything evicted from tier 2 before we took it */
        for (int i = 0; i < st->n_want; i++) {
            int key = layer * st->E + st->want[i];
            if (!st->given[i] && st->t2_of[key] < 0 && st->queued[key] != 2)
                push_job(st, key, true);
        }
        if (st->overlap) /* host-cache slots held by uploads may be what a worker waits for */
            sl_stream_reap_uploads(st, true);
        if (st->failed)
            continue;
        double t0 = sl_now();
        pthread_cond_wait(&st->done_cv, &st->mu);
        double t1 = sl_now();
        st->stats.wait_seconds += t1 - t0;
        sl_trace_add(st, "wait", -1, 0, t0, t1);
    }
}

static int sp_expert_next(sl_weight_provider *p, int layer, int *expert, const sl_expert_weights **w,
                          sl_error *e)
{
    int n, rc = next_ready((sl_stream *)p, layer, 1, expert, w, &n, e);
    if (rc == 0 && n == 0)
        *expert = -1;
    return rc;
}

static int sp_experts_ready(sl_weight_provider *p, int layer, int max, int *experts,
                            const sl_expert_weights **w, int *n, sl_error *e)
{
    return next_ready((sl_stream *)p, layer, max, experts, w, n, e);
}

static void sp_expert_done(sl_weight_provider *p, int layer, int expert)
{
    sl_stream *st = (sl_stream *)p;
    sl_trace_add(st, "expert compute", layer * st->E + expert, 0, st->t_given, sl_now());
    pthread_mutex_lock(&st->mu);
    int t1 = st->t1_of[layer * st->E + expert];
    if (t1 >= 0 && st->overlap) { /* the next upload into this slot waits for these ops */
        sl_error e = {0};
        if (st->b->ops->compute_record(st->b, st->t1[t1].freed, &e) && !st->failed) {
            st->failed = true;
            st->err = e;
        }
    }
    if (t1 >= 0 && st->t1[t1].refs > 0)
        st->t1[t1].refs--;
    if (st->overlap)
        sl_stream_reap_uploads(st, false);
    pthread_mutex_unlock(&st->mu);
}

static void sp_experts_hint(sl_weight_provider *p, int layer, const int32_t *experts, int n)
{
    sl_stream *st = (sl_stream *)p;
    if (!st->prefetch)
        return;
    pthread_mutex_lock(&st->mu);
    for (int i = 0; i < n; i++) {
        int key = layer * st->E + experts[i];
        st->hinted[key] = 1;
        st->stats.predicted++;
        if (st->t1_of[key] < 0 && st->t2_of[key] < 0)
            push_job(st, key, false);
    }
    pthread_mutex_unlock(&st->mu);
}

const sl_weight_provider sl_stream_provider_ops = {
    .layer_begin = sp_layer_begin,
    .experts_request = sp_experts_request,
    .expert_next = sp_expert_next,
    .expert_done = sp_expert_done,
    .layer_end = sp_layer_end,
    .experts_hint = sp_experts_hint,
    .experts_ready = sp_experts_ready,
};

void *sl_stream_worker_main(void *arg) { return worker_main(arg); }
