/* model/: the DeepSeek-V3 forward pass, written once over a backend ops table.
 *
 * Reads top to bottom like deepseek-ai/DeepSeek-V3 inference/model.py: embedding, then per layer
 * RMSNorm -> MLA attention (low-rank q, latent kv, decoupled RoPE key) -> residual -> RMSNorm ->
 * dense SwiGLU or MoE (sigmoid router with group-limited top-k, routed experts, shared expert)
 * -> residual, then the final norm and lm_head. The KV cache keeps only the normalised latent
 * (kv_lora_rank) and the rotated rope key (qk_rope_head_dim) per token per layer.
 *
 * model/ never allocates memory itself: every buffer comes from the backend's alloc, and no
 * function here assumes one sequence (a KV cache is its own object) or one device. */
#ifndef SL_MODEL_H
#define SL_MODEL_H

#include "base/base.h"
#include "format/format.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- the backend interface (cpu/ and cuda/ each provide one) -------------------------------- */

/* A 2-D weight in backend memory: y = x W^T, W is (rows = out features) x (cols = in features),
 * encoded in a quant/ weight format (sl_wformat: f32, bf16, fp8, q8, q4), planar as quant.h
 * documents. Backends decode inside their matrix products; nothing is widened at load. */
typedef struct sl_weight {
    int rows, cols;
    int fmt;     /* sl_wformat */
    void *data;  /* sl_wformat_bytes(fmt, rows, cols) bytes */
} sl_weight;

typedef struct sl_backend sl_backend;
typedef struct sl_event sl_event; /* a point in a backend's queue of work (optional ops) */

/* One routed expert's weights (its SwiGLU). */
typedef struct sl_expert_weights {
    sl_weight gate, up, down;   /* (moe_inter, hidden) x2, (hidden, moe_inter) */
} sl_expert_weights;

/* Routed experts of one layer computed in one expert_group call (see the op). Expert i runs on
 * token rows rows[start[i] .. start[i] + count[i]) of the op's rows/row_w arrays. */
enum { SL_EXPERT_GROUP_MAX = 32 }; /* experts in one call: a GPU passes the group as launch arguments */
typedef struct sl_expert_group {
    int n;                                           /* experts, 1 .. SL_EXPERT_GROUP_MAX */
    const sl_expert_weights *w[SL_EXPERT_GROUP_MAX]; /* weights in backend memory */
    int start[SL_EXPERT_GROUP_MAX];                  /* first entry in rows / row_w */
    int count[SL_EXPERT_GROUP_MAX];                  /* token rows, >= 1 */
} sl_expert_group;

/* Floats of scratch expert_group needs: with R = the group's summed counts, (R, moe_inter) for
 * gate, the same for up, (R, hidden) for the gathered inputs and down's outputs. */
static inline size_t sl_expert_group_scratch_floats(const sl_expert_group *g)
{
    size_t r = 0;
    for (int i = 0; i < g->n; i++)
        r += (size_t)g->count[i];
    if (g->n < 1)
        return 0;
    return r * (2 * (size_t)g->w[0]->gate.rows + (size_t)g->w[0]->gate.cols);
}

/* The shapes an MLA attention call needs (one layer, one sequence). */
typedef struct sl_mla_dims {
    int n_heads, nope, rope, v, kv_lora;
    float scale; /* softmax scale: qk_head_dim^-0.5 * yarn mscale^2 */
} sl_mla_dims;

/* Every op works on backend memory (pointers from ops->alloc), fp32, row-major, one sequence.
 * Calls are ordered on the backend's compute stream; results are visible to the host after
 * download (which synchronises). */
typedef struct sl_backend_ops {
    const char *name;
    /* memory */
    int (*alloc)(sl_backend *b, size_t bytes, void **out);
    void (*free)(sl_backend *b, void *p);
    int (*upload)(sl_backend *b, void *dst, const void *src, size_t bytes);
    int (*download)(sl_backend *b, void *dst, const void *src, size_t bytes);
    void (*destroy)(sl_backend *b);

    /* Which weight formats matmul/embed take directly (others are widened to f32 at load). */
    bool (*supports)(sl_backend *b, int fmt);
    /* out[i] = table row ids[i] decoded to fp32, (n, table->cols) */
    void (*embed)(sl_backend *b, float *out, const sl_weight *table, const int32_t *ids, int n);
    /* out[i] = x[i] / rms(x[i]) * w, rows of `dim` read with stride xs, written with stride os */
    void (*rmsnorm)(sl_backend *b, float *out, int os, const float *x, int xs, const float *w,
                    int n, int dim, float eps);
    /* out (n, w->rows) = x (n, w->cols) . W^T */
    void (*matmul)(sl_backend *b, float *out, const float *x, const sl_weight *w, int n);
    /* Rotate interleaved pairs (x[2i], x[2i+1]) by angle pos[t] * inv_freq[i], then scale by
     * attn_factor (YaRN's cos/sin scaling). x row t, head h starts at x + t*ts + h*hs. */
    void (*rope)(sl_backend *b, float *x, int n, int n_heads, int ts, int hs, int rope_dim,
                 const int32_t *pos, const float *inv_freq, float attn_factor);
    /* MLA over a latent cache. q: (n, heads, nope+rope) with rope part already rotated; query
     * t sits at position pos0 + t and sees cache rows [0, pos0 + t]. latent: (T, kv_lora),
     * krope: (T, rope), kv_b: (heads*(nope+v), kv_lora). out: (n, heads, v). `absorbed` picks
     * the decode form (q folded through kv_b, softmax over latents) instead of expanding k/v.
     * scratch: at least mla_scratch_floats(dims, n, T) floats. */
    void (*mla_attention)(sl_backend *b, float *out, const float *q, const float *latent,
                          const float *krope, const sl_weight *kv_b, int n, int pos0,
                          const sl_mla_dims *d, bool absorbed, float *scratch);
    size_t (*mla_scratch_floats)(const sl_mla_dims *d, int n, int T, bool absorbed);
    /* out[i] = silu(gate[i]) * up[i], n elements */
    void (*silu_mul)(sl_backend *b, float *out, const float *gate, const float *up, size_t n);
    /* p[0..n) = 0 */
    void (*zero)(sl_backend *b, float *p, size_t n);
    /* y[i] += x[i] */
    void (*add)(sl_backend *b, float *y, const float *x, size_t n);
    /* dst row t (stride ds) = src row t (stride ss), dim wide, n rows */
    void (*copy_rows)(sl_backend *b, float *dst, int ds, const float *src, int ss, int n, int dim);
    /* out[j] = x[rows[j]], dim wide */
    void (*gather_rows)(sl_backend *b, float *out, const float *x, const int32_t *rows, int n_rows,
                        int dim);
    /* y[rows[j]] += weights[j] * x[j], dim wide */
    void (*scatter_add_rows)(sl_backend *b, float *y, const float *x, const int32_t *rows,
                             const float *weights, int n_rows, int dim);
    /* DeepSeek-V3 router: s = sigmoid(logits); choice = s + bias; groups ranked by the sum of
     * their top-2 choice scores, keep topk_group groups, pick top_k experts among them by
     * choice; weights = s of the picked (normalised to sum 1 if norm) * scale.
     * logits (n, E) -> idx (n, top_k), wts (n, top_k), ordered by descending choice score. */
    void (*moe_route)(sl_backend *b, int32_t *idx, float *wts, const float *logits,
                      const float *bias, int n, int n_experts, int n_group, int topk_group,
                      int top_k, bool norm, float scale);

    /* ---- optional: host -> backend copies that overlap compute --------------------------------
     * NULL in a backend whose upload is already a plain memory copy (cpu/): callers then use
     * upload. The pattern, per destination buffer: upload_async waits for the buffer's "free"
     * event (its last reader finished), copies, and records "ready"; compute_wait(ready) makes
     * every later op wait for the copy; after the ops that read the buffer, compute_record(free).
     * All return at once; 0 or an SL_E_* code with the reason in e. */
    /* Page-lock host memory so copies from it are DMA and can run asynchronously. */
    int (*pin_host)(sl_backend *b, void *p, size_t bytes, sl_error *e);
    void (*unpin_host)(sl_backend *b, void *p);
    int (*event_create)(sl_backend *b, sl_event **out, sl_error *e);
    void (*event_destroy)(sl_backend *b, sl_event *ev); /* NULL is fine */
    /* Copy src (pinned, untouched until `ready` completes) to dst after `after` (may be NULL),
     * then record `ready` (may be NULL). */
    int (*upload_async)(sl_backend *b, void *dst, const void *src, size_t bytes, sl_event *after,
                        sl_event *ready, sl_error *e);
    int (*compute_wait)(sl_backend *b, sl_event *ev, sl_error *e);
    int (*compute_record)(sl_backend *b, sl_event *ev, sl_error *e);
    /* 1 when ev completed (or was never recorded), 0 while pending, or an SL_E_* code. With
     * `block`, waits for it first. */
    int (*event_done)(sl_backend *b, sl_event *ev, bool block, sl_error *e);

    /* ---- optional: several routed experts of one layer in one call ---------------------------
     * The sum of g->n experts' SwiGLUs, each over its own token rows, added into out: for
     * i = 0 .. g->n-1 in order, and each of expert i's rows j (start[i] <= j < start[i]+count[i]),
     *   out[rows[j]] += row_w[j] * down_i(silu(gate_i(x[rows[j]])) * up_i(x[rows[j]])),
     * the same sums as gather_rows, matmul gate and up, silu_mul, matmul down and
     * scatter_add_rows per expert in that order (matrix products may round differently; the
     * adds into each row of out happen in expert order). x, out: (T, hidden); rows, row_w: backend
     * memory; a token appears at most once per expert. Experts of one layer share shapes; their
     * formats may differ (a backend may then run them one by one). scratch: at least
     * sl_expert_group_scratch_floats(g) floats, overwritten. NULL in a backend without it: the
     * forward pass then runs the experts one at a time with the ops above. Why it exists: at a
     * few tokens an expert matrix streams in a few microseconds, about what a kernel launch
     * costs, so one launch per step for the whole group keeps the GPU streaming. */
    void (*expert_group)(sl_backend *b, float *out, const float *x, const int32_t *rows,
                         const float *row_w, const sl_expert_group *g, float *scratch);
} sl_backend_ops;

struct sl_backend {
    const sl_backend_ops *ops;
    void *ctx;
};

/* ---- weights ---------------------------------------------------------------------------- */

typedef struct sl_layer_weights {
    float *attn_norm;           /* (hidden) input_layernorm */
    sl_weight q_a;              /* (q_lora, hidden)                  when q_lora_rank > 0 */
    float *q_a_norm;            /* (q_lora) */
    sl_weight q_b;              /* (heads*(nope+rope), q_lora) */
    sl_weight q;                /* (heads*(nope+rope), hidden)       when q_lora_rank == 0 */
    sl_weight kv_a;             /* (kv_lora + rope, hidden) kv_a_proj_with_mqa */
    float *kv_a_norm;           /* (kv_lora) */
    sl_weight kv_b;             /* (heads*(nope+v), kv_lora) */
    sl_weight o;                /* (hidden, heads*v) */
    float *ffn_norm;            /* (hidden) post_attention_layernorm */
    bool moe;
    sl_weight gate, up, down;   /* dense: (inter, hidden), (inter, hidden), (hidden, inter) */
    sl_weight router;           /* (experts, hidden) mlp.gate */
    float *router_bias;         /* (experts) e_score_correction_bias, selection only */
    sl_weight *exp_gate, *exp_up, *exp_down; /* [experts]: (moe_inter, hidden) x2, (hidden, moe_inter) */
    sl_weight sh_gate, sh_up, sh_down;       /* shared: width n_shared * moe_inter */
} sl_layer_weights;

typedef struct sl_weights {
    sl_weight embed;            /* (vocab, hidden) */
    sl_layer_weights *layers;   /* [num_hidden_layers] */
    float *final_norm;          /* (hidden) */
    sl_weight lm_head;          /* (vocab, hidden) */
} sl_weights;

/* ---- where weights come from during a forward pass ---------------------------------------
 * The forward pass asks for each layer's weights as it reaches the layer, and for the routed
 * experts its tokens chose, which it then computes in the order they become ready. A model
 * loaded whole into backend memory answers at once (model/resident.c); the streaming engine
 * (stream/) answers from its VRAM slots and host cache, reading misses from disk while earlier
 * experts compute. Every call happens on the thread that runs the forward pass. */
typedef struct sl_weight_provider sl_weight_provider;
struct sl_weight_provider {
    /* Layer `layer`'s non-expert weights, ready for compute until layer_end. */
    int (*layer_begin)(sl_weight_provider *p, int layer, const sl_layer_weights **lw, sl_error *e);
    /* Routed experts experts[0..n) (distinct) of `layer` are needed now. */
    int (*experts_request)(sl_weight_provider *p, int layer, const int32_t *experts, int n,
                           sl_error *e);
    /* The next requested expert that is ready (blocks until one is); *expert = -1 when all
     * requested ones were handed out. The weights stay valid until expert_done. */
    int (*expert_next)(sl_weight_provider *p, int layer, int *expert, const sl_expert_weights **w,
                       sl_error *e);
    void (*expert_done)(sl_weight_provider *p, int layer, int expert);
    void (*layer_end)(sl_weight_provider *p, int layer);
    /* A guess of experts a later layer will request (prefetch). May be NULL. */
    void (*experts_hint)(sl_weight_provider *p, int layer, const int32_t *experts, int n);
    /* expert_next for several at once: up to `max` requested experts that are ready now, into
     * experts[0..*n) and w[0..*n), blocking only until at least one is; *n = 0 when all requested
     * ones were handed out. Each stays valid until its expert_done; call expert_done for every
     * one handed out before the next call (a provider may need their memory for the next ones).
     * May be NULL: callers then use expert_next. */
    int (*experts_ready)(sl_weight_provider *p, int layer, int max, int *experts,
                         const sl_expert_weights **w, int *n, sl_error *e);
};

/* ---- the model and its per-sequence state ------------------------------------------------ */

typedef struct sl_model sl_model;

/* Rope tables derived from the config (YaRN included). */
typedef struct sl_rope_table {
    float *inv_freq;            /* (rope/2) in backend memory */
    float attn_factor;          /* YaRN cos/sin scale */
    float softmax_scale;        /* qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 */
} sl_rope_table;

/* Compute YaRN (or plain) inverse frequencies on the host, exactly as transformers'
 * _compute_yarn_parameters does: out has rope/2 floats. Returns attn_factor and softmax_scale. */
void sl_rope_params(const sl_config *c, float *inv_freq_out, float *attn_factor, float *softmax_scale);

/* Build a model from a weight source (format/: a Hugging Face directory, a .sluice file): every
 * tensor the config implies is fetched, its shape checked, and placed in backend memory in its
 * stored format (vectors in fp32). Errors name the tensor. max_tokens bounds one forward call.
 * The source is not kept; the caller closes it. */
int sl_model_load(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out, sl_error *e);

/* Use `p` for layer and expert weights from now on (the streaming engine); NULL restores the
 * model's own resident weights. The model does not own p. */
void sl_model_set_provider(sl_model *m, sl_weight_provider *p);
/* The model's own provider over what it loaded (a streamer delegates layer cores to it). */
sl_weight_provider *sl_model_resident_provider(sl_model *m);

/* sl_model_load without the routed experts: for a caller (stream/) that provides them through
 * sl_model_set_provider before the first forward call. */
int sl_model_load_core(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out,
                       sl_error *e);

/* sl_model_load with neither routed experts nor layer cores: embedding, final norm and head only.
 * For a streamer that also provides every layer's core (sl_model_core_bind) through its provider. */
int sl_model_load_shell(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out,
                        sl_error *e);

/* Place every layer's core into a model loaded as a shell (what sl_model_load_core would have
 * placed); on error the model keeps what was placed and is freed as usual. */
int sl_model_load_cores(sl_model *m, sl_weight_source *src, sl_error *e);

/* ---- layer cores that stream ---------------------------------------------------------------
 * A layer's non-expert weights as one image a streamer copies into a backend slot in one piece:
 * matrices in their stored format (kv_b, and formats the backend cannot take, widened to f32),
 * vectors as f32, each at a 256-byte aligned offset — as whole-model loading places them. The
 * lookup answers a tensor's stored format and bytes by checkpoint name, checking the shape
 * (cols 0: a vector of `rows`); data may be NULL when only sizes and formats are needed. */
typedef int (*sl_tensor_lookup)(void *ctx, const char *name, int64_t rows, int64_t cols, int *fmt,
                                const void **data, sl_error *e);
/* The image's size in *bytes; with `image` (host memory of that size) also fill it. */
int sl_model_core_image(const sl_model *m, int layer, sl_tensor_lookup get, void *ctx, void *image,
                        size_t *bytes, sl_error *e);
/* Point lw's weights into `base`, backend memory holding layer `layer`'s image. */
int sl_model_core_bind(const sl_model *m, int layer, sl_tensor_lookup get, void *ctx, void *base,
                       sl_layer_weights *lw, sl_error *e);

/* sl_model_load over PATH: a .sluice file, or a Hugging Face directory. */
int sl_model_load_path(const char *path, sl_backend *b, int max_tokens, sl_model **out, sl_error *e);
/* Same, for a Hugging Face directory only (kept for callers that mean exactly that). */
int sl_model_load_hf(const char *dir, sl_backend *b, int max_tokens, sl_model **out, sl_error *e);
void sl_model_free(sl_model *m);
const sl_config *sl_model_config(const sl_model *m);

/* A sequence's KV cache: per layer (max_ctx, kv_lora) latents and (max_ctx, rope) rope keys. */
typedef struct sl_kv_cache {
    int max_ctx, len;           /* len = tokens already in the cache */
    int n_layers, kv_lora, rope;
    float *latent;              /* (layers, max_ctx, kv_lora) backend memory */
    float *krope;               /* (layers, max_ctx, rope) */
    float *scratch;             /* attention scratch for max_tokens queries over max_ctx keys */
} sl_kv_cache;

int sl_kv_cache_create(sl_model *m, int max_ctx, sl_kv_cache *kv, sl_error *e);
void sl_kv_cache_destroy(sl_model *m, sl_kv_cache *kv);
/* Backend bytes sl_kv_cache_create(m, max_ctx) will take (latents, rope keys, attention scratch). */
size_t sl_kv_cache_bytes(const sl_model *m, int max_ctx);
/* Backend bytes of the model's run state (activations for max_tokens rows, rope table). */
size_t sl_model_runtime_bytes(const sl_model *m);

/* Attention form: AUTO uses the naive (expanded k/v) form for prefill and the absorbed form for
 * single-token decode, as inference/model.py's two paths. */
typedef enum { SL_ATTN_AUTO, SL_ATTN_NAIVE, SL_ATTN_ABSORBED } sl_attn_mode;
void sl_model_set_attn_mode(sl_model *m, sl_attn_mode mode);

/* How many experts per token the next-layer guess names (default num_experts_per_tok; at most
 * twice that). A wider guess reads more but leaves fewer misses for after the router.
 * SL_E_ARG outside [1, 2 x num_experts_per_tok]. */
int sl_model_set_prefetch_width(sl_model *m, int width);

/* Run n tokens (1 <= n <= max_tokens) at positions kv->len .. kv->len+n-1, append them to the
 * cache, and write logits to host memory: (n, vocab) when all_logits, else (1, vocab) for the
 * last token. Token ids >= vocab or a full cache give SL_E_ARG naming the position. */
int sl_model_forward(sl_model *m, sl_kv_cache *kv, const int32_t *tokens, int n, bool all_logits,
                     float *logits, sl_error *e);

#endif
