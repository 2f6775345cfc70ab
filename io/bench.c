/* `sluice bench io` workloads: N reader threads, one ring each, each keeping `qd` requests of `bs`
 * bytes in flight for a fixed time. A request is one extent, split by the reader into pieces, so
 * the bytes in flight equal fio's iodepth x bs. Threads set up (open, allocate, register) first
 * and start together at a barrier, so setup never counts as reading time. */
#include "io/io.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SL_HAVE_CUDA
#include "cuda/upload.h"
#endif

#define CHUNK_ALIGN 4096u /* .sluice chunks start on 4096-byte boundaries (DESIGN.md) */

enum { STAGE_DISK, STAGE_E2E };

typedef struct worker {
    const sl_io_bench_opts *o;
    unsigned tid;
    pthread_barrier_t *start;
    int stage;
    /* reader and its buffers */
    sl_io *io;
    void **bufs;
    size_t buf_len;
    unsigned nbuf;
    unsigned *free_bufs, nfree;
    uint64_t issued;
    /* workload */
    uint64_t region, cursor, align, rng;
    double deadline;
    /* gpu */
    void *up;
    /* results */
    double t0, t1;
    sl_io_stats st;
    int direct, fixed;
    char note[512];
    int rc;
    sl_error err;
} worker;

const char *sl_io_bench_pattern_name(int pattern)
{
    switch (pattern) {
    case SL_IO_BENCH_SEQ: return "seq";
    case SL_IO_BENCH_RAND: return "rand";
    case SL_IO_BENCH_CHUNKS: return "chunks";
    default: return "?";
    }
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64*: offsets only need to be spread, not secret */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static uint64_t next_offset(worker *w)
{
    uint64_t bs = w->o->bs;
    if (w->o->pattern == SL_IO_BENCH_SEQ) {
        if (w->cursor + bs > w->region)
            w->cursor = 0;
        uint64_t off = w->cursor;
        w->cursor += bs;
        return off;
    }
    uint64_t slots = (w->region - bs) / w->align + 1;
    return (rng_next(&w->rng) % slots) * w->align;
}

static int src_next(void *ctx, sl_io_extent *x)
{
    worker *w = ctx;
    if (sl_now() >= w->deadline)
        return 0;
    unsigned b;
    if (w->up) { /* round-robin: buffer b is free once its previous copy to VRAM has finished */
        b = (unsigned)(w->issued % w->nbuf);
#ifdef SL_HAVE_CUDA
        if (w->issued >= w->nbuf) {
            int r = sl_upload_wait(w->up, b, &w->err);
            if (r)
                return w->rc = r;
        }
#endif
    } else {
        if (w->nfree == 0) /* cannot happen: extents in flight <= qd = buffers */
            return w->rc = sl_errorf(&w->err, SL_E_ARG, "bench: no free buffer");
        b = w->free_bufs[--w->nfree];
    }
    w->issued++;
    *x = (sl_io_extent){ .file = 0, .buf = b, .offset = next_offset(w), .len = w->o->bs, .buf_off = 0 };
    return 1;
}

static int src_done(void *ctx, uint64_t seq, const sl_io_extent *x)
{
    worker *w = ctx;
    (void)seq;
    if (!w->up) {
        w->free_bufs[w->nfree++] = x->buf;
        return 0;
    }
#ifdef SL_HAVE_CUDA
    if (w->stage == STAGE_E2E) {
        int r = sl_upload_copy(w->up, x->buf, x->len, &w->err);
        if (r)
            return w->rc = r;
    }
#endif
    return 0;
}

static void worker_free(worker *w)
{
#ifdef SL_HAVE_CUDA
    sl_upload_destroy(w->up);
#endif
    w->up = NULL;
    sl_io_destroy(w->io);
    w->io = NULL;
    for (unsigned i = 0; w->bufs && i < w->nbuf; i++)
        sl_io_buffer_free(w->bufs[i], w->buf_len);
    free(w->bufs);
    free(w->free_bufs);
    w->bufs = NULL;
    w->free_bufs = NULL;
}

static int worker_setup(worker *w)
{
    const sl_io_bench_opts *o = w->o;
    uint64_t piece = o->piece ? o->piece : (uint64_t)1 << 20;
    uint64_t per = (o->bs + piece - 1) / piece + 2; /* +2: unaligned head and tail */
    uint64_t depth = (uint64_t)o->qd * per;
    sl_io_opts io = { .depth = (unsigned)(depth > 32768 ? 32768 : depth), .extents = o->qd, .piece = piece,
                      .mode = o->mode, .max_files = 1 };
    int r = sl_io_create(&io, &w->io, &w->err);
    if (r)
        return r;
    int id;
    r = sl_io_open_file(w->io, o->path, &id, &w->err);
    if (r)
        return r;
    sl_io_file_info fi;
    sl_io_file_info_get(w->io, id, &fi);
    w->direct = fi.direct;
    uint64_t region = o->region && o->region < fi.size ? o->region : fi.size;
    if (region < o->bs)
        return sl_errorf(&w->err, SL_E_ARG, "%s: %llu bytes to read from, less than one request of %llu bytes",
                         o->path, (unsigned long long)region, (unsigned long long)o->bs);
    w->region = region;
    w->align = o->pattern == SL_IO_BENCH_RAND ? o->bs : CHUNK_ALIGN;
    /* sequential threads start spread over the file, each on a request boundary */
    w->cursor = o->pattern == SL_IO_BENCH_SEQ ? (region / o->threads * w->tid) / o->bs * o->bs : 0;
    w->rng = (o->seed ? o->seed : 0x9e3779b97f4a7c15u) + 0x632be59bd9b4e019u * (w->tid + 1);
    w->nbuf = o->gpu ? 2 * o->qd : o->qd;
    w->buf_len = (o->bs + CHUNK_ALIGN - 1) / CHUNK_ALIGN * CHUNK_ALIGN;
    w->bufs = calloc(w->nbuf, sizeof *w->bufs);
    w->free_bufs = calloc(w->nbuf, sizeof *w->free_bufs);
    size_t *lens = calloc(w->nbuf, sizeof *lens);
    if (!w->bufs || !w->free_bufs || !lens) {
        free(lens);
        return sl_errorf(&w->err, SL_E_NOMEM, "bench: out of memory");
    }
    for (unsigned i = 0; i < w->nbuf; i++) {
        w->bufs[i] = sl_io_buffer_alloc(w->buf_len);
        lens[i] = w->buf_len;
        if (!w->bufs[i]) {
            free(lens);
            return sl_errorf(&w->err, SL_E_NOMEM, "bench: cannot allocate %u buffers of %zu bytes", w->nbuf,
                             w->buf_len);
        }
        w->free_bufs[i] = i;
    }
    w->nfree = w->nbuf;
    if (o->gpu) {
#ifdef SL_HAVE_CUDA
        sl_upload *up = NULL;
        r = sl_upload_create(w->bufs, lens, w->nbuf, &up, &w->err);
        w->up = up;
        if (r) {
            free(lens);
            return r;
        }
#endif
    }
    r = sl_io_set_buffers(w->io, w->bufs, lens, w->nbuf, &w->err);
    free(lens);
    if (r)
        return r;
    w->fixed = sl_io_buffers_fixed(w->io);
    const char *bn = sl_io_buffers_note(w->io);
    snprintf(w->note, sizeof w->note, "%s%s%s", fi.note ? fi.note : "", fi.note && bn ? "; " : "", bn ? bn : "");
    return SL_OK;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    int setup = w->rc ? w->rc : SL_OK;
    pthread_barrier_wait(w->start); /* every thread set up (or failed) */
    if (setup) {
        w->t0 = w->t1 = sl_now();
        return NULL;
    }
    sl_io_stats_reset(w->io);
    w->rc = 0;
    w->issued = 0;
    w->nfree = w->nbuf;
    for (unsigned i = 0; i < w->nbuf; i++)
        w->free_bufs[i] = i;
    w->t0 = sl_now();
    w->deadline = w->t0 + w->o->seconds;
    sl_io_source src = { w, src_next, src_done };
    int r = sl_io_run(w->io, &src, &w->err);
#ifdef SL_HAVE_CUDA
    if (!r && w->up && w->stage == STAGE_E2E)
        r = sl_upload_sync(w->up, &w->err); /* end-to-end ends when the last byte is in VRAM */
#endif
    w->t1 = sl_now();
    if (r && !w->rc)
        w->rc = r;
    if (w->rc && !w->err.msg[0])
        sl_errorf(&w->err, w->rc, "bench: %s", sl_strerror(w->rc));
    w->st = *sl_io_stats_get(w->io);
    return NULL;
}

/* One timed pass over all workers (already set up); fills the disk fields of r. */
static int run_pass(worker *ws, unsigned n, int stage, sl_io_bench_result *r, sl_error *e)
{
    pthread_barrier_t bar;
    if (pthread_barrier_init(&bar, NULL, n) != 0)
        return sl_errorf(e, SL_E_NOMEM, "bench: pthread_barrier_init failed");
    pthread_t *t = calloc(n, sizeof *t);
    if (!t) {
        pthread_barrier_destroy(&bar);
        return sl_errorf(e, SL_E_NOMEM, "bench: out of memory");
    }
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++) {
        ws[i].start = &bar;
        ws[i].stage = stage;
        if (pthread_create(&t[i], NULL, worker_main, &ws[i]) != 0)
            break;
        started++;
    }
    if (started < n) { /* the barrier would never open: fail the ones that started */
        for (unsigned i = started; i < n; i++)
            ws[i].rc = SL_E_NOMEM;
        for (unsigned i = started; i < n; i++)
            pthread_barrier_wait(&bar); /* stand in for the missing threads */
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    pthread_barrier_destroy(&bar);
    if (started < n)
        return sl_errorf(e, SL_E_NOMEM, "bench: cannot start %u threads", n);
    for (unsigned i = 0; i < n; i++)
        if (ws[i].rc) {
            if (e)
                *e = ws[i].err;
            return ws[i].rc;
        }
    sl_io_hist *lat = calloc(1, sizeof *lat);
    if (!lat)
        return sl_errorf(e, SL_E_NOMEM, "bench: out of memory");
    double t0 = ws[0].t0, t1 = ws[0].t1, busy = 0;
    uint64_t bytes = 0, reqs = 0, shorts = 0, retries = 0, buffered = 0;
    for (unsigned i = 0; i < n; i++) {
        t0 = ws[i].t0 < t0 ? ws[i].t0 : t0;
        t1 = ws[i].t1 > t1 ? ws[i].t1 : t1;
        bytes += ws[i].st.bytes;
        reqs += ws[i].st.extents;
        shorts += ws[i].st.short_reads;
        retries += ws[i].st.retries;
        buffered += ws[i].st.buffered_reads;
        busy += ws[i].st.busy_s / (ws[i].t1 - ws[i].t0 > 0 ? ws[i].t1 - ws[i].t0 : 1);
        sl_io_hist_merge(lat, &ws[i].st.extent_lat);
    }
    r->bytes = bytes;
    r->requests = reqs;
    r->seconds = t1 - t0;
    r->gbps = r->seconds > 0 ? (double)bytes / r->seconds / 1e9 : 0;
    r->iops = r->seconds > 0 ? (double)reqs / r->seconds : 0;
    r->busy = busy / n;
    r->lat_p50_us = sl_io_hist_quantile_us(lat, 0.5);
    r->lat_p99_us = sl_io_hist_quantile_us(lat, 0.99);
    r->lat_p999_us = sl_io_hist_quantile_us(lat, 0.999);
    r->lat_mean_us = lat->count ? (double)lat->sum_ns / (double)lat->count / 1000.0 : 0;
    r->lat_max_us = (double)lat->max_ns / 1000.0;
    free(lat);
    r->short_reads = shorts;
    r->retries = retries;
    r->buffered_reads = buffered;
    return SL_OK;
}

int sl_io_bench_run(const sl_io_bench_opts *opts, sl_io_bench_result *r, sl_error *e)
{
    if (!opts || !r || !opts->path)
        return sl_errorf(e, SL_E_ARG, "bench: missing options");
    sl_io_bench_opts o = *opts;
    if (o.bs == 0 || o.qd == 0 || o.threads == 0 || o.seconds <= 0)
        return sl_errorf(e, SL_E_ARG, "bench: bs, qd, threads and seconds must be positive");
    if (o.pattern < SL_IO_BENCH_SEQ || o.pattern > SL_IO_BENCH_CHUNKS)
        return sl_errorf(e, SL_E_ARG, "bench: unknown pattern %d", o.pattern);
    if (o.threads > 256 || o.qd > 4096)
        return sl_errorf(e, SL_E_ARG, "bench: at most 256 threads and qd 4096");
    if (o.bs > ((uint64_t)1 << 30))
        return sl_errorf(e, SL_E_ARG, "bench: request size over 1 GiB");
#ifndef SL_HAVE_CUDA
    if (o.gpu)
        return sl_errorf(e, SL_E_UNSUPPORTED, "--gpu: this sluice was built without CUDA (rebuild where nvcc is found)");
#endif
    memset(r, 0, sizeof *r);
    r->o = o;
    worker *ws = calloc(o.threads, sizeof *ws);
    if (!ws)
        return sl_errorf(e, SL_E_NOMEM, "bench: out of memory");
    int rc = SL_OK;
    for (unsigned i = 0; i < o.threads && !rc; i++) {
        ws[i].o = &r->o;
        ws[i].tid = i;
        rc = worker_setup(&ws[i]);
        if (rc && e)
            *e = ws[i].err;
    }
    if (!rc) {
        r->direct = ws[0].direct;
        r->fixed_bufs = ws[0].fixed;
        snprintf(r->note, sizeof r->note, "%s", ws[0].note);
        rc = run_pass(ws, o.threads, STAGE_DISK, r, e);
    }
#ifdef SL_HAVE_CUDA
    if (!rc && o.gpu) {
        /* PCIe alone (one stream saturates the link), then disk and PCIe together */
        rc = sl_upload_h2d_gbps(ws[0].up, o.bs, o.seconds, &r->pcie_gbps, e);
        if (!rc) {
            sl_io_bench_result e2e = *r;
            rc = run_pass(ws, o.threads, STAGE_E2E, &e2e, e);
            r->e2e_gbps = e2e.gbps;
        }
    }
#endif
    for (unsigned i = 0; i < o.threads; i++)
        worker_free(&ws[i]);
    free(ws);
    return rc;
}
