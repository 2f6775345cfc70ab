/* The streaming engine on the CUDA backend: with budgets so small that every layer evicts (two
 * VRAM expert slots, three host-cache slots), the logits and greedy ids equal the all-resident
 * CUDA run, both with copies overlapped on the copy stream (pinned host cache, events) and with
 * synchronous uploads, and with the layer cores streamed too. Skips without a CUDA device. */
#include "cuda/cuda.h"
#include "format/format.h"
#include "model/model.h"
#include "stream/stream.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const int32_t cs_prompt[] = {5, 77, 301, 12, 190, 44, 9};
enum { CS_NP = 7, CS_NG = 12, CS_CTX = 64 };

typedef struct {
    int ids[CS_NG];
    float *logits; /* (CS_NP + CS_NG - 1, vocab) */
    int vocab, rows;
} cs_run;

static void cs_generate(sl_model *m, sl_backend *b, cs_run *r)
{
    sl_error e = {0};
    r->vocab = sl_model_config(m)->vocab_size;
    r->rows = CS_NP + CS_NG - 1;
    r->logits = malloc((size_t)r->rows * r->vocab * sizeof(float));
    for (size_t i = 0; i < (size_t)r->rows * r->vocab; i++)
        r->logits[i] = NAN;
    sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_create(m, CS_CTX, &kv, &e), 0, "%s", e.msg);
    int rc = sl_model_forward(m, &kv, cs_prompt, CS_NP, true, r->logits, &e);
    for (int i = 0; rc == 0 && i < CS_NG; i++) {
        const float *row = r->logits + (size_t)(CS_NP - 1 + i) * r->vocab;
        int best = 0;
        for (int v = 1; v < r->vocab; v++)
            if (row[v] > row[best])
                best = v;
        r->ids[i] = best;
        int32_t t = best;
        if (i + 1 < CS_NG)
            rc = sl_model_forward(m, &kv, &t, 1, false, r->logits + (size_t)(CS_NP + i) * r->vocab, &e);
    }
    cr_assert_eq(rc, 0, "forward: %s / %s", e.msg, sl_cuda_backend_error(b));
    sl_kv_cache_destroy(m, &kv);
}

static double cs_rel(const float *a, const float *b, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static void cs_check(const char *fixture, bool sync_uploads, bool cores)
{
    if (sl_cuda_device_count() == 0)
        cr_skip_test("no CUDA device");
    char dir[64] = "/tmp/sluice-cuda-stream-XXXXXX", src[256], path[256];
    cr_assert(mkdtemp(dir));
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    snprintf(path, sizeof path, "%s/%s.sluice", dir, fixture);
    sl_convert_opts co;
    sl_convert_opts_default(&co);
    co.threads = 2;
    sl_error e = {0};
    cr_assert_eq(sl_convert(src, path, &co, NULL, &e), 0, "convert: %s", e.msg);

    sl_backend *b;
    cr_assert_eq(sl_cuda_backend_create(0, (size_t)1 << 30, &b, &e), 0, "%s", e.msg);
    sl_model *m;
    cr_assert_eq(sl_model_load_hf(src, b, CS_CTX, &m, &e), 0, "%s", e.msg);
    cs_run want;
    cs_generate(m, b, &want);
    sl_model_free(m);

    /* measure the fixed part, then reopen with 2 VRAM slots and 3 host-cache slots */
    sl_stream *st;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .prefetch = true, .max_tokens = CS_CTX,
                         .max_ctx = CS_CTX, .sync_uploads = sync_uploads, .stream_cores = cores};
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    sl_stream_stats s;
    sl_stream_get_stats(st, &s);
    sl_stream_close(st);
    so.backend_budget = s.fixed_bytes + 2 * s.slot_bytes;
    so.host_budget = 3 * s.slot_bytes + 2 * s.core_slot_bytes; /* cores: a ring of 2 images */
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    cs_run got;
    cs_generate(m, b, &got);
    int layers = sl_model_config(m)->num_hidden_layers;
    sl_stream_get_stats(st, &s);
    char sum[2048];
    sl_stream_summary(st, 1.0, sum, sizeof sum);
    cr_log_info("%s (%s uploads%s):\n%s", fixture, sync_uploads ? "sync" : "overlapped",
                cores ? ", cores streamed" : "", sum);
    sl_stream_close(st);

    cr_assert_eq(s.overlap, !sync_uploads);
    cr_assert_eq(s.cores_streamed, cores);
    if (cores)
        cr_assert_gt(s.core_reads, (uint64_t)layers, "cores re-read");
    cr_assert_eq(s.host_pinned, !sync_uploads);
    cr_assert_gt(s.tier1_evictions, 0, "tiny budgets must evict");
    cr_assert_gt(s.chunks_read, s.tier2_slots, "experts must be read more than once");
    cr_assert_arr_eq(got.ids, want.ids, sizeof got.ids, "greedy ids differ from the resident run");
    for (int r = 0; r < want.rows; r++) {
        double err = cs_rel(got.logits + (size_t)r * want.vocab, want.logits + (size_t)r * want.vocab,
                            want.vocab);
        cr_expect_leq(err, 1e-5, "%s row %d: streamed vs resident rel L2 %.3g", fixture, r, err);
    }
    free(want.logits);
    free(got.logits);
    b->ops->destroy(b);
    unlink(path);
    rmdir(dir);
}

Test(cuda_stream, overlapped_uploads_match_resident_tiny_a) { cs_check("tiny-a-bf16", false, false); }
Test(cuda_stream, overlapped_uploads_match_resident_tiny_b_fp8) { cs_check("tiny-b-fp8", false, false); }
Test(cuda_stream, sync_uploads_match_resident_tiny_b_fp8) { cs_check("tiny-b-fp8", true, false); }
Test(cuda_stream, streamed_cores_overlapped_match_resident_tiny_b) { cs_check("tiny-b-bf16", false, true); }
Test(cuda_stream, streamed_cores_sync_match_resident_tiny_a_fp8) { cs_check("tiny-a-fp8", true, true); }
