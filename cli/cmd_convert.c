/* `sluice convert SRC OUT.sluice`: a Hugging Face checkpoint (or a .sluice file) into a .sluice
 * file, with a progress line on a terminal and a summary line at the end. Ctrl-C or SIGTERM stop
 * it cleanly: OUT.tmp is removed and OUT is left as it was. */
#include "cli/cli.h"
#include "format/format.h"
#include "quant/quant.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sl_cmd_convert(int argc, char **argv);

static const char convert_usage[] =
    "usage: sluice convert SRC OUT.sluice [--quant fp8|q8|q4|bf16] [--expert-quant FMT]\n"
    "                      [--zstd LEVEL | --no-zstd] [--min-saving F] [--threads N]\n"
    "  SRC is a Hugging Face DeepSeek-V3 directory (bf16, or the official fp8 release with its\n"
    "  128x128 block scales) or a .sluice file. --quant sets the format of the non-expert matrices\n"
    "  (attention, shared expert, dense MLP, embedding, lm_head), --expert-quant that of the routed\n"
    "  experts (default: as --quant). Without --quant every tensor keeps its source format; a\n"
    "  tensor already in its target format is copied bit for bit. Norms, the router weight and\n"
    "  its bias always keep theirs. Chunks are zstd-compressed (default level 3) only when that\n"
    "  saves at least --min-saving of their size (default 0.02). --threads: workers (default:\n"
    "  all cores). Memory stays around 4 GB whatever the model size. OUT is written as OUT.tmp\n"
    "  and renamed when complete.\n";

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

typedef struct bar {
    bool tty;
    double last;
} bar;

static void fmt_bytes(char *buf, size_t n, double b)
{
    if (b >= 1e9)
        snprintf(buf, n, "%.1f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.1f MB", b / 1e6);
    else
        snprintf(buf, n, "%.0f kB", b / 1e3);
}

static void fmt_time(char *buf, size_t n, double s)
{
    if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%.0fs", s);
}

/* One line, redrawn at most 10 times a second: [####----] 42.1%  read 290.1 GB  1.23 GB/s ... */
static void on_progress(void *ctx, const sl_convert_progress *p)
{
    bar *b = ctx;
    double now = sl_now();
    bool last = p->chunks_done == p->chunks_total;
    if (!b->tty || (!last && now - b->last < 0.1))
        return;
    b->last = now;
    double f = p->params_total ? (double)p->params_done / (double)p->params_total : 1.0;
    char fill[25], rd[32], wr[32], eta[32] = "?";
    for (int i = 0; i < 24; i++)
        fill[i] = i < (int)(f * 24) ? '#' : '-';
    fill[24] = 0;
    fmt_bytes(rd, sizeof rd, (double)p->src_bytes);
    fmt_bytes(wr, sizeof wr, (double)p->out_bytes);
    if (f > 0 && p->seconds > 1)
        fmt_time(eta, sizeof eta, p->seconds * (1 - f) / f);
    double rate = p->seconds > 0 ? (double)p->src_bytes / p->seconds / 1e9 : 0;
    fprintf(stderr, "\r[%s] %5.1f%%  read %s  %.2f GB/s  wrote %s  ETA %s  (%u/%u chunks)\033[K", fill,
            100 * f, rd, rate, wr, eta, p->chunks_done, p->chunks_total);
    if (last)
        fputc('\n', stderr);
    fflush(stderr);
}

static int parse_format(const char *opt, const char *v, int *out)
{
    sl_wformat f;
    if (!v || sl_wformat_parse(v, &f) != 0 || f == SL_WF_F32) {
        sl_cli_error("%s: expected fp8, q8, q4 or bf16, got \"%s\"", opt, v ? v : "");
        return -1;
    }
    *out = (int)f;
    return 0;
}

int sl_cmd_convert(int argc, char **argv)
{
    sl_convert_opts o;
    sl_convert_opts_default(&o);
    const char *src = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(convert_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--quant") || !strcmp(a, "--expert-quant")) {
            if (parse_format(a, v, !strcmp(a, "--quant") ? &o.quant : &o.expert_quant))
                return 2;
            i++;
        } else if (!strcmp(a, "--zstd")) {
            if (sl_cli_parse_int(a, v, 1, 22, &o.zstd_level))
                return 2;
            i++;
        } else if (!strcmp(a, "--no-zstd")) {
            o.zstd_level = 0;
        } else if (!strcmp(a, "--min-saving")) {
            char *end;
            o.min_saving = v ? strtod(v, &end) : -1;
            if (!v || *end || !(o.min_saving >= 0 && o.min_saving < 1)) {
                sl_cli_error("--min-saving: expected a fraction in [0, 1), got \"%s\"", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (sl_cli_parse_int(a, v, 0, 4096, &o.threads))
                return 2;
            i++;
        } else if (a[0] == '-') {
            sl_cli_error("convert: unknown option \"%s\" (see sluice convert --help)", a);
            return 2;
        } else if (!src) {
            src = a;
        } else if (!out) {
            out = a;
        } else {
            sl_cli_error("convert: unexpected argument \"%s\"", a);
            return 2;
        }
    }
    if (!src || !out) {
        fputs(convert_usage, stderr);
        return 2;
    }

    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    bar b = {.tty = isatty(2)};
    o.progress = on_progress;
    o.progress_ctx = &b;
    o.cancel = &stop_signal;
    sl_convert_stats st;
    sl_error e = {0};
    int rc = sl_convert(src, out, &o, &st, &e);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (b.tty && rc)
        fputc('\n', stderr);
    if (rc && stop_signal) {
        sl_cli_error("%s: interrupted by signal %d; %s.tmp removed", out, (int)stop_signal, out);
        return 128 + stop_signal;
    }
    if (rc) {
        sl_cli_error("%s", e.msg);
        return 1;
    }
    uint64_t dec = 0, sto = 0;
    uint32_t chunks = 0;
    for (int k = 0; k < SL_CHUNK_KIND_COUNT; k++)
        dec += st.decoded[k], sto += st.stored[k], chunks += st.chunks[k];
    char rd[32], fb[32], pw[32];
    fmt_bytes(rd, sizeof rd, (double)st.src_bytes);
    fmt_bytes(fb, sizeof fb, (double)st.file_bytes);
    double np = (double)st.params;
    snprintf(pw, sizeof pw, np >= 1e9 ? "%.1fB" : np >= 1e6 ? "%.1fM" : "%.0fk",
             np >= 1e9 ? np / 1e9 : np >= 1e6 ? np / 1e6 : np / 1e3);
    printf("%s: %u chunks, %s weights; read %s, wrote %s (zstd saved %.1f%%) in %.1f s: %.2f GB/s in, "
           "%.2f GB/s out\n",
           out, chunks, pw, rd, fb, dec ? 100.0 * (1 - (double)sto / (double)dec) : 0.0,
           st.seconds, st.seconds > 0 ? (double)st.src_bytes / st.seconds / 1e9 : 0.0,
           st.seconds > 0 ? (double)st.file_bytes / st.seconds / 1e9 : 0.0);
    /* What limited it: worker thread-seconds by phase against the writer's own time. */
    printf("time: %d workers spent %.1f s fetching the source, %.1f s recoding, %.1f s on checksums, "
           "%.1f s in zstd, %.1f s writing; the file-order loop waited %.1f s for the next chunk\n",
           o.threads ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN), st.t_fetch, st.t_recode, st.t_checksum,
           st.t_compress, st.t_write, st.t_wait);
    return 0;
}
