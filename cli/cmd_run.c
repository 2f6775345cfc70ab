/* `sluice run`: text in, streamed text out. One prompt (-p / -f) or an interactive chat that keeps
 * its KV cache between turns. Ctrl-C ends the answer being written, not the program. */
#include "cli/cli.h"
#include "format/format.h"
#include "model/model.h"
#include "text/text.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char run_usage[] =
    "usage: sluice run MODEL [-p PROMPT | -f FILE] [--chat] [--system TEXT] [-n N] [options]\n"
    "  Streams the model's continuation of PROMPT (or, with --chat, its answer to it). --chat\n"
    "  without -p/-f is an interactive session; an empty line or EOF ends it, Ctrl-C stops the\n"
    "  answer being written.\n"
    "options:\n"
    "  --tokenizer PATH     tokenizer.json (default: MODEL/tokenizer.json or the one in a .sluice)\n"
    "  -n N                 most tokens per answer (default 256)\n"
    "  --ctx N              context length in tokens (default 4096)\n"
    "  --temp T             temperature, 0 = greedy (default 0.6)\n"
    "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
    "  --top-p P            keep the smallest set with probability mass P (default 0.95)\n"
    "  --min-p P            drop tokens below P x the most likely one (default 0 = off)\n"
    "  --repeat-penalty R   penalise the last --repeat-last-n ids (default 1 = off; 64)\n"
    "  --seed S             sampling seed (default: time)\n"
    "  --greedy             same as --temp 0\n"
    "  --stop TEXT          stop when TEXT is generated (not printed)\n"
    "  --hide-think         hide R1's <think>...</think> section (default: shown dimmed)\n";

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { interrupted = 1; }

typedef struct run_args {
    const char *model, *prompt, *file, *system, *tokenizer, *stop;
    bool chat, hide_think, seed_given;
    int n_new, ctx;
    sl_sampler_params sp;
    sl_cli_engine_opts eng;
} run_args;

static int parse_float(const char *opt, const char *v, float lo, float hi, float *out)
{
    char *end;
    if (!v) {
        sl_cli_error("%s needs a value", opt);
        return -1;
    }
    double d = strtod(v, &end);
    if (end == v || *end || d < lo || d > hi) {
        sl_cli_error("%s: \"%s\" is not a number in [%g, %g]", opt, v, lo, hi);
        return -1;
    }
    *out = (float)d;
    return 0;
}

static int parse_args(int argc, char **argv, run_args *a)
{
    *a = (run_args){.n_new = 256, .ctx = 4096, .sp = sl_sampler_defaults()};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int iv, took = sl_cli_engine_option(&a->eng, argc, argv, &i);
        if (took < 0)
            return -1;
        if (took)
            continue;
#define NEED_STR(field)                              \
    do {                                             \
        if (!v) {                                    \
            sl_cli_error("%s needs a value", o);     \
            return -1;                               \
        }                                            \
        a->field = v;                                \
        i++;                                         \
    } while (0)
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(run_usage, stdout);
            fputs(sl_cli_engine_usage, stdout);
            return 1;
        } else if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) {
            NEED_STR(prompt);
        } else if (!strcmp(o, "-f") || !strcmp(o, "--file")) {
            NEED_STR(file);
        } else if (!strcmp(o, "--system")) {
            NEED_STR(system);
        } else if (!strcmp(o, "--tokenizer")) {
            NEED_STR(tokenizer);
        } else if (!strcmp(o, "--stop")) {
            NEED_STR(stop);
        } else if (!strcmp(o, "--chat")) {
            a->chat = true;
        } else if (!strcmp(o, "--hide-think")) {
            a->hide_think = true;
        } else if (!strcmp(o, "--greedy")) {
            a->sp.temperature = 0;
        } else if (!strcmp(o, "-n")) {
            if (sl_cli_parse_int(o, v, 1, 1 << 24, &a->n_new))
                return -1;
            i++;
        } else if (!strcmp(o, "--ctx")) {
            if (sl_cli_parse_int(o, v, 16, 1 << 24, &a->ctx))
                return -1;
            i++;
        } else if (!strcmp(o, "--top-k")) {
            if (sl_cli_parse_int(o, v, 0, 1 << 24, &a->sp.top_k))
                return -1;
            i++;
        } else if (!strcmp(o, "--repeat-last-n")) {
            if (sl_cli_parse_int(o, v, 0, 1 << 24, &a->sp.repeat_last_n))
                return -1;
            i++;
        } else if (!strcmp(o, "--seed")) {
            if (sl_cli_parse_int(o, v, 0, 2147483647, &iv))
                return -1;
            a->sp.seed = (uint64_t)iv;
            a->seed_given = true;
            i++;
        } else if (!strcmp(o, "--temp") || !strcmp(o, "--temperature")) {
            if (parse_float(o, v, 0, 100, &a->sp.temperature))
                return -1;
            i++;
        } else if (!strcmp(o, "--top-p")) {
            if (parse_float(o, v, 1e-6f, 1, &a->sp.top_p))
                return -1;
            i++;
        } else if (!strcmp(o, "--min-p")) {
            if (parse_float(o, v, 0, 1, &a->sp.min_p))
                return -1;
            i++;
        } else if (!strcmp(o, "--repeat-penalty")) {
            if (parse_float(o, v, 1e-3f, 100, &a->sp.repeat_penalty))
                return -1;
            i++;
        } else if (o[0] == '-' && o[1]) {
            sl_cli_error("run: unknown option \"%s\" (see sluice run --help)", o);
            return -1;
        } else if (!a->model) {
            a->model = o;
        } else {
            sl_cli_error("run: unexpected argument \"%s\"", o);
            return -1;
        }
#undef NEED_STR
    }
    if (!a->model) {
        sl_cli_error("run: missing MODEL");
        fputs(run_usage, stderr);
        return -1;
    }
    if (a->prompt && a->file) {
        sl_cli_error("run: give -p or -f, not both");
        return -1;
    }
    if (!a->prompt && !a->file && !a->chat) {
        sl_cli_error("run: nothing to do: give -p PROMPT, -f FILE or --chat");
        return -1;
    }
    if (!a->seed_given)
        a->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* ---- the session ---- */

typedef struct run_state {
    run_args *a;
    sl_cli_engine en;
    sl_model *m;
    sl_kv_cache kv;
    bool kv_made;
    sl_tokenizer *tok;
    sl_sampler *smp;
    int vocab;
    int32_t *hist;       /* (ctx) every id in the cache, for the repetition penalty */
    int32_t *ids;        /* (ctx) scratch for encoding */
    float *logits;       /* (vocab) */
    char *piece;         /* decode buffer */
    size_t piece_cap;
    bool tty, in_think;
    double t_prompt, t_gen;
    long n_prompt, n_gen;
} run_state;

static void run_close(run_state *s, bool summary)
{
    if (s->kv_made)
        sl_kv_cache_destroy(s->m, &s->kv);
    sl_cli_engine_close(&s->en, summary);
    sl_tokenizer_free(s->tok);
    sl_sampler_destroy(s->smp);
    free(s->hist);
    free(s->ids);
    free(s->logits);
    free(s->piece);
}

static int open_tokenizer(run_state *s, sl_error *e)
{
    char path[4200];
    const char *tp = s->a->tokenizer;
    struct stat sb;
    if (!tp && stat(s->a->model, &sb) == 0 && S_ISREG(sb.st_mode))
        tp = s->a->model; /* a .sluice file carries the tokenizer.json its source had */
    if (!tp && stat(s->a->model, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(path, sizeof path, "%s/tokenizer.json", s->a->model);
        tp = path;
    }
    if (!tp)
        return sl_errorf(e, SL_E_MISSING, "%s: no tokenizer (give --tokenizer PATH)", s->a->model);
    return sl_cli_open_tokenizer(tp, &s->tok, e);
}

static int run_open(run_state *s, run_args *a)
{
    sl_error e = {0};
    *s = (run_state){.a = a, .tty = isatty(1)};
    int rc = open_tokenizer(s, &e);
    if (rc) {
        sl_cli_error("%s", e.msg);
        return rc;
    }
    if (sl_cli_engine_open(&s->en, a->model, &a->eng, 256, a->ctx)) {
        sl_tokenizer_free(s->tok);
        return 1;
    }
    s->m = s->en.m;
    {
        s->vocab = sl_model_config(s->m)->vocab_size;
        if (sl_tokenizer_n_vocab(s->tok) > s->vocab)
            rc = sl_errorf(&e, SL_E_ARG, "%s: the tokenizer has %d ids but the model's vocabulary is %d",
                           a->model, sl_tokenizer_n_vocab(s->tok), s->vocab);
    }
    if (rc == 0) {
        rc = sl_kv_cache_create(s->m, a->ctx, &s->kv, &e);
        s->kv_made = true; /* destroy copes with a partial cache */
    }
    if (rc == 0)
        rc = sl_sampler_create(&a->sp, s->vocab, &s->smp, &e);
    if (rc == 0) {
        s->piece_cap = sl_tokenizer_max_piece(s->tok) + 8;
        s->hist = malloc((size_t)a->ctx * sizeof(int32_t));
        s->ids = malloc(((size_t)a->ctx + 1) * sizeof(int32_t));
        s->logits = malloc((size_t)s->vocab * sizeof(float));
        s->piece = malloc(s->piece_cap);
        if (!s->hist || !s->ids || !s->logits || !s->piece)
            rc = sl_errorf(&e, SL_E_NOMEM, "run: no memory");
    }
    if (rc) {
        sl_cli_error("%s", e.msg);
        run_close(s, false);
    }
    return rc;
}

/* Feed ids to the model (in chunks of at most 256), leaving the last position's logits. */
static int feed(run_state *s, const int32_t *ids, int n)
{
    if (s->kv.len + n > s->kv.max_ctx) {
        sl_cli_error("the prompt needs %d tokens but only %d of the %d-token context are left "
                     "(raise --ctx)", n, s->kv.max_ctx - s->kv.len, s->kv.max_ctx);
        return -1;
    }
    for (int at = 0; at < n; at += 256) {
        int cnt = n - at < 256 ? n - at : 256;
        sl_error e = {0};
        memcpy(s->hist + s->kv.len, ids + at, (size_t)cnt * sizeof(int32_t));
        if (sl_model_forward(s->m, &s->kv, ids + at, cnt, false, s->logits, &e)) {
            sl_cli_error("%s", e.msg);
            return -1;
        }
    }
    return 0;
}

/* Encode text (already templated) and feed it; bos: prepend BOS. Returns 0, -2 for a prompt
 * that cannot be used (reported; nothing was fed), -1 for an engine error. */
static int feed_text(run_state *s, const char *text, bool bos, int32_t extra_first)
{
    size_t len = strlen(text), n = 0, cap = (size_t)s->a->ctx;
    int lead = 0;
    sl_error e = {0};
    if (extra_first >= 0)
        s->ids[lead++] = extra_first;
    if (bos && sl_tokenizer_bos(s->tok) >= 0)
        s->ids[lead++] = sl_tokenizer_bos(s->tok);
    int rc = sl_tokenizer_encode(s->tok, text, len, s->ids + lead, cap - (size_t)lead, &n, &e);
    if (rc == SL_E_ARG && n + (size_t)lead > cap) {
        sl_cli_error("the prompt is %zu tokens, more than the %d-token context (raise --ctx)",
                     n + (size_t)lead, s->a->ctx);
        return -2;
    }
    if (rc) {
        sl_cli_error("prompt: %s", e.msg);
        return -2;
    }
    if (s->kv.len + (int)n + lead > s->kv.max_ctx) {
        sl_cli_error("the prompt needs %d tokens but only %d of the %d-token context are left "
                     "(raise --ctx)", (int)n + lead, s->kv.max_ctx - s->kv.len, s->kv.max_ctx);
        return -2;
    }
    double t0 = sl_now();
    if (feed(s, s->ids, (int)n + lead))
        return -1;
    s->t_prompt += sl_now() - t0;
    s->n_prompt += (long)n + lead;
    return 0;
}

/* Print a piece of answer text, dimming or hiding R1's <think> section. */
static void emit(run_state *s, const char *p, size_t n)
{
    if (s->in_think && s->a->hide_think)
        return;
    fwrite(p, 1, n, stdout);
}

/* Generate one answer; returns 0 at EOS / -n / stop / Ctrl-C, -1 on error. *ended_eos says
 * whether the answer ended by EOS (so the cache already holds a complete turn). */
static int generate(run_state *s, bool *ended_eos)
{
    sl_detok dt;
    sl_detok_reset(&dt);
    int32_t eos = sl_tokenizer_eos(s->tok);
    int32_t think_open = sl_tokenizer_token_id(s->tok, "<think>", 7);
    int32_t think_close = sl_tokenizer_token_id(s->tok, "</think>", 8);
    const char *stop = s->a->stop;
    size_t stop_len = stop ? strlen(stop) : 0, held = 0;
    char *hold = stop_len ? malloc(stop_len + s->piece_cap) : NULL;
    double t0 = sl_now();
    *ended_eos = false;
    interrupted = 0;
    int rc = 0;
    for (int i = 0; i < s->a->n_new && !interrupted; i++) {
        /* the model's vocabulary is padded past the tokenizer's (129280 vs 128815 in V3): an
         * id no token names can never be the answer */
        for (int v = sl_tokenizer_n_vocab(s->tok); v < s->vocab; v++)
            s->logits[v] = -INFINITY;
        int32_t id = sl_sampler_sample(s->smp, s->logits, s->hist, s->kv.len);
        s->n_gen++;
        if (id == eos) {
            *ended_eos = true;
            break;
        }
        if (id == think_open || id == think_close) {
            s->in_think = id == think_open;
            if (s->tty && !s->a->hide_think)
                fputs(s->in_think ? "\033[2m<think>" : "</think>\033[0m", stdout);
            else if (!s->a->hide_think)
                fputs(s->in_think ? "<think>" : "</think>", stdout);
        } else {
            size_t n = 0;
            sl_error e = {0};
            if (sl_tokenizer_decode_next(s->tok, &dt, id, s->piece, s->piece_cap, &n, &e)) {
                sl_cli_error("%s", e.msg);
                rc = -1;
                break;
            }
            if (hold) { /* keep back the bytes that might be the start of the stop text */
                memcpy(hold + held, s->piece, n);
                held += n;
                char *hit = memmem(hold, held, stop, stop_len);
                if (hit) {
                    emit(s, hold, (size_t)(hit - hold));
                    held = 0;
                    break;
                }
                if (held >= stop_len) {
                    size_t out = held - (stop_len - 1);
                    emit(s, hold, out);
                    memmove(hold, hold + out, held - out);
                    held -= out;
                }
            } else {
                emit(s, s->piece, n);
            }
        }
        fflush(stdout);
        if (i + 1 == s->a->n_new)
            break;
        if (feed(s, &id, 1)) {
            rc = -1;
            break;
        }
    }
    if (hold && held)
        emit(s, hold, held);
    free(hold);
    char tail[4];
    size_t tn = sl_detok_flush(&dt, tail, sizeof tail);
    emit(s, tail, tn);
    if (s->in_think && s->tty && !s->a->hide_think)
        fputs("\033[0m", stdout);
    s->in_think = false;
    fputc('\n', stdout);
    fflush(stdout);
    s->t_gen += sl_now() - t0;
    return rc;
}

static void stats(run_state *s)
{
    fprintf(stderr, "prompt %ld tok, %.1f tok/s | generated %ld tok, %.2f tok/s | context %d/%d\n",
            s->n_prompt, s->t_prompt > 0 ? s->n_prompt / s->t_prompt : 0.0, s->n_gen,
            s->t_gen > 0 ? s->n_gen / s->t_gen : 0.0, s->kv.len, s->kv.max_ctx);
}

static int one_turn(run_state *s, const char *user, bool first)
{
    const char *text = user;
    char *buf = NULL;
    if (s->a->chat) {
        sl_chat_msg msgs[2];
        int n = 0;
        if (first && s->a->system)
            msgs[n++] = (sl_chat_msg){SL_ROLE_SYSTEM, s->a->system};
        msgs[n++] = (sl_chat_msg){SL_ROLE_USER, user};
        size_t cap = strlen(user) + (s->a->system ? strlen(s->a->system) : 0) + 256;
        buf = malloc(cap);
        if (!buf || sl_chat_render(msgs, n, false, true, buf, cap) < 0) {
            free(buf);
            sl_cli_error("run: no memory");
            return -1;
        }
        text = buf;
    }
    int rc = feed_text(s, text, first, -1);
    free(buf);
    return rc;
}

int sl_cmd_run(int argc, char **argv)
{
    run_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc > 0 ? 0 : 2;
    char *prompt = NULL;
    size_t plen = 0;
    sl_error fe = {0};
    if (a.file && sl_read_file(a.file, &prompt, &plen, &fe)) {
        sl_cli_error("%s", fe.msg);
        return 1;
    }
    if (a.prompt)
        plen = strlen(a.prompt);
    if ((a.prompt || a.file) && plen == 0) {
        sl_cli_error("run: the prompt is empty");
        free(prompt);
        return 2;
    }
    run_state s;
    if (run_open(&s, &a)) {
        free(prompt);
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    bool eos = false;
    if (a.prompt || a.file) {
        rc = one_turn(&s, a.prompt ? a.prompt : prompt, true);
        rc = rc == -2 ? 2 : rc;
        if (rc == 0)
            rc = generate(&s, &eos);
    } else {
        /* interactive chat: the cache keeps every turn; a turn that did not end in EOS gets one
         * so the template stays well-formed */
        char line[65536];
        bool first = true;
        int32_t eos_id = sl_tokenizer_eos(s.tok);
        for (;;) {
            if (isatty(0))
                fputs("> ", stdout), fflush(stdout);
            interrupted = 0;
            if (!fgets(line, sizeof line, stdin))
                break;
            size_t l = strlen(line);
            while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
                line[--l] = 0;
            if (l == 0)
                break;
            if (!first && !eos && eos_id >= 0) { /* close the previous answer */
                if (feed(&s, &eos_id, 1)) {
                    rc = -1;
                    break;
                }
                eos = true;
            }
            rc = one_turn(&s, line, first);
            if (rc == -2) { /* reported; nothing was fed, the session goes on */
                rc = 0;
                continue;
            }
            if (rc)
                break;
            first = false;
            if ((rc = generate(&s, &eos)) != 0)
                break;
        }
    }
    bool ran = s.n_gen > 0 || rc == 0;
    if (sl_log_level > 0 && ran)
        stats(&s);
    run_close(&s, ran);
    free(prompt);
    return rc == 2 ? 2 : rc ? 1 : 0;
}
