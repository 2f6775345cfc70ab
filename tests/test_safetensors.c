/* format/ safetensors reader: the transformers-made fixtures read back as their own headers and
 * index say, shapes follow the config's formulas, synthetic files round-trip byte for byte, and
 * every kind of broken file gives the right code and a message naming file and tensor. */
#include "format/format.h"
#include "tests/safetensors_write.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char st_dir[64];
static uint64_t st_seed;

static void st_setup(void)
{
    strcpy(st_dir, "/tmp/sl_st_XXXXXX");
    cr_assert_not_null(mkdtemp(st_dir), "mkdtemp: %s", strerror(errno));
    st_seed = stw_seed();
    cr_log_info("seed %llu (set SL_TEST_SEED to repeat)", (unsigned long long)st_seed);
}

static void st_teardown(void)
{
    stw_rmtree(st_dir);
}

TestSuite(safetensors, .init = st_setup, .fini = st_teardown);

/* ---- independent readers for the oracle side -------------------------------------------- */

static uint8_t *st_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n, "%s: short read", path);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static cJSON *st_json_file(const char *path)
{
    size_t n;
    uint8_t *b = st_slurp(path, &n);
    cJSON *j = cJSON_ParseWithLength((const char *)b, n);
    free(b);
    cr_assert_not_null(j, "%s: test could not parse it", path);
    return j;
}

static int st_json_int(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    cr_assert(cJSON_IsNumber(it), "fixture key %s", key);
    return (int)it->valuedouble;
}

static void st_path(char *buf, size_t cap, const char *dir, const char *name)
{
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    cr_assert(k > 0 && (size_t)k < cap);
}

static const sl_tensor_view *st_need(const sl_safetensors *st, const char *name)
{
    const sl_tensor_view *v = sl_safetensors_find(st, name);
    cr_assert_not_null(v, "tensor %s not found", name);
    return v;
}

static sl_safetensors *st_open_ok(const char *path)
{
    sl_safetensors *st = NULL;
    sl_error e = {0};
    int rc = sl_safetensors_open(path, &st, &e);
    cr_assert_eq(rc, SL_OK, "open %s: %d %s", path, rc, e.msg);
    cr_assert_not_null(st);
    return st;
}

/* Open must fail with `code`, leave *out NULL, and say one line holding each of `must`. */
static void st_expect_fail(const char *path, int code, const char *must1, const char *must2)
{
    sl_safetensors *st = (sl_safetensors *)&st;
    sl_error e = {0};
    int rc = sl_safetensors_open(path, &st, &e);
    if (rc == SL_OK)
        sl_safetensors_close(st);
    cr_assert_eq(rc, code, "%s: got %d (%s) want %d (%s); msg: %s", path, rc, sl_strerror(rc), code,
                 sl_strerror(code), e.msg);
    cr_assert_eq(e.code, code);
    cr_assert_null(st, "out must be NULL after a failed open");
    cr_assert_null(strchr(e.msg, '\n'), "one line: %s", e.msg);
    cr_assert_not_null(strstr(e.msg, path), "message must name %s: %s", path, e.msg);
    if (must1)
        cr_assert_not_null(strstr(e.msg, must1), "message must hold '%s': %s", must1, e.msg);
    if (must2)
        cr_assert_not_null(strstr(e.msg, must2), "message must hold '%s': %s", must2, e.msg);
}

static void st_fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)stw_rand(&st_seed);
}

/* ---- the transformers-made fixtures ------------------------------------------------------ */

static const char *const st_fixtures[] = {
    "tests/fixtures/tiny-a-bf16", "tests/fixtures/tiny-a-fp8",
    "tests/fixtures/tiny-b-bf16", "tests/fixtures/tiny-b-fp8",
};
#define ST_NFIX (sizeof st_fixtures / sizeof st_fixtures[0])

Test(safetensors, sharded_fixture_holds_exactly_the_index_weight_map)
{
    for (int f = 0; f < 2; f++) { /* tiny-a-* are the sharded ones */
        char ip[256];
        st_path(ip, sizeof ip, st_fixtures[f], "model.safetensors.index.json");
        cJSON *idx = st_json_file(ip);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
        cr_assert(cJSON_IsObject(wm));
        sl_safetensors *st = st_open_ok(st_fixtures[f]);
        cr_assert_eq(sl_safetensors_count(st), (size_t)cJSON_GetArraySize(wm), "%s", st_fixtures[f]);
        const cJSON *it;
        cJSON_ArrayForEach(it, wm) {
            const sl_tensor_view *v = st_need(st, it->string);
            cr_assert_str_eq(v->name, it->string);
            char fb[256];
            snprintf(fb, sizeof fb, "%s", v->file);
            cr_assert_str_eq(basename(fb), it->valuestring, "%s lives in %s, index says %s", it->string, v->file,
                             it->valuestring);
        }
        sl_safetensors_close(st);
        cJSON_Delete(idx);
    }
}

Test(safetensors, every_fixture_view_matches_its_header_and_bytes)
{
    for (size_t f = 0; f < ST_NFIX; f++) {
        /* Shard list: the index's distinct values, else model.safetensors. */
        char ip[256], shards[8][256];
        int nsh = 0;
        st_path(ip, sizeof ip, st_fixtures[f], "model.safetensors.index.json");
        if (access(ip, F_OK) == 0) {
            cJSON *idx = st_json_file(ip);
            const cJSON *it;
            cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(idx, "weight_map")) {
                char p[256];
                st_path(p, sizeof p, st_fixtures[f], it->valuestring);
                int seen = 0;
                for (int i = 0; i < nsh; i++)
                    seen |= strcmp(shards[i], p) == 0;
                if (!seen) {
                    cr_assert_lt(nsh, 8);
                    strcpy(shards[nsh++], p);
                }
            }
            cJSON_Delete(idx);
        } else {
            st_path(shards[nsh++], sizeof shards[0], st_fixtures[f], "model.safetensors");
        }

        sl_safetensors *st = st_open_ok(st_fixtures[f]);
        size_t total = 0;
        for (int s = 0; s < nsh; s++) {
            size_t len;
            uint8_t *b = st_slurp(shards[s], &len);
            uint64_t n = 0;
            for (int i = 0; i < 8; i++)
                n |= (uint64_t)b[i] << (8 * i);
            cJSON *h = cJSON_ParseWithLength((const char *)b + 8, n);
            cr_assert_not_null(h, "%s header", shards[s]);
            const cJSON *it;
            cJSON_ArrayForEach(it, h) {
                if (strcmp(it->string, "__metadata__") == 0)
                    continue;
                total++;
                const sl_tensor_view *v = st_need(st, it->string);
                cr_assert_str_eq(v->file, shards[s], "%s", it->string);
                cr_assert_str_eq(sl_dtype_name(v->dtype),
                                 cJSON_GetObjectItemCaseSensitive(it, "dtype")->valuestring, "%s", it->string);
                const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
                cr_assert_eq(v->ndim, cJSON_GetArraySize(shape), "%s", it->string);
                int64_t numel = 1;
                for (int d = 0; d < v->ndim; d++) {
                    int64_t x = (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
                    cr_assert_eq(v->shape[d], x, "%s dim %d", it->string, d);
                    numel *= x;
                }
                cr_assert_eq(v->numel, numel, "%s", it->string);
                const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
                size_t b0 = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
                size_t b1 = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
                cr_assert_eq(b1 - b0, (size_t)numel * sl_dtype_size(v->dtype), "%s", it->string);
                cr_assert_eq(memcmp(v->data, b + 8 + n + b0, b1 - b0), 0, "%s bytes differ", it->string);
            }
            cJSON_Delete(h);
            free(b);
        }
        cr_assert_eq(sl_safetensors_count(st), total, "%s", st_fixtures[f]);
        for (size_t i = 0; i < total; i++) {
            const sl_tensor_view *v = sl_safetensors_at(st, i);
            cr_assert_eq(sl_safetensors_find(st, v->name), v, "find and at agree on %s", v->name);
            if (i)
                cr_assert_lt(strcmp(sl_safetensors_at(st, i - 1)->name, v->name), 0, "sorted by name");
        }
        cr_assert_null(sl_safetensors_at(st, total));
        cr_assert_null(sl_safetensors_find(st, "model.layers.0.no_such.weight"));
        cr_assert_null(sl_safetensors_find(st, "model"));
        sl_safetensors_close(st);
    }
}

/* What a tensor is for, which fixes its dtype: linear weights go fp8 in an fp8 checkpoint. */
enum { ST_LINEAR, ST_BF16, ST_F32 };

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int kind;
} st_expect;

static int st_add(st_expect *x, int n, int kind, int64_t r, int64_t c, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int st_add(st_expect *x, int n, int kind, int64_t r, int64_t c, const char *fmt, ...)
{
    cr_assert_lt(n, 4096);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x[n].name, sizeof x[n].name, fmt, ap);
    va_end(ap);
    x[n].kind = kind;
    x[n].ndim = c ? 2 : 1;
    x[n].shape[0] = r;
    x[n].shape[1] = c;
    return n + 1;
}

Test(safetensors, fixture_shapes_and_dtypes_follow_the_config)
{
    st_expect *x = calloc(4096, sizeof *x);
    cr_assert_not_null(x);
    for (size_t f = 0; f < ST_NFIX; f++) {
        char cp[256];
        st_path(cp, sizeof cp, st_fixtures[f], "config.json");
        cJSON *cfg = st_json_file(cp);
        int H = st_json_int(cfg, "hidden_size"), V = st_json_int(cfg, "vocab_size");
        int NH = st_json_int(cfg, "num_attention_heads"), L = st_json_int(cfg, "num_hidden_layers");
        int nope = st_json_int(cfg, "qk_nope_head_dim"), rope = st_json_int(cfg, "qk_rope_head_dim");
        int vd = st_json_int(cfg, "v_head_dim"), qr = st_json_int(cfg, "q_lora_rank");
        int kvr = st_json_int(cfg, "kv_lora_rank"), I = st_json_int(cfg, "intermediate_size");
        int MI = st_json_int(cfg, "moe_intermediate_size"), E = st_json_int(cfg, "n_routed_experts");
        int S = st_json_int(cfg, "n_shared_experts"), K = st_json_int(cfg, "first_k_dense_replace");
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
        int br = 0, bc = 0;
        if (q) {
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
            br = (int)cJSON_GetArrayItem(b, 0)->valuedouble;
            bc = (int)cJSON_GetArrayItem(b, 1)->valuedouble;
        }

        int n = 0;
        n = st_add(x, n, ST_BF16, V, H, "model.embed_tokens.weight");
        n = st_add(x, n, ST_BF16, V, H, "lm_head.weight");
        n = st_add(x, n, ST_BF16, H, 0, "model.norm.weight");
        for (int l = 0; l < L; l++) {
            const char *p = "model.layers";
            n = st_add(x, n, ST_BF16, H, 0, "%s.%d.input_layernorm.weight", p, l);
            n = st_add(x, n, ST_BF16, H, 0, "%s.%d.post_attention_layernorm.weight", p, l);
            n = st_add(x, n, ST_LINEAR, qr, H, "%s.%d.self_attn.q_a_proj.weight", p, l);
            n = st_add(x, n, ST_BF16, qr, 0, "%s.%d.self_attn.q_a_layernorm.weight", p, l);
            n = st_add(x, n, ST_LINEAR, NH * (nope + rope), qr, "%s.%d.self_attn.q_b_proj.weight", p, l);
            n = st_add(x, n, ST_LINEAR, kvr + rope, H, "%s.%d.self_attn.kv_a_proj_with_mqa.weight", p, l);
            n = st_add(x, n, ST_BF16, kvr, 0, "%s.%d.self_attn.kv_a_layernorm.weight", p, l);
            n = st_add(x, n, ST_LINEAR, NH * (nope + vd), kvr, "%s.%d.self_attn.kv_b_proj.weight", p, l);
            n = st_add(x, n, ST_LINEAR, H, NH * vd, "%s.%d.self_attn.o_proj.weight", p, l);
            if (l < K) {
                n = st_add(x, n, ST_LINEAR, I, H, "%s.%d.mlp.gate_proj.weight", p, l);
                n = st_add(x, n, ST_LINEAR, I, H, "%s.%d.mlp.up_proj.weight", p, l);
                n = st_add(x, n, ST_LINEAR, H, I, "%s.%d.mlp.down_proj.weight", p, l);
                continue;
            }
            n = st_add(x, n, ST_BF16, E, H, "%s.%d.mlp.gate.weight", p, l);
            n = st_add(x, n, ST_F32, E, 0, "%s.%d.mlp.gate.e_score_correction_bias", p, l);
            for (int e = 0; e < E; e++) {
                n = st_add(x, n, ST_LINEAR, MI, H, "%s.%d.mlp.experts.%d.gate_proj.weight", p, l, e);
                n = st_add(x, n, ST_LINEAR, MI, H, "%s.%d.mlp.experts.%d.up_proj.weight", p, l, e);
                n = st_add(x, n, ST_LINEAR, H, MI, "%s.%d.mlp.experts.%d.down_proj.weight", p, l, e);
            }
            n = st_add(x, n, ST_LINEAR, MI * S, H, "%s.%d.mlp.shared_experts.gate_proj.weight", p, l);
            n = st_add(x, n, ST_LINEAR, MI * S, H, "%s.%d.mlp.shared_experts.up_proj.weight", p, l);
            n = st_add(x, n, ST_LINEAR, H, MI * S, "%s.%d.mlp.shared_experts.down_proj.weight", p, l);
        }

        sl_safetensors *st = st_open_ok(st_fixtures[f]);
        size_t nlinear = 0;
        for (int i = 0; i < n; i++) {
            const sl_tensor_view *v = st_need(st, x[i].name);
            cr_assert_eq(v->ndim, x[i].ndim, "%s: %s ndim", st_fixtures[f], x[i].name);
            for (int d = 0; d < x[i].ndim; d++)
                cr_assert_eq(v->shape[d], x[i].shape[d], "%s: %s dim %d is %lld, config says %lld", st_fixtures[f],
                             x[i].name, d, (long long)v->shape[d], (long long)x[i].shape[d]);
            sl_dtype want = x[i].kind == ST_F32 ? SL_DT_F32
                            : (x[i].kind == ST_LINEAR && q) ? SL_DT_F8_E4M3 : SL_DT_BF16;
            cr_assert_eq(v->dtype, want, "%s: %s is %s", st_fixtures[f], x[i].name, sl_dtype_name(v->dtype));
            if (x[i].kind != ST_LINEAR || !q)
                continue;
            nlinear++;
            char sn[128];
            snprintf(sn, sizeof sn, "%s_scale_inv", x[i].name);
            const sl_tensor_view *s = st_need(st, sn);
            cr_assert_eq(s->dtype, SL_DT_F32, "%s", sn);
            cr_assert_eq(s->ndim, 2, "%s", sn);
            cr_assert_eq(s->shape[0], (x[i].shape[0] + br - 1) / br, "%s rows", sn);
            cr_assert_eq(s->shape[1], (x[i].shape[1] + bc - 1) / bc, "%s cols", sn);
        }
        /* Nothing beyond the formulas' list (and one scale per fp8 weight). */
        cr_assert_eq(sl_safetensors_count(st), (size_t)n + nlinear, "%s holds %zu tensors, config implies %zu",
                     st_fixtures[f], sl_safetensors_count(st), (size_t)n + nlinear);
        sl_safetensors_close(st);
        cJSON_Delete(cfg);
    }
    free(x);
}

/* ---- synthetic files ---------------------------------------------------------------------- */

static const struct { const char *name; size_t size; sl_dtype dt; } st_dtypes[] = {
    {"F32", 4, SL_DT_F32}, {"F16", 2, SL_DT_F16}, {"BF16", 2, SL_DT_BF16}, {"F8_E4M3", 1, SL_DT_F8_E4M3},
};

Test(safetensors, dtype_names_and_sizes_are_the_safetensors_ones)
{
    for (size_t i = 0; i < 4; i++) {
        sl_dtype dt = (sl_dtype)-1;
        cr_assert_eq(sl_dtype_parse(st_dtypes[i].name, &dt), SL_OK);
        cr_assert_eq(dt, st_dtypes[i].dt);
        cr_assert_eq(sl_dtype_size(dt), st_dtypes[i].size);
        cr_assert_str_eq(sl_dtype_name(dt), st_dtypes[i].name);
    }
    const char *unsupported[] = {"I64", "F64", "BOOL", "U8", "I32", "F8_E5M2"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        sl_dtype dt;
        cr_assert_eq(sl_dtype_parse(unsupported[i], &dt), SL_E_UNSUPPORTED, "%s", unsupported[i]);
    }
    const char *bogus[] = {"", "bf16", "F8", "FLOAT", "F32 "};
    for (size_t i = 0; i < sizeof bogus / sizeof *bogus; i++) {
        sl_dtype dt;
        cr_assert_eq(sl_dtype_parse(bogus[i], &dt), SL_E_FORMAT, "'%s'", bogus[i]);
    }
}

/* Random tensors of every supported dtype and rank 0..4 (zero-size dims included). */
static int st_random_tensors(stw_tensor *t, char names[][48], int max, uint8_t **bufs)
{
    int n = 4 + (int)(stw_rand(&st_seed) % (uint64_t)(max - 3));
    for (int i = 0; i < n; i++) {
        int d = (int)(stw_rand(&st_seed) % 4);
        /* A random letter first, so name order differs from file order; the index keeps names unique. */
        snprintf(names[i], 48, "t%c.%02d.%llx.weight", (char)('a' + stw_rand(&st_seed) % 26), i,
                 (unsigned long long)(stw_rand(&st_seed) & 0xffffff));
        t[i] = (stw_tensor){.name = names[i], .dtype = st_dtypes[d].name, .ndim = (int)(stw_rand(&st_seed) % 5)};
        size_t numel = 1;
        for (int k = 0; k < t[i].ndim; k++) {
            t[i].shape[k] = (int64_t)(stw_rand(&st_seed) % 7); /* 0 now and then */
            numel *= (size_t)t[i].shape[k];
        }
        t[i].nbytes = numel * st_dtypes[d].size;
        bufs[i] = malloc(t[i].nbytes + 1);
        cr_assert_not_null(bufs[i]);
        st_fill(bufs[i], t[i].nbytes);
        t[i].data = bufs[i];
    }
    return n;
}

static void st_check_round_trip(const sl_safetensors *st, const stw_tensor *t, int n, const char *file)
{
    cr_assert_eq(sl_safetensors_count(st), (size_t)n);
    for (int i = 0; i < n; i++) {
        const sl_tensor_view *v = st_need(st, t[i].name);
        cr_assert_str_eq(sl_dtype_name(v->dtype), t[i].dtype, "seed %llu", (unsigned long long)st_seed);
        cr_assert_eq(v->ndim, t[i].ndim);
        int64_t numel = 1;
        for (int k = 0; k < t[i].ndim; k++) {
            cr_assert_eq(v->shape[k], t[i].shape[k]);
            numel *= t[i].shape[k];
        }
        cr_assert_eq(v->numel, numel);
        cr_assert_eq((size_t)v->numel * sl_dtype_size(v->dtype), t[i].nbytes);
        cr_assert(t[i].nbytes == 0 || memcmp(v->data, t[i].data, t[i].nbytes) == 0, "%s bytes, seed %llu",
                  t[i].name, (unsigned long long)st_seed);
        if (file)
            cr_assert_str_eq(v->file, file);
    }
    for (size_t i = 1; i < (size_t)n; i++)
        cr_assert_lt(strcmp(sl_safetensors_at(st, i - 1)->name, sl_safetensors_at(st, i)->name), 0);
}

Test(safetensors, random_tensors_round_trip_through_file_and_directory)
{
    for (int rep = 0; rep < 8; rep++) {
        stw_tensor t[16];
        char names[16][48];
        uint8_t *bufs[16];
        int n = st_random_tensors(t, names, 16, bufs);
        char p[256];
        st_path(p, sizeof p, st_dir, "model.safetensors");
        cr_assert_eq(stw_write(p, t, n), 0);

        sl_safetensors *st = st_open_ok(p);
        st_check_round_trip(st, t, n, p);
        sl_safetensors_close(st);
        st = st_open_ok(st_dir); /* the directory form finds model.safetensors */
        st_check_round_trip(st, t, n, NULL);
        sl_safetensors_close(st);
        for (int i = 0; i < n; i++)
            free(bufs[i]);
    }
}

Test(safetensors, empty_header_opens_with_no_tensors)
{
    char p[256];
    st_path(p, sizeof p, st_dir, "empty.safetensors");
    cr_assert_eq(stw_write_raw(p, 8, "{}      ", 8, NULL, 0), 0);
    sl_safetensors *st = st_open_ok(p);
    cr_assert_eq(sl_safetensors_count(st), 0);
    cr_assert_null(sl_safetensors_find(st, "x"));
    cr_assert_null(sl_safetensors_at(st, 0));
    sl_safetensors_close(st);
}

static void st_write_index(const char *dir, const char *const *tensors, const char *const *shards, int n)
{
    char p[256], buf[8192];
    size_t k = (size_t)snprintf(buf, sizeof buf, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s\"%s\":\"%s\"", i ? "," : "", tensors[i], shards[i]);
    snprintf(buf + k, sizeof buf - k, "}}");
    st_path(p, sizeof p, dir, "model.safetensors.index.json");
    cr_assert_eq(stw_write_text(p, buf), 0);
}

Test(safetensors, random_sharded_checkpoint_round_trips_through_its_index)
{
    enum { NS = 3 };
    stw_tensor t[NS][16];
    char names[NS][16][48];
    uint8_t *bufs[NS][16];
    int n[NS];
    const char *idx_t[NS * 16], *idx_s[NS * 16];
    char shard_names[NS][64];
    int m = 0;
    for (int s = 0; s < NS; s++) {
        n[s] = st_random_tensors(t[s], names[s], 16, bufs[s]);
        for (int i = 0; i < n[s]; i++)
            names[s][i][0] = (char)('A' + s); /* unique across shards */
        snprintf(shard_names[s], sizeof shard_names[s], "model-%05d-of-%05d.safetensors", s + 1, NS);
        char p[256];
        st_path(p, sizeof p, st_dir, shard_names[s]);
        cr_assert_eq(stw_write(p, t[s], n[s]), 0);
        for (int i = 0; i < n[s]; i++) {
            idx_t[m] = names[s][i];
            idx_s[m++] = shard_names[s];
        }
    }
    st_write_index(st_dir, idx_t, idx_s, m);
    sl_safetensors *st = st_open_ok(st_dir);
    cr_assert_eq(sl_safetensors_count(st), (size_t)m);
    for (int s = 0; s < NS; s++) {
        char p[256];
        st_path(p, sizeof p, st_dir, shard_names[s]);
        for (int i = 0; i < n[s]; i++) {
            const sl_tensor_view *v = st_need(st, names[s][i]);
            cr_assert_str_eq(v->file, p);
            cr_assert(t[s][i].nbytes == 0 || memcmp(v->data, t[s][i].data, t[s][i].nbytes) == 0);
            free(bufs[s][i]);
        }
    }
    sl_safetensors_close(st);
}

/* ---- broken files ------------------------------------------------------------------------- */

/* Header text as given (its true length in the prefix), then `dlen` random data bytes. */
static void st_write_header(const char *path, const char *header, size_t dlen)
{
    uint8_t *d = malloc(dlen + 1);
    cr_assert_not_null(d);
    st_fill(d, dlen);
    cr_assert_eq(stw_write_raw(path, strlen(header), header, strlen(header), d, dlen), 0);
    free(d);
}

Test(safetensors, truncated_file_fails_naming_file_and_first_cut_tensor)
{
    uint8_t a[60], b[14], c[16];
    st_fill(a, sizeof a);
    st_fill(b, sizeof b);
    st_fill(c, sizeof c);
    stw_tensor t[3] = {
        {.name = "blk.a.weight", .dtype = "F32", .ndim = 2, .shape = {3, 5}, .data = a, .nbytes = 60},
        {.name = "blk.b.weight", .dtype = "BF16", .ndim = 1, .shape = {7}, .data = b, .nbytes = 14},
        {.name = "blk.c.weight", .dtype = "F8_E4M3", .ndim = 2, .shape = {4, 4}, .data = c, .nbytes = 16},
    };
    char full_p[256], p[256];
    st_path(full_p, sizeof full_p, st_dir, "full.safetensors");
    st_path(p, sizeof p, st_dir, "cut.safetensors");
    cr_assert_eq(stw_write(full_p, t, 3), 0);
    size_t len;
    uint8_t *full = st_slurp(full_p, &len);
    size_t hdr_end = len - 90; /* 8 + header length */
    size_t ends[3] = {60, 74, 90};

    size_t cuts[32] = {0, 1, 7, 8, 12, hdr_end / 2, hdr_end - 1, hdr_end, hdr_end + 30, hdr_end + 60,
                       hdr_end + 70, hdr_end + 80, len - 1};
    int nc = 13;
    while (nc < 32)
        cuts[nc++] = stw_rand(&st_seed) % len;
    for (int i = 0; i < nc; i++) {
        FILE *f = fopen(p, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(full, 1, cuts[i], f), cuts[i]);
        cr_assert_eq(fclose(f), 0);
        const char *tensor = NULL;
        if (cuts[i] >= hdr_end)
            for (int k = 2; k >= 0; k--)
                if (ends[k] > cuts[i] - hdr_end)
                    tensor = t[k].name;
        cr_log_info("cut at %zu of %zu (seed %llu)", cuts[i], len, (unsigned long long)st_seed);
        st_expect_fail(p, SL_E_FORMAT, tensor, NULL);
    }
    free(full);
}

Test(safetensors, header_length_past_the_file_is_a_format_error)
{
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    uint8_t d[8] = {0};
    char p[256];
    st_path(p, sizeof p, st_dir, "long.safetensors");
    uint64_t lies[] = {strlen(h) + 9, strlen(h) + 1000, UINT64_MAX, (uint64_t)1 << 63};
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        cr_assert_eq(stw_write_raw(p, lies[i], h, strlen(h), d, sizeof d), 0);
        st_expect_fail(p, SL_E_FORMAT, "header length", NULL);
    }
}

Test(safetensors, header_that_is_not_a_json_object_is_a_format_error)
{
    const char *bad[] = {
        "",
        "this is not json",
        "{\"w\": {\"dtype\": \"F32\", \"shape\": [2",
        "[1, 2, 3]",
        "\"just a string\"",
        "{} trailing",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}}",
    };
    char p[256];
    st_path(p, sizeof p, st_dir, "garbage.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        st_write_header(p, bad[i], 4);
        st_expect_fail(p, SL_E_FORMAT, "header", NULL);
    }
    /* A NUL after the JSON is not padding. */
    cr_assert_eq(stw_write_raw(p, 4, "{}\0\0", 4, NULL, 0), 0);
    st_expect_fail(p, SL_E_FORMAT, "header", NULL);
}

Test(safetensors, data_offsets_past_data_section_name_file_and_tensor)
{
    char p[256];
    st_path(p, sizeof p, st_dir, "model.safetensors");
    st_write_header(p, "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[225],\"data_offsets\":[0,900]}}", 800);
    st_expect_fail(p, SL_E_FORMAT, "tensor \"model.norm.weight\"", "data_offsets [0, 900] end past data section (800 bytes)");
    /* Only the last tensor overreaches. */
    st_write_header(p,
                    "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                    "\"zz.b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}",
                    15);
    st_expect_fail(p, SL_E_FORMAT, "\"zz.b\"", "16");
}

Test(safetensors, data_offsets_disagreeing_with_dtype_and_shape_are_format_errors)
{
    const char *bad[] = {
        "{\"x.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",  /* needs 24 */
        "{\"x.w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", /* needs 12 */
        "{\"x.w\":{\"dtype\":\"F8_E4M3\",\"shape\":[0],\"data_offsets\":[0,1]}}",  /* needs 0 */
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[10,4]}}",     /* end < begin */
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0]}}",
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4,8]}}",
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[-4,0]}}",
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,\"4\"]}}",
        "{\"x.w\":{\"dtype\":\"F16\",\"shape\":[2]}}",
    };
    char p[256];
    st_path(p, sizeof p, st_dir, "off.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        st_write_header(p, bad[i], 32);
        st_expect_fail(p, SL_E_FORMAT, "\"x.w\"", NULL);
    }
    st_write_header(p, bad[3], 32);
    st_expect_fail(p, SL_E_FORMAT, "\"x.w\"", "[10, 4] end before begin");
    st_write_header(p, bad[0], 32);
    st_expect_fail(p, SL_E_FORMAT, "\"x.w\"", "hold 20 bytes, F32 [2, 3] needs 24");
}

Test(safetensors, unsupported_dtype_names_tensor_and_dtype)
{
    const char *dts[] = {"I64", "F64", "BOOL", "U8", "I8", "F8_E5M2"};
    char p[256], h[256];
    st_path(p, sizeof p, st_dir, "i64.safetensors");
    for (size_t i = 0; i < sizeof dts / sizeof *dts; i++) {
        snprintf(h, sizeof h, "{\"model.pos_ids\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,8]}}", dts[i]);
        st_write_header(p, h, 8);
        st_expect_fail(p, SL_E_UNSUPPORTED, "\"model.pos_ids\"", dts[i]);
    }
    /* Not a safetensors dtype at all: the file is wrong, not merely unsupported. */
    st_write_header(p, "{\"model.pos_ids\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    st_expect_fail(p, SL_E_FORMAT, "\"model.pos_ids\"", "Q7");
    st_write_header(p, "{\"model.pos_ids\":{\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    st_expect_fail(p, SL_E_FORMAT, "\"model.pos_ids\"", "dtype");
    st_write_header(p, "{\"model.pos_ids\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 8);
    st_expect_fail(p, SL_E_FORMAT, "\"model.pos_ids\"", "dtype");
}

Test(safetensors, bad_shapes_are_rejected_naming_the_tensor)
{
    struct { const char *h; int code; } bad[] = {
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[4,-1],\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", SL_E_FORMAT},
        {"{\"s.w\":[1,2]}", SL_E_FORMAT},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,4],\"data_offsets\":[0,16]}}", SL_E_UNSUPPORTED},
        {"{\"s.w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}",
         SL_E_FORMAT},
    };
    char p[256];
    st_path(p, sizeof p, st_dir, "shape.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        st_write_header(p, bad[i].h, 16);
        st_expect_fail(p, bad[i].code, "\"s.w\"", NULL);
    }
}

static void st_write_shard(const char *name, const char *const *tensors, int n)
{
    stw_tensor t[8];
    uint8_t d[8][8];
    cr_assert_leq(n, 8);
    for (int i = 0; i < n; i++) {
        st_fill(d[i], 8);
        t[i] = (stw_tensor){.name = tensors[i], .dtype = "BF16", .ndim = 1, .shape = {4}, .data = d[i], .nbytes = 8};
    }
    char p[256];
    st_path(p, sizeof p, st_dir, name);
    cr_assert_eq(stw_write(p, t, n), 0);
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

Test(safetensors, index_naming_a_missing_shard_is_an_io_error)
{
    st_write_shard(S1, (const char *[]){"a"}, 1);
    st_write_index(st_dir, (const char *[]){"a", "b.weight"}, (const char *[]){S1, S2}, 2);
    st_expect_fail(st_dir, SL_E_IO, S2, strerror(ENOENT));
    st_expect_fail(st_dir, SL_E_IO, "\"b.weight\"", NULL);
}

Test(safetensors, index_naming_a_tensor_its_shard_lacks_is_missing)
{
    st_write_shard(S1, (const char *[]){"a"}, 1);
    st_write_index(st_dir, (const char *[]){"a", "ghost.weight"}, (const char *[]){S1, S1}, 2);
    st_expect_fail(st_dir, SL_E_MISSING, "\"ghost.weight\"", S1);

    /* Present, but in the other shard than the index says. */
    st_write_shard(S2, (const char *[]){"b", "c"}, 2);
    st_write_index(st_dir, (const char *[]){"a", "b", "c"}, (const char *[]){S1, S1, S2}, 3);
    st_expect_fail(st_dir, SL_E_MISSING, "\"b\"", S1);
}

Test(safetensors, duplicate_tensor_names_are_format_errors)
{
    st_write_shard(S1, (const char *[]){"a", "shared.w"}, 2);
    st_write_shard(S2, (const char *[]){"b", "shared.w"}, 2);
    st_write_index(st_dir, (const char *[]){"a", "b", "shared.w"}, (const char *[]){S1, S2, S1}, 3);
    st_expect_fail(st_dir, SL_E_FORMAT, "\"shared.w\"", S2);

    char p[256];
    st_path(p, sizeof p, st_dir, "dup.safetensors");
    st_write_header(p,
                    "{\"dup.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"dup.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8);
    st_expect_fail(p, SL_E_FORMAT, "\"dup.w\"", NULL);
}

Test(safetensors, broken_index_json_is_a_format_error)
{
    st_write_shard(S1, (const char *[]){"a"}, 1);
    char ip[256];
    st_path(ip, sizeof ip, st_dir, "model.safetensors.index.json");
    const char *bad[] = {"{\"weight_map\": {\"a\": ", "{\"metadata\": {}}", "{\"weight_map\": [\"a\"]}",
                         "{\"weight_map\": {\"a\": 3}}", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(stw_write_text(ip, bad[i]), 0);
        st_expect_fail(st_dir, SL_E_FORMAT, "model.safetensors.index.json", NULL);
    }
}

Test(safetensors, missing_paths_and_tiny_files_fail_cleanly)
{
    char p[256];
    st_path(p, sizeof p, st_dir, "no/such/model.safetensors");
    st_expect_fail(p, SL_E_IO, strerror(ENOENT), NULL);
    st_expect_fail(st_dir, SL_E_IO, "model.safetensors", strerror(ENOENT)); /* empty directory */
    st_path(p, sizeof p, st_dir, "tiny.safetensors");
    for (int n = 0; n < 8; n++) {
        FILE *f = fopen(p, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite("\x02\0\0\0\0\0\0", 1, (size_t)n, f), (size_t)n);
        cr_assert_eq(fclose(f), 0);
        st_expect_fail(p, SL_E_FORMAT, "8-byte", NULL);
    }
}
