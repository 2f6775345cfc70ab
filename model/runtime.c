/* Run state, rope tables, KV caches and teardown: every allocation of a model's life happens
 * here, at start-up, never per token. */
#include "model/model_internal.h"

#include <stdlib.h>

#define ALLOC(ptr, count)                                                                     \
    do {                                                                                      \
        if ((rc = b->ops->alloc(b, (size_t)(count) * sizeof(*(ptr)), (void **)&(ptr))) != 0) \
            return sl_errorf(e, rc, "model: cannot allocate " #ptr " (%zu bytes) on %s",      \
                             (size_t)(count) * sizeof(*(ptr)), b->ops->name);               \
        *acct += (size_t)(count) * sizeof(*(ptr));                                            \
    } while (0)

#define HALLOC(ptr, count)                                                                 \
    do {                                                                                   \
        if (!((ptr) = calloc((size_t)(count) > 0 ? (size_t)(count) : 1, sizeof(*(ptr)))))  \
            return sl_errorf(e, SL_E_NOMEM, "model: cannot allocate host " #ptr);          \
    } while (0)

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

int sl_model_init_runtime(sl_model *m, int max_tokens, sl_error *e)
{
    const sl_config *c = &m->cfg;
    sl_backend *b = m->b;
    sl_run_state *s = &m->s;
    int rc, T = max_tokens, H = c->hidden_size, nh = c->num_attention_heads;
    int qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    int E = c->n_routed_experts, K = c->num_experts_per_tok;
    int ffn = max3(c->intermediate_size, c->moe_intermediate_size * (c->n_shared_experts > 0 ? c->n_shared_experts : 1),
                   c->moe_intermediate_size);
    size_t *acct = &m->runtime_bytes;
    if (T < 1)
        return sl_errorf(e, SL_E_ARG, "model: max_tokens must be >= 1");
    m->max_tokens = T;
    m->mla = (sl_mla_dims){nh, c->qk_nope_head_dim, c->qk_rope_head_dim, c->v_head_dim,
                           c->kv_lora_rank, 0.0f};

    float inv_freq[512];
    if (c->qk_rope_head_dim / 2 > 512)
        return sl_errorf(e, SL_E_UNSUPPORTED, "model: qk_rope_head_dim %d too large", c->qk_rope_head_dim);
    sl_rope_params(c, inv_freq, &m->rope.attn_factor, &m->rope.softmax_scale);
    m->mla.scale = m->rope.softmax_scale;
    ALLOC(m->rope.inv_freq, c->qk_rope_head_dim / 2);
    if ((rc = b->ops->upload(b, m->rope.inv_freq, inv_freq, (size_t)(c->qk_rope_head_dim / 2) * sizeof(float))))
        return sl_errorf(e, rc, "model: cannot upload rope table");

    ALLOC(s->x, (size_t)T * H);
    ALLOC(s->xn, (size_t)T * H);
    ALLOC(s->q_a, (size_t)T * (c->q_lora_rank > 0 ? c->q_lora_rank : 1));
    ALLOC(s->q, (size_t)T * nh * qk);
    ALLOC(s->kv_a, (size_t)T * (c->kv_lora_rank + c->qk_rope_head_dim));
    ALLOC(s->attn, (size_t)T * nh * c->v_head_dim);
    ALLOC(s->out, (size_t)T * H);
    ALLOC(s->ffn_g, (size_t)T * ffn);
    ALLOC(s->ffn_u, (size_t)T * ffn);
    ALLOC(s->exp_x, (size_t)T * H);
    if (b->ops->expert_group && E > 0 && K > 0) {
        long long rows = (long long)T * K;
        m->group_rows = rows < SL_EXPERT_GROUP_ROWS ? (int)rows : SL_EXPERT_GROUP_ROWS;
        ALLOC(s->exp_group, (size_t)m->group_rows * (2 * (size_t)c->moe_intermediate_size + H));
    }
    ALLOC(s->router_logits, (size_t)T * (E > 0 ? E : 1));
    /* routing buffers also hold the prefetch guess, up to 2K candidates per token */
    int K2 = 2 * (K > 0 ? K : 1);
    ALLOC(s->route_idx, (size_t)T * K2);
    ALLOC(s->route_w, (size_t)T * K2);
    ALLOC(s->exp_rows, (size_t)T * (K > 0 ? K : 1));
    ALLOC(s->exp_rows_w, (size_t)T * (K > 0 ? K : 1));
    ALLOC(s->ids, T);
    ALLOC(s->pos, T);
    ALLOC(s->logits, (size_t)T * c->vocab_size);
    HALLOC(s->h_route_idx, (size_t)T * K2);
    HALLOC(s->h_route_w, (size_t)T * K2);
    HALLOC(s->h_exp_rows, (size_t)T * K);
    HALLOC(s->h_exp_rows_w, (size_t)T * K);
    HALLOC(s->h_ids, T);
    HALLOC(s->h_pos, T);
    HALLOC(s->h_exp_count, E);
    HALLOC(s->h_exp_start, E);
    HALLOC(m->h_experts_used, E);
    HALLOC(m->h_hint_list, E);
    m->prefetch_width = K;
    HALLOC(m->h_hint_mark, E);
    HALLOC(m->h_ready, E);
    HALLOC(m->h_ready_w, E);
    HALLOC(m->h_expert_w, E);
    sl_resident_provider_init(m, m->h_expert_w);
    return 0;
}

const sl_config *sl_model_config(const sl_model *m) { return &m->cfg; }

void sl_model_set_attn_mode(sl_model *m, sl_attn_mode mode) { m->attn_mode = mode; }

int sl_model_set_prefetch_width(sl_model *m, int width)
{
    const sl_config *c = &m->cfg;
    int most = 2 * c->num_experts_per_tok;
    int eligible = c->n_group > 0 ? c->topk_group * (c->n_routed_experts / c->n_group) : c->n_routed_experts;
    if (most > eligible)
        most = eligible;
    if (width < 1 || width > most)
        return SL_E_ARG;
    m->prefetch_width = width;
    return 0;
}

static void free_w(sl_backend *b, sl_weight *w)
{
    if (w->data)
        b->ops->free(b, w->data);
    w->data = NULL;
}

#define BFREE(p)                  \
    do {                          \
        if (p)                    \
            b->ops->free(b, (p)); \
        (p) = NULL;               \
    } while (0)

void sl_model_free(sl_model *m)
{
    if (!m)
        return;
    sl_backend *b = m->b;
    const sl_config *c = &m->cfg;
    if (m->w.layers) {
        for (int i = 0; i < c->num_hidden_layers; i++) {
            sl_layer_weights *l = &m->w.layers[i];
            BFREE(l->attn_norm);
            BFREE(l->ffn_norm);
            BFREE(l->q_a_norm);
            BFREE(l->kv_a_norm);
            BFREE(l->router_bias);
            sl_weight *ws[] = {&l->q_a, &l->q_b, &l->q, &l->kv_a, &l->kv_b, &l->o, &l->gate,
                               &l->up, &l->down, &l->router, &l->sh_gate, &l->sh_up, &l->sh_down};
            for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
                free_w(b, ws[k]);
            for (int x = 0; x < c->n_routed_experts; x++) {
                if (l->exp_gate)
                    free_w(b, &l->exp_gate[x]);
                if (l->exp_up)
                    free_w(b, &l->exp_up[x]);
                if (l->exp_down)
                    free_w(b, &l->exp_down[x]);
            }
            free(l->exp_gate);
            free(l->exp_up);
            free(l->exp_down);
        }
        free(m->w.layers);
    }
    free_w(b, &m->w.embed);
    BFREE(m->w.final_norm);
    free_w(b, &m->w.lm_head);
    BFREE(m->rope.inv_freq);
    sl_run_state *s = &m->s;
    void *dev[] = {s->x, s->xn, s->q_a, s->q, s->kv_a, s->attn, s->out, s->ffn_g, s->ffn_u,
                   s->exp_x, s->exp_group, s->router_logits, s->route_idx, s->route_w, s->exp_rows,
                   s->exp_rows_w, s->ids, s->pos, s->logits};
    for (size_t k = 0; k < sizeof dev / sizeof dev[0]; k++)
        if (dev[k])
            b->ops->free(b, dev[k]);
    free(s->h_route_idx);
    free(s->h_route_w);
    free(s->h_exp_rows);
    free(s->h_exp_rows_w);
    free(s->h_ids);
    free(s->h_pos);
    free(s->h_exp_count);
    free(s->h_exp_start);
    free(m->h_experts_used);
    free(m->h_hint_list);
    free(m->h_hint_mark);
    free(m->h_ready);
    free(m->h_ready_w);
    free(m->h_expert_w);
    free(m);
}

int sl_kv_cache_create(sl_model *m, int max_ctx, sl_kv_cache *kv, sl_error *e)
{
    const sl_config *c = &m->cfg;
    sl_backend *b = m->b;
    int rc;
    *kv = (sl_kv_cache){0};
    if (max_ctx < 1)
        return sl_errorf(e, SL_E_ARG, "kv cache: context must be >= 1 token");
    kv->max_ctx = max_ctx;
    kv->n_layers = c->num_hidden_layers;
    kv->kv_lora = c->kv_lora_rank;
    kv->rope = c->qk_rope_head_dim;
    size_t sn = b->ops->mla_scratch_floats(&m->mla, m->max_tokens, max_ctx, false);
    size_t sa = b->ops->mla_scratch_floats(&m->mla, m->max_tokens, max_ctx, true);
    size_t unused = 0, *acct = &unused;
    ALLOC(kv->latent, (size_t)kv->n_layers * max_ctx * kv->kv_lora);
    ALLOC(kv->krope, (size_t)kv->n_layers * max_ctx * kv->rope);
    ALLOC(kv->scratch, sn > sa ? sn : sa);
    return 0;
}

void sl_kv_cache_destroy(sl_model *m, sl_kv_cache *kv)
{
    sl_backend *b = m->b;
    BFREE(kv->latent);
    BFREE(kv->krope);
    BFREE(kv->scratch);
}

size_t sl_kv_cache_bytes(const sl_model *m, int max_ctx)
{
    const sl_config *c = &m->cfg;
    sl_backend *b = m->b;
    size_t sn = b->ops->mla_scratch_floats(&m->mla, m->max_tokens, max_ctx, false);
    size_t sa = b->ops->mla_scratch_floats(&m->mla, m->max_tokens, max_ctx, true);
    size_t per_tok = (size_t)c->num_hidden_layers * (c->kv_lora_rank + c->qk_rope_head_dim);
    return ((size_t)max_ctx * per_tok + (sn > sa ? sn : sa)) * sizeof(float);
}

size_t sl_model_runtime_bytes(const sl_model *m) { return m->runtime_bytes; }
