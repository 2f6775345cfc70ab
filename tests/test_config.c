/* format/ config.json parser: fixture configs read back as their JSON says (read independently
 * with cJSON here), random configs round-trip in both rope layouts, absent keys take the
 * documented defaults, and every kind of bad config gives the right code naming the key. */
#include "format/format.h"
#include "tests/safetensors_write.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CJ_ORIGIN "synthetic/config.json"

static uint64_t cj_seed;

static void cj_setup(void)
{
    cj_seed = stw_seed();
    cr_log_info("seed %llu (set SL_TEST_SEED to repeat)", (unsigned long long)cj_seed);
}

TestSuite(config_json, .init = cj_setup);

static int cj_rand(int lo, int hi) /* inclusive */
{
    return lo + (int)(stw_rand(&cj_seed) % (uint64_t)(hi - lo + 1));
}

static double cj_randf(double lo, double hi)
{
    return lo + (hi - lo) * (double)(stw_rand(&cj_seed) >> 11) / 9007199254740992.0;
}

static const char *const cj_required[] = {
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "n_routed_experts", "num_experts_per_tok",
};
#define CJ_NREQ (sizeof cj_required / sizeof cj_required[0])

static int cj_parse(const cJSON *root, sl_config *out, sl_error *e)
{
    char *text = cJSON_PrintUnformatted(root);
    cr_assert_not_null(text);
    int rc = sl_config_parse(text, strlen(text), CJ_ORIGIN, out, e);
    free(text);
    return rc;
}

static sl_config cj_parse_ok(const cJSON *root)
{
    sl_config c;
    sl_error e = {0};
    int rc = cj_parse(root, &c, &e);
    cr_assert_eq(rc, SL_OK, "seed %llu: %s", (unsigned long long)cj_seed, e.msg);
    return c;
}

/* Fails with `code`, one line naming the origin and each `must`, and leaves *out alone. */
static void cj_expect_fail(const cJSON *root, int code, const char *must1, const char *must2)
{
    sl_config c, before;
    memset(&c, 0xab, sizeof c);
    memcpy(&before, &c, sizeof c);
    sl_error e = {0};
    int rc = cj_parse(root, &c, &e);
    cr_assert_eq(rc, code, "got %d (%s) want %d (%s): %s", rc, sl_strerror(rc), code, sl_strerror(code), e.msg);
    cr_assert_eq(e.code, code);
    cr_assert_eq(memcmp(&c, &before, sizeof c), 0, "out must be untouched on error");
    cr_assert_null(strchr(e.msg, '\n'), "one line: %s", e.msg);
    cr_assert_not_null(strstr(e.msg, CJ_ORIGIN), "message must name the origin: %s", e.msg);
    if (must1)
        cr_assert_not_null(strstr(e.msg, must1), "message must hold '%s': %s", must1, e.msg);
    if (must2)
        cr_assert_not_null(strstr(e.msg, must2), "message must hold '%s': %s", must2, e.msg);
}

static void cj_set(cJSON *obj, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static int cj_int(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    cr_assert(cJSON_IsNumber(it), "key %s", key);
    return (int)it->valuedouble;
}

static double cj_num(const cJSON *obj, const char *key, double def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(it) ? it->valuedouble : def;
}

/* A random config that obeys every rule (official layout, with yarn unless `plain`). */
static cJSON *cj_random(bool plain)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model_type", "deepseek_v3");
    int groups = cj_rand(1, 8), experts = groups * cj_rand(1, 32), layers = cj_rand(1, 61);
    int vals[CJ_NREQ] = {cj_rand(1, 130000), cj_rand(1, 8192), cj_rand(1, 20000), cj_rand(1, 4096), layers,
                         cj_rand(1, 128), cj_rand(1, 1024), cj_rand(1, 256), 2 * cj_rand(1, 64), cj_rand(1, 256),
                         experts, cj_rand(1, experts)};
    for (size_t i = 0; i < CJ_NREQ; i++)
        cJSON_AddNumberToObject(r, cj_required[i], vals[i]);
    cJSON_AddNumberToObject(r, "q_lora_rank", cj_rand(0, 2048));
    cJSON_AddNumberToObject(r, "first_k_dense_replace", cj_rand(0, layers));
    cJSON_AddNumberToObject(r, "moe_layer_freq", cj_rand(1, 3));
    cJSON_AddNumberToObject(r, "n_shared_experts", cj_rand(0, 2));
    cJSON_AddNumberToObject(r, "n_group", groups);
    cJSON_AddNumberToObject(r, "topk_group", cj_rand(1, groups));
    cJSON_AddBoolToObject(r, "norm_topk_prob", cj_rand(0, 1));
    cJSON_AddBoolToObject(r, "tie_word_embeddings", cj_rand(0, 1));
    cJSON_AddNumberToObject(r, "routed_scaling_factor", cj_randf(0.5, 3.0));
    cJSON_AddNumberToObject(r, "rms_norm_eps", cj_randf(1e-7, 1e-5));
    int maxpos = cj_rand(64, 200000);
    cJSON_AddNumberToObject(r, "max_position_embeddings", maxpos);
    cJSON_AddNumberToObject(r, "bos_token_id", cj_rand(0, 1000));
    cJSON_AddNumberToObject(r, "eos_token_id", cj_rand(0, 1000));
    cJSON_AddNumberToObject(r, "rope_theta", cj_randf(1e3, 1e6));
    if (plain) {
        cJSON_AddNullToObject(r, "rope_scaling");
    } else {
        cJSON *y = cJSON_AddObjectToObject(r, "rope_scaling");
        cJSON_AddStringToObject(y, "type", "yarn");
        cJSON_AddNumberToObject(y, "factor", cj_randf(1.0, 64.0));
        cJSON_AddNumberToObject(y, "original_max_position_embeddings", cj_rand(16, maxpos));
        cJSON_AddNumberToObject(y, "beta_fast", cj_randf(1, 64));
        cJSON_AddNumberToObject(y, "beta_slow", cj_randf(0.1, 2));
        cJSON_AddNumberToObject(y, "mscale", cj_randf(0.1, 2));
        cJSON_AddNumberToObject(y, "mscale_all_dim", cj_randf(0.1, 2));
        if (cj_rand(0, 1))
            cJSON_AddNumberToObject(y, "attention_factor", cj_randf(0.5, 2));
    }
    if (cj_rand(0, 1)) {
        cJSON *q = cJSON_AddObjectToObject(r, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "fp8");
        cJSON_AddStringToObject(q, "fmt", "e4m3");
        int b[2] = {cj_rand(1, 256), cj_rand(1, 256)};
        cJSON_AddItemToObject(q, "weight_block_size", cJSON_CreateIntArray(b, 2));
    }
    /* cJSON prints doubles with 15 significant digits when that is "close enough", so the
     * oracle must hold the values the text holds: go through text once. */
    char *text = cJSON_PrintUnformatted(r);
    cr_assert_not_null(text);
    cJSON *back = cJSON_Parse(text);
    cr_assert_not_null(back);
    free(text);
    cJSON_Delete(r);
    return back;
}

/* The oracle: what sl_config must hold for `r`, read straight from the JSON (with the
 * documented defaults for absent keys). */
static void cj_check(const sl_config *c, const cJSON *r)
{
    unsigned long long sd = (unsigned long long)cj_seed;
    const int *fields[CJ_NREQ] = {&c->vocab_size, &c->hidden_size, &c->intermediate_size,
                                  &c->moe_intermediate_size, &c->num_hidden_layers, &c->num_attention_heads,
                                  &c->kv_lora_rank, &c->qk_nope_head_dim, &c->qk_rope_head_dim, &c->v_head_dim,
                                  &c->n_routed_experts, &c->num_experts_per_tok};
    for (size_t i = 0; i < CJ_NREQ; i++)
        cr_assert_eq(*fields[i], cj_int(r, cj_required[i]), "%s, seed %llu", cj_required[i], sd);
    cr_assert_eq(c->q_lora_rank, (int)cj_num(r, "q_lora_rank", 0));
    cr_assert_eq(c->first_k_dense_replace, (int)cj_num(r, "first_k_dense_replace", 0));
    cr_assert_eq(c->moe_layer_freq, (int)cj_num(r, "moe_layer_freq", 1));
    cr_assert_eq(c->n_shared_experts, (int)cj_num(r, "n_shared_experts", 0));
    cr_assert_eq(c->n_group, (int)cj_num(r, "n_group", 1));
    cr_assert_eq(c->topk_group, (int)cj_num(r, "topk_group", 1));
    cr_assert_eq(c->norm_topk_prob, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "norm_topk_prob")));
    cr_assert_eq(c->tie_word_embeddings, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "tie_word_embeddings")));
    cr_assert_eq(c->routed_scaling_factor, (float)cj_num(r, "routed_scaling_factor", 1.0));
    cr_assert_eq(c->rms_norm_eps, (float)cj_num(r, "rms_norm_eps", 1e-6));
    int maxpos = (int)cj_num(r, "max_position_embeddings", 4096);
    cr_assert_eq(c->max_position_embeddings, maxpos);
    cr_assert_eq(c->bos_token_id, (int)cj_num(r, "bos_token_id", -1));
    cr_assert_eq(c->eos_token_id, (int)cj_num(r, "eos_token_id", -1));

    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(r, "rope_parameters");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(r, "rope_scaling");
    const cJSON *p = cJSON_IsObject(rp) ? rp : cJSON_IsObject(rs) ? rs : NULL;
    double theta = cj_num(r, "rope_theta", 10000.0);
    if (cJSON_IsObject(rp))
        theta = cj_num(rp, "rope_theta", theta);
    cr_assert_eq(c->rope_theta, theta, "seed %llu", sd);
    const cJSON *t = p ? cJSON_GetObjectItemCaseSensitive(p, "rope_type") : NULL;
    if (p && !t)
        t = cJSON_GetObjectItemCaseSensitive(p, "type");
    bool yarn = t && strcmp(t->valuestring, "yarn") == 0;
    cr_assert_eq(c->rope_kind, yarn ? SL_ROPE_YARN : SL_ROPE_NONE, "seed %llu", sd);
    if (yarn) {
        cr_assert_eq(c->rope_factor, cj_num(p, "factor", -1));
        cr_assert_eq(c->rope_original_max_pos, (int)cj_num(p, "original_max_position_embeddings", maxpos));
        cr_assert_eq(c->rope_beta_fast, cj_num(p, "beta_fast", 32));
        cr_assert_eq(c->rope_beta_slow, cj_num(p, "beta_slow", 1));
        cr_assert_eq(c->rope_mscale, cj_num(p, "mscale", 0));
        cr_assert_eq(c->rope_mscale_all_dim, cj_num(p, "mscale_all_dim", 0));
        cr_assert_eq(c->rope_attention_factor, cj_num(p, "attention_factor", 0));
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(r, "quantization_config");
    const cJSON *b = q ? cJSON_GetObjectItemCaseSensitive(q, "weight_block_size") : NULL;
    cr_assert_eq(c->fp8_block_rows, b ? (int)cJSON_GetArrayItem(b, 0)->valuedouble : 0);
    cr_assert_eq(c->fp8_block_cols, b ? (int)cJSON_GetArrayItem(b, 1)->valuedouble : 0);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

Test(config_json, fixture_configs_parse_to_their_json_values)
{
    static const struct { const char *dir; const char *rope_key; bool fp8; } fx[] = {
        {"tests/fixtures/tiny-a-bf16", "rope_scaling", false},
        {"tests/fixtures/tiny-a-fp8", "rope_scaling", true},
        {"tests/fixtures/tiny-b-bf16", "rope_parameters", false},
        {"tests/fixtures/tiny-b-fp8", "rope_parameters", true},
    };
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/config.json", fx[i].dir);
        FILE *f = fopen(p, "rb");
        cr_assert_not_null(f, "%s: %s", p, strerror(errno));
        char buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        cJSON *r = cJSON_ParseWithLength(buf, n);
        cr_assert_not_null(r, "%s", p);
        /* Both layouts must really be exercised. */
        cr_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r, fx[i].rope_key)), "%s has %s", p, fx[i].rope_key);
        cr_assert_eq(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r, "quantization_config")), fx[i].fp8);

        sl_config c;
        sl_error e = {0};
        cr_assert_eq(sl_config_load(p, &c, &e), SL_OK, "%s", e.msg);
        cj_check(&c, r);
        cr_assert_eq(c.rope_kind, SL_ROPE_YARN, "%s", p);
        cr_assert_eq(c.fp8_block_rows != 0, fx[i].fp8);
        cJSON_Delete(r);
    }
}

Test(config_json, missing_or_unreadable_file_is_an_io_error)
{
    sl_config c;
    sl_error e = {0};
    cr_assert_eq(sl_config_load("tests/fixtures/no-such-model/config.json", &c, &e), SL_E_IO);
    cr_assert_not_null(strstr(e.msg, "tests/fixtures/no-such-model/config.json"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, strerror(ENOENT)), "%s", e.msg);
    cr_assert_eq(sl_config_load("tests/fixtures", &c, &e), SL_E_IO, "a directory: %s", e.msg);
}

/* ---- synthetic ---------------------------------------------------------------------------- */

Test(config_json, random_configs_round_trip)
{
    for (int rep = 0; rep < 64; rep++) {
        cJSON *r = cj_random(rep % 4 == 0);
        sl_config c = cj_parse_ok(r);
        cj_check(&c, r);
        cJSON_Delete(r);
    }
}

Test(config_json, absent_optional_keys_take_documented_defaults)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model_type", "deepseek_v3");
    for (size_t i = 0; i < CJ_NREQ; i++)
        cJSON_AddNumberToObject(r, cj_required[i], 8);
    sl_config c = cj_parse_ok(r);
    cr_assert_eq(c.hidden_size, 8);
    cr_assert_eq(c.q_lora_rank, 0);
    cr_assert_eq(c.first_k_dense_replace, 0);
    cr_assert_eq(c.moe_layer_freq, 1);
    cr_assert_eq(c.n_shared_experts, 0);
    cr_assert_eq(c.n_group, 1);
    cr_assert_eq(c.topk_group, 1);
    cr_assert_eq(c.norm_topk_prob, false);
    cr_assert_eq(c.routed_scaling_factor, 1.0f);
    cr_assert_eq(c.rms_norm_eps, 1e-6f);
    cr_assert_eq(c.max_position_embeddings, 4096);
    cr_assert_eq(c.bos_token_id, -1);
    cr_assert_eq(c.eos_token_id, -1);
    cr_assert_eq(c.tie_word_embeddings, false);
    cr_assert_eq(c.rope_theta, 10000.0);
    cr_assert_eq(c.rope_kind, SL_ROPE_NONE);
    cr_assert_eq(c.fp8_block_rows, 0);
    cr_assert_eq(c.fp8_block_cols, 0);

    /* JSON null means "not set" for optional keys; q_lora_rank null is V2-Lite's plain q_proj. */
    const char *nullable[] = {"q_lora_rank", "n_group", "bos_token_id", "rope_scaling", "quantization_config"};
    for (size_t i = 0; i < sizeof nullable / sizeof *nullable; i++)
        cJSON_AddNullToObject(r, nullable[i]);
    sl_config d = cj_parse_ok(r);
    cr_assert_eq(d.q_lora_rank, 0);
    cr_assert_eq(d.n_group, 1);
    cr_assert_eq(d.bos_token_id, -1);
    cr_assert_eq(d.rope_kind, SL_ROPE_NONE);
    cr_assert_eq(d.fp8_block_rows, 0);
    cJSON_Delete(r);
}

Test(config_json, each_missing_required_key_is_named)
{
    for (size_t i = 0; i < CJ_NREQ; i++) {
        cJSON *r = cj_random(false);
        cJSON_DeleteItemFromObjectCaseSensitive(r, cj_required[i]);
        char want[96];
        snprintf(want, sizeof want, "missing key \"%s\"", cj_required[i]);
        cj_expect_fail(r, SL_E_MISSING, want, NULL);
        cJSON_Delete(r);
    }
    cJSON *r = cj_random(false);
    cJSON_DeleteItemFromObjectCaseSensitive(r, "model_type");
    cj_expect_fail(r, SL_E_MISSING, "missing key \"model_type\"", NULL);
    cJSON_Delete(r);
}

Test(config_json, wrong_json_types_are_format_errors_naming_the_key)
{
    for (size_t i = 0; i < CJ_NREQ; i++) {
        char want[96];
        snprintf(want, sizeof want, "\"%s\"", cj_required[i]);
        cJSON *r = cj_random(false);
        cj_set(r, cj_required[i], cJSON_CreateString("12"));
        cj_expect_fail(r, SL_E_FORMAT, want, "string");
        cj_set(r, cj_required[i], cJSON_CreateNumber(12.5));
        cj_expect_fail(r, SL_E_FORMAT, want, "12.5");
        cj_set(r, cj_required[i], cJSON_CreateNull());
        cj_expect_fail(r, SL_E_FORMAT, want, "null");
        cj_set(r, cj_required[i], cJSON_CreateArray());
        cj_expect_fail(r, SL_E_FORMAT, want, NULL);
        cJSON_Delete(r);
    }
    struct { const char *key; cJSON *(*make)(void); } opt[] = {
        {"norm_topk_prob", cJSON_CreateObject}, {"tie_word_embeddings", cJSON_CreateArray},
        {"rope_theta", cJSON_CreateTrue},       {"rms_norm_eps", cJSON_CreateObject},
        {"q_lora_rank", cJSON_CreateTrue},      {"rope_scaling", cJSON_CreateArray},
        {"model_type", cJSON_CreateFalse},      {"quantization_config", cJSON_CreateArray},
    };
    for (size_t i = 0; i < sizeof opt / sizeof *opt; i++) {
        cJSON *r = cj_random(false);
        cj_set(r, opt[i].key, opt[i].make());
        char want[96];
        snprintf(want, sizeof want, "\"%s\"", opt[i].key);
        cj_expect_fail(r, SL_E_FORMAT, want, NULL);
        cJSON_Delete(r);
    }
}

Test(config_json, integral_floats_count_as_integers)
{
    cJSON *r = cj_random(false);
    int h = cj_int(r, "hidden_size");
    cJSON *text_r = cJSON_Duplicate(r, 1);
    sl_config want = cj_parse_ok(r);
    /* "7168.0" as written by Python's json for a float: cJSON would print it as 7168, so go
     * through text. */
    char *s = cJSON_PrintUnformatted(text_r);
    char key[64], *at;
    snprintf(key, sizeof key, "\"hidden_size\":%d", h);
    cr_assert_not_null(at = strstr(s, key));
    size_t len = strlen(s) + 3;
    char *t = malloc(len);
    size_t pre = (size_t)(at - s) + strlen(key);
    memcpy(t, s, pre);
    memcpy(t + pre, ".0", 2);
    strcpy(t + pre + 2, s + pre);
    sl_config got;
    sl_error e = {0};
    cr_assert_eq(sl_config_parse(t, strlen(t), CJ_ORIGIN, &got, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(got.hidden_size, want.hidden_size);
    free(t);
    free(s);
    cJSON_Delete(text_r);
    cJSON_Delete(r);
}

Test(config_json, only_deepseek_model_types_are_accepted)
{
    cJSON *r = cj_random(false);
    cj_set(r, "model_type", cJSON_CreateString("deepseek_v2"));
    sl_config c = cj_parse_ok(r);
    cj_check(&c, r);
    const char *other[] = {"llama", "deepseek_v4", "DeepSeek_V3", ""};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        cj_set(r, "model_type", cJSON_CreateString(other[i]));
        char want[64];
        snprintf(want, sizeof want, "model_type \"%s\"", other[i]);
        cj_expect_fail(r, SL_E_UNSUPPORTED, want, NULL);
    }
    cJSON_Delete(r);
}

/* V2-family routing (softmax scores, greedy or group-limited greedy top-k) is refused by name;
 * V3's own values, or their absence, are accepted. */
Test(config_json, routing_other_than_v3s_is_refused)
{
    cJSON *r = cj_random(false);
    cj_set(r, "scoring_func", cJSON_CreateString("sigmoid"));
    cj_set(r, "topk_method", cJSON_CreateString("noaux_tc"));
    sl_config c = cj_parse_ok(r);
    cj_check(&c, r);
    cj_set(r, "scoring_func", cJSON_CreateString("softmax"));
    cj_expect_fail(r, SL_E_UNSUPPORTED, "scoring_func \"softmax\"", NULL);
    cj_set(r, "scoring_func", cJSON_CreateString("sigmoid"));
    const char *methods[] = {"greedy", "group_limited_greedy"};
    for (size_t i = 0; i < 2; i++) {
        cj_set(r, "topk_method", cJSON_CreateString(methods[i]));
        char want[64];
        snprintf(want, sizeof want, "topk_method \"%s\"", methods[i]);
        cj_expect_fail(r, SL_E_UNSUPPORTED, want, NULL);
    }
    cj_set(r, "topk_method", cJSON_CreateNumber(1));
    cj_expect_fail(r, SL_E_FORMAT, "topk_method", NULL);
    cJSON_Delete(r);
}

/* Move the official rope_scaling + rope_theta into transformers 5.x's rope_parameters. */
static void cj_to_rope_parameters(cJSON *r)
{
    cJSON *rs = cJSON_DetachItemFromObjectCaseSensitive(r, "rope_scaling");
    cJSON *theta = cJSON_DetachItemFromObjectCaseSensitive(r, "rope_theta");
    cJSON *type = cJSON_DetachItemFromObjectCaseSensitive(rs, "type");
    cJSON_AddItemToObject(rs, "rope_type", type);
    cJSON_AddItemToObject(rs, "rope_theta", theta);
    cJSON_AddItemToObject(r, "rope_parameters", rs);
}

static void cj_same_rope(const sl_config *a, const sl_config *b)
{
    cr_assert_eq(a->rope_kind, b->rope_kind);
    cr_assert_eq(a->rope_theta, b->rope_theta);
    cr_assert_eq(a->rope_factor, b->rope_factor);
    cr_assert_eq(a->rope_original_max_pos, b->rope_original_max_pos);
    cr_assert_eq(a->rope_beta_fast, b->rope_beta_fast);
    cr_assert_eq(a->rope_beta_slow, b->rope_beta_slow);
    cr_assert_eq(a->rope_mscale, b->rope_mscale);
    cr_assert_eq(a->rope_mscale_all_dim, b->rope_mscale_all_dim);
    cr_assert_eq(a->rope_attention_factor, b->rope_attention_factor);
}

Test(config_json, official_and_rope_parameters_layouts_agree)
{
    for (int rep = 0; rep < 16; rep++) {
        cJSON *official = cj_random(false);
        cJSON *v5 = cJSON_Duplicate(official, 1);
        cj_to_rope_parameters(v5);
        sl_config a = cj_parse_ok(official), b = cj_parse_ok(v5);
        cj_check(&a, official);
        cj_check(&b, v5);
        cr_assert_eq(a.rope_kind, SL_ROPE_YARN);
        cj_same_rope(&a, &b);

        /* "rope_type" is also accepted inside rope_scaling. */
        cJSON *rs = cJSON_GetObjectItemCaseSensitive(official, "rope_scaling");
        cJSON_AddItemToObject(rs, "rope_type", cJSON_DetachItemFromObjectCaseSensitive(rs, "type"));
        sl_config c = cj_parse_ok(official);
        cj_same_rope(&a, &c);

        /* Both present: rope_parameters wins, theta included. */
        cJSON_ReplaceItemInObjectCaseSensitive(rs, "factor", cJSON_CreateNumber(b.rope_factor + 3));
        cJSON_AddItemToObject(official, "rope_parameters",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(v5, "rope_parameters"), 1));
        cj_set(official, "rope_theta", cJSON_CreateNumber(b.rope_theta * 2));
        sl_config d = cj_parse_ok(official);
        cj_same_rope(&b, &d);
        cJSON_Delete(official);
        cJSON_Delete(v5);
    }
}

Test(config_json, rope_types_other_than_default_and_yarn_are_refused)
{
    cJSON *r = cj_random(false);
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(r, "rope_scaling");
    /* yarn with only a factor: documented defaults for the rest */
    const char *drop[] = {"original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                          "attention_factor"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(rs, drop[i]);
    sl_config c = cj_parse_ok(r);
    cr_assert_eq(c.rope_kind, SL_ROPE_YARN);
    cr_assert_eq(c.rope_original_max_pos, cj_int(r, "max_position_embeddings"));
    cr_assert_eq(c.rope_beta_fast, 32.0);
    cr_assert_eq(c.rope_beta_slow, 1.0);
    cr_assert_eq(c.rope_mscale, 0.0);
    cr_assert_eq(c.rope_mscale_all_dim, 0.0);
    cr_assert_eq(c.rope_attention_factor, 0.0);

    cJSON_DeleteItemFromObjectCaseSensitive(rs, "factor");
    cj_expect_fail(r, SL_E_MISSING, "rope_scaling.factor", NULL);
    cJSON_AddStringToObject(rs, "factor", "4");
    cj_expect_fail(r, SL_E_FORMAT, "rope_scaling.factor", NULL);

    const char *other[] = {"linear", "dynamic", "llama3", "longrope"};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        cj_set(rs, "type", cJSON_CreateString(other[i]));
        cj_expect_fail(r, SL_E_UNSUPPORTED, other[i], "rope_scaling");
    }
    /* A factor with no type at all must not quietly become plain RoPE. */
    cJSON_DeleteItemFromObjectCaseSensitive(rs, "type");
    cj_set(rs, "factor", cJSON_CreateNumber(4));
    cj_expect_fail(r, SL_E_MISSING, "rope_scaling", NULL);

    /* transformers 5.x "default" is plain RoPE with its own theta. */
    cJSON_DeleteItemFromObjectCaseSensitive(r, "rope_scaling");
    cJSON *rp = cJSON_AddObjectToObject(r, "rope_parameters");
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddNumberToObject(rp, "rope_theta", 123456.0);
    sl_config d = cj_parse_ok(r);
    cr_assert_eq(d.rope_kind, SL_ROPE_NONE);
    cr_assert_eq(d.rope_theta, 123456.0);
    cj_set(rp, "rope_type", cJSON_CreateString("linear"));
    cj_expect_fail(r, SL_E_UNSUPPORTED, "linear", "rope_parameters");
    cJSON_Delete(r);
}

Test(config_json, quantization_config_must_be_block_fp8)
{
    cJSON *r = cj_random(false);
    cJSON_DeleteItemFromObjectCaseSensitive(r, "quantization_config");
    cJSON *q = cJSON_AddObjectToObject(r, "quantization_config");
    cJSON_AddStringToObject(q, "quant_method", "fp8");
    cJSON_AddItemToObject(q, "weight_block_size", cJSON_CreateIntArray((int[]){64, 32}, 2));
    sl_config c = cj_parse_ok(r);
    cr_assert_eq(c.fp8_block_rows, 64);
    cr_assert_eq(c.fp8_block_cols, 32);

    const char *bad[] = {"[128]", "[128, 0]", "[128, -1]", "[128, \"a\"]", "\"128\"", "[128, 128, 128]",
                         "[1.5, 2]", "[]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cj_set(q, "weight_block_size", cJSON_Parse(bad[i]));
        cj_expect_fail(r, SL_E_FORMAT, "weight_block_size", NULL);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(q, "weight_block_size");
    cj_expect_fail(r, SL_E_UNSUPPORTED, "weight_block_size", NULL); /* per-tensor fp8 */

    const char *methods[] = {"gptq", "awq", "bitsandbytes", "compressed-tensors"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        cj_set(q, "quant_method", cJSON_CreateString(methods[i]));
        cj_expect_fail(r, SL_E_UNSUPPORTED, methods[i], "quant_method");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(q, "quant_method");
    cj_expect_fail(r, SL_E_MISSING, "quantization_config.quant_method", NULL);
    cJSON_Delete(r);
}

Test(config_json, inconsistent_sizes_are_format_errors_naming_the_key)
{
    const char *positive[] = {"hidden_size", "num_hidden_layers", "kv_lora_rank", "n_group", "vocab_size",
                              "moe_layer_freq", "max_position_embeddings"};
    for (size_t i = 0; i < sizeof positive / sizeof *positive; i++) {
        cJSON *r = cj_random(false);
        cj_set(r, positive[i], cJSON_CreateNumber(0));
        cj_expect_fail(r, SL_E_FORMAT, positive[i], NULL);
        cj_set(r, positive[i], cJSON_CreateNumber(-5));
        cj_expect_fail(r, SL_E_FORMAT, positive[i], NULL);
        cJSON_Delete(r);
    }
    for (int rep = 0; rep < 8; rep++) {
        cJSON *r = cj_random(false);
        int E = cj_int(r, "n_routed_experts"), G = cj_int(r, "n_group"), L = cj_int(r, "num_hidden_layers");
        cJSON *t = cJSON_Duplicate(r, 1);
        cj_set(t, "n_routed_experts", cJSON_CreateNumber(E + 1 + (G == 1))); /* G >= 2 then: no longer divides */
        if (G == 1)
            cj_set(t, "n_group", cJSON_CreateNumber(2));
        if ((cj_int(t, "n_routed_experts") % cj_int(t, "n_group")) != 0) {
            cj_set(t, "num_experts_per_tok", cJSON_CreateNumber(1));
            cj_set(t, "topk_group", cJSON_CreateNumber(1));
            cj_expect_fail(t, SL_E_FORMAT, "n_group", NULL);
        }
        cJSON_Delete(t);

        t = cJSON_Duplicate(r, 1);
        cj_set(t, "topk_group", cJSON_CreateNumber(G + 1));
        cj_expect_fail(t, SL_E_FORMAT, "topk_group", NULL);
        cJSON_Delete(t);

        t = cJSON_Duplicate(r, 1);
        cj_set(t, "num_experts_per_tok", cJSON_CreateNumber(E + 1));
        cj_expect_fail(t, SL_E_FORMAT, "num_experts_per_tok", NULL);
        cJSON_Delete(t);

        t = cJSON_Duplicate(r, 1);
        cj_set(t, "first_k_dense_replace", cJSON_CreateNumber(L + 1));
        cj_expect_fail(t, SL_E_FORMAT, "first_k_dense_replace", NULL);
        cJSON_Delete(t);
        cJSON_Delete(r);
    }
}

Test(config_json, text_that_is_not_a_json_object_is_a_format_error)
{
    const char *bad[] = {"", "{", "not json", "[1,2]", "\"deepseek_v3\"", "{\"model_type\": \"deepseek_v3\",}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sl_config c;
        sl_error e = {0};
        int rc = sl_config_parse(bad[i], strlen(bad[i]), CJ_ORIGIN, &c, &e);
        cr_assert_eq(rc, SL_E_FORMAT, "'%s': %d %s", bad[i], rc, e.msg);
        cr_assert_not_null(strstr(e.msg, CJ_ORIGIN), "%s", e.msg);
    }
    /* The length bounds the text: a valid config cut short is not read past its end. */
    cJSON *r = cj_random(false);
    char *s = cJSON_PrintUnformatted(r);
    sl_config c;
    sl_error e = {0};
    cr_assert_eq(sl_config_parse(s, strlen(s) - 1, CJ_ORIGIN, &c, &e), SL_E_FORMAT, "%s", e.msg);
    free(s);
    cJSON_Delete(r);
}
