/* `sluice logits` and `sluice generate`: a prefill, and greedy decoding through the KV cache. */
#include "cli/cli.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PREFILL_CHUNK = 256 }; /* tokens per forward call during prefill */

typedef struct model_args {
    const char *model, *tokens, *out;
    int n_new, greedy;
    sl_attn_mode attn;
    sl_cli_engine_opts eng;
} model_args;

static const char logits_usage[] =
    "usage: sluice logits MODEL --tokens 3,17,42 --out FILE [--attn auto|naive|absorbed] [engine options]\n"
    "  Prefill the tokens and write float32 little-endian logits, n_tokens x vocab, row-major.\n"
    "  FILE is written as FILE.tmp and renamed when complete.\n";
static const char generate_usage[] =
    "usage: sluice generate MODEL --tokens 3,17,42 [-n 16] [--greedy] [--attn MODE] [engine options]\n"
    "  Prefill the prompt, then decode one token at a time through the KV cache, taking the\n"
    "  argmax each step (greedy; sampling arrives with `sluice run`). Does not stop at EOS.\n"
    "  The last line of stdout is the generated ids, comma-separated.\n";

/* Returns 0 to go on, 1 when --help was printed, -1 on a usage error (already reported). */
static int parse(int argc, char **argv, model_args *a, bool generate)
{
    const char *usage = generate ? generate_usage : logits_usage;
    *a = (model_args){.n_new = 16, .attn = SL_ATTN_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int took = sl_cli_engine_option(&a->eng, argc, argv, &i);
        if (took < 0)
            return -1;
        if (took)
            continue;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(usage, stdout);
            fputs(sl_cli_engine_usage, stdout);
            return 1;
        } else if (!strcmp(o, "--tokens")) {
            if (!v) {
                sl_cli_error("--tokens needs a value");
                return -1;
            }
            a->tokens = v, i++;
        } else if (!strcmp(o, "--out") && !generate) {
            if (!v) {
                sl_cli_error("--out needs a value");
                return -1;
            }
            a->out = v, i++;
        } else if ((!strcmp(o, "-n") || !strcmp(o, "--n-predict")) && generate) {
            if (sl_cli_parse_int(o, v, 0, 1 << 20, &a->n_new))
                return -1;
            i++;
        } else if (!strcmp(o, "--greedy") && generate) {
            a->greedy = 1;
        } else if (!strcmp(o, "--attn")) {
            if (v && !strcmp(v, "auto"))
                a->attn = SL_ATTN_AUTO;
            else if (v && !strcmp(v, "naive"))
                a->attn = SL_ATTN_NAIVE;
            else if (v && !strcmp(v, "absorbed"))
                a->attn = SL_ATTN_ABSORBED;
            else {
                sl_cli_error("--attn: expected auto, naive or absorbed, got \"%s\"", v ? v : "");
                return -1;
            }
            i++;
        } else if (o[0] == '-') {
            sl_cli_error("%s: unknown option \"%s\" (see sluice %s --help)", argv[0], o, argv[0]);
            return -1;
        } else if (!a->model) {
            a->model = o;
        } else {
            sl_cli_error("%s: unexpected argument \"%s\"", argv[0], o);
            return -1;
        }
    }
    if (!a->model || !a->tokens || (!generate && !a->out)) {
        sl_cli_error("%s: missing %s", argv[0], !a->model ? "MODEL" : !a->tokens ? "--tokens" : "--out");
        fputs(usage, stderr);
        return -1;
    }
    return 0;
}

typedef struct session {
    sl_cli_engine en;
    sl_model *m;
    sl_kv_cache kv;
    bool kv_made;
} session;

static void session_close(session *s, bool summary)
{
    if (s->kv_made)
        sl_kv_cache_destroy(s->m, &s->kv);
    sl_cli_engine_close(&s->en, summary);
}

static int session_open(session *s, const model_args *a, int max_ctx)
{
    sl_error e = {0};
    *s = (session){0};
    if (sl_cli_engine_open(&s->en, a->model, &a->eng, PREFILL_CHUNK, max_ctx))
        return 1;
    s->m = s->en.m;
    sl_model_set_attn_mode(s->m, a->attn);
    if (sl_kv_cache_create(s->m, max_ctx, &s->kv, &e)) {
        sl_cli_error("%s", e.msg);
        sl_kv_cache_destroy(s->m, &s->kv);
        session_close(s, false);
        return 1;
    }
    s->kv_made = true;
    return 0;
}

/* Prefill ids in chunks; logits (n, vocab) of every position when all is set, else of the last. */
static int prefill(session *s, const int *ids, int n, bool all, float *logits)
{
    sl_error e = {0};
    int V = sl_model_config(s->m)->vocab_size;
    for (int at = 0; at < n; at += PREFILL_CHUNK) {
        int cnt = n - at < PREFILL_CHUNK ? n - at : PREFILL_CHUNK;
        /* without `all`, every chunk overwrites the one row: the last chunk's is what remains */
        float *dst = all ? logits + (size_t)at * V : logits;
        int rc = sl_model_forward(s->m, &s->kv, (const int32_t *)ids + at, cnt, all, dst, &e);
        if (rc) {
            sl_cli_error("%s: %s", "forward", e.msg);
            return rc;
        }
    }
    return 0;
}

int sl_cmd_logits(int argc, char **argv)
{
    model_args a;
    int rc = parse(argc, argv, &a, false), *ids = NULL, n = 0;
    if (rc)
        return rc > 0 ? 0 : 2;
    if (sl_cli_parse_ids(a.tokens, &ids, &n))
        return 2;
    session s;
    if (session_open(&s, &a, n)) {
        free(ids);
        return 1;
    }
    size_t V = (size_t)sl_model_config(s.m)->vocab_size;
    float *logits = malloc((size_t)n * V * sizeof(float));
    rc = logits ? prefill(&s, ids, n, true, logits) : (sl_cli_error("out of memory"), 1);
    session_close(&s, rc == 0);
    free(ids);
    if (rc) {
        free(logits);
        return 1;
    }
    /* write FILE.tmp, then rename: a reader never sees a partial FILE */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", a.out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        sl_cli_error("%s: cannot create: %s", tmp, strerror(errno));
        free(logits);
        return 1;
    }
    bool ok = fwrite(logits, sizeof(float), (size_t)n * V, f) == (size_t)n * V;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    free(logits);
    if (!ok || rename(tmp, a.out) != 0) {
        sl_cli_error("%s: write failed: %s", a.out, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int sl_cmd_generate(int argc, char **argv)
{
    model_args a;
    int rc = parse(argc, argv, &a, true), *ids = NULL, n = 0;
    if (rc)
        return rc > 0 ? 0 : 2;
    if (sl_cli_parse_ids(a.tokens, &ids, &n))
        return 2;
    session s;
    if (session_open(&s, &a, n + (a.n_new > 0 ? a.n_new : 1))) {
        free(ids);
        return 1;
    }
    int V = sl_model_config(s.m)->vocab_size;
    float *logits = malloc((size_t)V * sizeof(float));
    int *out = malloc((size_t)(a.n_new > 0 ? a.n_new : 1) * sizeof(int));
    if (!logits || !out) {
        sl_cli_error("out of memory");
        rc = 1;
        goto done;
    }
    double t0 = sl_now();
    if ((rc = prefill(&s, ids, n, false, logits)))
        goto done;
    double t1 = sl_now();
    sl_stream_stats s0 = {0}, s1 = {0};
    if (s.en.st)
        sl_stream_get_stats(s.en.st, &s0);
    for (int i = 0; i < a.n_new; i++) {
        out[i] = argmax(logits, V);
        if (i + 1 == a.n_new)
            break;
        sl_error e = {0};
        if ((rc = sl_model_forward(s.m, &s.kv, (const int32_t *)&out[i], 1, false, logits, &e))) {
            sl_cli_error("decode step %d: %s", i + 1, e.msg);
            goto done;
        }
    }
    double t2 = sl_now();
    if (sl_log_level > 0)
        fprintf(stderr, "prefill %d tokens in %.3f s, decode %d tokens in %.3f s (%.2f tok/s)\n", n,
                t1 - t0, a.n_new, t2 - t1, a.n_new > 1 ? (a.n_new - 1) / (t2 - t1) : 0.0);
    if (sl_log_level > 0 && s.en.st && a.n_new > 1) {
        /* decode alone: what each token cost from disk, for the ratio to fio */
        sl_stream_get_stats(s.en.st, &s1);
        double steps = a.n_new - 1, secs = t2 - t1;
        double rd = (double)(s1.bytes_read - s0.bytes_read), need = (double)(s1.bytes_needed - s0.bytes_needed);
        fprintf(stderr,
                "decode: %.3f GB read per token (%.3f GB of experts needed per token), %.2f GB/s from disk, "
                "compute waited %.0f%% of the decode\n",
                rd / steps / 1e9, need / steps / 1e9, rd / secs / 1e9,
                100.0 * (s1.wait_seconds - s0.wait_seconds) / secs);
    }
    for (int i = 0; i < a.n_new; i++)
        printf("%s%d", i ? "," : "", out[i]);
    printf("\n");
done:
    session_close(&s, rc == 0);
    free(ids);
    free(logits);
    free(out);
    return rc ? 1 : 0;
}
