// cuda/ private: the one-token q4 GEMV on tensor cores, a body for kernels_gemv.cu (one matrix a
// launch) and kernels_expert_group.cu (an expert group in one launch), with gemv.cuh's split
// along columns, prefetch and dependent launch.
//
// Why: the fp32 split kernel spends ~3 instructions a q4 weight (mask-or, exact subtract, FMA)
// and reached 0.51 of copy bandwidth (bench/results/gemv-h100-2026-12-06.md). Here a weight pair
// costs one mask-or and one bf16 subtract (tc_frag.cuh's tc_q4_pair: exact, every (n - 8) is a
// bf16 value) plus a share of a shift, and the products and sums go to mma.m16n8k16 (bf16 in,
// fp32 sums), which leaves the FMA pipes idle and the decode as the only per-weight work.
//
// Layout: a block of 8 warps owns 128 rows (16 a warp) and one column slice of whole 16-byte
// chunks (32 columns, one q4 scale group, each); a step of a warp covers 4 consecutive chunks.
// Thread (g = lane / 4, q = lane % 4) loads chunk q of the step in rows g and g + 8 (a quad reads
// 64 contiguous bytes of a row), so the A fragment of an mma holds, per row, 4 columns of each
// quad thread's own chunk: k positions 2q, 2q + 1, 2q + 8, 2q + 9 are thread q's, and which of
// its columns sit there does not matter to a dot product as long as x sits alike (tc_frag.cuh's
// PERM 2 pairs columns j and j + 4 of a word). An mma's k so spans 4 chunks, 4 scale groups; the
// groups stay apart through the n dimension: B column n < 4 holds x only at thread n's k
// positions (the hi half of x), column n + 4 the same for lo = x - hi, all else zero. So D[r][n]
// is row r's partial sum over chunk n's columns (hi part) and D[r][n + 4] its lo part: 8 mmas
// (the step's 32 columns of every chunk) accumulate each, then each is scaled by its row's
// group scale into fp32 sums. x is kept to 2^-16 relative (hi + lo), weights exactly, sums in
// fp32: the split kernel's precision. One token only: the n dimension is full.
#ifndef SL_CUDA_GEMV_TC_CUH
#define SL_CUDA_GEMV_TC_CUH

#include "cuda/gemv.cuh"
#include "cuda/tc_frag.cuh"

enum {
    GEMV_TC_R = 16,      // rows a warp (a block: 128); gemv.cuh's shape parameter R takes it to
                         // mean this kernel
    GEMV_TC_B = 4,       // steps (4 chunks of 16 rows: 2 x 16 bytes a thread) in one load set;
                         // two sets in flight: 64 KiB an SM at 2 blocks
};

// What the kernel takes: q4 rows of whole 4-chunk steps (its slices from gemv_split_cps, unit 4,
// are whole steps too, or the whole row).
static inline bool gemv_tc_ok(const sl_wdev &w) { return w.fmt == SL_WF_Q4 && w.cols % 128 == 0; }

// x's slice as B fragments: for chunk ch and mma j (word i = j / 2 of the chunk, half h = j % 2),
// uint4 {hi pair (2h, 2h + 4), hi pair (2h + 1, 2h + 5), lo pair, lo pair} of the word's 8
// columns at xs[j * chp + ch]. One thread a word.
__device__ __forceinline__ void gemv_tc_stage_x(uint4 *xs, const gemv_args &a, long long c0, int nch)
{
    const float *src = a.x + (long long)(a.xrows ? __ldcg(a.xrows) : 0) * a.w.cols + c0 * 32;
    for (int j = threadIdx.x; j < nch * 4; j += GEMV_THREADS) {
        const int ch = j >> 2, i = j & 3;
        float v[8];
        const float4 p = __ldcg((const float4 *)(src + 8 * j)), r = __ldcg((const float4 *)(src + 8 * j) + 1);
        v[0] = p.x, v[1] = p.y, v[2] = p.z, v[3] = p.w, v[4] = r.x, v[5] = r.y, v[6] = r.z, v[7] = r.w;
        uint32_t hi[4], lo[4];
        tc_split8(v, 2, hi, lo);
        xs[(2 * i) * a.chp + ch] = make_uint4(hi[0], hi[1], lo[0], lo[1]);
        xs[(2 * i + 1) * a.chp + ch] = make_uint4(hi[2], hi[3], lo[2], lo[3]);
    }
}

// One load set: steps s .. s + B - 1 of the warp (those below nsteps): chunk 4 step + q of rows
// g and g + 8, and the scales of chunks 4 step + 2 (q & 1) and the next (what this thread's D
// columns hold) of the same rows.
__device__ __forceinline__ void gemv_tc_load(uint4 (&raw)[GEMV_TC_B][2], uint32_t (&sc)[GEMV_TC_B][2],
                                             const uint8_t *wg, const uint8_t *wg8,
                                             const uint32_t *sg, const uint32_t *sg8, int s,
                                             int nsteps, int q)
{
#pragma unroll
    for (int b = 0; b < GEMV_TC_B; b++) {
        if (s + b >= nsteps)
            break;
        const int ch = 4 * (s + b);
        raw[b][0] = __ldcs((const uint4 *)wg + ch + q);
        raw[b][1] = __ldcs((const uint4 *)wg8 + ch + q);
        sc[b][0] = __ldcs(sg + ch / 2 + (q & 1));
        sc[b][1] = __ldcs(sg8 + ch / 2 + (q & 1));
    }
}

// Steps s .. of one load set into acc (slot k: D column pair 2 (q & 1) .. of rows g, g + 8).
__device__ __forceinline__ void gemv_tc_compute(float (&acc)[4], const uint4 (&raw)[GEMV_TC_B][2],
                                                const uint32_t (&sc)[GEMV_TC_B][2], const uint4 *xs,
                                                int chp, int s, int nsteps, int q, int half,
                                                uint32_t mine)
{
#pragma unroll
    for (int b = 0; b < GEMV_TC_B; b++) {
        if (s + b >= nsteps)
            break;
        const int ch = 4 * (s + b);
        float d0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t u = word_of(raw[b][0], i), u8 = word_of(raw[b][1], i);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint2 bx = ((const uint2 *)(xs + (2 * i + h) * chp + ch + q))[half];
                tc_mma(h ? d1 : d0, tc_q4_pair(u >> (8 * h)), tc_q4_pair(u8 >> (8 * h)),
                       tc_q4_pair(u >> (8 * h + 4)), tc_q4_pair(u8 >> (8 * h + 4)), bx.x & mine,
                       bx.y & mine);
            }
        }
        const float s0 = sl_f16f((unsigned short)sc[b][0]), s1 = sl_f16f((unsigned short)(sc[b][0] >> 16));
        const float t0 = sl_f16f((unsigned short)sc[b][1]), t1 = sl_f16f((unsigned short)(sc[b][1] >> 16));
        acc[0] = fmaf(d0[0] + d1[0], s0, acc[0]);
        acc[1] = fmaf(d0[1] + d1[1], s1, acc[1]);
        acc[2] = fmaf(d0[2] + d1[2], t0, acc[2]);
        acc[3] = fmaf(d0[3] + d1[3], t1, acc[3]);
    }
}

// The block's work for row tile `tile` of the launch (blockIdx.y: the column split), one token.
// Launched with dynamic shared memory for a cps-chunk slice (128 bytes a chunk).
__device__ __forceinline__ void gemv_tc_body(const gemv_args &a, long long tile)
{
    extern __shared__ uint4 xs_tc[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const long long c0 = (long long)blockIdx.y * a.cps; // first chunk of the block's split
    const int nch = (int)min((long long)a.cps, a.w.cols / 32 - c0), nsteps = nch / 4;
    const long long rt0 = a.row0 + tile * (8 * GEMV_TC_R), rw = rt0 + warp * GEMV_TC_R;

    // rows past the end re-read the last row; their sums are not written
    const long long r0 = min(rw + g, a.w.rows - 1), r8 = min(rw + g + 8, a.w.rows - 1);
    const uint8_t *wg = a.w.data + r0 * a.w.rb + c0 * 16, *wg8 = a.w.data + r8 * a.w.rb + c0 * 16;
    const unsigned short *sp = (const unsigned short *)a.w.scales;
    const uint32_t *sg = (const uint32_t *)(sp + r0 * a.w.ng + c0);
    const uint32_t *sg8 = (const uint32_t *)(sp + r8 * a.w.ng + c0);

    uint4 raw[2][GEMV_TC_B][2];
    uint32_t sc[2][GEMV_TC_B][2];
    gemv_tc_load(raw[0], sc[0], wg, wg8, sg, sg8, 0, nsteps, q);
    gemv_prefetch<SL_WF_Q4, GEMV_TC_R>(a, rt0, c0 + 4 * GEMV_TC_B, nch - 4 * GEMV_TC_B, warp, lane);
    gemv_wait_previous();
    gemv_allow_next();
    gemv_tc_stage_x(xs_tc, a, c0, nch);
    __syncthreads();

    // B holds x only in column n = g (hi, g < 4) or g - 4 (lo) at thread n's k positions
    const uint32_t mine = (g & 3) == q ? 0xffffffffu : 0u;
    const int half = g >> 2;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = 0; s < nsteps; s += 2 * GEMV_TC_B) {
        gemv_tc_load(raw[1], sc[1], wg, wg8, sg, sg8, s + GEMV_TC_B, nsteps, q);
        gemv_tc_compute(acc, raw[0], sc[0], xs_tc, a.chp, s, nsteps, q, half, mine);
        gemv_tc_load(raw[0], sc[0], wg, wg8, sg, sg8, s + 2 * GEMV_TC_B, nsteps, q);
        gemv_tc_compute(acc, raw[1], sc[1], xs_tc, a.chp, s + GEMV_TC_B, nsteps, q, half, mine);
    }

    // row g: the quad's acc[0] + acc[1], row g + 8: acc[2] + acc[3] (every chunk, hi and lo)
    float s0 = acc[0] + acc[1], s8 = acc[2] + acc[3];
    s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
    s8 += __shfl_xor_sync(0xffffffffu, s8, 1);
    s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
    s8 += __shfl_xor_sync(0xffffffffu, s8, 2);
    if (q < 2) {
        const long long row = rw + g + 8 * q;
        const float v = q ? s8 : s0;
        if (row < a.w.rows && a.n > 0) {
            if (gridDim.y == 1)
                a.out[row] = v;
            else
                a.part[(long long)blockIdx.y * a.part_rows + (row - a.row0)] = v;
        }
    }
    if (gridDim.y > 1)
        gemv_split_finish<8 * GEMV_TC_R>(a, 1, rt0, tile);
}

#endif
