/* cpu/: the reference backend. Every op of model/'s sl_backend_ops in plain C, fp32 with fp32
 * accumulation, matrix products spread over a thread pool. It is the oracle the GPU backend is
 * checked against and the path CI runs. */
#ifndef SL_CPU_H
#define SL_CPU_H

#include "model/model.h"
#include "quant/quant.h"

/* Create a CPU backend using n_threads workers (0: one per online core). Destroy with
 * b->ops->destroy(b). Returns 0 or SL_E_NOMEM. */
int sl_cpu_backend_create(int n_threads, sl_backend **out, sl_error *e);

/* For tests: the rounding of the CUDA backend's bf16-activation mode (cuda/cuda.h,
 * sl_cuda_set_activations), to check where it rounds against an oracle that rounds alike
 * (tools/bf16_reference.py): a matmul of more than above[fmt] tokens on weights other than f32
 * reads x rounded to bf16 (nearest even), products and sums staying fp32. above = NULL: plain
 * fp32, the default. Such a matmul copies x (n x cols floats, grown on demand: the mode is not
 * for serving); out of memory there aborts. */
void sl_cpu_set_bf16_inputs(sl_backend *b, const int above[SL_WF_COUNT]);

/* The individual ops, exposed for unit tests that check each against a direct formula. */
void sl_cpu_rmsnorm(float *out, int os, const float *x, int xs, const float *w, int n, int dim,
                    float eps);
void sl_cpu_rope(float *x, int n, int n_heads, int ts, int hs, int rope_dim, const int32_t *pos,
                 const float *inv_freq, float attn_factor);
void sl_cpu_moe_route(int32_t *idx, float *wts, const float *logits, const float *bias, int n,
                      int n_experts, int n_group, int topk_group, int top_k, bool norm, float scale);

/* A fixed pool of worker threads running one parallel-for at a time. Exposed for other CPU code
 * (the converter, decode workers) that wants the same cores. */
typedef struct sl_pool sl_pool;
int sl_pool_create(int n_threads, sl_pool **out);
void sl_pool_destroy(sl_pool *p);
int sl_pool_size(const sl_pool *p);
/* Calls fn(ctx, i) for i in [0, n) over the workers and the caller; returns when all are done. */
void sl_pool_for(sl_pool *p, int n, void (*fn)(void *ctx, int i), void *ctx);

#endif
