/* cpu/ private: the backend context and the op entry points the ops table points at. */
#ifndef SL_CPU_INTERNAL_H
#define SL_CPU_INTERNAL_H

#include "cpu/cpu.h"

typedef struct sl_cpu_ctx {
    sl_pool *pool;
    /* sl_cpu_set_bf16_inputs: round x to bf16 past bf16_above[fmt] tokens; x_bf16 holds the
     * rounded copy (grown on demand, only in that mode) */
    bool bf16_inputs;
    int bf16_above[SL_WF_COUNT];
    float *x_bf16;
    size_t x_bf16_cap;
} sl_cpu_ctx;

static inline sl_pool *sl_cpu_pool(sl_backend *b) { return ((sl_cpu_ctx *)b->ctx)->pool; }

/* Dot product of two fp32 rows with 8 independent accumulators (vectorisable, fp32). */
static inline float sl_cpu_dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void sl_cpu_matmul(sl_backend *b, float *out, const float *x, const sl_weight *w, int n);
void sl_cpu_mla_attention(sl_backend *b, float *out, const float *q, const float *latent,
                          const float *krope, const sl_weight *kv_b, int n, int pos0,
                          const sl_mla_dims *d, bool absorbed, float *scratch);
size_t sl_cpu_mla_scratch_floats(const sl_mla_dims *d, int n, int T, bool absorbed);

#endif
