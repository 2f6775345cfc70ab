/* format/ converter: every fixture (bf16 and official-style fp8, sharded and single-file) converts
 * with every --quant; the file obeys the layout rules (checked against the fixtures' own
 * config.json and safetensors headers, parsed here); tensors kept in their format come back bit
 * for bit, recoded ones within their format's rounding bound (decoded here from quant.h's stated
 * layouts); the tokenizer is embedded verbatim; a flipped byte in any chunk is caught naming the
 * chunk; and a failed, cancelled or killed conversion leaves neither OUT nor OUT.tmp. */
#include "format/format.h"
#include "quant/quant.h"
#include "tests/safetensors_write.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char cv_dir[64];
static uint64_t cv_seed;

static void cv_setup(void)
{
    strcpy(cv_dir, "/tmp/sl_cv_XXXXXX");
    cr_assert_not_null(mkdtemp(cv_dir), "mkdtemp: %s", strerror(errno));
    cv_seed = stw_seed();
    cr_log_info("seed %llu (set SL_TEST_SEED to repeat)", (unsigned long long)cv_seed);
}

static void cv_teardown(void) { stw_rmtree(cv_dir); }

TestSuite(convert, .init = cv_setup, .fini = cv_teardown, .timeout = 60);

static const char *const cv_fixtures[] = {"tests/fixtures/tiny-a-bf16", "tests/fixtures/tiny-a-fp8",
                                          "tests/fixtures/tiny-b-bf16", "tests/fixtures/tiny-b-fp8"};

/* ---- the oracle side: the fixture's own files, parsed here ---------------------------------- */

static char *cv_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    if (len)
        *len = (size_t)n;
    return b;
}

typedef struct cv_cfg {
    int layers, first_dense, experts, freq;
    cJSON *json;
} cv_cfg;

static cv_cfg cv_config(const char *dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *t = cv_slurp(p, NULL);
    cv_cfg c = {.json = cJSON_Parse(t)};
    free(t);
    cr_assert_not_null(c.json);
    c.layers = cJSON_GetObjectItem(c.json, "num_hidden_layers")->valueint;
    c.first_dense = cJSON_GetObjectItem(c.json, "first_k_dense_replace")->valueint;
    c.experts = cJSON_GetObjectItem(c.json, "n_routed_experts")->valueint;
    const cJSON *f = cJSON_GetObjectItem(c.json, "moe_layer_freq");
    c.freq = f ? f->valueint : 1;
    return c;
}

static bool cv_is_moe(const cv_cfg *c, int l) { return l >= c->first_dense && l % c->freq == 0; }

/* name -> safetensors dtype string, from every shard's JSON header in dir. */
static cJSON *cv_source_dtypes(const char *dir)
{
    cJSON *all = cJSON_CreateObject();
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 12 || strcmp(de->d_name + n - 12, ".safetensors"))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        size_t len;
        char *b = cv_slurp(p, &len);
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | (uint8_t)b[i];
        cJSON *h = cJSON_ParseWithLength(b + 8, hl);
        cr_assert_not_null(h, "%s header", p);
        for (cJSON *it = h->child; it; it = it->next)
            if (strcmp(it->string, "__metadata__"))
                cJSON_AddStringToObject(all, it->string, cJSON_GetObjectItem(it, "dtype")->valuestring);
        cJSON_Delete(h);
        free(b);
    }
    closedir(d);
    return all;
}

static bool cv_ends(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ---- running the converter ----------------------------------------------------------------- */

static void cv_out(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", cv_dir, name); }

static int cv_convert(const char *src, const char *out, int quant, int expert_quant, int zstd, sl_error *e)
{
    sl_convert_opts o;
    sl_convert_opts_default(&o);
    o.quant = quant;
    o.expert_quant = expert_quant;
    o.zstd_level = zstd;
    o.threads = 2;
    return sl_convert(src, out, &o, NULL, e);
}

static bool cv_exists(const char *p) { return access(p, F_OK) == 0; }

/* ---- layout rules -------------------------------------------------------------------------- */

static const char *cv_fmt_of_dtype(const char *dt) { return !strcmp(dt, "F32") ? "f32" : !strcmp(dt, "BF16") ? "bf16" : "fp8"; }

/* The file's table against the rules and the fixture: see FORMAT.md "Layout rules". */
static void cv_check_layout(const char *dir, const char *path, int quant, int expert_quant, bool zstd)
{
    cv_cfg cfg = cv_config(dir);
    cJSON *src = cv_source_dtypes(dir);
    sl_sluice *f;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_open(path, &f, &e), 0, "%s", e.msg);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq((uint64_t)sb.st_size % 4096, 0);

    /* the expected chunk sequence */
    size_t ci = 0, nc = sl_sluice_chunk_count(f);
    char want[128];
    const sl_sluice_chunk *c = sl_sluice_chunk_at(f, ci++);
    cr_assert(c->kind == SL_CHUNK_RESIDENT && c->n_tensors == 1);
    cr_assert_str_eq(sl_sluice_tensor_at(f, c->first_tensor)->name, "model.embed_tokens.weight");
    c = sl_sluice_chunk_at(f, ci++);
    cr_assert(c->kind == SL_CHUNK_RESIDENT && c->n_tensors == 2);
    cr_assert_str_eq(sl_sluice_tensor_at(f, c->first_tensor)->name, "lm_head.weight");
    cr_assert_str_eq(sl_sluice_tensor_at(f, c->first_tensor + 1)->name, "model.norm.weight");
    for (int l = 0; l < cfg.layers; l++) {
        cr_assert_lt(ci, nc);
        c = sl_sluice_chunk_at(f, ci);
        cr_assert(c->kind == SL_CHUNK_CORE && c->layer == l, "chunk %zu is layer %d's core", ci, l);
        cr_assert_eq(sl_sluice_core_chunk(f, l), (int64_t)ci);
        /* exactly the layer's non-expert source tensors */
        char prefix[64];
        int n_core = snprintf(prefix, sizeof prefix, "model.layers.%d.", l), expect = 0;
        for (cJSON *it = src->child; it; it = it->next)
            expect += !strncmp(it->string, prefix, (size_t)n_core) && !strstr(it->string, ".mlp.experts.") &&
                      !cv_ends(it->string, "_scale_inv");
        cr_assert_eq(c->n_tensors, (uint32_t)expect, "layer %d core holds %u tensors, the source has %d", l,
                     c->n_tensors, expect);
        for (uint32_t t = 0; t < c->n_tensors; t++) {
            const char *nm = sl_sluice_tensor_at(f, c->first_tensor + t)->name;
            cr_assert(!strncmp(nm, prefix, (size_t)n_core) && !strstr(nm, ".mlp.experts."), "%s in layer %d core",
                      nm, l);
        }
        ci++;
        if (!cv_is_moe(&cfg, l))
            continue;
        for (int x = 0; x < cfg.experts; x++, ci++) {
            cr_assert_lt(ci, nc);
            c = sl_sluice_chunk_at(f, ci);
            cr_assert(c->kind == SL_CHUNK_EXPERT && c->layer == l && c->expert == x,
                      "chunk %zu is layer %d expert %d (contiguous, in order)", ci, l, x);
            cr_assert_eq(sl_sluice_expert_chunk(f, l, x), (int64_t)ci);
            cr_assert_eq(c->n_tensors, 3u, "one expert = one chunk of gate, up, down");
            const char *parts[3] = {"gate_proj", "up_proj", "down_proj"};
            for (int t = 0; t < 3; t++) {
                snprintf(want, sizeof want, "model.layers.%d.mlp.experts.%d.%s.weight", l, x, parts[t]);
                cr_assert_str_eq(sl_sluice_tensor_at(f, c->first_tensor + (uint32_t)t)->name, want);
            }
        }
    }
    cr_assert_eq(ci, nc, "no chunks beyond the plan");

    /* alignment, sizes, codecs */
    uint64_t prev_end = 0;
    for (size_t i = 0; i < nc; i++) {
        c = sl_sluice_chunk_at(f, i);
        cr_assert_eq(c->offset % 4096, 0, "chunk %zu at %llu", i, (unsigned long long)c->offset);
        cr_assert_geq(c->offset, prev_end);
        prev_end = c->offset + (c->stored_size + 4095) / 4096 * 4096;
        uint64_t end = 0;
        for (uint32_t t = c->first_tensor; t < c->first_tensor + c->n_tensors; t++) {
            const sl_sluice_tensor *st = sl_sluice_tensor_at(f, t);
            cr_assert_eq(st->offset % 64, 0);
            cr_assert_geq(st->offset, end);
            cr_assert_lt(st->offset, end + 64, "no more gap than alignment needs");
            end = st->offset + st->nbytes;
        }
        cr_assert_eq(c->decoded_size, end, "chunk %zu decoded size = its tensors", i);
        if (!zstd)
            cr_assert_eq(c->codec, SL_CODEC_RAW);
        else if (c->codec == SL_CODEC_ZSTD)
            cr_assert_lt(c->stored_size, c->decoded_size);
    }
    cr_assert_eq(prev_end, (uint64_t)sb.st_size);

    /* names: exactly the source's (scales ride with their weights); formats by role */
    int n_src = 0;
    for (cJSON *it = src->child; it; it = it->next) {
        if (cv_ends(it->string, "_scale_inv"))
            continue;
        n_src++;
        const sl_sluice_tensor *t = sl_sluice_find(f, it->string);
        cr_assert_not_null(t, "%s is in the file", it->string);
        const char *sfmt = cv_fmt_of_dtype(it->valuestring);
        bool keep = t->cols == 0 || cv_ends(it->string, "mlp.gate.weight");
        bool expert = strstr(it->string, ".mlp.experts.") != NULL;
        int q = expert && expert_quant >= 0 ? expert_quant : quant;
        const char *expect = keep || q < 0 ? sfmt : sl_wformat_get(q)->name;
        cr_assert_str_eq(sl_wformat_get(t->format)->name, expect, "%s: %s (source %s)", it->string,
                         sl_wformat_get(t->format)->name, it->valuestring);
    }
    cr_assert_eq(sl_sluice_tensor_count(f), (size_t)n_src);
    cr_assert_eq(sl_sluice_verify(f, 2, 0, NULL, NULL, &e), 0, "%s", e.msg);
    sl_sluice_close(f);
    cJSON_Delete(src);
    cJSON_Delete(cfg.json);
}

Test(convert, every_fixture_and_quant_follows_the_layout_rules)
{
    const int quants[] = {-1, SL_WF_BF16, SL_WF_FP8, SL_WF_Q8, SL_WF_Q4};
    for (size_t fi = 0; fi < 4; fi++)
        for (size_t qi = 0; qi < 5; qi++) {
            char out[128];
            cv_out(out, sizeof out, "l.sluice");
            int q = quants[qi], eq = (qi == 1 && fi % 2 == 0) ? SL_WF_Q4 : -1; /* and one mixed recipe */
            bool zstd = (fi + qi) % 3 != 0;
            sl_error e = {0};
            cr_assert_eq(cv_convert(cv_fixtures[fi], out, q, eq, zstd ? 3 : 0, &e), 0, "%s --quant %d: %s",
                         cv_fixtures[fi], q, e.msg);
            cv_check_layout(cv_fixtures[fi], out, q, eq, zstd);
            char tmp[140];
            snprintf(tmp, sizeof tmp, "%s.tmp", out);
            cr_assert(!cv_exists(tmp));
        }
}

/* Same format in and out: the .sluice source hands back exactly what the HF source does. */
Test(convert, same_format_is_bit_exact)
{
    for (size_t fi = 0; fi < 4; fi++)
        for (int explicit = 0; explicit < 2; explicit++) {
            int q = explicit ? (fi % 2 ? SL_WF_FP8 : SL_WF_BF16) : -1;
            char out[128];
            cv_out(out, sizeof out, "x.sluice");
            sl_error e = {0};
            cr_assert_eq(cv_convert(cv_fixtures[fi], out, q, -1, 3, &e), 0, "%s", e.msg);
            sl_weight_source *hf, *sl;
            cr_assert_eq(sl_hf_source_open(cv_fixtures[fi], &hf, &e), 0, "%s", e.msg);
            cr_assert_eq(sl_sluice_source_open(out, &sl, &e), 0, "%s", e.msg);
            sl_sluice *f;
            cr_assert_eq(sl_sluice_open(out, &f, &e), 0);
            for (size_t i = 0; i < sl_sluice_tensor_count(f); i++) {
                const sl_sluice_tensor *t = sl_sluice_tensor_at(f, i);
                int fa, fb;
                void *a, *b;
                size_t na, nb;
                cr_assert_eq(hf->get(hf, t->name, t->rows, t->cols, &fa, &a, &na, &e), 0, "%s", e.msg);
                cr_assert_eq(sl->get(sl, t->name, t->rows, t->cols, &fb, &b, &nb, &e), 0, "%s", e.msg);
                /* --quant fp8 recodes the bf16 embedding and lm_head of an fp8 release; every
                 * tensor already in its target format must come through untouched */
                bool recoded = q >= 0 && fa != q && t->cols > 0 && !cv_ends(t->name, "mlp.gate.weight");
                cr_assert_eq(fb, recoded ? q : fa, "%s: format %d from %d", t->name, fb, fa);
                if (!recoded) {
                    cr_assert_eq(na, nb, "%s", t->name);
                    cr_assert_eq(memcmp(a, b, na), 0, "%s: bytes differ", t->name);
                }
                free(a);
                free(b);
            }
            sl_sluice_close(f);
            hf->close(hf);
            sl->close(sl);
        }
}

/* ---- independent decoders of quant.h's stated layouts ------------------------------------- */

static float cv_half(uint16_t h)
{
    int s = h >> 15, ex = (h >> 10) & 31, m = h & 1023;
    float v = ex == 0 ? ldexpf((float)m, -24) : ex == 31 ? INFINITY : ldexpf((float)(m | 1024), ex - 25);
    return s ? -v : v;
}

static float cv_e4m3(uint8_t b)
{
    int s = b >> 7, ex = (b >> 3) & 15, m = b & 7;
    float v = ex == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 | m), ex - 10);
    return s ? -v : v;
}

static float cv_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Element (r, c) of an encoded rows x cols matrix in fmt. */
static float cv_value(int fmt, const uint8_t *p, int64_t rows, int64_t cols, int64_t r, int64_t c)
{
    int64_t g = (cols + 31) / 32;
    uint16_t h;
    switch (fmt) {
    case SL_WF_F32: {
        float f;
        memcpy(&f, p + 4 * (r * cols + c), 4);
        return f;
    }
    case SL_WF_BF16:
        memcpy(&h, p + 2 * (r * cols + c), 2);
        return cv_bf16(h);
    case SL_WF_FP8: {
        float s;
        memcpy(&s, p + rows * cols + 4 * ((r / 128) * ((cols + 127) / 128) + c / 128), 4);
        return cv_e4m3(p[r * cols + c]) * s;
    }
    case SL_WF_Q8:
        memcpy(&h, p + rows * cols + 2 * (r * g + c / 32), 2);
        return (float)(int8_t)p[r * cols + c] * cv_half(h);
    case SL_WF_Q4: {
        int64_t rb = (cols + 1) / 2;
        uint8_t byte = p[r * rb + c / 2];
        int nib = c % 2 ? byte >> 4 : byte & 15;
        memcpy(&h, p + rows * rb + 2 * (r * g + c / 32), 2);
        return (float)(nib - 8) * cv_half(h);
    }
    }
    cr_assert_fail("format %d", fmt);
    return 0;
}

/* |decoded - source| within what fmt's rounding allows: half a step of a 32-group's scale for
 * q8/q4 (one step allowed: scale rounding, clamping), e4m3's 3-bit mantissa for fp8, bf16's 8. */
static void cv_check_bound(const char *name, int sfmt, const uint8_t *s, int dfmt, const uint8_t *d,
                           int64_t rows, int64_t cols)
{
    int64_t g = (cols + 31) / 32, bc = (cols + 127) / 128;
    float *x = malloc(sizeof(float) * (size_t)(rows * cols)), *y = malloc(sizeof(float) * (size_t)(rows * cols));
    float *gmax = calloc((size_t)(rows * g), sizeof(float));
    float *bmax = calloc((size_t)(((rows + 127) / 128) * bc), sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = x[r * cols + c] = cv_value(sfmt, s, rows, cols, r, c);
            y[r * cols + c] = cv_value(dfmt, d, rows, cols, r, c);
            gmax[r * g + c / 32] = fmaxf(gmax[r * g + c / 32], fabsf(v));
            bmax[(r / 128) * bc + c / 128] = fmaxf(bmax[(r / 128) * bc + c / 128], fabsf(v));
        }
    double err2 = 0, ref2 = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float xv = x[r * cols + c], yv = y[r * cols + c], amax = gmax[r * g + c / 32];
            float bound = dfmt == SL_WF_Q8   ? amax / 127
                        : dfmt == SL_WF_Q4   ? amax / 7
                        : dfmt == SL_WF_FP8  ? fabsf(xv) / 16 + bmax[(r / 128) * bc + c / 128] / 448 / 512
                        : dfmt == SL_WF_BF16 ? fabsf(xv) / 256
                                             : 0;
            cr_assert_leq(fabsf(xv - yv), bound * 1.001f + 1e-30f, "%s[%lld][%lld]: %g -> %g (bound %g)", name,
                          (long long)r, (long long)c, xv, yv, bound);
            err2 += (double)(xv - yv) * (xv - yv);
            ref2 += (double)xv * xv;
        }
    cr_assert_lt(sqrt(err2 / (ref2 + 1e-30)), dfmt == SL_WF_Q4 ? 0.2 : 0.05, "%s: relative L2 error", name);
    free(x);
    free(y);
    free(gmax);
    free(bmax);
}

Test(convert, recoded_values_stay_within_the_format_bound)
{
    const int to_bf16src[] = {SL_WF_FP8, SL_WF_Q8, SL_WF_Q4}, to_fp8src[] = {SL_WF_BF16, SL_WF_Q8, SL_WF_Q4};
    for (size_t fi = 0; fi < 4; fi++)
        for (int k = 0; k < 3; k++) {
            int q = fi % 2 ? to_fp8src[k] : to_bf16src[k];
            char out[128];
            cv_out(out, sizeof out, "q.sluice");
            sl_error e = {0};
            cr_assert_eq(cv_convert(cv_fixtures[fi], out, q, -1, 1, &e), 0, "%s", e.msg);
            sl_weight_source *hf, *sl;
            cr_assert_eq(sl_hf_source_open(cv_fixtures[fi], &hf, &e), 0);
            cr_assert_eq(sl_sluice_source_open(out, &sl, &e), 0);
            sl_sluice *f;
            cr_assert_eq(sl_sluice_open(out, &f, &e), 0);
            for (size_t i = 0; i < sl_sluice_tensor_count(f); i++) {
                const sl_sluice_tensor *t = sl_sluice_tensor_at(f, i);
                if (t->cols == 0 || t->format != q)
                    continue; /* kept tensors: same_format_is_bit_exact */
                int fa, fb;
                void *a, *b;
                size_t na, nb;
                cr_assert_eq(hf->get(hf, t->name, t->rows, t->cols, &fa, &a, &na, &e), 0);
                cr_assert_eq(sl->get(sl, t->name, t->rows, t->cols, &fb, &b, &nb, &e), 0);
                cr_assert_eq(fb, q);
                cv_check_bound(t->name, fa, a, fb, b, t->rows, t->cols);
                free(a);
                free(b);
            }
            sl_sluice_close(f);
            hf->close(hf);
            sl->close(sl);
        }
}

/* Splitting a big tensor's recoding over threads gives the very bytes one thread gives. */
Test(convert, parallel_recode_matches_serial)
{
    char a[128], b[128];
    cv_out(a, sizeof a, "serial.sluice");
    cv_out(b, sizeof b, "parallel.sluice");
    for (int q = SL_WF_FP8; q <= SL_WF_Q4; q++) {
        sl_convert_opts o;
        sl_convert_opts_default(&o);
        o.quant = q;
        o.threads = 1;
        sl_error e = {0};
        cr_assert_eq(sl_convert("tests/fixtures/tiny-b-bf16", a, &o, NULL, &e), 0, "%s", e.msg);
        o.threads = 5;                /* 700 vocab rows: parts of 256, 256, 188 rows and two empty */
        o.parallel_recode = 256 * 20; /* every matrix with >= 256 rows x 20 cols */
        cr_assert_eq(sl_convert("tests/fixtures/tiny-b-bf16", b, &o, NULL, &e), 0, "%s", e.msg);
        char *x, *y;
        size_t nx, ny;
        x = cv_slurp(a, &nx);
        y = cv_slurp(b, &ny);
        cr_assert_eq(nx, ny);
        cr_assert_eq(memcmp(x, y, nx), 0, "--quant %s: files differ", sl_wformat_get(q)->name);
        free(x);
        free(y);
    }
}

/* ---- metadata --------------------------------------------------------------------------------- */

/* A copy of a fixture directory: symlinks to its files, plus extra files the test writes. */
static void cv_clone(const char *from, const char *to)
{
    cr_assert_eq(mkdir(to, 0755), 0);
    DIR *d = opendir(from);
    struct dirent *de;
    char cwd[1024];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char a[2048], b[512];
        snprintf(a, sizeof a, "%s/%s/%s", cwd, from, de->d_name);
        snprintf(b, sizeof b, "%s/%s", to, de->d_name);
        cr_assert_eq(symlink(a, b), 0, "%s", strerror(errno));
    }
    closedir(d);
}

Test(convert, tokenizer_and_config_are_embedded_verbatim)
{
    uint64_t s = cv_seed;
    char src[128], out[128], out2[128], p[256];
    snprintf(src, sizeof src, "%s/src", cv_dir);
    cv_clone("tests/fixtures/tiny-b-bf16", src);
    /* a tokenizer.json whose exact bytes (spacing, escapes, number spelling) must survive */
    char tok[1024];
    int n = snprintf(tok, sizeof tok,
                     "{\n  \"version\": \"1.0\",\n  \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u0120the\": %llu, "
                     "\"\xc3\xa9t\xc3\xa9\": 2}, \"merges\": [\"a b\", \"\\\"q\\\" r\"]},\n  \"x\": 1.50e+00 }\n",
                     (unsigned long long)(stw_rand(&s) % 100000));
    snprintf(p, sizeof p, "%s/tokenizer.json", src);
    cr_assert_eq(stw_write_text(p, tok), 0);
    cv_out(out, sizeof out, "tok.sluice");
    sl_error e = {0};
    cr_assert_eq(cv_convert(src, out, SL_WF_Q8, -1, 3, &e), 0, "%s", e.msg);
    sl_sluice *f;
    cr_assert_eq(sl_sluice_open(out, &f, &e), 0, "%s", e.msg);
    size_t tl, ml;
    const char *t = sl_sluice_tokenizer(f, &tl);
    cr_assert_not_null(t);
    cr_assert_eq(tl, (size_t)n);
    cr_assert_str_eq(t, tok, "verbatim");
    const char *meta = sl_sluice_metadata(f, &ml);
    cJSON *m = cJSON_ParseWithLength(meta, ml);
    cr_assert_not_null(m, "the whole metadata is JSON");
    cr_assert_str_eq(cJSON_GetObjectItem(m, "format")->valuestring, "sluice");
    cr_assert_str_eq(cJSON_GetObjectItem(m, "converter")->valuestring, SL_SLUICE_CONVERTER);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "quant"), "default")->valuestring, "q8");
    cv_cfg cfg = cv_config("tests/fixtures/tiny-b-bf16");
    cr_assert(cJSON_Compare(cJSON_GetObjectItem(m, "config"), cfg.json, true), "config.json embedded as is");
    cJSON_Delete(m);
    sl_sluice_close(f);

    /* .sluice -> .sluice (re-quantize) keeps both */
    cv_out(out2, sizeof out2, "tok2.sluice");
    cr_assert_eq(cv_convert(out, out2, SL_WF_Q4, -1, 3, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_sluice_open(out2, &f, &e), 0, "%s", e.msg);
    cr_assert_str_eq(sl_sluice_tokenizer(f, NULL), tok);
    cr_assert_eq(sl_sluice_config(f)->num_hidden_layers, cfg.layers);
    sl_sluice_close(f);
    cJSON_Delete(cfg.json);

    /* none without tokenizer.json; a broken one is refused naming it */
    cr_assert_eq(cv_convert("tests/fixtures/tiny-b-bf16", out, -1, -1, 3, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_sluice_open(out, &f, &e), 0);
    cr_assert_null(sl_sluice_tokenizer(f, NULL));
    sl_sluice_close(f);
    cr_assert_eq(stw_write_text(p, "{\"model\": [1, 2"), 0);
    cr_assert_neq(cv_convert(src, out2, -1, -1, 3, &e), 0);
    cr_assert(strstr(e.msg, "tokenizer.json"), "%s", e.msg);
}

/* ---- corruption ------------------------------------------------------------------------------ */

Test(convert, flipped_byte_in_any_chunk_is_caught_naming_it)
{
    uint64_t s = cv_seed;
    for (int v = 0; v < 2; v++) {
        char out[128];
        cv_out(out, sizeof out, "flip.sluice");
        sl_error e = {0};
        const char *src = v ? "tests/fixtures/tiny-b-fp8" : "tests/fixtures/tiny-a-bf16";
        cr_assert_eq(cv_convert(src, out, v ? -1 : SL_WF_Q4, -1, v ? 0 : 3, &e), 0, "%s", e.msg);
        sl_sluice *f;
        cr_assert_eq(sl_sluice_open(out, &f, &e), 0);
        int fd = open(out, O_RDWR);
        cr_assert_geq(fd, 0);
        for (size_t i = 0; i < sl_sluice_chunk_count(f); i++) {
            const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
            uint64_t at = c->offset + stw_rand(&s) % c->stored_size;
            uint8_t orig, flip;
            cr_assert_eq(pread(fd, &orig, 1, (off_t)at), 1);
            flip = orig ^ (uint8_t)(1 + stw_rand(&s) % 255);
            cr_assert_eq(pwrite(fd, &flip, 1, (off_t)at), 1);
            char label[64];
            snprintf(label, sizeof label, "chunk %zu (", i);
            /* through the reader */
            void *dst = malloc(c->decoded_size);
            int rc = sl_sluice_read_chunk(f, i, NULL, dst, &e);
            free(dst);
            cr_assert_neq(rc, 0, "%s chunk %zu: flip at %llu not caught", out, i, (unsigned long long)at);
            cr_assert(strstr(e.msg, label) && strstr(e.msg, out), "names file and chunk: %s", e.msg);
            cr_assert(rc == SL_E_CHECKSUM && strstr(e.msg, "checksum"), "%s chunk: %s",
                      c->codec ? "zstd" : "raw", e.msg);
            /* through the weight source, as a model load would meet it */
            sl_weight_source *ws;
            cr_assert_eq(sl_sluice_source_open(out, &ws, &e), 0);
            const sl_sluice_tensor *t = sl_sluice_tensor_at(f, c->first_tensor);
            int fmt;
            void *b;
            size_t nb;
            cr_assert_eq(ws->get(ws, t->name, t->rows, t->cols, &fmt, &b, &nb, &e), rc);
            cr_assert(strstr(e.msg, label) && strstr(e.msg, t->name), "names chunk and tensor: %s", e.msg);
            ws->close(ws);
            cr_assert_eq(pwrite(fd, &orig, 1, (off_t)at), 1);
        }
        close(fd);
        sl_sluice_close(f);
    }
}

Test(convert, truncated_output_fails_to_open)
{
    uint64_t s = cv_seed;
    char out[128];
    cv_out(out, sizeof out, "trunc.sluice");
    sl_error e = {0};
    cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", out, SL_WF_Q8, -1, 3, &e), 0, "%s", e.msg);
    struct stat sb;
    cr_assert_eq(stat(out, &sb), 0);
    for (int k = 0; k < 6; k++) {
        off_t cut = (off_t)(stw_rand(&s) % (uint64_t)sb.st_size);
        if (k == 0)
            cut = sb.st_size - 1;
        cr_assert_eq(truncate(out, cut), 0);
        sl_sluice *f;
        cr_assert_neq(sl_sluice_open(out, &f, &e), 0, "cut at %lld opened", (long long)cut);
        cr_assert(strstr(e.msg, out) && (strstr(e.msg, "truncated") || cut == 0), "cut at %lld: %s",
                  (long long)cut, e.msg);
        cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", out, SL_WF_Q8, -1, 3, &e), 0);
    }
}

/* ---- interruption ------------------------------------------------------------------------------ */

typedef struct cv_cancel_ctx {
    volatile sig_atomic_t flag;
    uint32_t after;
} cv_cancel_ctx;

static void cv_cancel_after(void *ctx, const sl_convert_progress *p)
{
    cv_cancel_ctx *c = ctx;
    if (p->chunks_done >= c->after)
        c->flag = 1;
}

static void cv_assert_untouched(const char *out, const char *what)
{
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    cr_assert(!cv_exists(tmp), "%s: %s left behind", what, tmp);
    char *old = cv_slurp(out, NULL);
    cr_assert_str_eq(old, "previous contents", "%s: OUT replaced", what);
    free(old);
}

Test(convert, failed_or_cancelled_convert_leaves_no_output)
{
    char out[128], fresh[128];
    cv_out(out, sizeof out, "keep.sluice");
    cv_out(fresh, sizeof fresh, "fresh.sluice");
    cr_assert_eq(stw_write_text(out, "previous contents"), 0);
    const uint32_t points[] = {1, 5, 20};
    for (int k = 0; k < 3; k++) {
        sl_convert_opts o;
        sl_convert_opts_default(&o);
        o.threads = 2;
        o.fail_after_chunks = points[k];
        sl_error e = {0};
        cr_assert_neq(sl_convert("tests/fixtures/tiny-a-bf16", out, &o, NULL, &e), 0);
        cr_assert(strstr(e.msg, out), "%s", e.msg);
        cv_assert_untouched(out, "test hook");
        cr_assert_neq(sl_convert("tests/fixtures/tiny-a-bf16", fresh, &o, NULL, &e), 0);
        cr_assert(!cv_exists(fresh), "a failed convert creates no OUT");

        cv_cancel_ctx cc = {0, points[k]};
        sl_convert_opts_default(&o);
        o.threads = 2;
        o.progress = cv_cancel_after;
        o.progress_ctx = &cc;
        o.cancel = &cc.flag;
        cr_assert_neq(sl_convert("tests/fixtures/tiny-a-bf16", out, &o, NULL, &e), 0);
        cr_assert(strstr(e.msg, "interrupted"), "%s", e.msg);
        cv_assert_untouched(out, "cancel flag");
    }
    /* a failing source (one layer more in config.json than in the weights) also names the tensor */
    char src[128], p[256];
    snprintf(src, sizeof src, "%s/src", cv_dir);
    cr_assert_eq(mkdir(src, 0755), 0);
    char cwd[1024], a[2048];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(a, sizeof a, "%s/tests/fixtures/tiny-b-bf16/model.safetensors", cwd);
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    cr_assert_eq(symlink(a, p), 0);
    cv_cfg cfg = cv_config("tests/fixtures/tiny-b-bf16");
    cJSON_ReplaceItemInObject(cfg.json, "num_hidden_layers", cJSON_CreateNumber(cfg.layers + 1));
    char *text = cJSON_Print(cfg.json);
    snprintf(p, sizeof p, "%s/config.json", src);
    cr_assert_eq(stw_write_text(p, text), 0);
    free(text);
    cJSON_Delete(cfg.json);
    sl_error e = {0};
    cr_assert_eq(cv_convert(src, out, -1, -1, 3, &e), SL_E_MISSING, "%s", e.msg);
    char want[64];
    snprintf(want, sizeof want, "model.layers.%d.", cfg.layers);
    cr_assert(strstr(e.msg, want), "names the missing tensor: %s", e.msg);
    cv_assert_untouched(out, "missing tensor");
}

static volatile sig_atomic_t cv_sig;
static void cv_on_sig(int s) { cv_sig = s; }

typedef struct cv_child_ctx {
    int pipe_w;
    bool told;
} cv_child_ctx;

/* Slow the writer down and tell the parent once the file is half-written. */
static void cv_child_progress(void *ctx, const sl_convert_progress *p)
{
    cv_child_ctx *c = ctx;
    if (!c->told && p->chunks_done >= 2) {
        c->told = true;
        if (write(c->pipe_w, "x", 1) != 1)
            _exit(9);
    }
    usleep(20000);
}

/* A real signal to a converting process: as `sluice convert` handles it. */
Test(convert, sigterm_during_convert_leaves_no_output)
{
    char out[128];
    cv_out(out, sizeof out, "sig.sluice");
    cr_assert_eq(stw_write_text(out, "previous contents"), 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        struct sigaction sa = {.sa_handler = cv_on_sig};
        sigaction(SIGTERM, &sa, NULL);
        cv_child_ctx cc = {fds[1], false};
        sl_convert_opts o;
        sl_convert_opts_default(&o);
        o.threads = 2;
        o.progress = cv_child_progress;
        o.progress_ctx = &cc;
        o.cancel = &cv_sig;
        sl_error e = {0};
        int rc = sl_convert("tests/fixtures/tiny-a-bf16", out, &o, NULL, &e);
        _exit(rc == 0 ? 0 : cv_sig == SIGTERM ? 3 : 4);
    }
    close(fds[1]);
    char x;
    cr_assert_eq(read(fds[0], &x, 1), 1, "child reported progress");
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    close(fds[0]);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3, "child stopped by its signal flag (status %d)", st);
    cv_assert_untouched(out, "SIGTERM");
}

/* ---- the .sluice weight source and bad arguments --------------------------------------------- */

Test(convert, sluice_source_checks_names_and_shapes)
{
    char out[128];
    cv_out(out, sizeof out, "src.sluice");
    sl_error e = {0};
    cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", out, -1, -1, 3, &e), 0, "%s", e.msg);
    sl_weight_source *ws;
    cr_assert_eq(sl_sluice_source_open(out, &ws, &e), 0, "%s", e.msg);
    cr_assert_eq(ws->config->hidden_size, 200);
    int fmt;
    void *b;
    size_t nb;
    cr_assert_eq(ws->get(ws, "model.layers.9.mlp.gate.weight", 8, 200, &fmt, &b, &nb, &e), SL_E_MISSING);
    cr_assert(strstr(e.msg, "model.layers.9.mlp.gate.weight") && strstr(e.msg, out), "%s", e.msg);
    cr_assert_eq(ws->get(ws, "model.layers.1.mlp.gate.weight", 8, 201, &fmt, &b, &nb, &e), SL_E_SHAPE);
    cr_assert(strstr(e.msg, "[8, 200]") && strstr(e.msg, "[8, 201]"), "%s", e.msg);
    cr_assert_eq(ws->get(ws, "model.norm.weight", 200, 0, &fmt, &b, &nb, &e), 0, "%s", e.msg);
    cr_assert_eq(nb, 400u);
    cr_assert_eq(fmt, SL_WF_BF16);
    free(b);
    ws->close(ws);
}

Test(convert, bad_arguments_are_refused_clearly)
{
    char out[128];
    cv_out(out, sizeof out, "arg.sluice");
    sl_error e = {0};
    cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", out, 17, -1, 3, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "format 17"), "%s", e.msg);
    cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", out, -1, -1, 23, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "zstd level 23"), "%s", e.msg);
    cr_assert_eq(cv_convert("tests/fixtures/no-such-model", out, -1, -1, 3, &e), SL_E_IO);
    cr_assert(strstr(e.msg, "no-such-model"), "%s", e.msg);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.sluice", cv_dir);
    cr_assert_eq(cv_convert("tests/fixtures/tiny-a-fp8", bad, -1, -1, 3, &e), SL_E_IO);
    cr_assert(strstr(e.msg, "x.sluice.tmp"), "%s", e.msg);
    cr_assert(!cv_exists(out));
}
