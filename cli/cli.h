/* cli/: the `sluice` command. Each subcommand is one function taking its own argv (argv[0] is
 * the subcommand's name) and returning the process exit code. Only cli/ prints. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include "model/model.h"
#include "stream/stream.h"

#include <stdbool.h>
#include <stdint.h>

int sl_cmd_logits(int argc, char **argv);
int sl_cmd_generate(int argc, char **argv);
int sl_cmd_run(int argc, char **argv);
int sl_cmd_tokenize(int argc, char **argv);
int sl_cmd_bench_io(int argc, char **argv);
int sl_cmd_synth(int argc, char **argv);
int sl_cmd_convert(int argc, char **argv);
int sl_cmd_inspect(int argc, char **argv);

/* A tokenizer from a tokenizer.json (or a directory holding one) or a .sluice file's embedded
 * copy. */
struct sl_tokenizer;
int sl_cli_open_tokenizer(const char *path, struct sl_tokenizer **out, sl_error *e);

/* "sluice: <msg>" on stderr, one line. */
void sl_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse "3,17,42" into ids (caller frees *out). Returns 0, or -1 after printing which item is bad. */
int sl_cli_parse_ids(const char *s, int **out, int *n);

/* Parse a non-negative integer option value; -1 after printing an error naming the option. */
int sl_cli_parse_int(const char *opt, const char *val, int lo, int hi, int *out);

/* The engine options every running command takes (--vram, --ram, --trace, --no-prefetch,
 * --threads) and the engine they open. */
typedef struct sl_cli_engine_opts {
    uint64_t vram, ram;
    const char *trace;
    const char *backend; /* "cpu", "cuda", NULL: cuda when built and a GPU is present */
    int device;
    bool no_prefetch;
    bool sync_uploads;  /* --sync-uploads */
    bool stream_cores;  /* --stream-cores */
    bool act_bf16;      /* --act bf16 */
    int threads;
    int policy; /* sl_cache_policy + 1; 0: the default (LFU) */
    int prefetch_width; /* 0: the model's experts per token */
} sl_cli_engine_opts;
extern const char sl_cli_engine_usage[];
/* If argv[*i] is an engine option, take it (and its value, advancing *i) and return 1; 0 when it
 * is not one; -1 after printing an error. */
int sl_cli_engine_option(sl_cli_engine_opts *o, int argc, char **argv, int *i);

typedef struct sl_cli_engine {
    sl_backend *b;
    sl_model *m;
    sl_stream *st; /* non-NULL when the model streams from a .sluice file */
    double t0;
} sl_cli_engine;
/* Open PATH (.sluice: streamed; directory: loaded whole). Prints the error itself. */
int sl_cli_engine_open(sl_cli_engine *en, const char *path, const sl_cli_engine_opts *o, int max_tokens,
                       int max_ctx);
/* Close; with summary, print the streaming summary (hit rates, bytes, waits) to stderr first. */
void sl_cli_engine_close(sl_cli_engine *en, bool summary);

#endif
