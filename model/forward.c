/* The DeepSeek-V3 forward pass: embedding, layers (MLA attention, dense or MoE FFN), head.
 * Shapes: T = tokens in this call, H = hidden, nh = heads, qk = nope + rope. */
#include "model/model_internal.h"

#include <string.h>

/* MLA attention (DeepSeek-V2 paper section 2.1; inference/model.py MLA.forward).
 * x: (T, H) normed input -> s->out: (T, H). Appends this call's latents and rope keys to kv. */
static void attention(sl_model *m, const sl_layer_weights *l, sl_kv_cache *kv, int layer, int T,
                      int pos0, bool absorbed)
{
    const sl_config *c = &m->cfg;
    const sl_backend_ops *op = m->b->ops;
    sl_backend *b = m->b;
    sl_run_state *s = &m->s;
    int nh = c->num_attention_heads, nope = c->qk_nope_head_dim, rope = c->qk_rope_head_dim;
    int qk = nope + rope, L = c->kv_lora_rank;
    float *latent = kv->latent + (size_t)layer * kv->max_ctx * L;   /* (max_ctx, L) */
    float *krope = kv->krope + (size_t)layer * kv->max_ctx * rope;  /* (max_ctx, rope) */

    /* q = q_b(norm(q_a(x))) : (T, nh, qk); rotate the rope tail of every head */
    if (c->q_lora_rank > 0) {
        op->matmul(b, s->q_a, s->xn, &l->q_a, T);
        op->rmsnorm(b, s->q_a, c->q_lora_rank, s->q_a, c->q_lora_rank, l->q_a_norm, T,
                    c->q_lora_rank, c->rms_norm_eps);
        op->matmul(b, s->q, s->q_a, &l->q_b, T);
    } else {
        op->matmul(b, s->q, s->xn, &l->q, T);
    }
    op->rope(b, s->q + nope, T, nh, nh * qk, qk, rope, s->pos, m->rope.inv_freq, m->rope.attn_factor);

    /* [latent | k_rope] = kv_a(x) : (T, L + rope); the cache keeps norm(latent) and rotated k_rope */
    op->matmul(b, s->kv_a, s->xn, &l->kv_a, T);
    op->rmsnorm(b, latent + (size_t)pos0 * L, L, s->kv_a, L + rope, l->kv_a_norm, T, L,
                c->rms_norm_eps);
    op->rope(b, s->kv_a + L, T, 1, L + rope, 0, rope, s->pos, m->rope.inv_freq, m->rope.attn_factor);
    op->copy_rows(b, krope + (size_t)pos0 * rope, rope, s->kv_a + L, L + rope, T, rope);

    /* softmax(q k^T * scale) v over cache rows [0, pos0 + t], then o_proj */
    op->mla_attention(b, s->attn, s->q, latent, krope, &l->kv_b, T, pos0, &m->mla, absorbed,
                      kv->scratch);
    op->matmul(b, s->out, s->attn, &l->o, T);
}

/* SwiGLU: out = down(silu(gate(x)) * up(x)) for T rows of x. */
static void swiglu(sl_model *m, float *out, const float *x, const sl_weight *gate,
                   const sl_weight *up, const sl_weight *down, int T)
{
    const sl_backend_ops *op = m->b->ops;
    sl_run_state *s = &m->s;
    op->matmul(m->b, s->ffn_g, x, gate, T);
    op->matmul(m->b, s->ffn_u, x, up, T);
    op->silu_mul(m->b, s->ffn_g, s->ffn_g, s->ffn_u, (size_t)T * gate->rows);
    op->matmul(m->b, out, s->ffn_g, down, T);
}

/* Prefetch hint: guess layer+1's experts by applying its router (and its FFN norm) to this
 * layer's residual stream s->x, and tell the provider while this layer's experts compute.
 * Uses the route buffers and exp_x as scratch: this layer's routing is already on the host. */
static int hint_next_layer(sl_model *m, int layer, int T, sl_error *e)
{
    const sl_config *c = &m->cfg;
    int next = layer + 1, rc;
    if (!m->wp->experts_hint || next >= c->num_hidden_layers || !m->w.layers[next].moe ||
        !m->w.layers[next].router.data)
        return 0;
    const sl_layer_weights *l = &m->w.layers[next];
    const sl_backend_ops *op = m->b->ops;
    sl_backend *b = m->b;
    sl_run_state *s = &m->s;
    int E = c->n_routed_experts, K = c->num_experts_per_tok, H = c->hidden_size;
    op->rmsnorm(b, s->exp_x, H, s->x, H, l->ffn_norm, T, H, c->rms_norm_eps);
    op->matmul(b, s->router_logits, s->exp_x, &l->router, T);
    K = m->prefetch_width;
    op->moe_route(b, s->route_idx, s->route_w, s->router_logits, l->router_bias, T, E, c->n_group,
                  c->topk_group, K, c->norm_topk_prob, c->routed_scaling_factor);
    if ((rc = op->download(b, s->h_route_idx, s->route_idx, (size_t)T * K * sizeof(int32_t))))
        return sl_errorf(e, rc, "layer %d: cannot read the prefetch guess back from %s", layer, op->name);
    int n = 0;
    for (int i = 0; i < T * K; i++) {
        int x = s->h_route_idx[i];
        if (!m->h_hint_mark[x]) {
            m->h_hint_mark[x] = 1;
            m->h_hint_list[n++] = x;
        }
    }
    for (int i = 0; i < n; i++)
        m->h_hint_mark[m->h_hint_list[i]] = 0;
    m->wp->experts_hint(m->wp, next, m->h_hint_list, n);
    return 0;
}

/* One routed expert over its tokens: gather their rows, SwiGLU, add back weighted. */
static void expert_one(sl_model *m, int x, const sl_expert_weights *w)
{
    const sl_backend_ops *op = m->b->ops;
    sl_run_state *s = &m->s;
    int H = m->cfg.hidden_size, cnt = s->h_exp_count[x], at = s->h_exp_start[x];
    op->gather_rows(m->b, s->exp_x, s->xn, s->exp_rows + at, cnt, H);
    swiglu(m, s->exp_x, s->exp_x, &w->gate, &w->up, &w->down, cnt);
    op->scatter_add_rows(m->b, s->out, s->exp_x, s->exp_rows + at, s->exp_rows_w + at, cnt, H);
}

static void group_flush(sl_model *m, sl_expert_group *g)
{
    sl_run_state *s = &m->s;
    if (g->n > 0)
        m->b->ops->expert_group(m->b, s->out, s->xn, s->exp_rows, s->exp_rows_w, g, s->exp_group);
    g->n = 0;
}

/* Experts handed out together, in that order: as backend expert groups of at most
 * SL_EXPERT_GROUP_MAX experts and m->group_rows token rows (the scratch), an expert with more
 * rows than that on its own. */
static void experts_run(sl_model *m, const int *xs, const sl_expert_weights *const *ws, int n)
{
    sl_run_state *s = &m->s;
    sl_expert_group g;
    int rows = 0;
    g.n = 0;
    for (int i = 0; i < n; i++) {
        int x = xs[i], cnt = s->h_exp_count[x];
        if (g.n == SL_EXPERT_GROUP_MAX || rows + cnt > m->group_rows) {
            group_flush(m, &g);
            rows = 0;
        }
        if (cnt > m->group_rows) {
            expert_one(m, x, ws[i]);
            continue;
        }
        g.w[g.n] = ws[i];
        g.start[g.n] = s->h_exp_start[x];
        g.count[g.n++] = cnt;
        rows += cnt;
    }
    group_flush(m, &g);
}

/* DeepSeekMoE: shared expert on every token plus top_k routed experts per token, each expert
 * run once over all the tokens routed to it, in the order the provider has them ready: all
 * that are ready at once as one backend expert group where the backend and the provider allow,
 * else one at a time. s->xn: (T, H) -> s->out: (T, H). */
static int moe(sl_model *m, const sl_layer_weights *l, int layer, int T, sl_error *e)
{
    const sl_config *c = &m->cfg;
    const sl_backend_ops *op = m->b->ops;
    sl_backend *b = m->b;
    sl_run_state *s = &m->s;
    int E = c->n_routed_experts, K = c->num_experts_per_tok, H = c->hidden_size, rc;

    op->matmul(b, s->router_logits, s->xn, &l->router, T);
    op->moe_route(b, s->route_idx, s->route_w, s->router_logits, l->router_bias, T, E, c->n_group,
                  c->topk_group, K, c->norm_topk_prob, c->routed_scaling_factor);
    if ((rc = op->download(b, s->h_route_idx, s->route_idx, (size_t)T * K * sizeof(int32_t))) ||
        (rc = op->download(b, s->h_route_w, s->route_w, (size_t)T * K * sizeof(float))))
        return sl_errorf(e, rc, "layer %d: cannot read routing back from %s", layer, op->name);

    /* group (token, weight) pairs by expert: counting sort, experts in index order */
    memset(s->h_exp_count, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < T * K; i++)
        s->h_exp_count[s->h_route_idx[i]]++;
    for (int x = 0, at = 0; x < E; x++) {
        s->h_exp_start[x] = at;
        at += s->h_exp_count[x];
    }
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < K; k++) {
            int x = s->h_route_idx[t * K + k];
            int at = s->h_exp_start[x]++;
            s->h_exp_rows[at] = t;
            s->h_exp_rows_w[at] = s->h_route_w[t * K + k];
        }
    }
    for (int x = 0; x < E; x++)
        s->h_exp_start[x] -= s->h_exp_count[x];
    if ((rc = op->upload(b, s->exp_rows, s->h_exp_rows, (size_t)T * K * sizeof(int32_t))) ||
        (rc = op->upload(b, s->exp_rows_w, s->h_exp_rows_w, (size_t)T * K * sizeof(float))))
        return sl_errorf(e, rc, "layer %d: cannot send expert rows to %s", layer, op->name);

    /* shared expert first (it writes s->out), then every routed expert adds its rows */
    if (c->n_shared_experts > 0)
        swiglu(m, s->out, s->xn, &l->sh_gate, &l->sh_up, &l->sh_down, T);
    else
        op->zero(b, s->out, (size_t)T * H);
    int n_used = 0;
    for (int x = 0; x < E; x++)
        if (s->h_exp_count[x] > 0)
            m->h_experts_used[n_used++] = x;
    if ((rc = m->wp->experts_request(m->wp, layer, m->h_experts_used, n_used, e)))
        return rc;
    if ((rc = hint_next_layer(m, layer, T, e)))
        return rc;
    if (op->expert_group && s->exp_group && m->wp->experts_ready) {
        for (;;) {
            int n;
            if ((rc = m->wp->experts_ready(m->wp, layer, n_used, m->h_ready, m->h_ready_w, &n, e)))
                return rc;
            if (n == 0)
                break;
            experts_run(m, m->h_ready, m->h_ready_w, n);
            for (int i = 0; i < n; i++)
                m->wp->expert_done(m->wp, layer, m->h_ready[i]);
        }
        return 0;
    }
    for (;;) {
        int x;
        const sl_expert_weights *w;
        if ((rc = m->wp->expert_next(m->wp, layer, &x, &w, e)))
            return rc;
        if (x < 0)
            break;
        expert_one(m, x, w);
        m->wp->expert_done(m->wp, layer, x);
    }
    return 0;
}

int sl_model_forward(sl_model *m, sl_kv_cache *kv, const int32_t *tokens, int n, bool all_logits,
                     float *logits, sl_error *e)
{
    const sl_config *c = &m->cfg;
    const sl_backend_ops *op = m->b->ops;
    sl_backend *b = m->b;
    sl_run_state *s = &m->s;
    int H = c->hidden_size, V = c->vocab_size, pos0 = kv->len, rc;

    if (n < 1 || n > m->max_tokens)
        return sl_errorf(e, SL_E_ARG, "forward: %d tokens in one call, limit is %d", n, m->max_tokens);
    if (pos0 + n > kv->max_ctx)
        return sl_errorf(e, SL_E_ARG, "forward: positions %d..%d exceed the context of %d tokens",
                         pos0, pos0 + n - 1, kv->max_ctx);
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= V)
            return sl_errorf(e, SL_E_ARG, "token %d at position %d is outside the vocabulary [0, %d)",
                             tokens[t], pos0 + t, V);
        s->h_ids[t] = tokens[t];
        s->h_pos[t] = pos0 + t;
    }
    if ((rc = op->upload(b, s->ids, s->h_ids, (size_t)n * sizeof(int32_t))) ||
        (rc = op->upload(b, s->pos, s->h_pos, (size_t)n * sizeof(int32_t))))
        return sl_errorf(e, rc, "forward: cannot send tokens to %s", op->name);
    bool absorbed = m->attn_mode == SL_ATTN_ABSORBED || (m->attn_mode == SL_ATTN_AUTO && n == 1);

    op->embed(b, s->x, &m->w.embed, s->ids, n);
    for (int layer = 0; layer < c->num_hidden_layers; layer++) {
        const sl_layer_weights *l;
        if ((rc = m->wp->layer_begin(m->wp, layer, &l, e)))
            return rc;
        op->rmsnorm(b, s->xn, H, s->x, H, l->attn_norm, n, H, c->rms_norm_eps);
        attention(m, l, kv, layer, n, pos0, absorbed);
        op->add(b, s->x, s->out, (size_t)n * H);

        op->rmsnorm(b, s->xn, H, s->x, H, l->ffn_norm, n, H, c->rms_norm_eps);
        if (l->moe) {
            rc = moe(m, l, layer, n, e);
        } else {
            swiglu(m, s->out, s->xn, &l->gate, &l->up, &l->down, n);
        }
        m->wp->layer_end(m->wp, layer);
        if (rc)
            return rc;
        op->add(b, s->x, s->out, (size_t)n * H);
    }
    kv->len = pos0 + n;

    /* head: final norm and lm_head, on every row or only the last */
    int first = all_logits ? 0 : n - 1, rows = n - first;
    op->rmsnorm(b, s->xn, H, s->x + (size_t)first * H, H, m->w.final_norm, rows, H, c->rms_norm_eps);
    op->matmul(b, s->logits, s->xn, &m->w.lm_head, rows);
    if ((rc = op->download(b, logits, s->logits, (size_t)rows * V * sizeof(float))))
        return sl_errorf(e, rc, "forward: cannot read logits back from %s", op->name);
    return 0;
}
