// The many-token matmul on tensor cores: out (n, rows) = x (n, cols) . W^T for bf16, fp8, q8 and
// q4 weights (f32 weights keep the fp32 kernel of kernels_gemm.cu). Per call:
//   1. act_split_kernel: x -> bf16 hi = bf16(x) and, in fp32-activation mode, lo = bf16(x - hi), so
//      hi + lo = x to within 2^-16 relative; into the workspace, cols padded to a multiple of 64,
//      each 8-column run in the pairing order of the weight format (tc_frag.cuh).
//   2. tc_kernel: a block owns 128 weight rows x BN tokens (BN = 16..128). A cp.async pipeline,
//      S stages deep, brings 64 columns at a time of the weights' stored bytes (2, 1, 1 or 1/2 per
//      weight), the bf16 activations and the scales into shared memory. Each of 8 warps takes 32
//      rows of one 32-column group of the stage, decodes its codes straight into mma.m16n8k16
//      fragments (bf16, fp8-e4m3, int8 and int4 codes are all exact in bf16), multiplies them by
//      hi (and lo) with fp32 accumulation, and adds the group's sum times the group's scale (q8/q4:
//      per row and 32 columns; fp8: per 128x128 block) to its fp32 accumulators. Scales are thus
//      applied in fp32 exactly as the CPU's code * scale is, up to rounding, and the tensor cores
//      never sum more than 32 products before an fp32 add. The two warps of a row block that took
//      the stage's two groups add their sums through shared memory at the end.
//   3. Few blocks (small n or rows) split k across blocks; partial sums go to the workspace and
//      are added in split order (tc_reduce_kernel): results do not depend on timing.
// Bytes moved: the weights once per token tile (16-64 tokens), the activations once per 128 rows
// (2 or 4 bytes an element). Up to ~64 tokens it is bound by weight bytes, so quantized formats
// match or beat cuBLAS on bf16 weights (0.95-1.27x at 16 tokens). From ~128 tokens it is bound by
// issue and latency, not by memory or the tensor cores (ncu at 1024 tokens: tensor pipe 11%, L2
// 14%, 2 warps per scheduler mostly waiting on fixed-latency results): per 2 mma it issues 4
// scale FMAs and the decode of 8 codes. Many tokens therefore go to cuBLAS where that wins, or
// on sm_90 in bf16-activation mode to the wgmma kernel (kernels_wgmma.cu): kernels_tc_path.cu
// makes that choice.
// Figures: bench/results/gemm-h100-2026-11-24.md.
#include "cuda/internal.cuh"
#include "cuda/cp_async.cuh"
#include "cuda/tc_frag.cuh"

namespace {

enum { TC_THREADS = 256 }; // 8 warps: 4 along rows (32 each) x 2 along k (one group each)

// ---- device helpers ----------------------------------------------------------------------------


// ---- the stage layout ----------------------------------------------------------------------------
// weights (128 rows x RB bytes) | hi activations (BN tokens x 128 bytes) | lo (fp32 mode) | scales

template <int FMT> constexpr int tc_scale_bytes()
{
    return FMT == SL_WF_FP8 ? 16 : FMT == SL_WF_BF16 ? 0 : TC_BM * 4;
}

template <int FMT, int NT, bool LO> struct tc_stage {
    static constexpr int W = TC_BM * tc_fmt<FMT>::RB, X = NT * 8 * 128;
    static constexpr int SC = W + X * (LO ? 2 : 1);
    static constexpr int BYTES = (SC + tc_scale_bytes<FMT>() + 127) / 128 * 128;
};

struct tc_args {
    sl_wdev w;
    const uint16_t *xh, *xl; // bf16 activations (n, kp), 8-column runs permuted; xl NULL in bf16 mode
    float *out;              // (n, rows)
    float *work;             // (splits, n, rows) partial sums when splits > 1
    int n, kp, kt, kchunk, splits, stages;
};

// What one thread copies into every stage, worked out once per block: its weight chunks (rows
// r0, r0 + 256 / CH, .., chunk c of each row's 64 columns) and its activation chunks (tokens
// t, t + 32, .., chunk c8), as sources at stage 0 and byte steps; stage kt adds kt * RB (or 128).
struct tc_plan {
    const uint8_t *w;   // weight chunk 0's source at stage 0 (NULL: row past the end)
    long long wstep;    // bytes between this thread's successive weight rows
    int wrows;          // how many of them are inside the weight (the rest read as zero)
    int wc;             // the chunk (16 bytes) of the row
    const uint8_t *x;   // first activation chunk at stage 0, hi plane (lo: + xlo bytes)
    long long xstep, xlo;
    int xtoks;          // how many of this thread's tokens exist
};

template <int FMT, int NT>
__device__ __forceinline__ tc_plan tc_make_plan(const tc_args &a, int m0, int t0)
{
    constexpr int CH = tc_fmt<FMT>::RB / 16, RSTEP = TC_THREADS / CH;
    tc_plan p;
    int r0 = threadIdx.x / CH;
    p.wc = threadIdx.x % CH;
    p.wstep = RSTEP * a.w.rb;
    long long left = a.w.rows - (m0 + r0); // rows from r0 on
    p.wrows = left <= 0 ? 0 : (int)((left + RSTEP - 1) / RSTEP);
    p.w = a.w.data + (p.wrows ? (m0 + r0) * a.w.rb : 0) + 16 * p.wc;
    int t = threadIdx.x >> 3, c8 = threadIdx.x & 7;
    int tleft = a.n - (t0 + t);
    p.xtoks = tleft <= 0 ? 0 : (tleft + 31) / 32;
    p.xstep = 32LL * a.kp * 2;
    p.xlo = a.xl ? (long long)((const uint8_t *)a.xl - (const uint8_t *)a.xh) : 0;
    p.x = (const uint8_t *)a.xh + (p.xtoks ? (size_t)(t0 + t) * a.kp * 2 : 0) + 16 * c8;
    return p;
}

// 16 bytes of a weight row from any address (the unaligned path), bytes past `valid` zero.
__device__ __forceinline__ void gather16(uint8_t *dst, const uint8_t *src, int valid)
{
    uint32_t v[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < 16; i++)
        if (i < valid)
            v[i >> 2] |= (uint32_t)src[i] << (8 * (i & 3));
    *(uint4 *)dst = make_uint4(v[0], v[1], v[2], v[3]);
}

// Queue stage kt (columns 64 kt ..) of block rows m0.. and tokens t0.. into `st`. AL: the weight
// rows and scale planes are 16-byte aligned (cp.async); else plain loads and stores, byte by byte.
template <int FMT, int NT, bool LO, bool AL>
__device__ __forceinline__ void tc_load_stage(uint8_t *st, const tc_args &a, const tc_plan &p, int m0,
                                              int kt)
{
    typedef tc_stage<FMT, NT, LO> L;
    constexpr int RB = tc_fmt<FMT>::RB, CH = RB / 16, RSTEP = TC_THREADS / CH;
    // bytes of the chunk inside the row: 16 but in the last stage of a k that is no multiple of 64
    long long left = a.w.rb - ((long long)kt * RB + 16 * p.wc);
    int valid = left >= 16 ? 16 : left > 0 ? (int)left : 0;
    const uint8_t *wsrc = p.w + (long long)kt * RB;
    int r = threadIdx.x / CH;
#pragma unroll
    for (int j = 0; j < TC_BM / RSTEP; j++) {
        int v = j < p.wrows ? valid : 0;
        const uint8_t *src = v ? wsrc + j * p.wstep : a.w.data;
        if (AL)
            cp_async16(st + tc_wpos<FMT>(r + j * RSTEP, p.wc), src, v);
        else
            gather16(st + tc_wpos<FMT>(r + j * RSTEP, p.wc), src, v);
    }
    const uint8_t *xsrc = p.x + (size_t)kt * 128;
    int t = threadIdx.x >> 3, c8 = threadIdx.x & 7;
#pragma unroll
    for (int j = 0; j < (NT * 64 + TC_THREADS - 1) / TC_THREADS; j++) {
        if (NT * 64 < TC_THREADS && threadIdx.x >= NT * 64)
            break; // small tiles: fewer chunks than threads
        int v = j < p.xtoks ? 16 : 0;
        const uint8_t *src = v ? xsrc + j * p.xstep : p.x;
        cp_async16(st + L::W + tc_xpos(t + 32 * j, c8), src, v);
        if (LO)
            cp_async16(st + L::W + L::X + tc_xpos(t + 32 * j, c8), src + p.xlo, v);
    }
    uint8_t *ss = st + L::SC;
    if (FMT == SL_WF_Q8 || FMT == SL_WF_Q4) {
        // row r's groups 2kt and 2kt + 1 (AL: ng even, so both exist and the pair is 4-aligned)
        int r = threadIdx.x;
        if (r < TC_BM) {
            long long gr = (long long)m0 + r, g0 = 2LL * kt;
            const uint8_t *src = a.w.scales + 2 * (gr * a.w.ng + g0);
            if (AL) {
                cp_async4(ss + 4 * r, gr < a.w.rows ? src : a.w.scales, gr < a.w.rows ? 4 : 0);
            } else {
                uint32_t v = 0;
                if (gr < a.w.rows) {
                    v = sl_ld_u16(src);
                    if (g0 + 1 < a.w.ng)
                        v |= sl_ld_u16(src + 2) << 16;
                }
                *(uint32_t *)(ss + 4 * r) = v;
            }
        }
    } else if (FMT == SL_WF_FP8) {
        if (threadIdx.x == 0) { // one scale: 128 rows of the block, 64 columns of the stage
            const uint8_t *src = a.w.scales + 4 * ((long long)(m0 / 128) * a.w.ncb + kt / 2);
            if (AL)
                cp_async4(ss, src, 4);
            else
                *(uint32_t *)ss = sl_ld_u32(src);
        }
    }
}

// One warp's share of a stage: rows 32 wm.. x all BN tokens x the 32 columns of group kg.
template <int FMT, int NT, bool LO>
__device__ __forceinline__ void tc_group(float (&acc)[2][NT][4], const uint8_t *st, int wm, int kg,
                                         int lane)
{
    typedef tc_stage<FMT, NT, LO> L;
    const int g = lane >> 2, q = lane & 3;
    uint32_t a[2][2][4]; // [16-row fragment][rows g, g + 8][bf16 pair]
    float s[2][2];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int r = 32 * wm + 16 * mi + 8 * h + g;
            tc_load_a<FMT>(st, r, kg, q, a[mi][h]);
            s[mi][h] = tc_scale<FMT>(st + L::SC, r, kg);
        }
#pragma unroll
    for (int ni = 0; ni < NT; ni++) {
        uint4 bh = tc_load_b(st + L::W, 8 * ni + g, kg, q), bl;
        if (LO)
            bl = tc_load_b(st + L::W + L::X, 8 * ni + g, kg, q);
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
            // registers: a0 = (row g, k pair 0), a1 = (row g + 8, pair 0), a2/a3 = pair 1; the
            // group's 32 columns are two k16 steps: pairs 0, 1 then 2, 3 of each thread
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            tc_mma(d, a[mi][0][0], a[mi][1][0], a[mi][0][1], a[mi][1][1], bh.x, bh.y);
            tc_mma(d, a[mi][0][2], a[mi][1][2], a[mi][0][3], a[mi][1][3], bh.z, bh.w);
            if (LO) {
                tc_mma(d, a[mi][0][0], a[mi][1][0], a[mi][0][1], a[mi][1][1], bl.x, bl.y);
                tc_mma(d, a[mi][0][2], a[mi][1][2], a[mi][0][3], a[mi][1][3], bl.z, bl.w);
            }
            // d0, d1: row g, tokens 2q, 2q + 1; d2, d3: row g + 8
            acc[mi][ni][0] = fmaf(s[mi][0], d[0], acc[mi][ni][0]);
            acc[mi][ni][1] = fmaf(s[mi][0], d[1], acc[mi][ni][1]);
            acc[mi][ni][2] = fmaf(s[mi][1], d[2], acc[mi][ni][2]);
            acc[mi][ni][3] = fmaf(s[mi][1], d[3], acc[mi][ni][3]);
        }
    }
}

// Up to 64 tokens a block fits in 128 registers a thread, so two blocks (16 warps) share an SM
// and hide each other's latencies (measured: the kernel is issue- and latency-bound, not bound
// by memory: bench/results/gemm-h100-2026-11-24.md).
template <int FMT, int NT, bool LO, bool AL>
__global__ void __launch_bounds__(TC_THREADS, NT <= 8 ? 2 : 1) tc_kernel(tc_args a)
{
    extern __shared__ __align__(128) uint8_t smem[];
    constexpr int SB = tc_stage<FMT, NT, LO>::BYTES;
    const int m0 = blockIdx.x * TC_BM, t0 = blockIdx.y * NT * 8, split = blockIdx.z;
    const int kt0 = split * a.kchunk, nkt = min(a.kt, kt0 + a.kchunk) - kt0, S = a.stages;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wm = warp & 3, kg = warp >> 2;

    float acc[2][NT][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < NT; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[mi][ni][e] = 0.0f;

    // Stage i lives in slot i % S. At step i, after the barrier every warp is done with slot
    // (i - 1) % S, which then receives stage i + S - 1.
    const tc_plan plan = tc_make_plan<FMT, NT>(a, m0, t0);
    for (int i = 0; i < S - 1; i++) {
        if (i < nkt)
            tc_load_stage<FMT, NT, LO, AL>(smem + i * SB, a, plan, m0, kt0 + i);
        cp_async_commit();
    }
    for (int i = 0, rd = 0, wr = S - 1; i < nkt; i++) {
        cp_async_wait(S - 2);
        __syncthreads();
        if (i + S - 1 < nkt)
            tc_load_stage<FMT, NT, LO, AL>(smem + wr * SB, a, plan, m0, kt0 + i + S - 1);
        cp_async_commit();
        tc_group<FMT, NT, LO>(acc, smem + rd * SB, wm, kg, lane);
        rd = rd + 1 == S ? 0 : rd + 1;
        wr = wr + 1 == S ? 0 : wr + 1;
    }
    cp_async_wait(0);
    __syncthreads();

    // warps of group 1 hand their sums to the warps of group 0 of the same rows
    constexpr int NACC = 2 * NT * 4;
    float *xch = (float *)smem + wm * NACC * 32 + lane;
    if (kg == 1) {
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int ni = 0; ni < NT; ni++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    xch[((mi * NT + ni) * 4 + e) * 32] = acc[mi][ni][e];
    }
    __syncthreads();
    if (kg == 1)
        return;
    const int g = lane >> 2, q = lane & 3;
    const long long rows = a.w.rows;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < NT; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v = acc[mi][ni][e] + xch[((mi * NT + ni) * 4 + e) * 32];
                long long row = m0 + 32 * wm + 16 * mi + 8 * (e >> 1) + g;
                int tok = t0 + 8 * ni + 2 * q + (e & 1);
                if (row >= rows || tok >= a.n)
                    continue;
                if (a.splits == 1)
                    a.out[(size_t)tok * rows + row] = v;
                else
                    a.work[((size_t)split * a.n + tok) * rows + row] = v;
            }
}

__global__ void tc_reduce_kernel(float *out, const float *work, size_t total, int splits)
{
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int sp = 0; sp < splits; sp++)
            s += work[sp * total + e];
        out[e] = s;
    }
}

// x (n, K) fp32 -> hi (and lo) bf16 (n, kp), 8-column runs in PERM order, zero past K. VEC: x is
// 16-byte aligned and K % 4 == 0.
template <int PERM, bool VEC>
__global__ void act_split_kernel(const float *x, int n, int K, int kp, uint16_t *hi, uint16_t *lo)
{
    const long long runs = (long long)kp / 8, total = (long long)n * runs;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long t = e / runs;
        int k = (int)(e % runs) * 8;
        const float *src = x + t * K + k;
        float v[8];
        if (VEC && k + 8 <= K) {
            float4 p = __ldg((const float4 *)src), r = __ldg((const float4 *)src + 1);
            v[0] = p.x, v[1] = p.y, v[2] = p.z, v[3] = p.w, v[4] = r.x, v[5] = r.y, v[6] = r.z, v[7] = r.w;
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                v[i] = k + i < K ? src[i] : 0.0f;
        }
        uint32_t h[4], l[4];
        tc_split8(v, PERM, h, l);
        *(uint4 *)(hi + t * kp + k) = make_uint4(h[0], h[1], h[2], h[3]);
        if (lo)
            *(uint4 *)(lo + t * kp + k) = make_uint4(l[0], l[1], l[2], l[3]);
    }
}

// ---- host side ---------------------------------------------------------------------------------

template <int PERM>
static void act_split(sl_cuda_ctx *c, const float *x, int n, int K, int kp, uint16_t *hi, uint16_t *lo)
{
    size_t total = (size_t)n * (kp / 8);
    unsigned blocks = sl_cuda_blocks(total, 256), cap = (unsigned)c->sm_count * 8;
    blocks = blocks < cap ? blocks : cap;
    if (((uintptr_t)x & 15) == 0 && K % 4 == 0)
        act_split_kernel<PERM, true><<<blocks, 256, 0, c->compute>>>(x, n, K, kp, hi, lo);
    else
        act_split_kernel<PERM, false><<<blocks, 256, 0, c->compute>>>(x, n, K, kp, hi, lo);
    CUDA_LAUNCHED(c, "matmul (activations to bf16)");
}

// One tc_kernel launch (and its split-K reduction) over n tokens, with `work_floats` of workspace
// at a.work for partial sums. Stages: as deep as the shared memory a block may have allows, up to
// 4 for the large token tiles (one block per SM) and 6 for the small (several per SM, each with
// more bytes in flight). Split-K: to fill one wave of resident blocks, each split >= 4 stages.
template <int FMT, int NT, bool LO, bool AL>
static void tc_run(sl_cuda_ctx *c, tc_args a, size_t work_floats)
{
    constexpr int SB = tc_stage<FMT, NT, LO>::BYTES, XCH = 4 * 32 * 2 * NT * 4 * 4;
    const bool big = NT >= 8;
    // shared memory: one block per SM at 128 tokens, two at 64, three at 16-32
    int want = (NT >= 16 ? 200 : NT == 8 ? 110 : 72) * 1024;
    int budget = c->smem_optin < want ? c->smem_optin : want;
    int S = budget / SB, smax = big ? 4 : 6;
    S = S < 2 ? 2 : S > smax ? smax : S;
    size_t smem = (size_t)S * SB > (size_t)XCH ? (size_t)S * SB : (size_t)XCH;
    if (smem > (size_t)c->smem_optin) {
        SL_CUDA_BAD(c, "matmul: the tensor-core kernel needs %zu bytes of shared memory, the device "
                       "allows %d", smem, c->smem_optin);
        return;
    }
    auto kern = tc_kernel<FMT, NT, LO, AL>;
    CUDA_CHECK_RET(c, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), );
    int occ = 0;
    CUDA_CHECK_RET(c, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, TC_THREADS, smem), );
    occ = occ < 1 ? 1 : occ > 2 ? 2 : occ;

    long long rows = a.w.rows, tm = (rows + TC_BM - 1) / TC_BM, tn = (a.n + NT * 8 - 1) / (NT * 8);
    a.kchunk = sl_cuda_split_k_chunk(tm * tn, (long long)occ * c->sm_count, a.kt, 4, a.n, rows,
                                     work_floats);
    a.splits = (a.kt + a.kchunk - 1) / a.kchunk;
    a.stages = S;
    if (tm > 0x7fffffffLL || tn > 65535) {
        SL_CUDA_BAD(c, "matmul: %lld x %d is too large for the tensor-core grid", rows, a.n);
        return;
    }
    dim3 grid((unsigned)tm, (unsigned)tn, (unsigned)a.splits);
    kern<<<grid, TC_THREADS, smem, c->compute>>>(a);
    CUDA_LAUNCHED(c, "matmul (tensor cores)");
    if (a.splits > 1)
        sl_cuda_tc_sum_splits(c, a.out, a.work, (size_t)a.n * rows, a.splits);
}

// The token tile: a pinned one (sl_cuda_set_gemm_path), else the smallest that holds n, up to 64.
// 64 rather than 128 past 64 tokens: two 64-token blocks share an SM (128 registers a thread)
// where one 128-token block runs alone, and that measured equal or faster at 128 and 1024
// tokens for every quantized format in both modes (bench/results/gemm-h100-2026-11-24.md).
static int tc_tile(const sl_cuda_ctx *c, int n)
{
    if (c->gemm_tile)
        return c->gemm_tile / 8;
    return n <= 16 ? 2 : n <= 32 ? 4 : 8;
}

template <int FMT, bool LO>
static void tc_dispatch(sl_cuda_ctx *c, const tc_args &a, bool aligned, int nt, size_t work_floats)
{
    if (!aligned) { // odd shapes and misaligned planes: correct, not tuned (one tile size)
        tc_run<FMT, 2, LO, false>(c, a, work_floats);
        return;
    }
    switch (nt) {
    case 2: tc_run<FMT, 2, LO, true>(c, a, work_floats); break;
    case 4: tc_run<FMT, 4, LO, true>(c, a, work_floats); break;
    case 8: tc_run<FMT, 8, LO, true>(c, a, work_floats); break;
    default: tc_run<FMT, 16, LO, true>(c, a, work_floats); break;
    }
}

template <int FMT>
static void tc_matmul(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n,
                      int nc, int kp, bool lo)
{
    // cp.async path: 16-byte aligned rows, and (q8/q4) an even number of scale groups a row so
    // a stage's pair of f16 scales is one aligned 4-byte word
    bool aligned = ((uintptr_t)w.data & 15) == 0 && w.rb % 16 == 0 &&
                   (FMT == SL_WF_BF16 || FMT == SL_WF_FP8 || w.ng % 2 == 0);
    int nt = tc_tile(c, n);
    for (int t0 = 0; t0 < n; t0 += nc) {
        int m = n - t0 < nc ? n - t0 : nc;
        size_t xfloats = ((size_t)m * kp * (lo ? 2 : 1) / 2 + 63) / 64 * 64; // bf16 -> floats, 256 B
        tc_args a;
        a.w = w;
        a.xh = (const uint16_t *)c->work;
        a.xl = lo ? a.xh + (size_t)m * kp : NULL;
        a.out = out + (size_t)t0 * w.rows;
        a.work = c->work + xfloats;
        a.n = m;
        a.kp = kp;
        a.kt = kp / TC_BK;
        act_split<tc_fmt<FMT>::PERM>(c, x + (size_t)t0 * w.cols, m, (int)w.cols, kp,
                                     (uint16_t *)a.xh, (uint16_t *)a.xl);
        if (lo)
            tc_dispatch<FMT, true>(c, a, aligned, nt, c->work_floats - xfloats);
        else
            tc_dispatch<FMT, false>(c, a, aligned, nt, c->work_floats - xfloats);
    }
}

} // namespace

bool sl_cuda_gemm_fused(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *wt, int n)
{
    sl_wdev w = sl_cuda_wdev(wt);
    bool lo = !c->act_bf16;
    // tokens per launch: their activations take at most half the workspace, partial sums the rest
    int kp = (int)((w.cols + TC_BK - 1) / TC_BK * TC_BK);
    size_t per_token = (size_t)kp * 2 * (lo ? 2 : 1);
    long long nc = (long long)(c->work_floats * 4 / 2 / per_token);
    if (nc < 1)
        return false;
    if (nc < n)
        nc = nc / 128 * 128 ? nc / 128 * 128 : nc;
    switch (wt->fmt) {
    case SL_WF_BF16: tc_matmul<SL_WF_BF16>(c, out, x, w, n, (int)nc, kp, lo); break;
    case SL_WF_FP8: tc_matmul<SL_WF_FP8>(c, out, x, w, n, (int)nc, kp, lo); break;
    case SL_WF_Q8: tc_matmul<SL_WF_Q8>(c, out, x, w, n, (int)nc, kp, lo); break;
    case SL_WF_Q4: tc_matmul<SL_WF_Q4>(c, out, x, w, n, (int)nc, kp, lo); break;
    default: return false;
    }
    return true;
}

void sl_cuda_tc_act_bf16(sl_cuda_ctx *c, const float *x, int n, int K, int kp, uint16_t *hi,
                         uint16_t *lo)
{
    act_split<0>(c, x, n, K, kp, hi, lo);
}

void sl_cuda_tc_sum_splits(sl_cuda_ctx *c, float *out, const float *work, size_t total, int splits)
{
    unsigned blocks = sl_cuda_blocks(total, 256), cap = (unsigned)c->sm_count * 8;
    tc_reduce_kernel<<<blocks < cap ? blocks : cap, 256, 0, c->compute>>>(out, work, total, splits);
    CUDA_LAUNCHED(c, "matmul (tensor cores, split-K sum)");
}
