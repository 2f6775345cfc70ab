/* model/ private: the model struct (Config, Weights, RunState in llama2.c's sense). */
#ifndef SL_MODEL_INTERNAL_H
#define SL_MODEL_INTERNAL_H

#include "model/model.h"

/* Activations for up to max_tokens rows, all in backend memory unless marked host. */
typedef struct sl_run_state {
    float *x;             /* (T, hidden) residual stream */
    float *xn;            /* (T, hidden) normed input of a sub-block */
    float *q_a;           /* (T, q_lora) */
    float *q;             /* (T, heads, nope+rope) */
    float *kv_a;          /* (T, kv_lora+rope) */
    float *attn;          /* (T, heads, v) */
    float *out;           /* (T, hidden) sub-block output before the residual add */
    float *ffn_g, *ffn_u; /* (T, widest FFN) */
    float *exp_x;         /* (T, hidden) rows gathered for one expert */
    float *exp_group;     /* expert_group scratch for group_rows token rows: (R, moe_inter) x2 +
                           * (R, hidden); NULL when the backend has no expert_group */
    float *router_logits; /* (T, experts) */
    int32_t *route_idx;   /* (T, top_k) */
    float *route_w;       /* (T, top_k) */
    int32_t *exp_rows;    /* (T*top_k) token rows grouped by expert */
    float *exp_rows_w;    /* (T*top_k) their routing weights */
    int32_t *ids, *pos;   /* (T) */
    float *logits;        /* (T, vocab) */
    /* host mirrors */
    int32_t *h_route_idx, *h_exp_rows, *h_ids, *h_pos;
    float *h_route_w, *h_exp_rows_w;
    int *h_exp_count, *h_exp_start; /* (experts) */
} sl_run_state;

/* The provider over weights loaded whole (model/resident.c). */
typedef struct sl_resident_provider {
    sl_weight_provider base;
    sl_model *m;
    const int32_t *want;  /* experts requested for the current layer */
    int n_want, next;
    sl_expert_weights cur;
    sl_expert_weights *all; /* (experts) what experts_ready hands out, by expert index */
} sl_resident_provider;

struct sl_model {
    sl_config cfg;
    sl_backend *b;
    sl_weights w;
    sl_rope_table rope;
    sl_mla_dims mla;
    sl_run_state s;
    int max_tokens;
    sl_attn_mode attn_mode;
    size_t runtime_bytes;         /* backend bytes of the run state */
    sl_resident_provider resident;
    sl_weight_provider *wp;       /* &resident.base or the streaming engine */
    int32_t *h_experts_used;      /* (experts) distinct experts of the current layer, host */
    int32_t *h_hint_list;         /* (experts) prefetch guess for the next layer */
    uint8_t *h_hint_mark;         /* (experts) */
    int prefetch_width;           /* experts guessed per token for the next layer */
    int group_rows;               /* token rows one expert_group call may take (scratch) */
    int *h_ready;                 /* (experts) experts handed out together, host */
    const sl_expert_weights **h_ready_w; /* (experts) their weights */
    sl_expert_weights *h_expert_w;       /* (experts) the resident provider's hand-outs */
};

/* Token rows (summed over its experts) one expert_group call takes at most: the scratch is sized
 * for min(max_tokens x top_k, this). 256 rows of DeepSeek-V3 experts (hidden 7168, width 2048)
 * are 11.5 MB of fp32; a group is meant for few tokens per expert (decode), where launches, not
 * FLOPs, cost, so larger groups would buy nothing. */
enum { SL_EXPERT_GROUP_ROWS = 256 };

void sl_resident_provider_init(sl_model *m, sl_expert_weights *all);

static inline bool sl_layer_is_moe(const sl_config *c, int layer)
{
    return c->n_routed_experts > 0 && layer >= c->first_k_dense_replace &&
           layer % (c->moe_layer_freq > 0 ? c->moe_layer_freq : 1) == 0;
}

/* A layer core's tensors, in one fixed order (model/core.c): visit is called per tensor with its
 * checkpoint name, kind, shape (vectors: rows = length, cols 0) and where in lw it goes (vec for
 * vectors, mat for matrices). Sets lw->moe. Stops at the first non-zero return. */
typedef enum { SL_CORE_VEC, SL_CORE_MAT, SL_CORE_MAT_F32 /* widened to f32 whatever stored */ } sl_core_kind;
typedef int (*sl_core_visit)(void *ctx, const char *name, sl_core_kind kind, int rows, int cols,
                             float **vec, sl_weight *mat);
int sl_core_tensors(const sl_config *c, int layer, sl_layer_weights *lw, sl_core_visit visit, void *ctx);

/* Allocate the run state and rope tables once the weights are in (model/runtime.c). */
int sl_model_init_runtime(sl_model *m, int max_tokens, sl_error *e);

#endif
