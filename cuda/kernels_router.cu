// DeepSeek-V3 routing (noaux_tc) on the device, one block per token: sigmoid scores, bias for
// selection only, groups ranked by the sum of their top-2, top groups kept, top-k experts among
// them, weights normalised and scaled. The same selection rules as cpu/router.c, ties included
// (the lowest index wins), so both backends route identically on identical scores. Bytes: one
// row of E logits in, 2 * top_k words out; latency-bound (a few microseconds).
#include "cuda/internal.cuh"

enum { ROUTE_MAX_E = 1024, ROUTE_MAX_G = 64, ROUTE_MAX_K = 64, ROUTE_THREADS = 256 };

// Is (v, i) ahead of (bv, bi)? Higher score, or equal score and lower index; none (-1) loses.
__device__ __forceinline__ bool ahead(float v, int i, float bv, int bi)
{
    return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

__global__ void __launch_bounds__(ROUTE_THREADS)
    moe_route_kernel(int32_t *idx, float *wts, const float *logits, const float *bias, int E,
                     int n_group, int topk_group, int top_k, bool norm, float scale, int *deverr)
{
    __shared__ float s[ROUTE_MAX_E], choice[ROUTE_MAX_E], gscore[ROUTE_MAX_G];
    __shared__ unsigned char gkeep[ROUTE_MAX_G], taken[ROUTE_MAX_E];
    __shared__ float wv[32];
    __shared__ int wi[32];
    __shared__ int picked[ROUTE_MAX_K];
    const int t = blockIdx.x, gsize = E / n_group;
    const float *lg = logits + (size_t)t * E;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        float si = 1.0f / (1.0f + expf(-lg[i]));
        s[i] = si;
        choice[i] = si + (bias ? bias[i] : 0.0f);
        taken[i] = 0;
    }
    __syncthreads();
    // group score: the sum of the group's top-2 choice scores (top-1 for one-expert groups),
    // scanned in index order exactly as the CPU does
    for (int g = threadIdx.x; g < n_group; g += blockDim.x) {
        float a = -INFINITY, b2 = -INFINITY;
        for (int i = g * gsize; i < (g + 1) * gsize; i++) {
            if (choice[i] > a) {
                b2 = a;
                a = choice[i];
            } else if (choice[i] > b2) {
                b2 = choice[i];
            }
        }
        gscore[g] = gsize >= 2 ? a + b2 : a;
        gkeep[g] = 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) { // n_group <= 64: one thread
        for (int k = 0; k < topk_group; k++) {
            int best = -1;
            for (int g = 0; g < n_group; g++)
                if (!gkeep[g] && (best < 0 || gscore[g] > gscore[best]))
                    best = g;
            gkeep[best] = 1;
        }
    }
    __syncthreads();
    // top_k rounds of a block-wide arg-max over the eligible experts
    for (int k = 0; k < top_k; k++) {
        float bv = -INFINITY;
        int bi = -1;
        for (int i = threadIdx.x; i < E; i += blockDim.x)
            if (gkeep[i / gsize] && !taken[i] && ahead(choice[i], i, bv, bi))
                bv = choice[i], bi = i;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ahead(ov, oi, bv, bi))
                bv = ov, bi = oi;
        }
        if (lane == 0)
            wv[warp] = bv, wi[warp] = bi;
        __syncthreads();
        if (threadIdx.x == 0) {
            float fv = wv[0];
            int fi = wi[0];
            for (int w = 1; w < nw; w++)
                if (ahead(wv[w], wi[w], fv, fi))
                    fv = wv[w], fi = wi[w];
            picked[k] = fi;
            if (fi >= 0)
                taken[fi] = 1;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        // as transformers: w / (sum + 1e-20), then * routed_scaling_factor; summed in pick order
        float sum = 0.0f;
        bool bad = false;
        for (int k = 0; k < top_k; k++) {
            bad |= picked[k] < 0;
            sum += picked[k] >= 0 ? s[picked[k]] : 0.0f;
        }
        for (int k = 0; k < top_k; k++) {
            int e = picked[k];
            float w = e >= 0 ? s[e] : __uint_as_float(0x7fc00000u);
            if (norm)
                w /= sum + 1e-20f;
            idx[(size_t)t * top_k + k] = e;
            wts[(size_t)t * top_k + k] = w * scale;
        }
        if (bad)
            atomicOr(deverr, SL_CUDA_DEVERR_ROUTE);
    }
}

void sl_cuda_moe_route(sl_backend *b, int32_t *idx, float *wts, const float *logits,
                       const float *bias, int n, int n_experts, int n_group, int topk_group,
                       int top_k, bool norm, float scale)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0)
        return;
    if (n_experts <= 0 || n_experts > ROUTE_MAX_E || n_group <= 0 || n_group > ROUTE_MAX_G ||
        n_experts % n_group != 0 || topk_group <= 0 || topk_group > n_group || top_k <= 0 ||
        top_k > ROUTE_MAX_K || top_k > topk_group * (n_experts / n_group)) {
        SL_CUDA_BAD(c, "moe_route: %d experts in %d groups, keep %d groups, top %d (limits: experts "
                       "<= %d, groups <= %d dividing them, top_k <= %d and <= the kept experts)",
                    n_experts, n_group, topk_group, top_k, ROUTE_MAX_E, ROUTE_MAX_G, ROUTE_MAX_K);
        return;
    }
    moe_route_kernel<<<n, ROUTE_THREADS, 0, c->compute>>>(idx, wts, logits, bias, n_experts, n_group,
                                                          topk_group, top_k, norm, scale,
                                                          c->deverr_dev);
    CUDA_LAUNCHED(c, "moe_route");
}
