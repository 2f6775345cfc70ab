/* What goes into a .sluice file and in which order, from the config alone: the names and shapes
 * are the official DeepSeek-V3 checkpoint's (the ones model/ asks a weight source for). */
#include "format/sluice_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct planner {
    sl_plan *p;
    uint32_t cap_chunks, cap_tensors;
    int fail;
} planner;

/* Same rule as model/'s sl_layer_is_moe (format/ cannot include model/). */
static bool layer_is_moe(const sl_config *c, int layer)
{
    return c->n_routed_experts > 0 && layer >= c->first_k_dense_replace &&
           layer % (c->moe_layer_freq > 0 ? c->moe_layer_freq : 1) == 0;
}

static void open_chunk(planner *P, int kind, int layer, int expert)
{
    sl_plan *p = P->p;
    if (P->fail || p->n_chunks == P->cap_chunks) {
        P->fail = 1;
        return;
    }
    p->chunks[p->n_chunks++] = (sl_plan_chunk){kind, layer, expert, p->n_tensors, 0, 0};
}

static void __attribute__((format(printf, 5, 6)))
add(planner *P, int64_t rows, int64_t cols, int role, const char *fmt, ...)
{
    sl_plan *p = P->p;
    if (P->fail || p->n_tensors == P->cap_tensors) {
        P->fail = 1;
        return;
    }
    sl_plan_tensor *t = &p->tensors[p->n_tensors];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof t->name) {
        P->fail = 1;
        return;
    }
    t->rows = rows;
    t->cols = cols;
    t->role = role;
    sl_plan_chunk *c = &p->chunks[p->n_chunks - 1];
    c->n++;
    c->params += (uint64_t)rows * (uint64_t)(cols ? cols : 1);
    if (c->n > p->max_chunk_tensors)
        p->max_chunk_tensors = c->n;
    p->names_bytes += (size_t)len + 1;
    p->params += (uint64_t)rows * (uint64_t)(cols ? cols : 1);
    p->n_tensors++;
}

static void plan_mlp(planner *P, const char *prefix, int64_t width, int64_t H, int role)
{
    add(P, width, H, role, "%sgate_proj.weight", prefix);
    add(P, width, H, role, "%sup_proj.weight", prefix);
    add(P, H, width, role, "%sdown_proj.weight", prefix);
}

static void plan_layer(planner *P, const sl_config *c, int i)
{
    int64_t H = c->hidden_size, nh = c->num_attention_heads;
    int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char p[64], m[96];
    snprintf(p, sizeof p, "model.layers.%d.", i);
    open_chunk(P, SL_CHUNK_CORE, i, -1);
    add(P, H, 0, SL_ROLE_KEEP, "%sinput_layernorm.weight", p);
    if (c->q_lora_rank > 0) {
        add(P, c->q_lora_rank, H, SL_ROLE_MATRIX, "%sself_attn.q_a_proj.weight", p);
        add(P, c->q_lora_rank, 0, SL_ROLE_KEEP, "%sself_attn.q_a_layernorm.weight", p);
        add(P, nh * qk, c->q_lora_rank, SL_ROLE_MATRIX, "%sself_attn.q_b_proj.weight", p);
    } else {
        add(P, nh * qk, H, SL_ROLE_MATRIX, "%sself_attn.q_proj.weight", p);
    }
    add(P, c->kv_lora_rank + c->qk_rope_head_dim, H, SL_ROLE_MATRIX, "%sself_attn.kv_a_proj_with_mqa.weight", p);
    add(P, c->kv_lora_rank, 0, SL_ROLE_KEEP, "%sself_attn.kv_a_layernorm.weight", p);
    add(P, nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, SL_ROLE_MATRIX,
        "%sself_attn.kv_b_proj.weight", p);
    add(P, H, nh * c->v_head_dim, SL_ROLE_MATRIX, "%sself_attn.o_proj.weight", p);
    add(P, H, 0, SL_ROLE_KEEP, "%spost_attention_layernorm.weight", p);
    if (!layer_is_moe(c, i)) {
        snprintf(m, sizeof m, "%smlp.", p);
        plan_mlp(P, m, c->intermediate_size, H, SL_ROLE_MATRIX);
        return;
    }
    int E = c->n_routed_experts;
    add(P, E, H, SL_ROLE_KEEP, "%smlp.gate.weight", p);
    add(P, E, 0, SL_ROLE_KEEP, "%smlp.gate.e_score_correction_bias", p);
    if (c->n_shared_experts > 0) {
        snprintf(m, sizeof m, "%smlp.shared_experts.", p);
        plan_mlp(P, m, (int64_t)c->n_shared_experts * c->moe_intermediate_size, H, SL_ROLE_MATRIX);
    }
    for (int x = 0; x < E; x++) {
        open_chunk(P, SL_CHUNK_EXPERT, i, x);
        snprintf(m, sizeof m, "%smlp.experts.%d.", p, x);
        plan_mlp(P, m, c->moe_intermediate_size, H, SL_ROLE_EXPERT);
    }
}

int sl_plan_build(const sl_config *c, sl_plan *p, sl_error *e)
{
    *p = (sl_plan){0};
    int L = c->num_hidden_layers, E = c->n_routed_experts;
    if (L <= 0 || L > 4096 || E < 0 || E > 65536 || c->hidden_size <= 0 || c->vocab_size <= 0)
        return sl_errorf(e, SL_E_ARG, "config: %d layers, %d experts, hidden %d, vocab %d: nothing sluice can plan",
                         L, E, c->hidden_size, c->vocab_size);
    planner P = {p, (uint32_t)(2 + L * (1 + E)), (uint32_t)(3 + L * (16 + 3 * E)), 0};
    p->chunks = calloc(P.cap_chunks, sizeof *p->chunks);
    p->tensors = calloc(P.cap_tensors, sizeof *p->tensors);
    if (!p->chunks || !p->tensors) {
        sl_plan_free(p);
        return sl_errorf(e, SL_E_NOMEM, "config: no memory to plan %u tensors", P.cap_tensors);
    }
    int64_t H = c->hidden_size;
    open_chunk(&P, SL_CHUNK_RESIDENT, -1, -1);
    add(&P, c->vocab_size, H, SL_ROLE_MATRIX, "model.embed_tokens.weight");
    /* lm_head first: a converter then reuses its buffer as the chunk's (see convert.c) */
    open_chunk(&P, SL_CHUNK_RESIDENT, -1, -1);
    add(&P, c->vocab_size, H, SL_ROLE_MATRIX, "lm_head.weight");
    add(&P, H, 0, SL_ROLE_KEEP, "model.norm.weight");
    for (int i = 0; i < L; i++)
        plan_layer(&P, c, i);
    if (P.fail) {
        sl_plan_free(p);
        return sl_errorf(e, SL_E_ARG, "config: the tensor plan overflowed (a name longer than 111 bytes?)");
    }
    return 0;
}

void sl_plan_free(sl_plan *p)
{
    free(p->chunks);
    free(p->tensors);
    *p = (sl_plan){0};
}
