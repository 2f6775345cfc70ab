/* `sluice synth`: a model with the real shapes and random weights, for benchmarks and demos. */
#include "cli/cli.h"
#include "format/format.h"
#include "quant/quant.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char synth_usage[] =
    "usage: sluice synth [--preset deepseek-v3|tiny|FILE.json] [--layers N] [--quant FMT]\n"
    "                    [--expert-quant FMT] [--tokenizer tokenizer.json] [--seed S] [--zstd LEVEL]\n"
    "                    [--threads N] OUT.sluice\n"
    "  Writes a DeepSeek-V3-architecture model with random zero-mean weights (no real model can be\n"
    "  downloaded here; outputs are meaningless, shapes and bytes are real). deepseek-v3: the\n"
    "  official shapes (use --layers to keep it small); tiny: the real 129280-token vocabulary\n"
    "  around a small body (the bundled demo model). FMT: f32, bf16, fp8, q8, q4 (default q4).\n";

static volatile sig_atomic_t synth_cancel;
static void synth_on_signal(int sig) { synth_cancel = 1; }

static void synth_progress(void *ctx, uint64_t done, uint64_t total, double secs)
{
    if (!isatty(2))
        return;
    double rate = secs > 0 ? done / secs : 0;
    fprintf(stderr, "\r%6.2f / %.2f GB  %6.1f MB/s  ETA %4.0f s ", done / 1e9, total / 1e9, rate / 1e6,
            rate > 0 ? (total - done) / rate : 0.0);
}

int sl_cmd_synth(int argc, char **argv)
{
    sl_synth_opts o;
    sl_synth_opts_default(&o);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        sl_wformat f;
        int n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(synth_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--preset") && v) {
            o.preset = v, i++;
        } else if (!strcmp(a, "--tokenizer") && v) {
            o.tokenizer = v, i++;
        } else if ((!strcmp(a, "--quant") || !strcmp(a, "--expert-quant")) && v) {
            if (sl_wformat_parse(v, &f)) {
                sl_cli_error("%s: unknown format \"%s\" (f32, bf16, fp8, q8, q4)", a, v);
                return 2;
            }
            if (!strcmp(a, "--quant"))
                o.quant = f;
            else
                o.expert_quant = f;
            i++;
        } else if (!strcmp(a, "--layers")) {
            if (sl_cli_parse_int(a, v, 1, 1000, &o.layers))
                return 2;
            i++;
        } else if (!strcmp(a, "--seed")) {
            if (sl_cli_parse_int(a, v, 0, 2147483647, &n))
                return 2;
            o.seed = (uint64_t)n, i++;
        } else if (!strcmp(a, "--zstd")) {
            if (sl_cli_parse_int(a, v, 0, 22, &o.zstd_level))
                return 2;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (sl_cli_parse_int(a, v, 0, 4096, &o.threads))
                return 2;
            i++;
        } else if (a[0] == '-') {
            sl_cli_error("synth: unknown option or missing value \"%s\" (see sluice synth --help)", a);
            return 2;
        } else if (!out) {
            out = a;
        } else {
            sl_cli_error("synth: unexpected argument \"%s\"", a);
            return 2;
        }
    }
    if (!out) {
        sl_cli_error("synth: missing OUT.sluice");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = synth_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.cancel = &synth_cancel;
    o.progress = synth_progress;
    sl_error e = {0};
    double t0 = sl_now();
    int rc = sl_synth(out, &o, &e);
    if (isatty(2))
        fputc('\n', stderr);
    if (rc) {
        sl_cli_error("%s", e.msg);
        return 1;
    }
    fprintf(stderr, "wrote %s in %.1f s\n", out, sl_now() - t0);
    return 0;
}
