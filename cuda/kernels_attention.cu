// MLA attention over the latent cache, both forms of inference/model.py, as fp32 GEMMs (the
// generic strided GEMM of kernels_gemm.cu) around one causal softmax kernel. Shapes: n queries
// at positions pos0.., T = pos0 + n cache rows, nh heads, L = kv_lora, qk = nope + rope,
// kvw = nope + v. Scores S are (n, nh, T) in scratch; a query t sees rows [0, pos0 + t].
//
//   naive:    kv = latent . kv_b^T                  (T, nh, kvw)   one matmul, any weight format
//             S[t,h,s] = q[t,h,:nope].kv[s,h,:nope] + q[t,h,nope:].krope[s]   per head
//             P = softmax(S * scale); out[t,h] = sum_s P[t,h,s] kv[s,h,nope:]
//   absorbed: q_lat[t,h] = W_kb[h]^T q[t,h,:nope]   (n, nh, L)     per head
//             S[t,h,s] = q_lat[t,h].latent[s] + q[t,h,nope:].krope[s]   one GEMM, all heads
//             P = softmax(S * scale); o_lat = P . latent  (n, nh, L)  one GEMM (split over T)
//             out[t,h] = W_vb[h] o_lat[t,h]           per head
// The absorbed form reads the cache (T * (L + rope) floats) once for all heads per 128 keys
// instead of expanding T * nh * kvw floats: it is the decode form. Both GEMMs over the cache have
// M = n * nh rows (128 heads: the large tile), so the bound is fp32 FMA throughput,
// 4 * n * nh * T * L flops; the softmax adds 3 passes over S.
// Measured (bench/kernels, H100 SXM, 1 token, 128 heads, f32 kv_b): 168 us at 4K context,
// 666 us at 32K (13.7 TFLOP/s, 113 GB/s of cache read); at 4K the per-head q_lat / out products
// (M = 1, ~25 + 47 us) and split-K reductions dominate. Next: one fused kernel per head group.
#include "cuda/internal.cuh"

// ---- causal softmax: one block per (t, h) row of S ---------------------------------------------

__global__ void causal_softmax_kernel(float *s, int ld, int heads, int pos0, float scale)
{
    float *row = s + (size_t)blockIdx.x * ld;
    int len = pos0 + (int)(blockIdx.x / heads) + 1;
    len = len < ld ? len : ld;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float v = __fmul_rn(row[j], scale);
        row[j] = v;
        mx = fmaxf(mx, v);
    }
    mx = sl_block_reduce<true>(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    sum = sl_block_reduce<false>(sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        row[j] = __fmul_rn(row[j], inv);
    for (int j = len + threadIdx.x; j < ld; j += blockDim.x) // keys after t: weight 0
        row[j] = 0.0f;
}

void sl_cuda_causal_softmax(sl_cuda_ctx *c, float *s, int rows, int ld, int heads, int pos0,
                            float scale)
{
    causal_softmax_kernel<<<rows, 256, 0, c->compute>>>(s, ld, heads, pos0, scale);
    CUDA_LAUNCHED(c, "mla_attention (softmax)");
}

// ---- scratch: the same layout size as cpu/attention.c --------------------------------------------

size_t sl_cuda_mla_scratch_floats(const sl_mla_dims *d, int n, int T, bool absorbed)
{
    size_t s = (size_t)n * d->n_heads * T;                           // S / P
    if (absorbed)
        return s + 2 * (size_t)n * d->n_heads * d->kv_lora;          // q_lat, o_lat
    return s + (size_t)T * d->n_heads * (d->nope + d->v);            // expanded k_nope | v
}

static sl_gemm_operand operand(const float *p, long long sb, long long sr, long long sk, int K,
                               int rows)
{
    sl_gemm_operand o = {p, NULL, sb, sr, sk, 0, 0, 0, K, rows};
    return o;
}

static void with_second(sl_gemm_operand *o, const float *p2, long long sb, long long sr,
                        long long sk)
{
    o->p2 = p2;
    o->sb2 = sb;
    o->sr2 = sr;
    o->sk2 = sk;
}

static void naive(sl_cuda_ctx *c, float *out, const float *q, const float *latent,
                  const float *krope, const sl_weight *kv_b, int n, int pos0, const sl_mla_dims *d,
                  float *scratch)
{
    int nh = d->n_heads, nope = d->nope, rope = d->rope, v = d->v, T = pos0 + n;
    long long qk = nope + rope, kvw = nope + v;
    float *S = scratch;
    float *kv = scratch + (size_t)n * nh * T;
    sl_cuda_matmul(c, kv, latent, kv_b, T); // (T, nh, kvw)

    sl_gemm_f32 g;
    // S[t,h,s] = [q_nope | q_rope][t,h] . [k_nope[s,h] | krope[s]], batched over heads
    g.a = operand(q, qk, nh * qk, 1, nope, n);
    with_second(&g.a, q + nope, qk, nh * qk, 1);
    g.b = operand(kv, kvw, nh * kvw, 1, nope, T);
    with_second(&g.b, krope, 0, rope, 1);
    g.c = S, g.cb = T, g.ci = (long long)nh * T, g.cj = 1;
    g.M = n, g.N = T, g.K = nope + rope, g.batch = nh;
    sl_cuda_gemm_f32(c, &g);

    sl_cuda_causal_softmax(c, S, n * nh, T, nh, pos0, d->scale);

    // out[t,h,:] = sum_s P[t,h,s] v[s,h,:]
    g.a = operand(S, T, (long long)nh * T, 1, T, n);
    g.b = operand(kv + nope, kvw, 1, nh * kvw, T, v);
    g.c = out, g.cb = v, g.ci = (long long)nh * v, g.cj = 1;
    g.M = n, g.N = v, g.K = T, g.batch = nh;
    sl_cuda_gemm_f32(c, &g);
}

static void absorbed(sl_cuda_ctx *c, float *out, const float *q, const float *latent,
                     const float *krope, const sl_weight *kv_b, int n, int pos0,
                     const sl_mla_dims *d, float *scratch)
{
    int nh = d->n_heads, nope = d->nope, rope = d->rope, v = d->v, L = d->kv_lora, T = pos0 + n;
    long long qk = nope + rope, kvw = nope + v;
    const float *wkv = (const float *)kv_b->data; // (nh * kvw, L) f32
    float *S = scratch;
    float *qlat = S + (size_t)n * nh * T;
    float *olat = qlat + (size_t)n * nh * L;
    sl_gemm_f32 g;

    // q_lat[t,h,l] = sum_k q[t,h,k] W_kb[h][k][l]   (W_kb[h] = kv_b rows h*kvw .. h*kvw+nope)
    g.a = operand(q, qk, nh * qk, 1, nope, n);
    g.b = operand(wkv, kvw * L, 1, L, nope, L);
    g.c = qlat, g.cb = L, g.ci = (long long)nh * L, g.cj = 1;
    g.M = n, g.N = L, g.K = nope, g.batch = nh;
    sl_cuda_gemm_f32(c, &g);

    // S[(t,h), s] = [q_lat | q_rope][t,h] . [latent | krope][s]: all heads against each key
    g.a = operand(qlat, 0, L, 1, L, n * nh);
    with_second(&g.a, q + nope, 0, qk, 1);
    g.b = operand(latent, 0, L, 1, L, T);
    with_second(&g.b, krope, 0, rope, 1);
    g.c = S, g.cb = 0, g.ci = T, g.cj = 1;
    g.M = n * nh, g.N = T, g.K = L + rope, g.batch = 1;
    sl_cuda_gemm_f32(c, &g);

    sl_cuda_causal_softmax(c, S, n * nh, T, nh, pos0, d->scale);

    // o_lat[(t,h), l] = sum_s P[(t,h), s] latent[s][l]
    g.a = operand(S, 0, T, 1, T, n * nh);
    g.b = operand(latent, 0, 1, L, T, L);
    g.c = olat, g.cb = 0, g.ci = L, g.cj = 1;
    g.M = n * nh, g.N = L, g.K = T, g.batch = 1;
    sl_cuda_gemm_f32(c, &g);

    // out[t,h,i] = W_vb[h][i] . o_lat[t,h]   (W_vb[h] = kv_b rows h*kvw+nope .. h*kvw+kvw)
    g.a = operand(olat, L, (long long)nh * L, 1, L, n);
    g.b = operand(wkv + (size_t)nope * L, kvw * L, L, 1, L, v);
    g.c = out, g.cb = v, g.ci = (long long)nh * v, g.cj = 1;
    g.M = n, g.N = v, g.K = L, g.batch = nh;
    sl_cuda_gemm_f32(c, &g);
}

void sl_cuda_mla_attention(sl_backend *b, float *out, const float *q, const float *latent,
                           const float *krope, const sl_weight *kv_b, int n, int pos0,
                           const sl_mla_dims *d, bool absorbed_form, float *scratch)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0)
        return;
    if (pos0 < 0 || d->n_heads <= 0 || d->nope < 0 || d->rope < 0 || d->v <= 0 || d->kv_lora <= 0 ||
        kv_b->rows != d->n_heads * (d->nope + d->v) || kv_b->cols != d->kv_lora) {
        SL_CUDA_BAD(c, "mla_attention: kv_b is %d x %d for %d heads, nope %d, v %d, kv_lora %d "
                       "(pos0 %d)", kv_b->rows, kv_b->cols, d->n_heads, d->nope, d->v, d->kv_lora, pos0);
        return;
    }
    if (absorbed_form && kv_b->fmt != SL_WF_F32) {
        SL_CUDA_BAD(c, "mla_attention: the absorbed form slices kv_b per head and needs it in f32 "
                       "(format %d given; the loader widens it)", kv_b->fmt);
        return;
    }
    if (absorbed_form)
        absorbed(c, out, q, latent, krope, kv_b, n, pos0, d, scratch);
    else
        naive(c, out, q, latent, krope, kv_b, n, pos0, d, scratch);
}
