/* Hugging Face config.json of DeepSeek-V3 (and V2, which shares the keys) -> sl_config.
 *
 * Two rope layouts exist in the wild: the official checkpoint's top-level "rope_theta" plus
 * "rope_scaling" {"type": "yarn", ...}, and transformers 5.x's "rope_parameters" {"rope_type",
 * "rope_theta", ...}. Both are read; rope_parameters wins when both are there. */
#include "format/format.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_BYTES (16u << 20) /* a config.json is a few KB */

typedef struct {
    const char *origin; /* names the text in messages */
    sl_error *e;
} cfg_ctx;

static const char *json_type_name(const cJSON *it)
{
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "invalid";
}

/* obj[key], or NULL when absent or JSON null (HF writes null for "not set"). */
static const cJSON *item(const cJSON *obj, const char *key)
{
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsNull(it) ? NULL : it;
}

/* Messages name nested keys as "rope_scaling.factor". */
static int missing(cfg_ctx *c, const char *pre, const char *key)
{
    return sl_errorf(c->e, SL_E_MISSING, "%s: missing key \"%s%s%s\"", c->origin, pre, *pre ? "." : "", key);
}

static int wrong(cfg_ctx *c, const char *pre, const char *key, const cJSON *it, const char *want)
{
    return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s%s%s\" is %s, expected %s", c->origin, pre, *pre ? "." : "",
                     key, it ? json_type_name(it) : "null", want);
}

/* A number; `def` when absent or null unless `required`. */
static int num_key(cfg_ctx *c, const cJSON *obj, const char *pre, const char *key, bool required, double def,
                   double *out)
{
    const cJSON *raw = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    const cJSON *it = item(obj, key);
    if (!it) {
        if (required)
            return raw ? wrong(c, pre, key, raw, "a number") : missing(c, pre, key);
        *out = def;
        return SL_OK;
    }
    if (!cJSON_IsNumber(it))
        return wrong(c, pre, key, it, "a number");
    *out = it->valuedouble;
    return SL_OK;
}

/* An integer; 7168.0 counts, 7168.5 does not. */
static int int_key(cfg_ctx *c, const cJSON *obj, const char *pre, const char *key, bool required, int def,
                   int *out)
{
    double d;
    int rc = num_key(c, obj, pre, key, required, def, &d);
    if (rc)
        return rc;
    if (!(d >= INT_MIN && d <= INT_MAX) || d != (double)(int)d)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s%s%s\" = %g is not an integer", c->origin, pre,
                         *pre ? "." : "", key, d);
    *out = (int)d;
    return SL_OK;
}

static int bool_key(cfg_ctx *c, const cJSON *obj, const char *key, bool def, bool *out)
{
    const cJSON *it = item(obj, key);
    if (!it) {
        *out = def;
        return SL_OK;
    }
    if (!cJSON_IsBool(it))
        return wrong(c, "", key, it, "a boolean");
    *out = cJSON_IsTrue(it);
    return SL_OK;
}

/* bos/eos: an integer, or (as some HF configs have it) a list whose first entry counts. */
static int token_key(cfg_ctx *c, const cJSON *obj, const char *key, int *out)
{
    const cJSON *it = item(obj, key);
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) > 0 && cJSON_IsNumber(cJSON_GetArrayItem(it, 0))) {
        cJSON *first = cJSON_GetArrayItem(it, 0);
        double d = first->valuedouble;
        if (!(d >= 0 && d <= INT_MAX) || d != (double)(int)d)
            return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s\" = [%g, ...] is not a token id", c->origin, key, d);
        *out = (int)d;
        return SL_OK;
    }
    return int_key(c, obj, "", key, false, -1, out);
}

/* ---- sections ----------------------------------------------------------------------------- */

#define F(field) offsetof(sl_config, field)

static const struct { const char *key; size_t off; } required_ints[] = {
    {"vocab_size", F(vocab_size)},
    {"hidden_size", F(hidden_size)},
    {"intermediate_size", F(intermediate_size)},
    {"moe_intermediate_size", F(moe_intermediate_size)},
    {"num_hidden_layers", F(num_hidden_layers)},
    {"num_attention_heads", F(num_attention_heads)},
    {"kv_lora_rank", F(kv_lora_rank)},
    {"qk_nope_head_dim", F(qk_nope_head_dim)},
    {"qk_rope_head_dim", F(qk_rope_head_dim)},
    {"v_head_dim", F(v_head_dim)},
    {"n_routed_experts", F(n_routed_experts)},
    {"num_experts_per_tok", F(num_experts_per_tok)},
};

static const struct { const char *key; size_t off; int def; } optional_ints[] = {
    {"q_lora_rank", F(q_lora_rank), 0},           /* null in V2-Lite: q_proj, no low rank */
    {"first_k_dense_replace", F(first_k_dense_replace), 0},
    {"moe_layer_freq", F(moe_layer_freq), 1},
    {"n_shared_experts", F(n_shared_experts), 0},
    {"n_group", F(n_group), 1},
    {"topk_group", F(topk_group), 1},
    {"max_position_embeddings", F(max_position_embeddings), 4096},
};

static int *int_field(sl_config *cfg, size_t off)
{
    return (int *)((char *)cfg + off);
}

static int parse_rope(cfg_ctx *c, const cJSON *root, sl_config *cfg)
{
    const cJSON *rp = item(root, "rope_parameters"), *rs = item(root, "rope_scaling");
    if (rp && !cJSON_IsObject(rp))
        return wrong(c, "", "rope_parameters", rp, "an object");
    if (rs && !cJSON_IsObject(rs))
        return wrong(c, "", "rope_scaling", rs, "an object");
    const cJSON *p = rp ? rp : rs;
    const char *pre = rp ? "rope_parameters" : "rope_scaling";

    int rc = num_key(c, root, "", "rope_theta", false, 10000.0, &cfg->rope_theta);
    if (!rc && rp)
        rc = num_key(c, rp, pre, "rope_theta", false, cfg->rope_theta, &cfg->rope_theta);
    if (rc)
        return rc;
    if (!(cfg->rope_theta > 0))
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"rope_theta\" = %g is not positive", c->origin, cfg->rope_theta);

    cfg->rope_kind = SL_ROPE_NONE;
    cfg->rope_factor = 1.0;
    cfg->rope_original_max_pos = cfg->max_position_embeddings;
    cfg->rope_beta_fast = 32.0; /* transformers' _compute_yarn_parameters defaults */
    cfg->rope_beta_slow = 1.0;
    if (!p)
        return SL_OK;

    const char *tkey = item(p, "rope_type") ? "rope_type" : "type";
    const cJSON *t = item(p, tkey);
    if (!t) {
        /* A factor with no type would silently become plain RoPE: refuse that. */
        return item(p, "factor") ? missing(c, pre, "rope_type") : SL_OK;
    }
    if (!cJSON_IsString(t))
        return wrong(c, pre, tkey, t, "a string");
    if (strcmp(t->valuestring, "default") == 0)
        return SL_OK;
    if (strcmp(t->valuestring, "yarn") != 0)
        return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: %s.%s \"%s\" is not supported (sluice does \"default\" and \"yarn\")",
                         c->origin, pre, tkey, t->valuestring);

    cfg->rope_kind = SL_ROPE_YARN;
    if ((rc = num_key(c, p, pre, "factor", true, 0, &cfg->rope_factor)) ||
        (rc = int_key(c, p, pre, "original_max_position_embeddings", false, cfg->max_position_embeddings,
                      &cfg->rope_original_max_pos)) ||
        (rc = num_key(c, p, pre, "beta_fast", false, 32.0, &cfg->rope_beta_fast)) ||
        (rc = num_key(c, p, pre, "beta_slow", false, 1.0, &cfg->rope_beta_slow)) ||
        (rc = num_key(c, p, pre, "mscale", false, 0.0, &cfg->rope_mscale)) ||
        (rc = num_key(c, p, pre, "mscale_all_dim", false, 0.0, &cfg->rope_mscale_all_dim)) ||
        (rc = num_key(c, p, pre, "attention_factor", false, 0.0, &cfg->rope_attention_factor)))
        return rc;
    if (!(cfg->rope_factor > 0))
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s.factor\" = %g is not positive", c->origin, pre,
                         cfg->rope_factor);
    if (cfg->rope_original_max_pos <= 0)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s.original_max_position_embeddings\" = %d is not positive",
                         c->origin, pre, cfg->rope_original_max_pos);
    return SL_OK;
}

static int parse_quant(cfg_ctx *c, const cJSON *root, sl_config *cfg)
{
    const char *pre = "quantization_config";
    const cJSON *q = item(root, pre);
    if (!q)
        return SL_OK;
    if (!cJSON_IsObject(q))
        return wrong(c, "", pre, q, "an object");
    const cJSON *m = item(q, "quant_method");
    if (!m)
        return missing(c, pre, "quant_method");
    if (!cJSON_IsString(m))
        return wrong(c, pre, "quant_method", m, "a string");
    if (strcmp(m->valuestring, "fp8") != 0)
        return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: quantization_config.quant_method \"%s\" is not supported (sluice reads \"fp8\")",
                         c->origin, m->valuestring);
    const cJSON *fmt = item(q, "fmt");
    if (fmt && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "e4m3") != 0))
        return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: quantization_config.fmt is not \"e4m3\"", c->origin);

    const cJSON *b = item(q, "weight_block_size");
    if (!b)
        return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: quantization_config has no weight_block_size (per-tensor fp8 is not supported)",
                         c->origin);
    int v[2] = {0, 0};
    bool ok = cJSON_IsArray(b) && cJSON_GetArraySize(b) == 2;
    for (int i = 0; ok && i < 2; i++) {
        const cJSON *x = cJSON_GetArrayItem(b, i);
        double d = cJSON_IsNumber(x) ? x->valuedouble : 0;
        ok = d >= 1 && d <= INT_MAX && d == (double)(int)d;
        v[i] = ok ? (int)d : 0;
    }
    if (!ok)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"quantization_config.weight_block_size\" is not [rows, cols] of positive integers",
                         c->origin);
    cfg->fp8_block_rows = v[0];
    cfg->fp8_block_cols = v[1];
    return SL_OK;
}

/* Values that would make later arithmetic meaningless (divide by zero, index past the end). */
static int check_sane(cfg_ctx *c, const sl_config *cfg)
{
    static const struct { const char *key; size_t off; } positive[] = {
        {"vocab_size", F(vocab_size)},
        {"hidden_size", F(hidden_size)},
        {"intermediate_size", F(intermediate_size)},
        {"moe_intermediate_size", F(moe_intermediate_size)},
        {"num_hidden_layers", F(num_hidden_layers)},
        {"num_attention_heads", F(num_attention_heads)},
        {"kv_lora_rank", F(kv_lora_rank)},
        {"qk_nope_head_dim", F(qk_nope_head_dim)},
        {"qk_rope_head_dim", F(qk_rope_head_dim)},
        {"v_head_dim", F(v_head_dim)},
        {"n_routed_experts", F(n_routed_experts)},
        {"num_experts_per_tok", F(num_experts_per_tok)},
        {"n_group", F(n_group)},
        {"topk_group", F(topk_group)},
        {"moe_layer_freq", F(moe_layer_freq)},
        {"max_position_embeddings", F(max_position_embeddings)},
    };
    static const struct { const char *key; size_t off; } non_negative[] = {
        {"q_lora_rank", F(q_lora_rank)},
        {"first_k_dense_replace", F(first_k_dense_replace)},
        {"n_shared_experts", F(n_shared_experts)},
    };
    sl_config *m = (sl_config *)cfg;
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        int v = *int_field(m, positive[i].off);
        if (v <= 0)
            return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s\" = %d, must be positive", c->origin, positive[i].key, v);
    }
    for (size_t i = 0; i < sizeof non_negative / sizeof non_negative[0]; i++) {
        int v = *int_field(m, non_negative[i].off);
        if (v < 0)
            return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"%s\" = %d, must not be negative", c->origin,
                             non_negative[i].key, v);
    }
    if (cfg->qk_rope_head_dim % 2)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"qk_rope_head_dim\" = %d, RoPE needs an even size", c->origin,
                         cfg->qk_rope_head_dim);
    if (cfg->n_routed_experts % cfg->n_group)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"n_group\" = %d does not divide n_routed_experts = %d",
                         c->origin, cfg->n_group, cfg->n_routed_experts);
    if (cfg->topk_group > cfg->n_group)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"topk_group\" = %d is more than n_group = %d", c->origin,
                         cfg->topk_group, cfg->n_group);
    if (cfg->num_experts_per_tok > cfg->n_routed_experts)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"num_experts_per_tok\" = %d is more than n_routed_experts = %d",
                         c->origin, cfg->num_experts_per_tok, cfg->n_routed_experts);
    if (cfg->first_k_dense_replace > cfg->num_hidden_layers)
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"first_k_dense_replace\" = %d is more than num_hidden_layers = %d",
                         c->origin, cfg->first_k_dense_replace, cfg->num_hidden_layers);
    if (!(cfg->rms_norm_eps > 0))
        return sl_errorf(c->e, SL_E_FORMAT, "%s: key \"rms_norm_eps\" = %g, must be positive", c->origin,
                         (double)cfg->rms_norm_eps);
    return SL_OK;
}

static int parse_root(cfg_ctx *c, const cJSON *root, sl_config *cfg)
{
    const cJSON *mt = item(root, "model_type");
    if (!mt)
        return missing(c, "", "model_type");
    if (!cJSON_IsString(mt))
        return wrong(c, "", "model_type", mt, "a string");
    if (strcmp(mt->valuestring, "deepseek_v3") != 0 && strcmp(mt->valuestring, "deepseek_v2") != 0)
        return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: model_type \"%s\" is not supported (sluice runs deepseek_v3, deepseek_v2)",
                         c->origin, mt->valuestring);

    /* routing: DeepSeek-V3's sigmoid scores with the bias-corrected group top-k; the V2 family's
     * softmax / greedy routing would run silently wrong, so it is refused by name */
    static const struct { const char *key, *want; } routing[] = {
        {"scoring_func", "sigmoid"}, {"topk_method", "noaux_tc"}};
    for (size_t i = 0; i < sizeof routing / sizeof routing[0]; i++) {
        const cJSON *v = item(root, routing[i].key);
        if (!v)
            continue;
        if (!cJSON_IsString(v))
            return wrong(c, "", routing[i].key, v, "a string");
        if (strcmp(v->valuestring, routing[i].want))
            return sl_errorf(c->e, SL_E_UNSUPPORTED, "%s: %s \"%s\" is not supported (sluice routes as "
                             "DeepSeek-V3: scoring_func \"sigmoid\", topk_method \"noaux_tc\")",
                             c->origin, routing[i].key, v->valuestring);
    }

    int rc;
    for (size_t i = 0; i < sizeof required_ints / sizeof required_ints[0]; i++)
        if ((rc = int_key(c, root, "", required_ints[i].key, true, 0, int_field(cfg, required_ints[i].off))))
            return rc;
    for (size_t i = 0; i < sizeof optional_ints / sizeof optional_ints[0]; i++)
        if ((rc = int_key(c, root, "", optional_ints[i].key, false, optional_ints[i].def,
                          int_field(cfg, optional_ints[i].off))))
            return rc;
    double rsf, eps;
    if ((rc = bool_key(c, root, "norm_topk_prob", false, &cfg->norm_topk_prob)) ||
        (rc = bool_key(c, root, "tie_word_embeddings", false, &cfg->tie_word_embeddings)) ||
        (rc = num_key(c, root, "", "routed_scaling_factor", false, 1.0, &rsf)) ||
        (rc = num_key(c, root, "", "rms_norm_eps", false, 1e-6, &eps)) ||
        (rc = token_key(c, root, "bos_token_id", &cfg->bos_token_id)) ||
        (rc = token_key(c, root, "eos_token_id", &cfg->eos_token_id)))
        return rc;
    cfg->routed_scaling_factor = (float)rsf;
    cfg->rms_norm_eps = (float)eps;
    if ((rc = parse_rope(c, root, cfg)) || (rc = parse_quant(c, root, cfg)))
        return rc;
    return check_sane(c, cfg);
}

int sl_config_parse(const char *json, size_t len, const char *origin, sl_config *out, sl_error *e)
{
    cfg_ctx c = {.origin = origin ? origin : "config.json", .e = e};
    if (!json || !out)
        return sl_errorf(e, SL_E_ARG, "%s: sl_config_parse: NULL %s", c.origin, json ? "out" : "json");
    /* A NUL-terminated copy, so the parser cannot run past the caller's bytes. */
    char *buf = malloc(len + 1);
    if (!buf)
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory", c.origin);
    memcpy(buf, json, len);
    buf[len] = 0;
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &stop, 0);
    int rc;
    if (!root)
        rc = sl_errorf(e, SL_E_FORMAT, "%s: not valid JSON (at byte %lld)", c.origin,
                       stop ? (long long)(stop - buf) : -1LL);
    else if (!cJSON_IsObject(root))
        rc = sl_errorf(e, SL_E_FORMAT, "%s: not a JSON object", c.origin);
    else {
        sl_config cfg = {0};
        rc = parse_root(&c, root, &cfg);
        if (!rc)
            *out = cfg;
    }
    cJSON_Delete(root);
    free(buf);
    return rc;
}

int sl_config_load(const char *path, sl_config *out, sl_error *e)
{
    if (!path)
        return sl_errorf(e, SL_E_ARG, "sl_config_load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(CFG_MAX_BYTES);
    if (!buf) {
        fclose(f);
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CFG_MAX_BYTES, f);
    int rc = SL_OK;
    if (ferror(f))
        rc = sl_errorf(e, SL_E_IO, "%s: read: %s", path, strerror(errno));
    else if (n == CFG_MAX_BYTES)
        rc = sl_errorf(e, SL_E_FORMAT, "%s: over %u bytes, not a config.json", path, CFG_MAX_BYTES);
    fclose(f);
    if (!rc)
        rc = sl_config_parse(buf, n, path, out, e);
    free(buf);
    return rc;
}
