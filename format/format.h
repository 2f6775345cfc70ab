/* format/: files on disk -> typed views. Safetensors (single file or sharded through
 * model.safetensors.index.json) and DeepSeek-V3 config.json. Later: the .sluice container.
 *
 * Nothing here computes; tensors are returned as bounds-checked views into read-only mappings. */
#ifndef SL_FORMAT_H
#define SL_FORMAT_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- dtypes ------------------------------------------------------------------------------ */

typedef enum {
    SL_DT_F32,
    SL_DT_F16,
    SL_DT_BF16,
    SL_DT_F8_E4M3, /* safetensors "F8_E4M3" (torch.float8_e4m3fn) */
} sl_dtype;

size_t sl_dtype_size(sl_dtype dt);     /* bytes per element */
const char *sl_dtype_name(sl_dtype dt); /* the safetensors spelling: "BF16", ... */

/* Safetensors spelling -> sl_dtype. Returns 0 and sets *out; SL_E_UNSUPPORTED for a dtype the
 * safetensors spec defines but sluice does not read ("I64", "F64", "BOOL", ...); SL_E_FORMAT for
 * a string that is no safetensors dtype at all. Fills no message (the caller knows the file). */
int sl_dtype_parse(const char *s, sl_dtype *out);

/* ---- safetensors ------------------------------------------------------------------------- */

#define SL_MAX_DIMS 4

/* One tensor: a view into a read-only mapping owned by the sl_safetensors it came from. */
typedef struct sl_tensor_view {
    const char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    int64_t numel;
    const void *data;  /* numel * sl_dtype_size(dtype) bytes, inside the file's bounds */
    const char *file;  /* the shard it lives in (for messages) */
} sl_tensor_view;

typedef struct sl_safetensors sl_safetensors;

/* Open PATH: a directory holding model.safetensors.index.json (sharded) or model.safetensors,
 * or one .safetensors file. Every shard is mmapped read-only; every header is parsed and each
 * tensor's [begin, end) checked against the data section and its dtype * shape. Errors
 * (SL_E_IO, SL_E_FORMAT, SL_E_UNSUPPORTED, SL_E_MISSING) name the file and tensor.
 * On success *out must be closed with sl_safetensors_close. */
int sl_safetensors_open(const char *path, sl_safetensors **out, sl_error *e);
void sl_safetensors_close(sl_safetensors *st);

/* Lookup by exact name; NULL when absent. O(log n). */
const sl_tensor_view *sl_safetensors_find(const sl_safetensors *st, const char *name);
size_t sl_safetensors_count(const sl_safetensors *st);
const sl_tensor_view *sl_safetensors_at(const sl_safetensors *st, size_t i); /* sorted by name */

/* ---- DeepSeek-V3 config.json -------------------------------------------------------------- */

/* YaRN rope scaling, as the official config (rope_scaling, type "yarn") or transformers 5.x
 * (rope_parameters, rope_type "yarn") states it. kind == SL_ROPE_NONE means plain RoPE. */
typedef enum { SL_ROPE_NONE, SL_ROPE_YARN } sl_rope_kind;

typedef struct sl_config {
    int vocab_size;
    int hidden_size;             /* 7168 in V3 */
    int intermediate_size;       /* dense FFN width (first_k_dense_replace layers) */
    int moe_intermediate_size;   /* routed / shared expert width, 2048 in V3 */
    int num_hidden_layers;       /* 61 */
    int first_k_dense_replace;   /* layers [0, k) are dense, [k, n) MoE */
    int moe_layer_freq;          /* 1 in V3 (MoE on every layer >= k) */
    int n_routed_experts;        /* 256 */
    int n_shared_experts;        /* 1 */
    int num_experts_per_tok;     /* 8 */
    int n_group;                 /* 8 */
    int topk_group;              /* 4 */
    bool norm_topk_prob;
    float routed_scaling_factor; /* 2.5 */
    int num_attention_heads;     /* 128 */
    int q_lora_rank;             /* 1536; 0 means no low-rank q (q_proj) */
    int kv_lora_rank;            /* 512 */
    int qk_nope_head_dim;        /* 128 */
    int qk_rope_head_dim;        /* 64 */
    int v_head_dim;              /* 128 */
    float rms_norm_eps;
    int max_position_embeddings;
    int bos_token_id, eos_token_id; /* -1 when absent */
    bool tie_word_embeddings;
    /* rope */
    double rope_theta;
    sl_rope_kind rope_kind;
    double rope_factor;
    int rope_original_max_pos;
    double rope_beta_fast, rope_beta_slow; /* defaults 32, 1 */
    double rope_mscale, rope_mscale_all_dim; /* 0 when absent */
    double rope_attention_factor;          /* 0 when absent (then derived) */
    /* fp8 checkpoint: quantization_config.weight_block_size, 0 when the checkpoint is not fp8 */
    int fp8_block_rows, fp8_block_cols;
} sl_config;

/* Parse config.json at PATH. Accepts model_type "deepseek_v3" (and "deepseek_v2" layouts that
 * share the keys). Missing required keys, a wrong type, or an unknown model_type give an error
 * that names the key. */
int sl_config_load(const char *path, sl_config *out, sl_error *e);

/* Same from an in-memory JSON text; `origin` names it in messages. */
int sl_config_parse(const char *json, size_t len, const char *origin, sl_config *out, sl_error *e);

#endif
