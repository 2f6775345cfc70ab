/* Synthetic models: the real DeepSeek-V3 shapes (or a preset's) with random zero-mean weights,
 * written straight into a .sluice file for benchmarks and demos.
 *
 * Weights are N(0, 1/cols) so every product keeps activations O(1); norms are 1 + N(0, 0.1);
 * router rows are N(0, 1/hidden) so sigmoid scores spread and routing stays diverse (a biased
 * mean would send every token to the same experts and make any cache look perfect, DESIGN.md).
 * Chunks are generated on `threads` workers a batch at a time and written in file order, so
 * memory stays O(threads x chunk). */
#include "format/format.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* deepseek-ai/DeepSeek-V3 config.json, the keys sluice reads */
static const char preset_v3[] =
    "{\"architectures\":[\"DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v3\","
    "\"vocab_size\":129280,\"hidden_size\":7168,\"intermediate_size\":18432,"
    "\"moe_intermediate_size\":2048,\"num_hidden_layers\":61,\"first_k_dense_replace\":3,"
    "\"moe_layer_freq\":1,\"n_routed_experts\":256,\"n_shared_experts\":1,\"num_experts_per_tok\":8,"
    "\"n_group\":8,\"topk_group\":4,\"norm_topk_prob\":true,\"routed_scaling_factor\":2.5,"
    "\"num_attention_heads\":128,\"num_key_value_heads\":128,\"q_lora_rank\":1536,\"kv_lora_rank\":512,"
    "\"qk_nope_head_dim\":128,\"qk_rope_head_dim\":64,\"v_head_dim\":128,\"rms_norm_eps\":1e-06,"
    "\"max_position_embeddings\":163840,\"bos_token_id\":0,\"eos_token_id\":1,"
    "\"tie_word_embeddings\":false,\"rope_theta\":10000,\"scoring_func\":\"sigmoid\","
    "\"topk_method\":\"noaux_tc\",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":40,"
    "\"original_max_position_embeddings\":4096,\"beta_fast\":32,\"beta_slow\":1,\"mscale\":1.0,"
    "\"mscale_all_dim\":1.0}}";

/* The demo preset: the real vocabulary (so the real tokenizer fits) around a tiny body. */
static const char preset_tiny[] =
    "{\"architectures\":[\"DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v3\","
    "\"vocab_size\":129280,\"hidden_size\":256,\"intermediate_size\":512,"
    "\"moe_intermediate_size\":128,\"num_hidden_layers\":4,\"first_k_dense_replace\":1,"
    "\"moe_layer_freq\":1,\"n_routed_experts\":16,\"n_shared_experts\":1,\"num_experts_per_tok\":4,"
    "\"n_group\":4,\"topk_group\":2,\"norm_topk_prob\":true,\"routed_scaling_factor\":2.5,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":4,\"q_lora_rank\":128,\"kv_lora_rank\":64,"
    "\"qk_nope_head_dim\":32,\"qk_rope_head_dim\":16,\"v_head_dim\":32,\"rms_norm_eps\":1e-06,"
    "\"max_position_embeddings\":16384,\"bos_token_id\":0,\"eos_token_id\":1,"
    "\"tie_word_embeddings\":false,\"rope_theta\":10000,\"scoring_func\":\"sigmoid\","
    "\"topk_method\":\"noaux_tc\",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4,"
    "\"original_max_position_embeddings\":4096,\"beta_fast\":32,\"beta_slow\":1,\"mscale\":1.0,"
    "\"mscale_all_dim\":1.0}}";

void sl_synth_opts_default(sl_synth_opts *o)
{
    *o = (sl_synth_opts){.preset = "deepseek-v3", .layers = 0, .quant = SL_WF_Q4,
                         .expert_quant = -1, .seed = 1, .threads = 0, .zstd_level = 0};
}

/* ---- what goes where ---- */

typedef struct syn_tensor {
    char name[96];
    int fmt;
    int64_t rows, cols; /* cols 0: vector */
    int init;           /* 0 matrix N(0,1/cols), 1 norm 1+N(0,.1), 2 bias N(0,.01), 3 embedding N(0,1) */
} syn_tensor;

typedef struct syn_chunk {
    int kind, layer, expert;
    int n;
    syn_tensor t[24];
} syn_chunk;

static void set_kind(syn_chunk *c, int kind, int layer, int expert)
{
    c->kind = kind;
    c->layer = layer;
    c->expert = expert;
    c->n = 0;
}

static void add(syn_chunk *c, int fmt, int64_t rows, int64_t cols, int init, const char *fmt_name, ...)
{
    syn_tensor *t = &c->t[c->n++];
    va_list ap;
    va_start(ap, fmt_name);
    vsnprintf(t->name, sizeof t->name, fmt_name, ap);
    va_end(ap);
    t->fmt = fmt;
    t->rows = rows;
    t->cols = cols;
    t->init = init;
}

static void add_mlp(syn_chunk *c, int fmt, const sl_config *k, int width, const char *prefix)
{
    int H = k->hidden_size;
    add(c, fmt, width, H, 0, "%sgate_proj.weight", prefix);
    add(c, fmt, width, H, 0, "%sup_proj.weight", prefix);
    add(c, fmt, H, width, 0, "%sdown_proj.weight", prefix);
}

/* Chunk `i` of the file in layout order: embedding, head, then per layer core + experts. */
static void plan_chunk(const sl_config *k, int q, int eq, long i, syn_chunk *c)
{
    memset(c, 0, sizeof *c);
    int H = k->hidden_size, nh = k->num_attention_heads, E = k->n_routed_experts;
    int qk = k->qk_nope_head_dim + k->qk_rope_head_dim;
    if (i == 0) {
        set_kind(c, SL_CHUNK_RESIDENT, -1, -1);
        add(c, q, k->vocab_size, H, 3, "model.embed_tokens.weight");
        return;
    }
    if (i == 1) {
        set_kind(c, SL_CHUNK_RESIDENT, -1, -1);
        add(c, SL_WF_BF16, H, 0, 1, "model.norm.weight");
        add(c, q, k->vocab_size, H, 0, "lm_head.weight");
        return;
    }
    i -= 2;
    for (int l = 0; l < k->num_hidden_layers; l++) {
        bool moe = E > 0 && l >= k->first_k_dense_replace;
        long per = 1 + (moe ? E : 0);
        if (i >= per) {
            i -= per;
            continue;
        }
        char p[64];
        snprintf(p, sizeof p, "model.layers.%d.", l);
        if (i > 0) {
            set_kind(c, SL_CHUNK_EXPERT, l, (int)(i - 1));
            char ep[96];
            snprintf(ep, sizeof ep, "%smlp.experts.%ld.", p, i - 1);
            add_mlp(c, eq, k, k->moe_intermediate_size, ep);
            return;
        }
        set_kind(c, SL_CHUNK_CORE, l, -1);
        add(c, SL_WF_BF16, H, 0, 1, "%sinput_layernorm.weight", p);
        add(c, SL_WF_BF16, H, 0, 1, "%spost_attention_layernorm.weight", p);
        if (k->q_lora_rank > 0) {
            add(c, q, k->q_lora_rank, H, 0, "%sself_attn.q_a_proj.weight", p);
            add(c, SL_WF_BF16, k->q_lora_rank, 0, 1, "%sself_attn.q_a_layernorm.weight", p);
            add(c, q, (int64_t)nh * qk, k->q_lora_rank, 0, "%sself_attn.q_b_proj.weight", p);
        } else {
            add(c, q, (int64_t)nh * qk, H, 0, "%sself_attn.q_proj.weight", p);
        }
        add(c, q, k->kv_lora_rank + k->qk_rope_head_dim, H, 0, "%sself_attn.kv_a_proj_with_mqa.weight", p);
        add(c, SL_WF_BF16, k->kv_lora_rank, 0, 1, "%sself_attn.kv_a_layernorm.weight", p);
        add(c, q, (int64_t)nh * (k->qk_nope_head_dim + k->v_head_dim), k->kv_lora_rank, 0,
            "%sself_attn.kv_b_proj.weight", p);
        add(c, q, H, (int64_t)nh * k->v_head_dim, 0, "%sself_attn.o_proj.weight", p);
        char mp[128];
        if (!moe) {
            snprintf(mp, sizeof mp, "%smlp.", p);
            add_mlp(c, q, k, k->intermediate_size, mp);
        } else {
            add(c, SL_WF_BF16, E, H, 0, "%smlp.gate.weight", p);
            add(c, SL_WF_F32, E, 0, 2, "%smlp.gate.e_score_correction_bias", p);
            if (k->n_shared_experts > 0) {
                snprintf(mp, sizeof mp, "%smlp.shared_experts.", p);
                add_mlp(c, q, k, k->n_shared_experts * k->moe_intermediate_size, mp);
            }
        }
        return;
    }
}

static long chunk_count(const sl_config *k)
{
    long n = 2;
    for (int l = 0; l < k->num_hidden_layers; l++)
        n += 1 + (k->n_routed_experts > 0 && l >= k->first_k_dense_replace ? k->n_routed_experts : 0);
    return n;
}

static uint64_t tensor_bytes(const syn_tensor *t)
{
    return sl_wformat_bytes((sl_wformat)t->fmt, t->rows, t->cols ? t->cols : 1);
}

/* decoded layout: tensors at 64-byte aligned offsets */
static uint64_t layout(syn_chunk *c, uint64_t *offs)
{
    uint64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        offs[i] = at;
        at += (tensor_bytes(&c->t[i]) + 63) & ~(uint64_t)63;
    }
    return at;
}

/* ---- random numbers ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Approximately N(0,1): sum of 4 uniforms, rescaled (Irwin-Hall; zero mean, unit variance). */
static float gauss(uint64_t *s)
{
    uint64_t r = rng_next(s);
    float u = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
              (float)(r >> 48);
    return (u / 65535.0f - 2.0f) * 1.7320508f; /* var of sum of 4 U(0,1) is 1/3 */
}

/* Q4 codes drawn directly: a nibble is 8 + round(z * 7 / 2.5) for z ~ N(0,1) clipped to +-2.5
 * sigma (codes 1..15, symmetric around 8, so zero-mean), looked up from a random byte; every
 * group scale is sd * 2.5 / 7, so values are ~N(0, sd). Same layout as quant/'s Q4. */
static uint8_t q4_table[256];
static pthread_once_t q4_once = PTHREAD_ONCE_INIT;

/* q4_table[b] = the code of the (b + 0.5)/256 quantile of N(0,1) (bisection on erf, once). */
static void q4_table_init(void)
{
    for (int b = 0; b < 256; b++) {
        double p = (b + 0.5) / 256.0, lo = -8, hi = 8;
        for (int it = 0; it < 60; it++) {
            double mid = 0.5 * (lo + hi);
            if (0.5 * (1 + erf(mid / sqrt(2.0))) < p)
                lo = mid;
            else
                hi = mid;
        }
        int c = 8 + (int)lround(0.5 * (lo + hi) * 7.0 / 2.5);
        q4_table[b] = (uint8_t)(c < 1 ? 1 : c > 15 ? 15 : c);
    }
}

static void q4_direct(uint8_t *dst, int64_t rows, int64_t cols, float sd, uint64_t *seed)
{
    const uint8_t *table = q4_table;
    pthread_once(&q4_once, q4_table_init);
    size_t row_bytes = (size_t)(cols + 1) / 2, groups = (size_t)(cols + 31) / 32;
    uint8_t *codes = dst;
    uint16_t *scales = (uint16_t *)(dst + (size_t)rows * row_bytes);
    size_t nbytes = (size_t)rows * row_bytes;
    for (size_t k = 0; k < nbytes; k += 8) {
        uint64_t r = rng_next(seed), r2 = rng_next(seed);
        for (int b = 0; b < 8 && k + b < nbytes; b++) {
            uint8_t lo = table[(r >> (8 * b)) & 0xff], hi = table[(r2 >> (8 * b)) & 0xff];
            codes[k + b] = (uint8_t)(lo | (hi << 4));
        }
    }
    if (cols & 1) /* the padding nibble of odd rows stays zero-valued (8) */
        for (int64_t r = 0; r < rows; r++)
            codes[(size_t)r * row_bytes + row_bytes - 1] = (codes[(size_t)r * row_bytes + row_bytes - 1] & 0x0f) | 0x80;
    uint16_t sc = sl_f32_to_f16(sd * 2.5f / 7.0f);
    for (size_t g = 0; g < (size_t)rows * groups; g++)
        scales[g] = sc;
}

typedef struct syn_job {
    const sl_synth_opts *o;
    syn_chunk c;
    uint64_t offs[24];
    uint64_t decoded;
    uint8_t *dec, *enc;
    size_t enc_cap, stored;
    int codec;
    uint64_t checksum;
    long index;
    float *tmp;
    size_t tmp_cap;
    int rc;
} syn_job;

static int gen_chunk(syn_job *j)
{
    memset(j->dec, 0, j->decoded);
    uint64_t seed = j->o->seed * 0x100000001b3ull + (uint64_t)j->index * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < j->c.n; i++) {
        const syn_tensor *t = &j->c.t[i];
        int64_t cols = t->cols ? t->cols : 1;
        size_t n = (size_t)t->rows * (size_t)cols;
        if (n > j->tmp_cap) {
            free(j->tmp);
            j->tmp = malloc(n * sizeof(float));
            j->tmp_cap = j->tmp ? n : 0;
            if (!j->tmp)
                return SL_E_NOMEM;
        }
        float sd = t->init == 0 ? 1.0f / sqrtf((float)cols) : t->init == 1 ? 0.1f : t->init == 2 ? 0.01f : 1.0f;
        if (t->fmt == SL_WF_Q4 && t->init != 1) { /* straight to codes: generation at disk speed */
            q4_direct(j->dec + j->offs[i], t->rows, cols, sd, &seed);
            continue;
        }
        float mean = t->init == 1 ? 1.0f : 0.0f;
        for (size_t k = 0; k < n; k++)
            j->tmp[k] = mean + sd * gauss(&seed);
        sl_quantize((sl_wformat)t->fmt, j->tmp, t->rows, cols, j->dec + j->offs[i]);
    }
    j->checksum = sl_checksum(j->dec, j->decoded);
    sl_codec codec = SL_CODEC_RAW;
    if (j->o->zstd_level > 0) {
        if (sl_codec_encode(j->dec, j->decoded, j->o->zstd_level, 0.02, j->enc, j->enc_cap, &codec,
                            &j->stored))
            return SL_E_NOMEM;
    } else {
        memcpy(j->enc, j->dec, j->decoded);
        j->stored = j->decoded;
    }
    j->codec = codec;
    return 0;
}

static void *gen_thread(void *arg)
{
    syn_job *j = arg;
    j->rc = gen_chunk(j);
    return NULL;
}

static int build_meta(const char *cfg_json, const sl_synth_opts *o, const char *tok, size_t tok_len,
                      char **out, size_t *len, size_t *tok_off)
{
    const sl_wformat_info *q = sl_wformat_get(o->quant);
    const sl_wformat_info *eq = sl_wformat_get(o->expert_quant >= 0 ? o->expert_quant : o->quant);
    size_t cap = strlen(cfg_json) + tok_len + 512;
    char *s = malloc(cap);
    if (!s)
        return SL_E_NOMEM;
    int k = snprintf(s, cap,
                     "{\"format\":\"sluice\",\"version\":%d,\"converter\":\"%s synth\",\"source\":"
                     "\"synth:%s seed %llu (random weights)\",\"quant\":{\"default\":\"%s\",\"experts\":"
                     "\"%s\",\"zstd_level\":%d,\"min_saving\":0.02},\"config\":%s",
                     SL_SLUICE_VERSION, SL_SLUICE_CONVERTER, o->preset, (unsigned long long)o->seed,
                     q->name, eq->name, o->zstd_level, cfg_json);
    *tok_off = 0;
    if (tok) {
        k += snprintf(s + k, cap - (size_t)k, ",\"tokenizer\":");
        *tok_off = (size_t)k;
        memcpy(s + k, tok, tok_len);
        k += (int)tok_len;
    }
    s[k++] = '}';
    s[k] = 0;
    *out = s;
    *len = (size_t)k;
    return 0;
}

int sl_synth(const char *out, const sl_synth_opts *o, sl_error *e)
{
    /* config: a preset name or a config.json path, then --layers */
    const char *base = !strcmp(o->preset, "deepseek-v3") ? preset_v3 : !strcmp(o->preset, "tiny") ? preset_tiny : NULL;
    char *file_text = NULL;
    size_t flen;
    if (!base) {
        sl_error fe = {0};
        if (sl_read_file(o->preset, &file_text, &flen, &fe))
            return sl_errorf(e, SL_E_IO, "%s: not a preset (deepseek-v3, tiny): %s", o->preset, fe.msg);
        base = file_text;
    }
    cJSON *cj = cJSON_Parse(base);
    free(file_text);
    if (!cj)
        return sl_errorf(e, SL_E_FORMAT, "%s: config is not valid JSON", o->preset);
    if (o->layers > 0) {
        cJSON_DeleteItemFromObject(cj, "num_hidden_layers");
        cJSON_AddNumberToObject(cj, "num_hidden_layers", o->layers);
        cJSON *fk = cJSON_GetObjectItem(cj, "first_k_dense_replace");
        if (fk && cJSON_IsNumber(fk) && fk->valueint >= o->layers) { /* keep at least one MoE layer */
            cJSON_DeleteItemFromObject(cj, "first_k_dense_replace");
            cJSON_AddNumberToObject(cj, "first_k_dense_replace", o->layers > 1 ? 1 : 0);
        }
    }
    char *cfg_json = cJSON_PrintUnformatted(cj);
    cJSON_Delete(cj);
    sl_config k;
    int rc = cfg_json ? sl_config_parse(cfg_json, strlen(cfg_json), o->preset, &k, e)
                      : sl_errorf(e, SL_E_NOMEM, "synth: no memory");
    if (rc) {
        free(cfg_json);
        return rc;
    }
    int q = o->quant, eq = o->expert_quant >= 0 ? o->expert_quant : o->quant;
    if (!sl_wformat_get(q) || !sl_wformat_get(eq)) {
        free(cfg_json);
        return sl_errorf(e, SL_E_ARG, "synth: unknown weight format");
    }
    char *tok = NULL;
    size_t tok_len = 0;
    if (o->tokenizer && (rc = sl_read_file(o->tokenizer, &tok, &tok_len, e))) {
        free(cfg_json);
        return rc;
    }
    char *meta = NULL;
    size_t meta_len = 0, tok_off = 0;
    rc = build_meta(cfg_json, o, tok, tok_len, &meta, &meta_len, &tok_off);
    free(cfg_json);
    free(tok);
    if (rc)
        return sl_errorf(e, rc, "synth: no memory for the metadata");

    long n_chunks = chunk_count(&k);
    uint32_t n_tensors = 0;
    size_t names = 0;
    uint64_t total = 0, max_dec = 0;
    syn_chunk c;
    uint64_t offs[24];
    for (long i = 0; i < n_chunks; i++) {
        plan_chunk(&k, q, eq, i, &c);
        n_tensors += (uint32_t)c.n;
        for (int t = 0; t < c.n; t++)
            names += strlen(c.t[t].name) + 1;
        uint64_t d = layout(&c, offs);
        total += d;
        if (d > max_dec)
            max_dec = d;
    }
    sl_sluice_writer *w;
    rc = sl_sluice_writer_create(out, meta, meta_len, tok_off, tok ? tok_len : 0, (uint32_t)n_chunks,
                                 n_tensors, names, &w, e);
    free(meta);
    if (rc)
        return rc;

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = o->threads > 0 ? o->threads : (cores > 0 ? (int)cores : 1);
    syn_job *jobs = calloc((size_t)nt, sizeof *jobs);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    size_t enc_cap = sl_codec_bound(max_dec);
    for (int t = 0; jobs && t < nt; t++) {
        jobs[t].o = o;
        jobs[t].dec = malloc(max_dec ? max_dec : 1);
        jobs[t].enc = malloc(enc_cap);
        jobs[t].enc_cap = enc_cap;
        if (!jobs[t].dec || !jobs[t].enc)
            rc = SL_E_NOMEM;
    }
    if (!jobs || !th || rc)
        rc = sl_errorf(e, SL_E_NOMEM, "synth: no memory for %d workers x %.1f MB", nt, max_dec / 1e6);
    double t0 = sl_now();
    uint64_t done = 0;
    for (long i = 0; rc == 0 && i < n_chunks; i += nt) {
        int batch = n_chunks - i < nt ? (int)(n_chunks - i) : nt;
        for (int t = 0; t < batch; t++) {
            syn_job *j = &jobs[t];
            j->index = i + t;
            plan_chunk(&k, q, eq, i + t, &j->c);
            j->decoded = layout(&j->c, j->offs);
            if (pthread_create(&th[t], NULL, gen_thread, j) != 0) {
                j->rc = SL_E_NOMEM;
                th[t] = 0;
            }
        }
        for (int t = 0; t < batch; t++)
            if (th[t])
                pthread_join(th[t], NULL);
        for (int t = 0; t < batch && rc == 0; t++) {
            syn_job *j = &jobs[t];
            if (j->rc) {
                rc = sl_errorf(e, j->rc, "synth: cannot generate chunk %ld", j->index);
                break;
            }
            sl_sluice_tensor tt[24];
            for (int x = 0; x < j->c.n; x++)
                tt[x] = (sl_sluice_tensor){.name = j->c.t[x].name, .format = j->c.t[x].fmt,
                                           .rows = j->c.t[x].rows, .cols = j->c.t[x].cols,
                                           .offset = j->offs[x], .nbytes = tensor_bytes(&j->c.t[x])};
            sl_sluice_chunk ch = {.kind = j->c.kind, .codec = j->codec, .layer = j->c.layer,
                                  .expert = j->c.expert, .stored_size = j->stored,
                                  .decoded_size = j->decoded, .checksum = j->checksum};
            rc = sl_sluice_writer_add(w, &ch, tt, (uint32_t)j->c.n, j->enc, e);
            done += j->decoded;
        }
        if (rc == 0 && o->progress)
            o->progress(o->progress_ctx, done, total, sl_now() - t0);
        if (o->cancel && *o->cancel)
            rc = sl_errorf(e, SL_E_ARG, "synth: interrupted; %s not written", out);
    }
    for (int t = 0; jobs && t < nt; t++) {
        free(jobs[t].dec);
        free(jobs[t].enc);
        free(jobs[t].tmp);
    }
    free(jobs);
    free(th);
    if (rc) {
        sl_sluice_writer_abort(w);
        return rc;
    }
    return sl_sluice_writer_finish(w, e);
}
