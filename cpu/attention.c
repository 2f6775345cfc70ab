/* MLA attention over the latent cache, in the two forms of inference/model.py:
 *   naive:    k_nope, v = kv_b . latent for every cached token; score = q_nope.k_nope + q_rope.k_rope
 *   absorbed: q_lat = W_kb^T q_nope (kv_lora wide); score = q_lat.latent + q_rope.k_rope;
 *             out = W_vb (sum_j p_j latent_j). Reads T*(kv_lora+rope) floats per head instead of
 *             expanding T*heads*(nope+v): the decode form.
 * One pool item per (query token, head); each item owns a slice of the scratch. */
#include "cpu/internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    float *out;
    const float *q, *latent, *krope, *kv;  /* kv: expanded (T, heads, nope+v), naive only */
    const sl_weight *kv_b;
    int n, pos0;
    const sl_mla_dims *d;
    float *scratch;
    size_t item_floats;
} mla_job;

static size_t item_floats(const sl_mla_dims *d, int T, bool absorbed)
{
    return (size_t)T + (absorbed ? 2 * (size_t)d->kv_lora : 0);
}

size_t sl_cpu_mla_scratch_floats(const sl_mla_dims *d, int n, int T, bool absorbed)
{
    size_t per = item_floats(d, T, absorbed) * (size_t)n * (size_t)d->n_heads;
    size_t kv = absorbed ? 0 : (size_t)T * d->n_heads * (d->nope + d->v);
    return per + kv;
}

/* p[0..len) <- softmax(p * scale) in place */
static void softmax_scaled(float *p, int len, float scale)
{
    float mx = -INFINITY;
    for (int j = 0; j < len; j++) {
        p[j] *= scale;
        if (p[j] > mx)
            mx = p[j];
    }
    float sum = 0.0f;
    for (int j = 0; j < len; j++) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < len; j++)
        p[j] *= inv;
}

static void naive_item(void *ctx, int item)
{
    const mla_job *j = ctx;
    const sl_mla_dims *d = j->d;
    int t = item / d->n_heads, h = item % d->n_heads;
    int qk = d->nope + d->rope, kvw = d->nope + d->v;
    int len = j->pos0 + t + 1; /* causal: sees cache rows [0, pos0+t] */
    const float *qh = j->q + ((size_t)t * d->n_heads + h) * qk;
    float *p = j->scratch + (size_t)item * j->item_floats;
    for (int s = 0; s < len; s++) {
        const float *kn = j->kv + ((size_t)s * d->n_heads + h) * kvw;
        p[s] = sl_cpu_dot(qh, kn, d->nope) + sl_cpu_dot(qh + d->nope, j->krope + (size_t)s * d->rope, d->rope);
    }
    softmax_scaled(p, len, d->scale);
    float *o = j->out + ((size_t)t * d->n_heads + h) * d->v;
    memset(o, 0, (size_t)d->v * sizeof(float));
    for (int s = 0; s < len; s++) {
        const float *vs = j->kv + ((size_t)s * d->n_heads + h) * kvw + d->nope;
        for (int i = 0; i < d->v; i++)
            o[i] += p[s] * vs[i];
    }
}

static void absorbed_item(void *ctx, int item)
{
    const mla_job *j = ctx;
    const sl_mla_dims *d = j->d;
    int t = item / d->n_heads, h = item % d->n_heads;
    int qk = d->nope + d->rope, L = d->kv_lora;
    int len = j->pos0 + t + 1;
    const float *qh = j->q + ((size_t)t * d->n_heads + h) * qk;
    const float *wkb = (const float *)j->kv_b->data + (size_t)h * (d->nope + d->v) * L; /* (nope, L), f32 */
    const float *wvb = wkb + (size_t)d->nope * L;                        /* (v, L) */
    float *p = j->scratch + (size_t)item * j->item_floats;
    float *qlat = p + len, *olat = qlat + L;
    /* q_lat = W_kb^T q_nope */
    memset(qlat, 0, (size_t)L * sizeof(float));
    for (int k = 0; k < d->nope; k++) {
        const float *wr = wkb + (size_t)k * L;
        for (int i = 0; i < L; i++)
            qlat[i] += qh[k] * wr[i];
    }
    for (int s = 0; s < len; s++)
        p[s] = sl_cpu_dot(qlat, j->latent + (size_t)s * L, L) +
               sl_cpu_dot(qh + d->nope, j->krope + (size_t)s * d->rope, d->rope);
    softmax_scaled(p, len, d->scale);
    memset(olat, 0, (size_t)L * sizeof(float));
    for (int s = 0; s < len; s++) {
        const float *ls = j->latent + (size_t)s * L;
        for (int i = 0; i < L; i++)
            olat[i] += p[s] * ls[i];
    }
    float *o = j->out + ((size_t)t * d->n_heads + h) * d->v;
    for (int i = 0; i < d->v; i++)
        o[i] = sl_cpu_dot(wvb + (size_t)i * L, olat, L);
}

void sl_cpu_mla_attention(sl_backend *b, float *out, const float *q, const float *latent,
                          const float *krope, const sl_weight *kv_b, int n, int pos0,
                          const sl_mla_dims *d, bool absorbed, float *scratch)
{
    int T = pos0 + n;
    mla_job j = {out, q, latent, krope, NULL, kv_b, n, pos0, d, scratch, item_floats(d, T, absorbed)};
    if (!absorbed) {
        float *kv = scratch + j.item_floats * (size_t)n * d->n_heads;
        sl_cpu_matmul(b, kv, latent, kv_b, T); /* (T, heads*(nope+v)) */
        j.kv = kv;
    }
    sl_pool_for(sl_cpu_pool(b), n * d->n_heads, absorbed ? absorbed_item : naive_item, &j);
}
