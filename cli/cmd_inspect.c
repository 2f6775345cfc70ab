/* `sluice inspect FILE.sluice`: what a .sluice file holds (config, formats, per-kind sizes and
 * compression) and, with --verify, a check of every chunk's checksum. */
#include "cli/cli.h"
#include "format/format.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sl_cmd_inspect(int argc, char **argv);

static const char inspect_usage[] =
    "usage: sluice inspect FILE.sluice [--verify] [--threads N] [--tensors]\n"
    "  Print the model config, the weight formats, and per chunk kind (resident, layer core,\n"
    "  expert) the chunk count, decoded and stored bytes and the compression ratio.\n"
    "  --verify   read every chunk and check its checksum (progress on a terminal)\n"
    "  --threads  verify workers (default: all cores)\n"
    "  --tensors  list the tensor directory: chunk, name, format, shape, offset, bytes\n";

static void human(char *buf, size_t n, double b)
{
    if (b >= 1e9)
        snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, n, "%.2f MB", b / 1e6);
    else
        snprintf(buf, n, "%.1f kB", b / 1e3);
}

typedef struct verify_bar {
    bool tty;
    double t0, last;
} verify_bar;

static void on_verify(void *ctx, uint64_t done, uint64_t total)
{
    verify_bar *b = ctx;
    double now = sl_now(), t = now - b->t0;
    if (!b->tty || (done < total && now - b->last < 0.1))
        return;
    b->last = now;
    double f = total ? (double)done / (double)total : 1;
    char fill[25], d[32], eta[32] = "?";
    for (int i = 0; i < 24; i++)
        fill[i] = i < (int)(f * 24) ? '#' : '-';
    fill[24] = 0;
    human(d, sizeof d, (double)done);
    if (f > 0 && t > 0.5)
        snprintf(eta, sizeof eta, "%.0fs", t * (1 - f) / f);
    fprintf(stderr, "\rverify [%s] %5.1f%%  %s  %.2f GB/s  ETA %s\033[K", fill, 100 * f, d,
            t > 0 ? (double)done / t / 1e9 : 0.0, eta);
    fflush(stderr);
}

static void print_header(const sl_sluice *f)
{
    const sl_config *c = sl_sluice_config(f);
    size_t ml, tl;
    const char *meta = sl_sluice_metadata(f, &ml);
    const char *tok = sl_sluice_tokenizer(f, &tl);
    cJSON *j = cJSON_ParseWithLength(meta, ml);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quant");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(j, "config");
    const char *conv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "converter"));
    const char *src = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "source"));
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg, "model_type"));
    const char *qd = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(q, "default"));
    const char *qe = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(q, "experts"));
    const cJSON *zl = cJSON_GetObjectItemCaseSensitive(q, "zstd_level");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(q, "min_saving");
    char size[32], ts[32];
    human(size, sizeof size, (double)sl_sluice_file_size(f));
    printf("%s: .sluice version %d, %s, %zu chunks, %zu tensors\n", sl_sluice_path(f), SL_SLUICE_VERSION,
           size, sl_sluice_chunk_count(f), sl_sluice_tensor_count(f));
    printf("converter: %s; source: %s\n", conv ? conv : "?", src ? src : "?");
    if (cJSON_IsNumber(zl) && zl->valueint > 0)
        printf("quant: matrices %s, experts %s; zstd level %d, kept when it saves >= %.0f%%\n", qd ? qd : "?",
               qe ? qe : "?", zl->valueint, cJSON_IsNumber(ms) ? 100 * ms->valuedouble : 0.0);
    else
        printf("quant: matrices %s, experts %s; no compression\n", qd ? qd : "?", qe ? qe : "?");
    human(ts, sizeof ts, (double)tl);
    printf("tokenizer: %s%s\n", tok ? "embedded, " : "none", tok ? ts : "");
    int moe = 0;
    for (int i = 0; i < c->num_hidden_layers; i++)
        moe += sl_sluice_expert_chunk(f, i, 0) >= 0;
    printf("model: %s, %d layers (%d dense, %d MoE), hidden %d, vocab %d, %d heads, q_lora %d, kv_lora %d\n",
           mt ? mt : "?", c->num_hidden_layers, c->num_hidden_layers - moe, moe, c->hidden_size,
           c->vocab_size, c->num_attention_heads, c->q_lora_rank, c->kv_lora_rank);
    printf("experts: %d routed per MoE layer (%d per token) + %d shared, width %d; dense FFN width %d\n",
           c->n_routed_experts, c->num_experts_per_tok, c->n_shared_experts, c->moe_intermediate_size,
           c->intermediate_size);
    cJSON_Delete(j);
}

static void print_kinds(const sl_sluice *f)
{
    uint64_t n[SL_CHUNK_KIND_COUNT + 1] = {0}, nt[SL_CHUNK_KIND_COUNT + 1] = {0};
    uint64_t dec[SL_CHUNK_KIND_COUNT + 1] = {0}, sto[SL_CHUNK_KIND_COUNT + 1] = {0};
    uint64_t z[SL_CHUNK_KIND_COUNT + 1] = {0};
    uint64_t fmt_n[SL_CHUNK_KIND_COUNT][SL_WF_COUNT] = {{0}};
    for (size_t i = 0; i < sl_sluice_chunk_count(f); i++) {
        const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
        int rows[2] = {c->kind, SL_CHUNK_KIND_COUNT}; /* its kind's row and the total row */
        for (int r = 0; r < 2; r++) {
            int k = rows[r];
            n[k]++, nt[k] += c->n_tensors, dec[k] += c->decoded_size, sto[k] += c->stored_size;
            z[k] += c->codec == SL_CODEC_ZSTD;
        }
        for (uint32_t t = c->first_tensor; t < c->first_tensor + c->n_tensors; t++)
            fmt_n[c->kind][sl_sluice_tensor_at(f, t)->format]++;
    }
    printf("\n%-11s %7s %8s %11s %11s %7s %11s  %s\n", "kind", "chunks", "tensors", "decoded", "stored",
           "ratio", "zstd", "formats");
    for (int k = 0; k <= SL_CHUNK_KIND_COUNT; k++) {
        char d[32], s[32], zs[32], fm[128] = "";
        human(d, sizeof d, (double)dec[k]);
        human(s, sizeof s, (double)sto[k]);
        snprintf(zs, sizeof zs, "%llu/%llu", (unsigned long long)z[k], (unsigned long long)n[k]);
        for (int w = 0; k < SL_CHUNK_KIND_COUNT && w < SL_WF_COUNT; w++)
            if (fmt_n[k][w])
                snprintf(fm + strlen(fm), sizeof fm - strlen(fm), "%s%s x%llu", fm[0] ? ", " : "",
                         sl_wformat_get(w)->name, (unsigned long long)fmt_n[k][w]);
        printf("%-11s %7llu %8llu %11s %11s %6.3fx %11s  %s\n",
               k < SL_CHUNK_KIND_COUNT ? sl_chunk_kind_name(k) : "total", (unsigned long long)n[k],
               (unsigned long long)nt[k], d, s, sto[k] ? (double)dec[k] / (double)sto[k] : 1.0, zs, fm);
    }
    if (n[SL_CHUNK_EXPERT]) {
        char d[32], s[32];
        human(d, sizeof d, (double)dec[SL_CHUNK_EXPERT] / (double)n[SL_CHUNK_EXPERT]);
        human(s, sizeof s, (double)sto[SL_CHUNK_EXPERT] / (double)n[SL_CHUNK_EXPERT]);
        printf("one expert chunk: %s decoded, %s stored on average\n", d, s);
    }
}

static void print_tensors(const sl_sluice *f)
{
    printf("\n%6s  %-56s %-5s %-14s %10s %12s\n", "chunk", "tensor", "fmt", "shape", "offset", "bytes");
    for (size_t i = 0; i < sl_sluice_tensor_count(f); i++) {
        const sl_sluice_tensor *t = sl_sluice_tensor_at(f, i);
        char shape[48];
        snprintf(shape, sizeof shape, t->cols ? "[%lld, %lld]" : "[%lld]", (long long)t->rows,
                 (long long)t->cols);
        printf("%6u  %-56s %-5s %-14s %10llu %12llu\n", t->chunk, t->name, sl_wformat_get(t->format)->name,
               shape, (unsigned long long)t->offset, (unsigned long long)t->nbytes);
    }
}

int sl_cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool verify = false, tensors = false;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(inspect_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--verify")) {
            verify = true;
        } else if (!strcmp(a, "--tensors")) {
            tensors = true;
        } else if (!strcmp(a, "--threads")) {
            if (sl_cli_parse_int(a, i + 1 < argc ? argv[i + 1] : NULL, 0, 4096, &threads))
                return 2;
            i++;
        } else if (a[0] == '-') {
            sl_cli_error("inspect: unknown option \"%s\" (see sluice inspect --help)", a);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            sl_cli_error("inspect: unexpected argument \"%s\"", a);
            return 2;
        }
    }
    if (!path) {
        fputs(inspect_usage, stderr);
        return 2;
    }
    sl_sluice *f;
    sl_error e = {0};
    if (sl_sluice_open(path, &f, &e)) {
        sl_cli_error("%s", e.msg);
        return 1;
    }
    print_header(f);
    print_kinds(f);
    if (tensors)
        print_tensors(f);
    fflush(stdout);
    int rc = 0;
    if (verify) {
        verify_bar b = {.tty = isatty(2), .t0 = sl_now()};
        rc = sl_sluice_verify(f, threads, 0, on_verify, &b, &e);
        if (b.tty)
            fputc('\n', stderr);
        double t = sl_now() - b.t0;
        if (rc) {
            sl_cli_error("%s", e.msg);
        } else {
            uint64_t bytes = 0;
            for (size_t i = 0; i < sl_sluice_chunk_count(f); i++)
                bytes += sl_sluice_chunk_at(f, i)->stored_size;
            char d[32];
            human(d, sizeof d, (double)bytes);
            printf("verify: all %zu chunk checksums match (%s in %.1f s, %.2f GB/s)\n", sl_sluice_chunk_count(f),
                   d, t, t > 0 ? (double)bytes / t / 1e9 : 0.0);
        }
    }
    sl_sluice_close(f);
    return rc ? 1 : 0;
}
