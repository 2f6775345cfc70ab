/* The converter: Hugging Face checkpoint (or .sluice file) -> .sluice, streaming.
 *
 * Chunks are produced in file order by `threads` workers (fetch each tensor from the weight
 * source, recode it when its target format differs, checksum, zstd) and appended by the calling
 * thread, the only writer, as they complete in order. At most 2 x threads chunks are in flight
 * and their estimated bytes stay under mem_budget (a chunk above it runs alone), so memory is
 * bounded by the largest chunks, not by the model: the real input is ~690 GB in 163 shards. */
#include "format/format.h"
#include "format/sluice_internal.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
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

enum { SLOT_FREE, SLOT_BUSY, SLOT_DONE };

typedef struct slot {
    int state;
    int rc;
    sl_error err;
    sl_sluice_chunk ch;
    sl_sluice_tensor *t;      /* [plan.max_chunk_tensors] */
    void *stored;             /* ch.stored_size bytes to write */
    uint64_t est;             /* bytes it was admitted with */
} slot;

typedef struct engine {
    const sl_plan *plan;
    sl_weight_source *src;
    const sl_convert_opts *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* any state change; CLOCK_MONOTONIC */
    uint32_t next_claim, next_write, window;
    uint64_t inflight, budget;
    slot *slots;              /* [window], chunk i in slots[i % window] */
    atomic_int abort;
    atomic_uint_least64_t src_bytes;
    int failed;               /* a worker failed: stop early, the error is in its slot */
} engine;

typedef struct scratch {      /* one worker's recode buffers, grown on demand */
    float *f32;
    void *enc;
    size_t f32_cap, enc_cap;
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

/* src (sfmt) -> dst (dfmt), rows x cols, through fp32 a slab of rows at a time. */
static int recode(engine *E, scratch *s, int sfmt, const void *src, int dfmt, void *dst, int64_t rows,
                  int64_t cols)
{
    int64_t slab = rows < SLAB_ROWS ? rows : SLAB_ROWS;
    if (grow((void **)&s->f32, &s->f32_cap, (size_t)(slab * cols) * sizeof(float)) ||
        grow(&s->enc, &s->enc_cap, sl_wformat_bytes(dfmt, slab, cols)))
        return SL_E_NOMEM;
    size_t vals = value_plane(dfmt, rows, cols);
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
        if (atomic_load(&E->abort))
            return SL_E_IO;
        int64_t n = rows - r0 < slab ? rows - r0 : slab;
        sl_dequantize_rows(sfmt, src, rows, cols, r0, n, s->f32);
        sl_quantize(dfmt, s->f32, n, cols, s->enc);
        size_t vn = value_plane(dfmt, n, cols), sn = sl_wformat_bytes(dfmt, n, cols) - vn;
        size_t scales_before = sl_wformat_bytes(dfmt, r0, cols) - value_plane(dfmt, r0, cols);
        memcpy((char *)dst + value_plane(dfmt, r0, cols), s->enc, vn);
        memcpy((char *)dst + vals + scales_before, (char *)s->enc + vn, sn);
    }
    return 0;
}

static int target_format(const sl_convert_opts *o, int role, int sfmt)
{
    if (role == SL_ROLE_KEEP)
        return sfmt;
    int q = role == SL_ROLE_EXPERT && o->expert_quant >= 0 ? o->expert_quant : o->quant;
    return q >= 0 ? q : sfmt;
}

/* Build chunk ci into slot s: its tensors at 64-aligned offsets, checksum, codec. */
static int make_chunk(engine *E, scratch *sc, uint32_t ci, slot *s, sl_error *e)
{
    const sl_plan_chunk *pc = &E->plan->chunks[ci];
    const sl_convert_opts *o = E->o;
    char *buf = NULL;
    size_t cap = 0, end = 0;
    int rc = 0;
    s->ch = (sl_sluice_chunk){.kind = pc->kind, .layer = pc->layer, .expert = pc->expert};
    for (uint32_t k = 0; k < pc->n && rc == 0; k++) {
        const sl_plan_tensor *pt = &E->plan->tensors[pc->first + k];
        if (atomic_load(&E->abort)) {
            rc = sl_errorf(e, SL_E_IO, "%s: conversion stopped", pt->name);
            break;
        }
        void *sb;
        size_t snb;
        int sfmt;
        if ((rc = E->src->get(E->src, pt->name, pt->rows, pt->cols, &sfmt, &sb, &snb, e)))
            break;
        atomic_fetch_add(&E->src_bytes, snb);
        int dfmt = target_format(o, pt->role, sfmt);
        size_t dnb = dfmt == sfmt ? snb : sl_wformat_bytes(dfmt, pt->rows, pt->cols);
        size_t off = (size_t)sl_align_up(end, SL_SLUICE_TENSOR_ALIGN);
        if (k == 0 && dfmt == sfmt) { /* the chunk starts as this tensor's buffer: no copy */
            buf = sb;
            cap = snb;
        } else if (grow((void **)&buf, &cap, off + dnb)) {
            free(sb);
            rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory for %zu bytes", pt->name, off + dnb);
            break;
        } else {
            memset(buf + end, 0, off - end);
            if (dfmt == sfmt) {
                memcpy(buf + off, sb, dnb);
            } else if ((rc = recode(E, sc, sfmt, sb, dfmt, buf + off, pt->rows, pt->cols))) {
                rc = rc == SL_E_NOMEM ? sl_errorf(e, rc, "%s: no memory to recode", pt->name)
                                      : sl_errorf(e, rc, "%s: conversion stopped", pt->name);
            }
            free(sb);
        }
        s->t[k] = (sl_sluice_tensor){.name = pt->name, .format = dfmt, .rows = pt->rows, .cols = pt->cols,
                                     .offset = off, .nbytes = dnb};
        end = off + dnb;
    }
    if (rc) {
        free(buf);
        return rc;
    }
    s->ch.decoded_size = end;
    s->ch.checksum = sl_checksum(buf, end);
    s->ch.codec = SL_CODEC_RAW;
    s->ch.stored_size = end;
    s->stored = buf;
    if (o->zstd_level > 0 && end > 0) {
        size_t zcap = sl_codec_bound(end), zn;
        void *z = malloc(zcap);
        sl_codec codec;
        if (!z || sl_codec_encode(buf, end, o->zstd_level, o->min_saving, z, zcap, &codec, &zn) != 0) {
            free(z);
            free(buf);
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory to compress %zu bytes",
                             E->plan->tensors[pc->first].name, end);
        }
        if (codec == SL_CODEC_ZSTD) {
            free(buf);
            s->stored = z;
            s->ch.codec = SL_CODEC_ZSTD;
            s->ch.stored_size = zn;
        } else {
            free(z);
        }
    }
    return 0;
}

static uint64_t estimate(const sl_plan_chunk *c)
{
    /* source copy + recoded chunk (or chunk + compressed copy), up to 2 bytes a weight each */
    return c->params * 4 + SL_SLUICE_ALIGN;
}

static void *worker(void *arg)
{
    engine *E = arg;
    scratch sc = {0};
    pthread_mutex_lock(&E->mu);
    for (;;) {
        uint32_t ci = E->next_claim;
        while (!atomic_load(&E->abort) && ci < E->plan->n_chunks &&
               (ci - E->next_write >= E->window ||
                (E->inflight > 0 && E->inflight + estimate(&E->plan->chunks[ci]) > E->budget))) {
            pthread_cond_wait(&E->cv, &E->mu);
            ci = E->next_claim;
        }
        if (atomic_load(&E->abort) || ci >= E->plan->n_chunks)
            break;
        slot *s = &E->slots[ci % E->window];
        E->next_claim++;
        s->state = SLOT_BUSY;
        s->est = estimate(&E->plan->chunks[ci]);
        E->inflight += s->est;
        pthread_mutex_unlock(&E->mu);

        sl_error err = {0};
        int rc = make_chunk(E, &sc, ci, s, &err);

        pthread_mutex_lock(&E->mu);
        s->rc = rc;
        s->err = err;
        s->state = SLOT_DONE;
        E->failed |= rc != 0;
        pthread_cond_broadcast(&E->cv);
    }
    pthread_mutex_unlock(&E->mu);
    free(sc.f32);
    free(sc.enc);
    return NULL;
}

static char *read_text(const char *path, size_t *len, int *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *err = errno;
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 > cap) {
            char *g = realloc(buf, cap = (cap ? cap * 2 : 1 << 20));
            if (!g) {
                *err = ENOMEM;
                goto fail;
            }
            buf = g;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, fp);
        n += k;
        if (k == 0)
            break;
    }
    if (ferror(fp)) {
        *err = EIO;
        goto fail;
    }
    fclose(fp);
    buf[n] = 0;
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(fp);
    return NULL;
}

/* The metadata JSON: our keys, then "config" (config.json verbatim) and "tokenizer" (verbatim,
 * last, so its span is easy to state in the header). */
static int build_metadata(const char *src, const char *cfg, size_t cfg_len, const char *tok,
                          size_t tok_len, const sl_convert_opts *o, char **out, size_t *out_len,
                          size_t *tok_off, sl_error *e)
{
    cJSON *m = cJSON_CreateObject(), *q = cJSON_CreateObject();
    const sl_wformat_info *dq = o->quant >= 0 ? sl_wformat_get(o->quant) : NULL;
    const sl_wformat_info *eq = o->expert_quant >= 0 ? sl_wformat_get(o->expert_quant) : dq;
    char *head = NULL;
    if (m && q) {
        cJSON_AddStringToObject(m, "format", "sluice");
        cJSON_AddNumberToObject(m, "version", SL_SLUICE_VERSION);
        cJSON_AddStringToObject(m, "converter", SL_SLUICE_CONVERTER);
        cJSON_AddStringToObject(m, "source", src);
        cJSON_AddStringToObject(q, "default", dq ? dq->name : "source");
        cJSON_AddStringToObject(q, "experts", eq ? eq->name : "source");
        cJSON_AddStringToObject(q, "keep", "norms, router weight and bias keep the source format");
        cJSON_AddNumberToObject(q, "zstd_level", o->zstd_level);
        cJSON_AddNumberToObject(q, "min_saving", o->min_saving);
        cJSON_AddItemToObject(m, "quant", q);
        q = NULL;
        head = cJSON_PrintUnformatted(m);
    }
    cJSON_Delete(m);
    cJSON_Delete(q);
    if (!head)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for the metadata", src);
    size_t hl = strlen(head) - 1; /* without the closing brace */
    size_t cap = hl + cfg_len + tok_len + 64;
    char *s = malloc(cap);
    if (!s) {
        free(head);
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for the metadata", src);
    }
    size_t k = 0;
    memcpy(s, head, hl);
    k = hl;
    free(head);
    k += (size_t)sprintf(s + k, ",\"config\":");
    memcpy(s + k, cfg, cfg_len);
    k += cfg_len;
    *tok_off = 0;
    if (tok) {
        k += (size_t)sprintf(s + k, ",\"tokenizer\":");
        *tok_off = k;
        memcpy(s + k, tok, tok_len);
        k += tok_len;
    }
    s[k++] = '}';
    s[k] = 0;
    *out = s;
    *out_len = k;
    return 0;
}

/* config.json (verbatim) and tokenizer.json (verbatim or NULL) of SRC. */
static int source_texts(const char *src, bool is_dir, char **cfg, size_t *cfg_len, char **tok,
                        size_t *tok_len, sl_error *e)
{
    char path[4200];
    int err = 0;
    *tok = NULL;
    *tok_len = 0;
    if (!is_dir) { /* a .sluice file: its embedded texts */
        sl_sluice *f;
        int rc = sl_sluice_open(src, &f, e);
        if (rc)
            return rc;
        size_t ml;
        const char *meta = sl_sluice_metadata(f, &ml);
        cJSON *j = cJSON_ParseWithLength(meta, ml);
        *cfg = j ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "config")) : NULL;
        cJSON_Delete(j);
        const char *t = sl_sluice_tokenizer(f, tok_len);
        if (t)
            *tok = strdup(t);
        sl_sluice_close(f);
        if (!*cfg || (t && !*tok)) {
            free(*cfg);
            free(*tok);
            *cfg = *tok = NULL;
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory for its metadata", src);
        }
        *cfg_len = strlen(*cfg);
        return 0;
    }
    snprintf(path, sizeof path, "%s/config.json", src);
    if (!(*cfg = read_text(path, cfg_len, &err)))
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(err));
    snprintf(path, sizeof path, "%s/tokenizer.json", src);
    if (!(*tok = read_text(path, tok_len, &err)) && err != ENOENT) {
        free(*cfg);
        *cfg = NULL;
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(err));
    }
    cJSON *j = *tok ? cJSON_ParseWithLength(*tok, *tok_len) : NULL;
    if (*tok && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        free(*cfg);
        free(*tok);
        *cfg = *tok = NULL;
        return sl_errorf(e, SL_E_FORMAT, "%s: not a JSON object", path);
    }
    cJSON_Delete(j);
    return 0;
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

/* The writer loop: chunk after chunk in file order, as workers finish them. */
static int write_all(engine *E, sl_sluice_writer *w, const char *out, sl_convert_stats *st, double t0,
                     sl_error *e)
{
    uint64_t params_done = 0;
    for (uint32_t ci = 0; ci < E->plan->n_chunks; ci++) {
        slot *s = &E->slots[ci % E->window];
        pthread_mutex_lock(&E->mu);
        while (s->state != SLOT_DONE) {
            if (cancelled(E->o)) {
                pthread_mutex_unlock(&E->mu);
                return sl_errorf(e, SL_E_IO, "%s: interrupted", out);
            }
            if (E->failed) { /* report the first failed chunk now, not after hours of others */
                for (uint32_t j = ci; j < E->next_claim; j++) {
                    slot *f = &E->slots[j % E->window];
                    if (f->state == SLOT_DONE && f->rc) {
                        int rc = f->rc;
                        if (e)
                            *e = f->err;
                        pthread_mutex_unlock(&E->mu);
                        return rc;
                    }
                }
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&E->cv, &E->mu, &ts);
            pthread_mutex_unlock(&E->mu);
            report(E, w, t0, params_done);
            pthread_mutex_lock(&E->mu);
        }
        pthread_mutex_unlock(&E->mu);
        if (s->rc) {
            if (e)
                *e = s->err;
            return s->rc;
        }
        const sl_plan_chunk *pc = &E->plan->chunks[ci];
        int rc = sl_sluice_writer_add(w, &s->ch, s->t, pc->n, s->stored, e);
        free(s->stored);
        s->stored = NULL;
        if (rc)
            return rc;
        st->chunks[pc->kind]++;
        st->zstd_chunks[pc->kind] += s->ch.codec == SL_CODEC_ZSTD;
        st->decoded[pc->kind] += s->ch.decoded_size;
        st->stored[pc->kind] += s->ch.stored_size;
        params_done += pc->params;
        pthread_mutex_lock(&E->mu);
        s->state = SLOT_FREE;
        E->inflight -= s->est;
        E->next_write++;
        pthread_cond_broadcast(&E->cv);
        pthread_mutex_unlock(&E->mu);
        report(E, w, t0, params_done);
        if (E->o->fail_after_chunks && ci + 1 == E->o->fail_after_chunks)
            return sl_errorf(e, SL_E_IO, "%s: stopped after %u chunks (fail_after_chunks test hook)", out,
                             ci + 1);
        if (cancelled(E->o))
            return sl_errorf(e, SL_E_IO, "%s: interrupted", out);
    }
    return 0;
}

static int run_engine(engine *E, sl_sluice_writer *w, const char *out, sl_convert_stats *st, sl_error *e)
{
    const sl_convert_opts *o = E->o;
    int threads = o->threads;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    E->window = 2 * (uint32_t)threads;
    E->budget = o->mem_budget ? o->mem_budget : (uint64_t)4 << 30;
    E->slots = calloc(E->window, sizeof *E->slots);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    int rc = 0;
    if (!E->slots || !tid)
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
    if (rc == 0)
        rc = write_all(E, w, out, st, t0, e);
    if (rc) {
        /* Remove the partial file before waiting for the workers: a second signal, or a kill,
         * during a long last chunk must not leave it behind. */
        sl_sluice_writer_abort(w);
        w = NULL;
    }
    atomic_store(&E->abort, 1);
    pthread_mutex_lock(&E->mu);
    pthread_cond_broadcast(&E->cv);
    pthread_mutex_unlock(&E->mu);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    if (rc == 0)
        rc = sl_sluice_writer_finish(w, e);
    st->seconds = sl_now() - t0;
    st->src_bytes = atomic_load(&E->src_bytes);
    for (uint32_t i = 0; E->slots && i < E->window; i++) {
        free(E->slots[i].stored);
        free(E->slots[i].t);
    }
    free(E->slots);
    free(tid);
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

    char *cfg = NULL, *tok = NULL, *meta = NULL;
    size_t cfg_len = 0, tok_len = 0, meta_len = 0, tok_off = 0;
    sl_weight_source *source = NULL;
    sl_sluice_writer *w = NULL;
    sl_plan plan = {0};
    int rc = source_texts(src, is_dir, &cfg, &cfg_len, &tok, &tok_len, e);
    if (rc == 0)
        rc = is_dir ? sl_hf_source_open(src, &source, e) : sl_sluice_source_open(src, &source, e);
    if (rc == 0)
        rc = sl_plan_build(source->config, &plan, e);
    if (rc == 0)
        rc = build_metadata(src, cfg, cfg_len, tok, tok_len, o, &meta, &meta_len, &tok_off, e);
    size_t tok_span = tok ? tok_len : 0;
    free(cfg);
    free(tok);
    if (rc == 0)
        rc = sl_sluice_writer_create(out, meta, meta_len, tok_off, tok_span, plan.n_chunks,
                                     plan.n_tensors, plan.names_bytes, &w, e);
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
