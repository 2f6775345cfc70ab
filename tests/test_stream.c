/* The streaming engine on the CPU backend: with budgets so small that every layer evicts, the
 * logits and greedy ids equal the all-resident run; counters show the evictions and re-reads;
 * a corrupt chunk or a file that shrinks mid-run stops the run with an error naming the chunk. */
#include "cpu/cpu.h"
#include "format/format.h"
#include "model/model.h"
#include "quant/quant.h"
#include "stream/stream.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct strm_run {
    int ids[32];
    float *logits; /* (n_prompt + n_gen - 1, vocab): prefill rows then decode rows */
    int vocab, rows;
} strm_run;

static const int32_t strm_prompt[] = {5, 77, 301, 12, 190, 44, 9};
enum { STRM_NP = 7, STRM_NG = 12 };

static char strm_dir[64];

static void strm_convert(const char *fixture, char *out, size_t n)
{
    if (!strm_dir[0]) {
        strcpy(strm_dir, "/tmp/sluice-stream-XXXXXX");
        cr_assert(mkdtemp(strm_dir));
    }
    snprintf(out, n, "%s/%s.sluice", strm_dir, fixture);
    if (access(out, F_OK) == 0)
        return;
    char src[256];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    sl_convert_opts o;
    sl_convert_opts_default(&o);
    o.threads = 2;
    sl_error e = {0};
    cr_assert_eq(sl_convert(src, out, &o, NULL, &e), 0, "convert: %s", e.msg);
}

/* Prefill the prompt, then greedy-decode through the cache, recording every row of logits. */
static int strm_generate(sl_model *m, strm_run *r, sl_error *e)
{
    const sl_config *c = sl_model_config(m);
    r->vocab = c->vocab_size;
    r->rows = STRM_NP + STRM_NG - 1;
    r->logits = malloc((size_t)r->rows * r->vocab * sizeof(float));
    sl_kv_cache kv;
    int rc = sl_kv_cache_create(m, 64, &kv, e);
    if (rc == 0)
        rc = sl_model_forward(m, &kv, strm_prompt, STRM_NP, true, r->logits, e);
    for (int i = 0; rc == 0 && i < STRM_NG; i++) {
        const float *row = r->logits + (size_t)(STRM_NP - 1 + i) * r->vocab;
        int best = 0;
        for (int v = 1; v < r->vocab; v++)
            if (row[v] > row[best])
                best = v;
        r->ids[i] = best;
        if (i + 1 < STRM_NG) {
            int32_t t = best;
            rc = sl_model_forward(m, &kv, &t, 1, false, r->logits + (size_t)(STRM_NP + i) * r->vocab, e);
        }
    }
    sl_kv_cache_destroy(m, &kv);
    return rc;
}

static double strm_rel(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

/* ---- a CPU backend with deferred uploads --------------------------------------------------
 * The overlap ops as a GPU has them, with the copy deferred to the last moment the ordering
 * rules allow: upload_async only notes the copy; it happens when compute that waited for its
 * "ready" event runs (the next op that reads weights) or when the host asks for the event blocking, and a
 * non-blocking query says "pending" until then. So a stream that hands a host-cache slot back
 * before its copy ran (a worker then overwrites it), or lets compute read a slot without waiting
 * for its copy, computes on the wrong bytes and the logits differ from the resident run. */
typedef struct dfr_event {
    bool pending, waited;
    void *dst;
    const void *src;
    size_t bytes;
} dfr_event;

static struct {
    sl_backend_ops ops;
    sl_backend_ops cpu; /* the wrapped backend's own ops */
    pthread_mutex_t mu;
    dfr_event *ev[256];
    int n_ev, created, destroyed, pins, unpins, copies, pending_answers;
} dfr = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void dfr_run(dfr_event *ev) /* under dfr.mu */
{
    if (ev->pending) {
        memcpy(ev->dst, ev->src, ev->bytes);
        ev->pending = false;
        dfr.copies++;
    }
}

static int dfr_pin(sl_backend *b, void *p, size_t n, sl_error *e) { dfr.pins++; return 0; }
static void dfr_unpin(sl_backend *b, void *p) { dfr.unpins++; }

static int dfr_event_create(sl_backend *b, sl_event **out, sl_error *e)
{
    dfr_event *ev = calloc(1, sizeof *ev);
    cr_assert(ev && dfr.n_ev < 256, "more events than the test expects");
    pthread_mutex_lock(&dfr.mu);
    dfr.ev[dfr.n_ev++] = ev;
    dfr.created++;
    pthread_mutex_unlock(&dfr.mu);
    *out = (sl_event *)ev;
    return 0;
}

static void dfr_event_destroy(sl_backend *b, sl_event *ev)
{
    pthread_mutex_lock(&dfr.mu);
    cr_expect(!((dfr_event *)ev)->pending, "an event was destroyed with its copy still pending");
    for (int i = 0; i < dfr.n_ev; i++)
        if (dfr.ev[i] == (dfr_event *)ev)
            dfr.ev[i] = dfr.ev[--dfr.n_ev];
    dfr.destroyed++;
    pthread_mutex_unlock(&dfr.mu);
    free(ev);
}

static int dfr_upload_async(sl_backend *b, void *dst, const void *src, size_t bytes, sl_event *after,
                            sl_event *ready, sl_error *e)
{
    pthread_mutex_lock(&dfr.mu);
    /* one copy stream: an earlier copy into the same slot runs first */
    for (int i = 0; i < dfr.n_ev; i++)
        if (dfr.ev[i]->pending && dfr.ev[i]->dst == dst)
            dfr_run(dfr.ev[i]);
    *(dfr_event *)ready = (dfr_event){.pending = true, .dst = dst, .src = src, .bytes = bytes};
    pthread_mutex_unlock(&dfr.mu);
    return 0;
}

static int dfr_compute_wait(sl_backend *b, sl_event *ev, sl_error *e)
{
    pthread_mutex_lock(&dfr.mu);
    ((dfr_event *)ev)->waited = true;
    pthread_mutex_unlock(&dfr.mu);
    return 0;
}

static int dfr_compute_record(sl_backend *b, sl_event *ev, sl_error *e) { return 0; }

static int dfr_event_done(sl_backend *b, sl_event *ev, bool block, sl_error *e)
{
    pthread_mutex_lock(&dfr.mu);
    dfr_event *d = (dfr_event *)ev;
    if (block)
        dfr_run(d);
    else if (d->pending)
        dfr.pending_answers++;
    int done = !d->pending;
    pthread_mutex_unlock(&dfr.mu);
    return done;
}

/* compute that waited for copies runs after them: every op that reads weights flushes first */
static void dfr_flush(void)
{
    pthread_mutex_lock(&dfr.mu);
    for (int i = 0; i < dfr.n_ev; i++)
        if (dfr.ev[i]->waited) {
            dfr_run(dfr.ev[i]);
            dfr.ev[i]->waited = false;
        }
    pthread_mutex_unlock(&dfr.mu);
}

static void dfr_matmul(sl_backend *b, float *out, const float *x, const sl_weight *w, int n)
{
    dfr_flush();
    dfr.cpu.matmul(b, out, x, w, n);
}

static void dfr_rmsnorm(sl_backend *b, float *out, int os, const float *x, int xs, const float *w,
                        int n, int dim, float eps)
{
    dfr_flush();
    dfr.cpu.rmsnorm(b, out, os, x, xs, w, n, dim, eps);
}

static void dfr_mla(sl_backend *b, float *out, const float *q, const float *latent, const float *krope,
                    const sl_weight *kv_b, int n, int pos0, const sl_mla_dims *d, bool absorbed,
                    float *scratch)
{
    dfr_flush();
    dfr.cpu.mla_attention(b, out, q, latent, krope, kv_b, n, pos0, d, absorbed, scratch);
}

static void dfr_route(sl_backend *b, int32_t *idx, float *wts, const float *logits, const float *bias,
                      int n, int n_experts, int n_group, int topk_group, int top_k, bool norm, float scale)
{
    dfr_flush();
    dfr.cpu.moe_route(b, idx, wts, logits, bias, n, n_experts, n_group, topk_group, top_k, norm, scale);
}

static void dfr_wrap(sl_backend *b)
{
    dfr.ops = *b->ops;
    dfr.cpu = *b->ops;
    dfr.ops.matmul = dfr_matmul;
    dfr.ops.rmsnorm = dfr_rmsnorm;
    dfr.ops.mla_attention = dfr_mla;
    dfr.ops.moe_route = dfr_route;
    dfr.ops.pin_host = dfr_pin;
    dfr.ops.unpin_host = dfr_unpin;
    dfr.ops.event_create = dfr_event_create;
    dfr.ops.event_destroy = dfr_event_destroy;
    dfr.ops.upload_async = dfr_upload_async;
    dfr.ops.compute_wait = dfr_compute_wait;
    dfr.ops.compute_record = dfr_compute_record;
    dfr.ops.event_done = dfr_event_done;
    b->ops = &dfr.ops;
}

static void strm_check_small_budgets_on(const char *fixture, bool prefetch, bool deferred)
{
    char path[256];
    strm_convert(fixture, path, sizeof path);
    sl_error e = {0};
    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    if (deferred)
        dfr_wrap(b);

    /* all resident, from the Hugging Face source */
    char src[256];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    sl_model *m;
    cr_assert_eq(sl_model_load_hf(src, b, 64, &m, &e), 0, "%s", e.msg);
    strm_run want;
    cr_assert_eq(strm_generate(m, &want, &e), 0, "%s", e.msg);
    sl_model_free(m);

    /* streamed: the backend holds the resident weights and 2 expert slots, the host 3 */
    sl_stream *st;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .prefetch = prefetch, .max_tokens = 64,
                         .max_ctx = 64};
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    sl_stream_stats s0;
    sl_stream_get_stats(st, &s0);
    sl_stream_close(st);
    so.backend_budget = s0.fixed_bytes + 2 * s0.slot_bytes;
    so.host_budget = 3 * s0.slot_bytes;
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    strm_run got;
    cr_assert_eq(strm_generate(m, &got, &e), 0, "%s", e.msg);
    sl_stream_stats s;
    sl_stream_get_stats(st, &s);
    char sum[2048];
    sl_stream_summary(st, 1.0, sum, sizeof sum);
    cr_log_info("%s (prefetch %d):\n%s", fixture, prefetch, sum);
    sl_stream_close(st);

    cr_assert_arr_eq(got.ids, want.ids, sizeof(int) * STRM_NG, "greedy ids differ from the resident run");
    for (int r = 0; r < want.rows; r++) {
        double err = strm_rel(got.logits + (size_t)r * want.vocab, want.logits + (size_t)r * want.vocab, want.vocab);
        cr_expect_leq(err, 1e-6, "%s row %d: streamed vs resident rel L2 %.3g", fixture, r, err);
    }
    cr_assert_eq(s.tier1_slots, 2);
    cr_assert_eq(s.tier2_slots, 3);
    cr_assert_gt(s.tier1_evictions, 0, "tiny budgets must evict");
    cr_assert_gt(s.chunks_read, s.tier2_slots, "experts must be read more than once");
    cr_assert_eq(s.tier1_hits + s.tier2_hits + s.misses, s.requests);
    if (prefetch)
        cr_assert_gt(s.predicted, 0);
    cr_assert_eq(s.overlap, deferred);
    if (deferred) {
        cr_log_info("deferred copies %d, pending answers %d", dfr.copies, dfr.pending_answers);
        cr_assert_gt(dfr.copies, 0);
        cr_assert_eq(dfr.pins, 2, "the host cache is pinned once per open");
        cr_assert_eq(dfr.unpins, 2);
        cr_assert_eq(dfr.n_ev, 0, "every event is destroyed at close");
        cr_assert_eq(dfr.destroyed, dfr.created);
    }
    free(want.logits);
    free(got.logits);
    b->ops->destroy(b);
}

static void strm_check_small_budgets(const char *fixture, bool prefetch)
{
    strm_check_small_budgets_on(fixture, prefetch, false);
}

Test(stream, small_budgets_match_resident_tiny_a) { strm_check_small_budgets("tiny-a-bf16", true); }
Test(stream, small_budgets_match_resident_tiny_b_fp8) { strm_check_small_budgets("tiny-b-fp8", true); }
Test(stream, small_budgets_no_prefetch_tiny_b) { strm_check_small_budgets("tiny-b-bf16", false); }
/* Layer cores that stream: a backend budget one byte short of resident cores + 2 expert slots
 * makes the engine stream the cores (2 backend core slots) with a host ring of 2 core images for
 * 4 layers, so every token re-reads every core; logits and ids still equal the resident run. */
static void strm_check_cores(const char *fixture, bool deferred)
{
    char path[256];
    strm_convert(fixture, path, sizeof path);
    sl_error e = {0};
    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    if (deferred)
        dfr_wrap(b);
    char src[256];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    sl_model *m;
    cr_assert_eq(sl_model_load_hf(src, b, 64, &m, &e), 0, "%s", e.msg);
    strm_run want;
    cr_assert_eq(strm_generate(m, &want, &e), 0, "%s", e.msg);
    sl_model_free(m);

    sl_stream *st;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .prefetch = true, .max_tokens = 64,
                         .max_ctx = 64};
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    sl_stream_stats s0, s1;
    sl_stream_get_stats(st, &s0);
    sl_stream_close(st);
    cr_assert(!s0.cores_streamed, "cores stream only when they do not fit");
    so.stream_cores = true; /* what a streamed core costs */
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    sl_stream_get_stats(st, &s1);
    sl_stream_close(st);

    so.stream_cores = false;
    so.backend_budget = s0.fixed_bytes + 2 * s0.slot_bytes - 1;
    so.host_budget = 2 * s1.core_slot_bytes + 3 * s1.slot_bytes;
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    strm_run got;
    cr_assert_eq(strm_generate(m, &got, &e), 0, "%s", e.msg);
    sl_stream_stats s;
    sl_stream_get_stats(st, &s);
    char sum[2048];
    sl_stream_summary(st, 1.0, sum, sizeof sum);
    cr_log_info("%s (cores streamed, deferred %d):\n%s", fixture, deferred, sum);
    int layers = sl_model_config(m)->num_hidden_layers;
    sl_stream_close(st); /* frees m */

    cr_assert(s.cores_streamed, "a budget below resident cores + 2 slots streams the cores");
    cr_assert_eq(s.core_host_slots, 2);
    /* a ring of 2 host images for 3-4 layers: cores are read again and again (how often depends
     * on what the 2 backend core slots still hold when a layer comes round) */
    cr_assert_gt(s.core_reads, (uint64_t)layers, "cores must be re-read: %llu reads of %d cores",
                 (unsigned long long)s.core_reads, layers);
    cr_assert_gt(s.core_uploads, (uint64_t)STRM_NG, "every token uploads cores");
    cr_assert_arr_eq(got.ids, want.ids, sizeof(int) * STRM_NG, "greedy ids differ from the resident run");
    for (int r = 0; r < want.rows; r++) {
        double err = strm_rel(got.logits + (size_t)r * want.vocab, want.logits + (size_t)r * want.vocab, want.vocab);
        cr_expect_leq(err, 1e-6, "%s row %d: streamed cores vs resident rel L2 %.3g", fixture, r, err);
    }
    free(want.logits);
    free(got.logits);
    b->ops->destroy(b);
}

Test(stream, streamed_cores_match_resident_tiny_a) { strm_check_cores("tiny-a-bf16", false); }
Test(stream, streamed_cores_match_resident_tiny_b_fp8) { strm_check_cores("tiny-b-fp8", false); }
Test(stream, streamed_cores_deferred_uploads_tiny_b) { strm_check_cores("tiny-b-bf16", true); }

/* The same through the overlap ops (pinned host cache, copies ordered by events), deferred. */
Test(stream, small_budgets_deferred_uploads_tiny_a) { strm_check_small_budgets_on("tiny-a-bf16", true, true); }
Test(stream, small_budgets_deferred_uploads_tiny_b_fp8) { strm_check_small_budgets_on("tiny-b-fp8", true, true); }

/* A budget below resident weights + 2 slots is refused, naming the minimum. */
Test(stream, budget_below_minimum_names_it)
{
    char path[256];
    strm_convert("tiny-a-bf16", path, sizeof path);
    sl_error e = {0};
    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(1, &b, &e), 0);
    sl_stream *st;
    sl_model *m;
    sl_stream_opts so = {.backend_budget = 1000, .host_budget = 1 << 26, .workers = 1, .max_tokens = 8};
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "minimum"), "%s", e.msg);
    b->ops->destroy(b);
}

/* Copy fixture's .sluice, flip one byte inside every chunk of `kind` in `layer`, run it streamed
 * (cores streamed when stream_cores) and expect the run to stop with an error that names `label`
 * and says the chunk is bad. Returns the number of chunks corrupted. */
static int strm_corrupt_run(const char *fixture, int kind, int layer, bool stream_cores,
                            const char *label)
{
    char path[256], bad[300];
    strm_convert(fixture, path, sizeof path);
    snprintf(bad, sizeof bad, "%s.bad-%d-%d", path, kind, layer);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, bad);
    cr_assert_eq(system(cmd), 0);
    sl_sluice *f;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_open(bad, &f, &e), 0, "%s", e.msg);
    FILE *fp = fopen(bad, "r+b");
    int flipped = 0;
    for (size_t i = 0; i < sl_sluice_chunk_count(f); i++) {
        const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
        if (c->kind != kind || c->layer != layer)
            continue;
        long at = (long)(c->offset + c->stored_size / 2);
        fseek(fp, at, SEEK_SET);
        int ch = fgetc(fp);
        fseek(fp, at, SEEK_SET);
        fputc(ch ^ 0x5a, fp);
        flipped++;
    }
    fclose(fp);
    sl_sluice_close(f);

    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    sl_stream *st;
    sl_model *m;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .prefetch = true, .max_tokens = 64,
                         .stream_cores = stream_cores};
    cr_assert_eq(sl_stream_open(bad, b, &so, &st, &m, &e), 0, "%s", e.msg);
    strm_run r;
    int rc = strm_generate(m, &r, &e);
    cr_assert_neq(rc, 0, "a corrupt chunk (%s) must stop the run", label);
    cr_assert(strstr(e.msg, label) && (strstr(e.msg, "checksum") || strstr(e.msg, "zstd") ||
                                       strstr(e.msg, "corrupt")), "message: %s", e.msg);
    free(r.logits);
    sl_stream_close(st);
    b->ops->destroy(b);
    unlink(bad);
    return flipped;
}

/* Corrupting the expert chunks of one layer on disk: the run stops with an error naming one. */
Test(stream, corrupt_expert_chunk_stops_with_checksum_error)
{
    cr_assert_gt(strm_corrupt_run("tiny-b-bf16", SL_CHUNK_EXPERT, 3, false, "layer 3"), 0);
}

/* A streamed layer core that fails its checksum stops the run with an error naming the core
 * chunk (the core thread reports it to the compute thread, which is waiting for it). Layer 0 is
 * dense in tiny-a, so nothing of its core is read at open (a MoE layer's router would be). */
Test(stream, corrupt_streamed_core_stops_with_checksum_error)
{
    cr_assert_eq(strm_corrupt_run("tiny-a-bf16", SL_CHUNK_CORE, 0, true, "layer 0 core"), 1);
}

/* The file shrinking under a running engine is a read error, reported, not a hang. */
Test(stream, file_truncated_mid_run_is_an_error)
{
    char path[256], bad[300];
    strm_convert("tiny-a-bf16", path, sizeof path);
    snprintf(bad, sizeof bad, "%s.short", path);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, bad);
    cr_assert_eq(system(cmd), 0);
    sl_error e = {0};
    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    sl_stream *st;
    sl_model *m;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .max_tokens = 64};
    cr_assert_eq(sl_stream_open(bad, b, &so, &st, &m, &e), 0, "%s", e.msg);
    sl_sluice *f;
    cr_assert_eq(sl_sluice_open(bad, &f, &e), 0);
    uint64_t keep = sl_sluice_chunk_at(f, 2)->offset; /* cut before the first layers' experts */
    sl_sluice_close(f);
    cr_assert_eq(truncate(bad, (off_t)keep), 0);
    strm_run r;
    int rc = strm_generate(m, &r, &e);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(e.msg, "chunk"), "message: %s", e.msg);
    free(r.logits);
    sl_stream_close(st);
    b->ops->destroy(b);
    unlink(bad);
}
