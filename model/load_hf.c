/* Loading a Hugging Face DeepSeek-V3 directory into fp32 backend memory.
 *
 * Every tensor the config implies is looked up by its official name, its shape checked, decoded
 * (bf16/f16/f32, or fp8 times its 128x128 block scale_inv) on the host and uploaded. Names and
 * shapes follow deepseek-ai/DeepSeek-V3's checkpoint, which transformers also reads. */
#include "model/model_internal.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader {
    const sl_safetensors *st;
    const sl_config *c;
    sl_backend *b;
    const char *dir;
    sl_error *e;
} loader;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Decode tensor `name` of exactly `rows` x `cols` (cols == 0: a vector of `rows`) to host fp32. */
static int decode_host(loader *L, const char *name, int64_t rows, int64_t cols, float **out)
{
    const sl_tensor_view *t = sl_safetensors_find(L->st, name);
    if (!t)
        return sl_errorf(L->e, SL_E_MISSING, "%s: missing tensor \"%s\"", L->dir, name);
    bool vec = cols == 0;
    bool ok = vec ? (t->ndim == 1 && t->shape[0] == rows)
                  : (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[96] = "", want[64];
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        if (vec)
            snprintf(want, sizeof want, "[%lld]", (long long)rows);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        return sl_errorf(L->e, SL_E_SHAPE, "%s: tensor \"%s\" has shape [%s], config implies %s",
                         t->file, name, got, want);
    }
    size_t n = (size_t)t->numel;
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h)
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory to decode \"%s\"", t->file, name);
    if (t->dtype == SL_DT_F8_E4M3) {
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        const sl_tensor_view *s = sl_safetensors_find(L->st, sname);
        int br = L->c->fp8_block_rows ? L->c->fp8_block_rows : 128;
        int bc = L->c->fp8_block_cols ? L->c->fp8_block_cols : 128;
        if (vec || !s) {
            free(h);
            return sl_errorf(L->e, SL_E_MISSING, "%s: fp8 tensor \"%s\" has no \"%s\"", t->file,
                             name, sname);
        }
        if (s->dtype != SL_DT_F32 || s->ndim != 2 || s->shape[0] != cdiv(rows, br) ||
            s->shape[1] != cdiv(cols, bc)) {
            free(h);
            return sl_errorf(L->e, SL_E_SHAPE,
                             "%s: \"%s\" must be F32 [%lld, %lld] for %dx%d blocks of [%lld, %lld]",
                             s->file, sname, (long long)cdiv(rows, br), (long long)cdiv(cols, bc),
                             br, bc, (long long)rows, (long long)cols);
        }
        sl_fp8_block_dequant(t->data, s->data, rows, cols, br, bc, h);
    } else {
        sl_decode_to_f32((int)t->dtype, t->data, h, n);
    }
    *out = h;
    return 0;
}

static int upload(loader *L, const char *name, float *host, size_t n, float **dev)
{
    int rc = L->b->ops->alloc(L->b, n * sizeof(float), (void **)dev);
    if (rc == 0)
        rc = L->b->ops->upload(L->b, *dev, host, n * sizeof(float));
    free(host);
    if (rc != 0)
        return sl_errorf(L->e, rc, "%s: cannot place \"%s\" in %s memory", L->dir, name,
                         L->b->ops->name);
    return 0;
}

static int load_vec(loader *L, const char *name, int64_t len, float **dev)
{
    float *h;
    int rc = decode_host(L, name, len, 0, &h);
    return rc ? rc : upload(L, name, h, (size_t)len, dev);
}

static int load_mat(loader *L, const char *name, int rows, int cols, sl_weight *w)
{
    float *h;
    int rc = decode_host(L, name, rows, cols, &h);
    if (rc)
        return rc;
    w->rows = rows;
    w->cols = cols;
    return upload(L, name, h, (size_t)rows * cols, &w->data);
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
        (rc = load_mat(L, NAME(n, "%sself_attn.kv_b_proj.weight", p),
                       nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, &lw->kv_b)) ||
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
    lw->exp_gate = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_up = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_down = calloc((size_t)E, sizeof(sl_weight));
    if (!lw->exp_gate || !lw->exp_up || !lw->exp_down)
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for layer %d experts", L->dir, i);
    for (int x = 0; x < E; x++) {
        char ep[96];
        snprintf(ep, sizeof ep, "%smlp.experts.%d.", p, x);
        if ((rc = load_mlp(L, ep, c->moe_intermediate_size, &lw->exp_gate[x], &lw->exp_up[x],
                           &lw->exp_down[x])))
            return rc;
    }
    if (c->n_shared_experts > 0) {
        snprintf(n, sizeof n, "%smlp.shared_experts.", p);
        return load_mlp(L, n, c->n_shared_experts * c->moe_intermediate_size, &lw->sh_gate,
                        &lw->sh_up, &lw->sh_down);
    }
    return 0;
}

/* Checks the config's numbers are ones the forward pass can run. */
static int check_config(const sl_config *c, const char *path, sl_error *e)
{
    if (c->qk_rope_head_dim % 2 != 0)
        return sl_errorf(e, SL_E_FORMAT, "%s: qk_rope_head_dim %d must be even", path, c->qk_rope_head_dim);
    if (c->n_routed_experts > 0) {
        if (c->n_group <= 0 || c->n_routed_experts % c->n_group != 0 || c->n_group > 64 ||
            c->n_routed_experts > 1024)
            return sl_errorf(e, SL_E_UNSUPPORTED, "%s: n_routed_experts %d in %d groups not supported",
                             path, c->n_routed_experts, c->n_group);
        if (c->topk_group < 1 || c->topk_group > c->n_group ||
            c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
            return sl_errorf(e, SL_E_FORMAT,
                             "%s: num_experts_per_tok %d cannot be picked from topk_group %d of %d groups",
                             path, c->num_experts_per_tok, c->topk_group, c->n_group);
    }
    if (c->tie_word_embeddings)
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tie_word_embeddings is not a DeepSeek-V3 layout", path);
    return 0;
}

int sl_model_load_hf(const char *dir, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    sl_model *m = calloc(1, sizeof *m);
    if (!m)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", dir);
    m->b = b;
    int rc = sl_config_load(path, &m->cfg, e);
    if (rc == 0)
        rc = check_config(&m->cfg, path, e);
    sl_safetensors *st = NULL;
    if (rc == 0)
        rc = sl_safetensors_open(dir, &st, e);
    if (rc) {
        sl_model_free(m);
        return rc;
    }
    const sl_config *c = &m->cfg;
    loader L = {st, c, b, dir, e};
    m->w.layers = calloc((size_t)c->num_hidden_layers, sizeof(sl_layer_weights));
    if (!m->w.layers)
        rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory", dir);
    float *h = NULL;
    if (rc == 0 && (rc = decode_host(&L, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, &h)) == 0)
        rc = upload(&L, "model.embed_tokens.weight", h, (size_t)c->vocab_size * c->hidden_size, &m->w.embed);
    for (int i = 0; rc == 0 && i < c->num_hidden_layers; i++)
        rc = load_layer(&L, i, &m->w.layers[i]);
    if (rc == 0)
        rc = load_vec(&L, "model.norm.weight", c->hidden_size, &m->w.final_norm);
    if (rc == 0)
        rc = load_mat(&L, "lm_head.weight", c->vocab_size, c->hidden_size, &m->w.lm_head);
    sl_safetensors_close(st);
    if (rc == 0)
        rc = sl_model_init_runtime(m, max_tokens, e);
    if (rc) {
        sl_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}
