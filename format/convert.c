/* The converter: Hugging Face checkpoint (or .sluice file) -> .sluice, streaming.
 *
 * Chunks are claimed in file order by `threads` workers (fetch each tensor from the weight source,
 * recode it when its target format differs, checksum, zstd). The calling thread assigns each
 * finished chunk its place in file order (sl_sluice_writer_reserve) and the worker that made it
 * writes it there, so writes run in parallel (one writer thread managed ~1.5 GB/s into tmpfs on
 * the H100 machine: bench/results/convert-*). At most 2 x threads chunks are in flight and their
 * estimated bytes stay under mem_budget (a chunk above it runs alone), so memory is bounded by the
 * largest chunks, not by the model: the real input is ~690 GB in 163 shards. */
#include "format/format.h"
#include "format/sluice_internal.h"
#include "quant/quant.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Rows recoded per step: fp8's 128-row scale blocks must not straddle a step; 128 rows of a
 * 7168-wide matrix is 3.7 MB of fp32 scratch per worker. */
#define SLAB_ROWS 128

void sl_convert_opts_default(sl_convert_opts *o)
{
    *o = (sl_convert_opts){.quant = -1, .expert_quant = -1, .zstd_level = 3, .min_saving = 0.02};
}

/* A slot's life: FREE -> BUSY (a worker builds chunk `chunk`) -> DONE (built, or failed with rc)
 * -> PLACED (the writer loop gave it `offset`; its worker writes it) -> FREE. */
enum { SLOT_FREE, SLOT_BUSY, SLOT_DONE, SLOT_PLACED };

typedef struct slot {
    int state;
    uint32_t chunk;
    uint64_t offset;
    int rc;
    sl_error err;
    sl_sluice_chunk ch;
    sl_sluice_tensor *t;      /* [plan.max_chunk_tensors] */
    void *stored;             /* ch.stored_size bytes to write, in a stored_cap-byte buffer */
    size_t stored_cap;
    uint64_t est;             /* bytes it was admitted with */
} slot;

typedef struct engine {
    const sl_plan *plan;
    sl_weight_source *src;
    const sl_convert_opts *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* any state change; CLOCK_MONOTONIC */
    uint32_t next_claim, next_write, window; /* next_write: chunks placed so far */
    uint64_t inflight, budget;
    slot *slots;              /* [window], chunk i in slots[i % window] */
    atomic_int abort;
    atomic_uint_least64_t src_bytes;
    int rc;                   /* the first worker error (building or writing a chunk) */
    sl_error err;
    sl_sluice_writer *w;
    sl_buf_pool *pool;        /* chunk-sized buffers passed from chunk to chunk */
    int threads;
    atomic_uint_least64_t ns_fetch, ns_recode, ns_checksum, ns_compress, ns_write; /* worker time */
} engine;

typedef struct scratch {      /* one worker's buffers */
    float *f32;               /* recode: fp32 slab, grown on demand */
    void *enc;                /* recode: encoded slab */
    size_t f32_cap, enc_cap;
    void **sb;                /* [max_chunk_tensors] the chunk's source tensors */
    size_t *snb;
    int *sfmt;
} scratch;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Bytes of the value plane (before the scales) of an encoded rows x cols matrix; the layouts are
 * quant.h's: every format is values then scales, scales in row-block order. */
static size_t value_plane(int fmt, int64_t rows, int64_t cols)
{
    switch (fmt) {
    case SL_WF_F32: return (size_t)(rows * cols * 4);
    case SL_WF_BF16: return (size_t)(rows * cols * 2);
    case SL_WF_FP8:
    case SL_WF_Q8: return (size_t)(rows * cols);
    case SL_WF_Q4: return (size_t)(rows * cdiv(cols, 2));
    }
    abort(); /* a format the plan cannot produce */
}

static int grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Rows [r_begin, r_end) of src (sfmt) -> dst (dfmt), rows x cols, through fp32 a slab of rows at
 * a time. r_begin is a multiple of SLAB_ROWS. */
static int recode_rows(engine *E, scratch *s, int sfmt, const void *src, int dfmt, void *dst, int64_t rows,
                       int64_t cols, int64_t r_begin, int64_t r_end)
{
    int64_t slab = rows < SLAB_ROWS ? rows : SLAB_ROWS;
    if (grow((void **)&s->f32, &s->f32_cap, (size_t)(slab * cols) * sizeof(float)) ||
        grow(&s->enc, &s->enc_cap, sl_wformat_bytes(dfmt, slab, cols)))
        return SL_E_NOMEM;
    size_t vals = value_plane(dfmt, rows, cols);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += slab) {
        if (atomic_load(&E->abort))
            return SL_E_IO;
        int64_t n = r_end - r0 < slab ? r_end - r0 : slab;
        sl_dequantize_rows(sfmt, src, rows, cols, r0, n, s->f32);
        sl_quantize(dfmt, s->f32, n, cols, s->enc);
        size_t vn = value_plane(dfmt, n, cols), sn = sl_wformat_bytes(dfmt, n, cols) - vn;
        size_t scales_before = sl_wformat_bytes(dfmt, r0, cols) - value_plane(dfmt, r0, cols);
        memcpy((char *)dst + value_plane(dfmt, r0, cols), s->enc, vn);
        memcpy((char *)dst + vals + scales_before, (char *)s->enc + vn, sn);
    }
    return 0;
}

typedef struct recode_part {
    engine *E;
    int sfmt, dfmt;
    const void *src;
    void *dst;
    int64_t rows, cols, r_begin, r_end;
    int rc;
} recode_part;

static void *recode_part_run(void *arg)
{
    recode_part *p = arg;
    scratch s = {0};
    p->rc = recode_rows(p->E, &s, p->sfmt, p->src, p->dfmt, p->dst, p->rows, p->cols, p->r_begin, p->r_end);
    free(s.f32);
    free(s.enc);
    return NULL;
}

/* Default of opts->parallel_recode: big tensors (a chunk holding one runs alone under the memory
 * budget, leaving the other workers idle) are recoded on all threads. */
#define PARALLEL_RECODE_WEIGHTS ((int64_t)64 << 20)

static int recode(engine *E, scratch *s, int sfmt, const void *src, int dfmt, void *dst, int64_t rows,
                  int64_t cols)
{
    int parts = E->threads < 64 ? E->threads : 64;
    int64_t big = E->o->parallel_recode > 0 ? E->o->parallel_recode : PARALLEL_RECODE_WEIGHTS;
    if (rows * cols < big || parts < 2 || rows < 2 * SLAB_ROWS)
        return recode_rows(E, s, sfmt, src, dfmt, dst, rows, cols, 0, rows);
    recode_part p[64];
    pthread_t tid[64];
    bool started[64] = {false};
    int64_t per = (rows + parts - 1) / parts;
    per = (per + SLAB_ROWS - 1) / SLAB_ROWS * SLAB_ROWS;
    for (int i = 0; i < parts; i++) {
        int64_t b = i * per, en = b + per < rows ? b + per : rows;
        p[i] = (recode_part){E, sfmt, dfmt, src, dst, rows, cols, b < rows ? b : rows, b < rows ? en : rows, 0};
        if (i > 0 && p[i].r_begin < p[i].r_end)
            started[i] = pthread_create(&tid[i], NULL, recode_part_run, &p[i]) == 0;
    }
    int rc = recode_rows(E, s, sfmt, src, dfmt, dst, rows, cols, p[0].r_begin, p[0].r_end);
    for (int i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else if (p[i].r_begin < p[i].r_end) /* no thread: do its part here */
            recode_part_run(&p[i]);
        if (rc == 0)
            rc = p[i].rc;
    }
    return rc;
}

static int target_format(const sl_convert_opts *o, int role, int sfmt)
{
    if (role == SL_ROLE_KEEP)
        return sfmt;
    int q = role == SL_ROLE_EXPERT && o->expert_quant >= 0 ? o->expert_quant : o->quant;
    return q >= 0 ? q : sfmt;
}

static uint64_t ns_since(double t0) { return (uint64_t)((sl_now() - t0) * 1e9); }

static void release_sources(engine *E, scratch *sc, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        sl_buf_pool_put(E->pool, sc->sb[k], sc->snb[k]);
        sc->sb[k] = NULL;
    }
}

/* Build chunk ci into slot s: fetch its tensors, lay them out at 64-aligned offsets (recoding
 * where the target format differs), checksum, compress. */
static int make_chunk(engine *E, scratch *sc, uint32_t ci, slot *s, sl_error *e)
{
    const sl_plan_chunk *pc = &E->plan->chunks[ci];
    const sl_convert_opts *o = E->o;
    s->ch = (sl_sluice_chunk){.kind = pc->kind, .layer = pc->layer, .expert = pc->expert};
    size_t end = 0;
    int rc = 0;
    uint32_t got = 0;
    for (; got < pc->n; got++) { /* pass 1: fetch, pick formats, place */
        const sl_plan_tensor *pt = &E->plan->tensors[pc->first + got];
        if (atomic_load(&E->abort)) {
            rc = sl_errorf(e, SL_E_IO, "%s: conversion stopped", pt->name);
            break;
        }
        double t0 = sl_now();
        rc = E->src->get(E->src, pt->name, pt->rows, pt->cols, &sc->sfmt[got], &sc->sb[got], &sc->snb[got], e);
        atomic_fetch_add(&E->ns_fetch, ns_since(t0));
        if (rc)
            break;
        atomic_fetch_add(&E->src_bytes, sc->snb[got]);
        int dfmt = target_format(o, pt->role, sc->sfmt[got]);
        size_t dnb = dfmt == sc->sfmt[got] ? sc->snb[got] : sl_wformat_bytes(dfmt, pt->rows, pt->cols);
        size_t off = (size_t)sl_align_up(end, SL_SLUICE_TENSOR_ALIGN);
        s->t[got] = (sl_sluice_tensor){.name = pt->name, .format = dfmt, .rows = pt->rows, .cols = pt->cols,
                                       .offset = off, .nbytes = dnb};
        end = off + dnb;
    }
    if (rc) {
        release_sources(E, sc, got);
        return rc;
    }
    char *buf;
    size_t cap;
    if (pc->n == 1 && s->t[0].format == sc->sfmt[0]) { /* one tensor kept as is: its buffer is the chunk */
        buf = sc->sb[0];
        cap = sc->snb[0];
        sc->sb[0] = NULL;
    } else if (!(buf = sl_buf_pool_get(E->pool, end, &cap))) {
        release_sources(E, sc, pc->n);
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for a %zu-byte chunk", E->plan->tensors[pc->first].name, end);
    } else {
        size_t prev = 0;
        double t0 = sl_now();
        for (uint32_t k = 0; k < pc->n && rc == 0; k++) { /* pass 2: copy or recode into place */
            const sl_sluice_tensor *t = &s->t[k];
            memset(buf + prev, 0, t->offset - prev);
            if (t->format == sc->sfmt[k])
                memcpy(buf + t->offset, sc->sb[k], t->nbytes);
            else if ((rc = recode(E, sc, sc->sfmt[k], sc->sb[k], t->format, buf + t->offset, t->rows, t->cols)))
                rc = rc == SL_E_NOMEM ? sl_errorf(e, rc, "%s: no memory to recode", t->name)
                                      : sl_errorf(e, rc, "%s: conversion stopped", t->name);
            prev = t->offset + t->nbytes;
            sl_buf_pool_put(E->pool, sc->sb[k], sc->snb[k]);
            sc->sb[k] = NULL;
        }
        atomic_fetch_add(&E->ns_recode, ns_since(t0));
    }
    release_sources(E, sc, pc->n);
    if (rc) {
        sl_buf_pool_put(E->pool, buf, cap);
        return rc;
    }
    s->ch.decoded_size = end;
    double t0 = sl_now();
    s->ch.checksum = sl_checksum(buf, end);
    atomic_fetch_add(&E->ns_checksum, ns_since(t0));
    s->ch.codec = SL_CODEC_RAW;
    s->ch.stored_size = end;
    s->ch.stored_checksum = s->ch.checksum;
    s->stored = buf;
    s->stored_cap = cap;
    if (o->zstd_level > 0 && end > 0) {
        size_t zcap, zn;
        void *z = sl_buf_pool_get(E->pool, sl_codec_bound(end), &zcap);
        sl_codec codec;
        t0 = sl_now();
        int zrc = z ? sl_codec_encode(buf, end, o->zstd_level, o->min_saving, z, zcap, &codec, &zn) : SL_E_NOMEM;
        atomic_fetch_add(&E->ns_compress, ns_since(t0));
        if (zrc != 0) {
            sl_buf_pool_put(E->pool, z, zcap);
            sl_buf_pool_put(E->pool, buf, cap);
            s->stored = NULL;
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory to compress %zu bytes",
                             E->plan->tensors[pc->first].name, end);
        }
        if (codec == SL_CODEC_ZSTD) {
            sl_buf_pool_put(E->pool, buf, cap);
            s->stored = z;
            s->stored_cap = zcap;
            s->ch.codec = SL_CODEC_ZSTD;
            s->ch.stored_size = zn;
            t0 = sl_now();
            s->ch.stored_checksum = sl_checksum(z, zn);
            atomic_fetch_add(&E->ns_checksum, ns_since(t0));
        } else {
            sl_buf_pool_put(E->pool, z, zcap);
        }
    }
    return 0;
}

static uint64_t estimate(const sl_plan_chunk *c)
{
    /* source copy + recoded chunk (or chunk + compressed copy), up to 2 bytes a weight each */
    return c->params * 4 + SL_SLUICE_ALIGN;
}

static void fail_locked(engine *E, int rc, const sl_error *err)
{
    if (E->rc == 0) {
        E->rc = rc;
        E->err = *err;
    }
}

static void *worker(void *arg)
{
    engine *E = arg;
    uint32_t nt = E->plan->max_chunk_tensors;
    scratch sc = {.sb = calloc(nt, sizeof(void *)), .snb = calloc(nt, sizeof(size_t)), .sfmt = calloc(nt, sizeof(int))};
    pthread_mutex_lock(&E->mu);
    for (;;) {
        uint32_t ci = E->next_claim;
        while (!atomic_load(&E->abort) && ci < E->plan->n_chunks &&
               (E->slots[ci % E->window].state != SLOT_FREE ||
                (E->inflight > 0 && E->inflight + estimate(&E->plan->chunks[ci]) > E->budget))) {
            pthread_cond_wait(&E->cv, &E->mu);
            ci = E->next_claim;
        }
        if (atomic_load(&E->abort) || ci >= E->plan->n_chunks)
            break;
        slot *s = &E->slots[ci % E->window];
        E->next_claim++;
        s->state = SLOT_BUSY;
        s->chunk = ci;
        s->est = estimate(&E->plan->chunks[ci]);
        E->inflight += s->est;
        pthread_mutex_unlock(&E->mu);

        sl_error err = {0};
        int rc = sc.sb && sc.snb && sc.sfmt ? make_chunk(E, &sc, ci, s, &err)
                                            : sl_errorf(&err, SL_E_NOMEM, "no memory for a worker");

        pthread_mutex_lock(&E->mu);
        s->rc = rc;
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&E->cv);
        if (rc) { /* the slot stays DONE: the writer loop stops at the error */
            fail_locked(E, rc, &err);
            continue;
        }
        while (s->state == SLOT_DONE && !atomic_load(&E->abort))
            pthread_cond_wait(&E->cv, &E->mu);
        if (s->state == SLOT_PLACED) {
            pthread_mutex_unlock(&E->mu);
            double t0 = sl_now();
            rc = sl_sluice_writer_write(E->w, s->offset, s->stored, s->ch.stored_size, &err);
            atomic_fetch_add(&E->ns_write, ns_since(t0));
            pthread_mutex_lock(&E->mu);
            if (rc)
                fail_locked(E, rc, &err);
        }
        sl_buf_pool_put(E->pool, s->stored, s->stored_cap);
        s->stored = NULL;
        s->state = SLOT_FREE;
        E->inflight -= s->est;
        pthread_cond_broadcast(&E->cv);
    }
    pthread_mutex_unlock(&E->mu);
    free(sc.f32);
    free(sc.enc);
    free(sc.sb);
    free(sc.snb);
    free(sc.sfmt);
    return NULL;
}

static void report(engine *E, sl_sluice_writer *w, double t0, uint64_t params_done)
{
    if (!E->o->progress)
        return;
    sl_convert_progress p = {
        .params_done = params_done,
        .params_total = E->plan->params,
        .src_bytes = atomic_load(&E->src_bytes),
        .out_bytes = sl_sluice_writer_bytes(w),
        .chunks_done = E->next_write,
        .chunks_total = E->plan->n_chunks,
        .seconds = sl_now() - t0,
    };
    E->o->progress(E->o->progress_ctx, &p);
}

static bool cancelled(const sl_convert_opts *o) { return o->cancel && *o->cancel; }

/* Wait on the engine's condition for up to 100 ms (so cancel and progress are polled), counting
 * the time as the writer loop's waiting. Called with E->mu held. */
static void wait_a_little(engine *E, sl_sluice_writer *w, sl_convert_stats *st, double t0, uint64_t params_done)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    double tw = sl_now();
    pthread_cond_timedwait(&E->cv, &E->mu, &ts);
    st->t_wait += sl_now() - tw;
    pthread_mutex_unlock(&E->mu);
    report(E, w, t0, params_done);
    pthread_mutex_lock(&E->mu);
}

/* The writer loop: place chunk after chunk in file order as workers finish them (their workers
 * write them), then wait for the last writes. Returns the first error: a worker's (reported as
 * soon as it happens, not after hours of other chunks), the writer's, or a cancel. */
static int place_all(engine *E, sl_sluice_writer *w, const char *out, sl_convert_stats *st, double t0,
                     sl_error *e)
{
    uint64_t params_done = 0;
    int rc = 0;
    pthread_mutex_lock(&E->mu);
    for (uint32_t ci = 0; ci <= E->plan->n_chunks; ci++) {
        slot *s = ci < E->plan->n_chunks ? &E->slots[ci % E->window] : NULL;
        for (;;) {
            if (E->rc) {
                if (e)
                    *e = E->err;
                rc = E->rc;
                goto out;
            }
            if (cancelled(E->o)) {
                rc = sl_errorf(e, SL_E_IO, "%s: interrupted", out);
                goto out;
            }
            if (s ? (s->state == SLOT_DONE && s->chunk == ci) : E->inflight == 0)
                break; /* chunk ci is built; or, past the last one, every write is done */
            wait_a_little(E, w, st, t0, params_done);
        }
        if (!s)
            break;
        const sl_plan_chunk *pc = &E->plan->chunks[ci];
        if ((rc = sl_sluice_writer_reserve(w, &s->ch, s->t, pc->n, &s->offset, e)))
            goto out;
        s->state = SLOT_PLACED;
        E->next_write++;
        pthread_cond_broadcast(&E->cv);
        st->chunks[pc->kind]++;
        st->zstd_chunks[pc->kind] += s->ch.codec == SL_CODEC_ZSTD;
        st->decoded[pc->kind] += s->ch.decoded_size;
        st->stored[pc->kind] += s->ch.stored_size;
        params_done += pc->params;
        pthread_mutex_unlock(&E->mu);
        report(E, w, t0, params_done);
        pthread_mutex_lock(&E->mu);
        if (E->o->fail_after_chunks && ci + 1 == E->o->fail_after_chunks) {
            rc = sl_errorf(e, SL_E_IO, "%s: stopped after %u chunks (fail_after_chunks test hook)", out, ci + 1);
            goto out;
        }
    }
out:
    pthread_mutex_unlock(&E->mu);
    return rc;
}

static int run_engine(engine *E, sl_sluice_writer *w, const char *out, sl_convert_stats *st, sl_error *e)
{
    const sl_convert_opts *o = E->o;
    int threads = o->threads;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    E->threads = threads;
    E->window = 2 * (uint32_t)threads;
    E->budget = o->mem_budget ? o->mem_budget : (uint64_t)4 << 30;
    E->slots = calloc(E->window, sizeof *E->slots);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    /* Buffers up to 256 MB (an fp8 expert is 44 MB, a layer core ~250 MB) are passed on; the idle
     * ones held stay under a quarter of the budget, so the total stays near 1.25 x budget. */
    E->pool = sl_buf_pool_create(E->budget / 4, (size_t)256 << 20);
    int rc = 0;
    if (!E->slots || !tid || !E->pool)
        rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory", out);
    for (uint32_t i = 0; rc == 0 && i < E->window; i++)
        if (!(E->slots[i].t = calloc(E->plan->max_chunk_tensors, sizeof(sl_sluice_tensor))))
            rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory", out);
    pthread_mutex_init(&E->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&E->cv, &ca);
    pthread_condattr_destroy(&ca);
    int started = 0;
    for (; rc == 0 && started < threads; started++)
        if (pthread_create(&tid[started], NULL, worker, E) != 0) {
            if (started == 0)
                rc = sl_errorf(e, SL_E_NOMEM, "%s: cannot start a worker thread", out);
            break;
        }
    double t0 = sl_now();
    E->w = w;
    if (rc == 0)
        rc = place_all(E, w, out, st, t0, e);
    if (rc) {
        /* Remove the partial file before waiting for the workers: a second signal, or a kill,
         * during a long last chunk must not leave it behind. (Workers may still write to it.) */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", out);
        unlink(tmp);
    }
    atomic_store(&E->abort, 1);
    pthread_mutex_lock(&E->mu);
    pthread_cond_broadcast(&E->cv);
    pthread_mutex_unlock(&E->mu);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    if (rc == 0)
        rc = sl_sluice_writer_finish(w, e);
    else
        sl_sluice_writer_abort(w);
    st->seconds = sl_now() - t0;
    st->src_bytes = atomic_load(&E->src_bytes);
    st->t_fetch = atomic_load(&E->ns_fetch) / 1e9;
    st->t_recode = atomic_load(&E->ns_recode) / 1e9;
    st->t_checksum = atomic_load(&E->ns_checksum) / 1e9;
    st->t_compress = atomic_load(&E->ns_compress) / 1e9;
    st->t_write = atomic_load(&E->ns_write) / 1e9;
    for (uint32_t i = 0; E->slots && i < E->window; i++) {
        free(E->slots[i].stored);
        free(E->slots[i].t);
    }
    free(E->slots);
    free(tid);
    sl_buf_pool_destroy(E->pool);
    pthread_cond_destroy(&E->cv);
    pthread_mutex_destroy(&E->mu);
    return rc;
}

int sl_convert(const char *src, const char *out, const sl_convert_opts *o, sl_convert_stats *stats,
               sl_error *e)
{
    sl_convert_stats st = {0};
    struct stat sb;
    if (stat(src, &sb) < 0)
        return sl_errorf(e, SL_E_IO, "%s: %s", src, strerror(errno));
    bool is_dir = S_ISDIR(sb.st_mode);
    if ((o->quant >= 0 && !sl_wformat_get(o->quant)) ||
        (o->expert_quant >= 0 && !sl_wformat_get(o->expert_quant)))
        return sl_errorf(e, SL_E_ARG, "%s: unknown weight format %d", out,
                         o->quant >= 0 && !sl_wformat_get(o->quant) ? o->quant : o->expert_quant);
    if (o->zstd_level < 0 || o->zstd_level > 22)
        return sl_errorf(e, SL_E_ARG, "%s: zstd level %d is not in 0..22", out, o->zstd_level);

    char *meta = NULL;
    size_t meta_len = 0, tok_off = 0, tok_len = 0;
    sl_weight_source *source = NULL;
    sl_sluice_writer *w = NULL;
    sl_plan plan = {0};
    int rc = sl_convert_metadata(src, is_dir, o, &meta, &meta_len, &tok_off, &tok_len, e);
    if (rc == 0)
        rc = is_dir ? sl_hf_source_open(src, &source, e) : sl_sluice_source_open(src, &source, e);
    if (rc == 0)
        rc = sl_plan_build(source->config, &plan, e);
    if (rc == 0)
        rc = sl_sluice_writer_create(out, meta, meta_len, tok_off, tok_len, plan.n_chunks, plan.n_tensors,
                                     plan.names_bytes, &w, e);
    free(meta);
    if (rc == 0) {
        engine E = {.plan = &plan, .src = source, .o = o};
        rc = run_engine(&E, w, out, &st, e); /* finishes or aborts w */
        st.params = plan.params;
        if (rc == 0 && stat(out, &sb) == 0)
            st.file_bytes = (uint64_t)sb.st_size;
    }
    if (source)
        source->close(source);
    sl_plan_free(&plan);
    if (stats)
        *stats = st;
    return rc;
}
