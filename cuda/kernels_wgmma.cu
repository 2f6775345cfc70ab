// The many-token matmul on Hopper's warpgroup MMA (sm_90a), bf16-activation mode: out (n, rows) =
// x (n, cols) . W^T for bf16, fp8, q8 and q4 weights, W dequantized in shared memory. Per call:
//   1. x -> bf16 (round to nearest even) into the workspace (kernels_tc.cu's activation pass).
//   2. wg_kernel: a block owns 128 weight rows x BN tokens (BN = 128 or 256). A cp.async pipeline,
//      S stages deep, brings 64 columns at a time of the weights' stored bytes (2, 1, 1 or 1/2 per
//      weight), their scales and the bf16 activations (already in wgmma's swizzled layout) into
//      shared memory. Each thread dequantizes the 32 columns of one row that it copied itself
//      (code * scale in fp32, rounded to bf16 as on the cuBLAS-copy path, which this path
//      replaces: the same numbers) into a bf16 tile, double-buffered: stage i + 1 is decoded
//      while the two warpgroups' wgmma (64 rows x BN tokens x 64 columns each) run on stage i.
//      One barrier per stage.
//   3. Few blocks (128 tokens) split k across blocks; partial sums go to the workspace and are
//      added in split order (kernels_tc.cu's sum): results do not depend on timing.
// Bytes moved: the weights once per BN tokens, the bf16 activations once per 128 rows. What
// limits it is pipeline latency, not memory, decode or tensor cores: at 128 tokens 25-28 us for
// any format on either expert shape (0.49-0.66x cuBLAS bf16); a stage's weights are asked for
// only S - 2 steps before their decode. 256-token blocks (4 stages) reach ~60% of the tensor rate
// an SM but leave SMs idle at 2048 rows (bench/results/gemm-h100-2026-12-06.md).
#include "cuda/cp_async.cuh"
#include "cuda/internal.cuh"
#include "cuda/tc_frag.cuh"
#include "cuda/wgmma.cuh"

namespace {

enum { WG_THREADS = 256, WG_BM = 128, WG_D = WG_BM * 128 }; // 2 warpgroups; bf16 tile bytes

// One stage: activations (BN rows x 128 bytes, swizzled) | raw weights (thread t's RB / 2 bytes
// at t RB / 2) | one 4-byte scale word a thread. Stages and the two bf16 tiles are 1024-aligned.
template <int FMT, int BN> struct wg_stage {
    static constexpr int RB = tc_fmt<FMT>::RB, X = BN * 128, W = X, SC = W + WG_BM * RB;
    static constexpr int BYTES = (SC + WG_THREADS * 4 + 1023) / 1024 * 1024;
};

struct wg_args {
    sl_wdev w;
    const uint16_t *x; // bf16 activations (n, kp), natural column order
    float *out;        // (n, rows)
    float *work;       // (splits, n, rows) partial sums when splits > 1
    int n, kp, kt, kchunk, splits, stages;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Queue stage kt (columns 64 kt ..) of block rows m0.. and tokens t0.. into `st`.
template <int FMT, int BN>
__device__ __forceinline__ void wg_load(uint8_t *st, const wg_args &a, int m0, int t0, int kt)
{
    typedef wg_stage<FMT, BN> L;
    const int t = threadIdx.x;
    // activations: chunk c of token row tr (+ 32 j)
    const int c = t & 7;
#pragma unroll
    for (int j = 0; j < BN / 32; j++) {
        int tr = (t >> 3) + 32 * j;
        bool ok = t0 + tr < a.n;
        const uint16_t *src = ok ? a.x + (size_t)(t0 + tr) * a.kp + kt * 64 + c * 8 : a.x;
        cp_async16(st + tr * 128 + ((c ^ (tr & 7)) << 4), src, ok ? 16 : 0);
    }
    // weights: row r, half h (32 columns) of the stage's 64
    const int r = t >> 1, h = t & 1;
    const long long gr = (long long)m0 + r;
    const bool ok = gr < a.w.rows;
    const uint8_t *wsrc = ok ? a.w.data + gr * a.w.rb + (long long)kt * L::RB + h * (L::RB / 2) : a.w.data;
#pragma unroll
    for (int j = 0; j < L::RB / 32; j++)
        cp_async16(st + L::W + t * (L::RB / 2) + 16 * j, wsrc + (ok ? 16 * j : 0), ok ? 16 : 0);
    if (FMT == SL_WF_Q8 || FMT == SL_WF_Q4) { // row r's groups 2 kt, 2 kt + 1 (ng is even)
        const uint8_t *src = ok ? a.w.scales + 2 * (gr * a.w.ng + 2LL * kt) : a.w.scales;
        cp_async4(st + L::SC + 4 * t, src, ok ? 4 : 0);
    } else if (FMT == SL_WF_FP8) { // 128 rows of the block, 64 columns of the stage: one scale
        cp_async4(st + L::SC + 4 * t, a.w.scales + 4 * ((long long)(m0 / 128) * a.w.ncb + kt / 2), 4);
    }
}

// This thread's 32 columns of the stage's raw weights -> bf16 code * scale in the swizzled tile.
template <int FMT, int BN> __device__ __forceinline__ void wg_dequant(uint8_t *d, const uint8_t *st)
{
    typedef wg_stage<FMT, BN> L;
    constexpr int PERM = tc_fmt<FMT>::PERM;
    const int t = threadIdx.x, r = t >> 1, h = t & 1;
    float s = 1.0f;
    if (FMT == SL_WF_FP8)
        s = *(const float *)(st + L::SC + 4 * t);
    else if (FMT != SL_WF_BF16)
        s = __half2float(*(const __half *)(st + L::SC + 4 * t + 2 * h));
    const uint8_t *raw = st + L::W + t * (L::RB / 2);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t wd[4], o[4];
        tc_decode8<FMT>(raw + j * (L::RB / 8), wd);
        if (FMT == SL_WF_BF16) {
            o[0] = wd[0], o[1] = wd[1], o[2] = wd[2], o[3] = wd[3];
        } else {
            float v[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                v[tc_perm(PERM, 2 * i)] = __uint_as_float(wd[i] << 16) * s;
                v[tc_perm(PERM, 2 * i + 1)] = __uint_as_float(wd[i] & 0xffff0000u) * s;
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
                o[i] = *(const uint32_t *)&b;
            }
        }
        const int ch = 4 * h + j;
        *(uint4 *)(d + r * 128 + ((ch ^ (r & 7)) << 4)) = make_uint4(o[0], o[1], o[2], o[3]);
    }
}

template <int BN> __device__ __forceinline__ void wg_step(float (&acc)[BN / 2], const uint8_t *d, const uint8_t *xs)
{
    const int wg = threadIdx.x >> 7;
    uint64_t da = wg_desc(d + wg * (WG_D / 2)), db = wg_desc(xs);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
        wg_mma<BN>(acc, da + 2 * kk, db + 2 * kk);
    wg_commit();
}

#endif

// Two blocks an SM at BN = 128 (64 accumulators a thread), one at 256.
template <int FMT, int BN>
__global__ void __launch_bounds__(WG_THREADS, BN == 128 ? 2 : 1) wg_kernel(wg_args a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ uint8_t smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    constexpr int SB = wg_stage<FMT, BN>::BYTES;
    uint8_t *dt = smem, *stages = smem + 2 * WG_D; // two bf16 tiles, then S stages
    const int m0 = blockIdx.x * WG_BM, t0 = blockIdx.y * BN, split = blockIdx.z;
    const int kt0 = split * a.kchunk, nkt = min(a.kt, kt0 + a.kchunk) - kt0, S = a.stages;

    float acc[BN / 2];
#pragma unroll
    for (int j = 0; j < BN / 2; j++)
        acc[j] = 0.0f;

    // Stage i lives in slot i % S, its bf16 tile in i % 2. At step i the wgmma of stage i run
    // while stage i + S - 1 is queued into the slot of stage i - 1 (its wgmma done before the
    // last barrier) and stage i + 1 is decoded into the tile stage i - 1 used.
    for (int i = 0; i < S - 1; i++) {
        if (i < nkt)
            wg_load<FMT, BN>(stages + i * SB, a, m0, t0, kt0 + i);
        cp_async_commit();
    }
    cp_async_wait(S - 2);
    wg_dequant<FMT, BN>(dt, stages);
    wg_fence_proxy();
    __syncthreads();
    for (int i = 0; i < nkt; i++) {
        int slot = i % S;
        wg_step<BN>(acc, dt + (i & 1) * WG_D, stages + slot * SB);
        int ws = (i + S - 1) % S;
        if (i + S - 1 < nkt)
            wg_load<FMT, BN>(stages + ws * SB, a, m0, t0, kt0 + i + S - 1);
        cp_async_commit();
        if (i + 1 < nkt) {
            cp_async_wait(S - 2);
            wg_dequant<FMT, BN>(dt + ((i + 1) & 1) * WG_D, stages + ((i + 1) % S) * SB);
        }
        wg_wait0();
        wg_fence_proxy();
        __syncthreads();
    }
    cp_async_wait(0);
#pragma unroll
    for (int j = 0; j < BN / 2; j++)
        wg_touch(acc[j]);

    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5; // w / 4: warpgroup, w % 4: its warp
    const long long rows = a.w.rows;
    const long long rbase = m0 + 64 * (w >> 2) + 16 * (w & 3) + (lane >> 2);
    float *o = a.splits == 1 ? a.out : a.work + (size_t)split * a.n * rows;
#pragma unroll
    for (int j = 0; j < BN / 2; j++) {
        long long row = rbase + 8 * ((j >> 1) & 1);
        int tok = t0 + 8 * (j >> 2) + 2 * (lane & 3) + (j & 1);
        if (row < rows && tok < a.n)
            o[(size_t)tok * rows + row] = acc[j];
    }
#endif
}

template <int FMT, int BN>
static bool wg_run(sl_cuda_ctx *c, wg_args a, size_t work_floats)
{
    constexpr int SB = wg_stage<FMT, BN>::BYTES;
    // stages: what two blocks an SM leave at BN = 128 (3 for 1-byte weights), one at 256 (4).
    // The weights come from DRAM and are waited for S - 2 steps after they are asked for, so
    // deeper may pay: SL_CUDA_WGMMA=stages=S tries it (gemm-h100-2026-12-06.md).
    int budget = BN == 128 ? 113 * 1024 : c->smem_optin;
    budget = budget < c->smem_optin ? budget : c->smem_optin;
    int S = c->wg_stages ? c->wg_stages : (budget - 1024 - 2 * WG_D) / SB;
    S = S < 2 ? 2 : S > 6 ? 6 : S;
    size_t smem = 1024 + 2 * WG_D + (size_t)S * SB;
    if (smem > (size_t)c->smem_optin)
        return false;
    auto kern = wg_kernel<FMT, BN>;
    CUDA_CHECK_RET(c, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), false);
    int occ = 0;
    CUDA_CHECK_RET(c, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, WG_THREADS, smem), false);
    occ = occ < 1 ? 1 : occ > 2 ? 2 : occ;
    occ = c->wg_fill && c->wg_fill < occ ? c->wg_fill : occ;

    long long rows = a.w.rows, tm = (rows + WG_BM - 1) / WG_BM, tn = (a.n + BN - 1) / BN;
    // split k to fill the resident slots, each split >= 8 stages
    a.kchunk = sl_cuda_split_k_chunk(tm * tn, (long long)occ * c->sm_count, a.kt, 8, a.n, rows,
                                     work_floats);
    a.splits = (a.kt + a.kchunk - 1) / a.kchunk;
    a.stages = S;
    if (tm > 0x7fffffffLL || tn > 65535)
        return false;
    dim3 grid((unsigned)tm, (unsigned)tn, (unsigned)a.splits);
    kern<<<grid, WG_THREADS, smem, c->compute>>>(a);
    CUDA_LAUNCHED(c, "matmul (wgmma)");
    if (a.splits > 1)
        sl_cuda_tc_sum_splits(c, a.out, a.work, (size_t)a.n * rows, a.splits);
    return true;
}

template <int FMT>
static bool wg_matmul(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n, int bn)
{
    const int kp = (int)w.cols;
    size_t per_token = (size_t)kp * 2; // bf16 activations take at most half the workspace
    long long nc = (long long)(c->work_floats * 4 / 2 / per_token);
    if (nc < 1)
        return false;
    if (nc < n)
        nc = nc / 256 * 256 ? nc / 256 * 256 : nc;
    for (int t0 = 0; t0 < n; t0 += (int)nc) {
        int m = n - t0 < nc ? n - t0 : (int)nc;
        size_t xfloats = ((size_t)m * kp / 2 + 63) / 64 * 64;
        wg_args a;
        a.w = w;
        a.x = (const uint16_t *)c->work;
        a.out = out + (size_t)t0 * w.rows;
        a.work = c->work + xfloats;
        a.n = m;
        a.kp = kp;
        a.kt = kp / 64;
        sl_cuda_tc_act_bf16(c, x + (size_t)t0 * w.cols, m, (int)w.cols, kp, (uint16_t *)a.x,
                            NULL);
        bool ok = bn == 256 ? wg_run<FMT, 256>(c, a, c->work_floats - xfloats)
                            : wg_run<FMT, 128>(c, a, c->work_floats - xfloats);
        if (!ok)
            return false; // only before the first launch: the checks do not depend on m
    }
    return true;
}

} // namespace

bool sl_cuda_gemm_wgmma(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *wt, int n)
{
#if defined(SL_CUDA_SM90A)
    if (c->cc != 90 || !c->act_bf16 || wt->fmt == SL_WF_F32)
        return false;
    sl_wdev w = sl_cuda_wdev(wt);
    // whole 64-column stages, 16-byte aligned rows, 4-byte aligned scale pairs
    if (w.cols % 64 || ((uintptr_t)w.data & 15) || ((uintptr_t)w.scales & 3))
        return false;
    // 256 tokens a block past 128: twice the products per decoded weight (measured 0.52-0.54x
    // vs 0.45-0.49x at 256 tokens on 2048x7168)
    int bn = c->gemm_tile == 256 || (c->gemm_tile != 128 && n > 128) ? 256 : 128;
    switch (w.fmt) {
    case SL_WF_BF16: return wg_matmul<SL_WF_BF16>(c, out, x, w, n, bn);
    case SL_WF_FP8: return wg_matmul<SL_WF_FP8>(c, out, x, w, n, bn);
    case SL_WF_Q8: return wg_matmul<SL_WF_Q8>(c, out, x, w, n, bn);
    case SL_WF_Q4: return wg_matmul<SL_WF_Q4>(c, out, x, w, n, bn);
    default: return false;
    }
#else
    (void)c, (void)out, (void)x, (void)wt, (void)n;
    return false;
#endif
}
