/* A layer's core (its non-expert weights): the one list of its tensors, by checkpoint name and
 * shape, that both whole-model loading and core streaming walk; and the core image a streamer
 * copies into a backend slot in one piece. */
#include "model/model_internal.h"
#include "quant/quant.h"

#include <stdio.h>
#include <string.h>

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static int visit_mlp(const char *prefix, int width, int H, sl_weight *gate, sl_weight *up,
                     sl_weight *down, sl_core_visit visit, void *ctx)
{
    char n[256];
    int rc;
    if ((rc = visit(ctx, NAME(n, "%sgate_proj.weight", prefix), SL_CORE_MAT, width, H, NULL, gate)) ||
        (rc = visit(ctx, NAME(n, "%sup_proj.weight", prefix), SL_CORE_MAT, width, H, NULL, up)) ||
        (rc = visit(ctx, NAME(n, "%sdown_proj.weight", prefix), SL_CORE_MAT, H, width, NULL, down)))
        return rc;
    return 0;
}

int sl_core_tensors(const sl_config *c, int layer, sl_layer_weights *lw, sl_core_visit visit, void *ctx)
{
    int H = c->hidden_size, nh = c->num_attention_heads;
    int qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char n[256], p[64];
    int rc;
    snprintf(p, sizeof p, "model.layers.%d.", layer);
    if ((rc = visit(ctx, NAME(n, "%sinput_layernorm.weight", p), SL_CORE_VEC, H, 0, &lw->attn_norm, NULL)) ||
        (rc = visit(ctx, NAME(n, "%spost_attention_layernorm.weight", p), SL_CORE_VEC, H, 0, &lw->ffn_norm, NULL)))
        return rc;
    if (c->q_lora_rank > 0) {
        if ((rc = visit(ctx, NAME(n, "%sself_attn.q_a_proj.weight", p), SL_CORE_MAT, c->q_lora_rank, H, NULL, &lw->q_a)) ||
            (rc = visit(ctx, NAME(n, "%sself_attn.q_a_layernorm.weight", p), SL_CORE_VEC, c->q_lora_rank, 0, &lw->q_a_norm, NULL)) ||
            (rc = visit(ctx, NAME(n, "%sself_attn.q_b_proj.weight", p), SL_CORE_MAT, nh * qk, c->q_lora_rank, NULL, &lw->q_b)))
            return rc;
    } else if ((rc = visit(ctx, NAME(n, "%sself_attn.q_proj.weight", p), SL_CORE_MAT, nh * qk, H, NULL, &lw->q))) {
        return rc;
    }
    if ((rc = visit(ctx, NAME(n, "%sself_attn.kv_a_proj_with_mqa.weight", p), SL_CORE_MAT,
                    c->kv_lora_rank + c->qk_rope_head_dim, H, NULL, &lw->kv_a)) ||
        (rc = visit(ctx, NAME(n, "%sself_attn.kv_a_layernorm.weight", p), SL_CORE_VEC, c->kv_lora_rank, 0, &lw->kv_a_norm, NULL)) ||
        (rc = visit(ctx, NAME(n, "%sself_attn.kv_b_proj.weight", p), SL_CORE_MAT_F32,
                    nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, NULL, &lw->kv_b)) ||
        (rc = visit(ctx, NAME(n, "%sself_attn.o_proj.weight", p), SL_CORE_MAT, H, nh * c->v_head_dim, NULL, &lw->o)))
        return rc;

    lw->moe = sl_layer_is_moe(c, layer);
    if (!lw->moe) {
        snprintf(n, sizeof n, "%smlp.", p);
        return visit_mlp(n, c->intermediate_size, H, &lw->gate, &lw->up, &lw->down, visit, ctx);
    }
    int E = c->n_routed_experts;
    if ((rc = visit(ctx, NAME(n, "%smlp.gate.weight", p), SL_CORE_MAT, E, H, NULL, &lw->router)) ||
        (rc = visit(ctx, NAME(n, "%smlp.gate.e_score_correction_bias", p), SL_CORE_VEC, E, 0, &lw->router_bias, NULL)))
        return rc;
    if (c->n_shared_experts > 0) {
        snprintf(n, sizeof n, "%smlp.shared_experts.", p);
        return visit_mlp(n, c->n_shared_experts * c->moe_intermediate_size, H, &lw->sh_gate,
                         &lw->sh_up, &lw->sh_down, visit, ctx);
    }
    return 0;
}

/* ---- the core image ------------------------------------------------------------------------
 * Tensors in list order, each at a 256-byte aligned offset: matrices as stored (formats the
 * backend cannot take, and kv_b, widened to f32), vectors as f32 — what whole-model loading
 * places, so the forward pass cannot tell a streamed core from a resident one. */
typedef struct image_walk {
    const sl_model *m;
    sl_tensor_lookup get;
    void *get_ctx;
    size_t off;
    uint8_t *image;   /* host image to fill, or NULL */
    uint8_t *base;    /* backend memory to bind views to, or NULL */
    sl_error *e;
} image_walk;

static int image_visit(void *ctx, const char *name, sl_core_kind kind, int rows, int cols, float **vec,
                       sl_weight *mat)
{
    image_walk *w = ctx;
    int fmt;
    const void *data;
    int rc = w->get(w->get_ctx, name, rows, kind == SL_CORE_VEC ? 0 : cols, &fmt, &data, w->e);
    if (rc)
        return rc;
    bool widen = kind != SL_CORE_MAT ||
                 (fmt != SL_WF_F32 && !w->m->b->ops->supports(w->m->b, fmt));
    int out_fmt = widen ? SL_WF_F32 : fmt;
    int64_t r = rows, cl = kind == SL_CORE_VEC ? 1 : cols;
    if (kind == SL_CORE_VEC) /* a vector decodes as len rows of one, as load.c reads it */
        r = rows, cl = 1;
    size_t bytes = sl_wformat_bytes((sl_wformat)out_fmt, r, cl);
    w->off = (w->off + 255) & ~(size_t)255;
    if (w->image && data) {
        if (widen && fmt != SL_WF_F32)
            sl_dequantize_rows((sl_wformat)fmt, data, r, cl, 0, r, (float *)(w->image + w->off));
        else
            memcpy(w->image + w->off, data, bytes);
    }
    if (w->base) {
        void *at = w->base + w->off;
        if (vec)
            *vec = at;
        else
            *mat = (sl_weight){rows, cols, out_fmt, at};
    }
    w->off += bytes;
    return 0;
}

int sl_model_core_image(const sl_model *m, int layer, sl_tensor_lookup get, void *ctx, void *image,
                        size_t *bytes, sl_error *e)
{
    image_walk w = {m, get, ctx, 0, image, NULL, e};
    sl_layer_weights lw = {0};
    int rc = sl_core_tensors(&m->cfg, layer, &lw, image_visit, &w);
    *bytes = (w.off + 255) & ~(size_t)255;
    return rc;
}

int sl_model_core_bind(const sl_model *m, int layer, sl_tensor_lookup get, void *ctx, void *base,
                       sl_layer_weights *lw, sl_error *e)
{
    image_walk w = {m, get, ctx, 0, NULL, base, e};
    *lw = (sl_layer_weights){0};
    return sl_core_tensors(&m->cfg, layer, lw, image_visit, &w);
}
