/* Building a model from a weight source: every tensor the config implies, by its official
 * DeepSeek-V3 checkpoint name, shape-checked by the source and placed in backend memory in its
 * stored format (norm vectors and biases widened to fp32, they are tiny). */
#include "model/model_internal.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct loader {
    bool skip_experts;
    sl_weight_source *src;
    const sl_config *c;
    sl_backend *b;
    sl_error *e;
} loader;

static int place(loader *L, const char *name, const void *host, size_t bytes, void **dev)
{
    int rc = L->b->ops->alloc(L->b, bytes, dev);
    if (rc == 0)
        rc = L->b->ops->upload(L->b, *dev, host, bytes);
    if (rc)
        return sl_errorf(L->e, rc, "%s: cannot place \"%s\" (%zu bytes) in %s memory", L->src->path,
                         name, bytes, L->b->ops->name);
    return 0;
}

static int load_vec(loader *L, const char *name, int64_t len, float **dev)
{
    void *buf;
    size_t nb;
    int fmt, rc = L->src->get(L->src, name, len, 0, &fmt, &buf, &nb, L->e);
    if (rc)
        return rc;
    float *h = malloc((size_t)len * sizeof(float));
    if (!h) {
        free(buf);
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for \"%s\"", L->src->path, name);
    }
    sl_dequantize_rows((sl_wformat)fmt, buf, len, 1, 0, len, h);
    free(buf);
    rc = place(L, name, h, (size_t)len * sizeof(float), (void **)dev);
    free(h);
    return rc;
}

/* widen_f32: place the matrix as plain f32 whatever its stored format (kv_b: the absorbed
 * attention form slices it per head). Otherwise only formats the backend cannot take are widened. */
static int load_mat_as(loader *L, const char *name, int rows, int cols, bool widen_f32, sl_weight *w)
{
    void *buf;
    size_t nb;
    int fmt, rc = L->src->get(L->src, name, rows, cols, &fmt, &buf, &nb, L->e);
    if (rc)
        return rc;
    if (fmt != SL_WF_F32 && (widen_f32 || !L->b->ops->supports(L->b, fmt))) {
        float *f = malloc((size_t)rows * cols * sizeof(float));
        if (!f) {
            free(buf);
            return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for \"%s\"", L->src->path, name);
        }
        sl_dequantize_rows((sl_wformat)fmt, buf, rows, cols, 0, rows, f);
        free(buf);
        buf = f;
        fmt = SL_WF_F32;
        nb = (size_t)rows * cols * sizeof(float);
    }
    w->rows = rows;
    w->cols = cols;
    w->fmt = fmt;
    rc = place(L, name, buf, nb, &w->data);
    free(buf);
    return rc;
}

static int load_mat(loader *L, const char *name, int rows, int cols, sl_weight *w)
{
    return load_mat_as(L, name, rows, cols, false, w);
}

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static int load_mlp(loader *L, const char *prefix, int width, sl_weight *gate, sl_weight *up,
                    sl_weight *down)
{
    char n[256];
    int H = L->c->hidden_size, rc;
    if ((rc = load_mat(L, NAME(n, "%sgate_proj.weight", prefix), width, H, gate)) ||
        (rc = load_mat(L, NAME(n, "%sup_proj.weight", prefix), width, H, up)) ||
        (rc = load_mat(L, NAME(n, "%sdown_proj.weight", prefix), H, width, down)))
        return rc;
    return 0;
}

static int load_layer(loader *L, int i, sl_layer_weights *lw)
{
    const sl_config *c = L->c;
    int H = c->hidden_size, nh = c->num_attention_heads;
    int qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char n[256], p[64];
    int rc;
    snprintf(p, sizeof p, "model.layers.%d.", i);
    if ((rc = load_vec(L, NAME(n, "%sinput_layernorm.weight", p), H, &lw->attn_norm)) ||
        (rc = load_vec(L, NAME(n, "%spost_attention_layernorm.weight", p), H, &lw->ffn_norm)))
        return rc;
    if (c->q_lora_rank > 0) {
        if ((rc = load_mat(L, NAME(n, "%sself_attn.q_a_proj.weight", p), c->q_lora_rank, H, &lw->q_a)) ||
            (rc = load_vec(L, NAME(n, "%sself_attn.q_a_layernorm.weight", p), c->q_lora_rank, &lw->q_a_norm)) ||
            (rc = load_mat(L, NAME(n, "%sself_attn.q_b_proj.weight", p), nh * qk, c->q_lora_rank, &lw->q_b)))
            return rc;
    } else if ((rc = load_mat(L, NAME(n, "%sself_attn.q_proj.weight", p), nh * qk, H, &lw->q))) {
        return rc;
    }
    if ((rc = load_mat(L, NAME(n, "%sself_attn.kv_a_proj_with_mqa.weight", p),
                       c->kv_lora_rank + c->qk_rope_head_dim, H, &lw->kv_a)) ||
        (rc = load_vec(L, NAME(n, "%sself_attn.kv_a_layernorm.weight", p), c->kv_lora_rank, &lw->kv_a_norm)) ||
        (rc = load_mat_as(L, NAME(n, "%sself_attn.kv_b_proj.weight", p),
                          nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, true, &lw->kv_b)) ||
        (rc = load_mat(L, NAME(n, "%sself_attn.o_proj.weight", p), H, nh * c->v_head_dim, &lw->o)))
        return rc;

    lw->moe = sl_layer_is_moe(c, i);
    if (!lw->moe) {
        snprintf(n, sizeof n, "%smlp.", p);
        return load_mlp(L, n, c->intermediate_size, &lw->gate, &lw->up, &lw->down);
    }
    int E = c->n_routed_experts;
    if ((rc = load_mat(L, NAME(n, "%smlp.gate.weight", p), E, H, &lw->router)) ||
        (rc = load_vec(L, NAME(n, "%smlp.gate.e_score_correction_bias", p), E, &lw->router_bias)))
        return rc;
    if (L->skip_experts)
        goto shared;
    lw->exp_gate = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_up = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_down = calloc((size_t)E, sizeof(sl_weight));
    if (!lw->exp_gate || !lw->exp_up || !lw->exp_down)
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for layer %d experts", L->src->path, i);
    for (int x = 0; x < E; x++) {
        char ep[96];
        snprintf(ep, sizeof ep, "%smlp.experts.%d.", p, x);
        if ((rc = load_mlp(L, ep, c->moe_intermediate_size, &lw->exp_gate[x], &lw->exp_up[x],
                           &lw->exp_down[x])))
            return rc;
    }
shared:
    if (c->n_shared_experts > 0) {
        snprintf(n, sizeof n, "%smlp.shared_experts.", p);
        return load_mlp(L, n, c->n_shared_experts * c->moe_intermediate_size, &lw->sh_gate,
                        &lw->sh_up, &lw->sh_down);
    }
    return 0;
}

/* What this engine adds to the parser's checks (format/config.c: positive sizes, even rope,
 * n_group divides the experts, topk_group <= n_group): its own table limits, and top-k within
 * the experts the kept groups offer. */
static int check_config(const sl_config *c, const char *path, sl_error *e)
{
    if (c->n_routed_experts > 0) {
        if (c->n_group > 64 || c->n_routed_experts > 1024)
            return sl_errorf(e, SL_E_UNSUPPORTED, "%s: n_routed_experts %d in %d groups not supported",
                             path, c->n_routed_experts, c->n_group);
        if (c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
            return sl_errorf(e, SL_E_FORMAT,
                             "%s: num_experts_per_tok %d cannot be picked from topk_group %d of %d groups",
                             path, c->num_experts_per_tok, c->topk_group, c->n_group);
    }
    if (c->tie_word_embeddings)
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tie_word_embeddings is not a DeepSeek-V3 layout", path);
    return 0;
}

static int load_model(sl_weight_source *src, sl_backend *b, int max_tokens, bool skip_experts,
                      sl_model **out, sl_error *e)
{
    sl_model *m = calloc(1, sizeof *m);
    if (!m)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", src->path);
    m->b = b;
    m->cfg = *src->config;
    const sl_config *c = &m->cfg;
    int rc = check_config(c, src->path, e);
    loader L = {skip_experts, src, c, b, e};
    if (rc == 0 && !(m->w.layers = calloc((size_t)c->num_hidden_layers, sizeof(sl_layer_weights))))
        rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory", src->path);
    if (rc == 0)
        rc = load_mat(&L, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, &m->w.embed);
    for (int i = 0; rc == 0 && i < c->num_hidden_layers; i++)
        rc = load_layer(&L, i, &m->w.layers[i]);
    if (rc == 0)
        rc = load_vec(&L, "model.norm.weight", c->hidden_size, &m->w.final_norm);
    if (rc == 0)
        rc = load_mat(&L, "lm_head.weight", c->vocab_size, c->hidden_size, &m->w.lm_head);
    if (rc == 0)
        rc = sl_model_init_runtime(m, max_tokens, e);
    if (rc) {
        sl_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int sl_model_load(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    return load_model(src, b, max_tokens, false, out, e);
}

int sl_model_load_core(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out,
                       sl_error *e)
{
    return load_model(src, b, max_tokens, true, out, e);
}

int sl_model_load_hf(const char *dir, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    sl_weight_source *src;
    int rc = sl_hf_source_open(dir, &src, e);
    if (rc)
        return rc;
    rc = sl_model_load(src, b, max_tokens, out, e);
    src->close(src);
    return rc;
}

int sl_model_load_path(const char *path, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        sl_weight_source *src;
        int rc = sl_sluice_source_open(path, &src, e);
        if (rc)
            return rc;
        rc = sl_model_load(src, b, max_tokens, out, e);
        src->close(src);
        return rc;
    }
    return sl_model_load_hf(path, b, max_tokens, out, e);
}
