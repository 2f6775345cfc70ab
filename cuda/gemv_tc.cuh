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

#include "cuda/cp_async.cuh"
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

// Where a thread of the block for row tile `tile` works: its warp's rows, its split's chunks, and
// its rows g and g + 8 (rows past the end re-read the last row; their sums are not written).
struct gemv_tc_geom {
    int warp, lane, g, q, nch, nsteps;
    long long c0, rt0, rw;    // first chunk of the block's split, first row of the block, of the warp
    const uint8_t *wg, *wg8;  // rows g and g + 8 from chunk c0
    const uint32_t *sg, *sg8; // their scale words (2 f16 a word) from chunk c0
};
__device__ __forceinline__ gemv_tc_geom gemv_tc_geom_of(const gemv_args &a, long long tile)
{
    gemv_tc_geom G;
    G.warp = threadIdx.x >> 5, G.lane = threadIdx.x & 31, G.g = G.lane >> 2, G.q = G.lane & 3;
    G.c0 = (long long)blockIdx.y * a.cps;
    G.nch = (int)min((long long)a.cps, a.w.cols / 32 - G.c0), G.nsteps = G.nch / 4;
    G.rt0 = a.row0 + tile * (8 * GEMV_TC_R), G.rw = G.rt0 + G.warp * GEMV_TC_R;
    const long long r0 = min(G.rw + G.g, a.w.rows - 1), r8 = min(G.rw + G.g + 8, a.w.rows - 1);
    G.wg = a.w.data + r0 * a.w.rb + G.c0 * 16, G.wg8 = a.w.data + r8 * a.w.rb + G.c0 * 16;
    const unsigned short *sp = (const unsigned short *)a.w.scales;
    G.sg = (const uint32_t *)(sp + r0 * a.w.ng + G.c0);
    G.sg8 = (const uint32_t *)(sp + r8 * a.w.ng + G.c0);
    return G;
}

// One load set: steps s .. s + B - 1 of the warp (those below nsteps): chunk 4 step + q of rows
// g and g + 8, and the scales of chunks 4 step + 2 (q & 1) and the next (what this thread's D
// columns hold) of the same rows.
__device__ __forceinline__ void gemv_tc_load(uint4 (&raw)[GEMV_TC_B][2], uint32_t (&sc)[GEMV_TC_B][2],
                                             const gemv_tc_geom &G, int s)
{
#pragma unroll
    for (int b = 0; b < GEMV_TC_B; b++) {
        if (s + b >= G.nsteps)
            break;
        const int ch = 4 * (s + b);
        raw[b][0] = __ldcs((const uint4 *)G.wg + ch + G.q);
        raw[b][1] = __ldcs((const uint4 *)G.wg8 + ch + G.q);
        sc[b][0] = __ldcs(G.sg + ch / 2 + (G.q & 1));
        sc[b][1] = __ldcs(G.sg8 + ch / 2 + (G.q & 1));
    }
}

// One step (4 chunks of rows g and g + 8: words w0, w8, their scale words sc0, sc8) into acc
// (slot k: D column pair 2 (q & 1) .. of rows g, g + 8). xq: this thread's B source for the
// step's first chunk, bstride: bytes between its B words (0 for the zero word: the threads whose
// B columns hold no x, 3 in 4, read one zero word instead of masking what they load).
__device__ __forceinline__ void gemv_tc_step(float (&acc)[4], const uint4 &w0, const uint4 &w8,
                                             uint32_t sc0, uint32_t sc8, const char *xq, int bstride)
{
    float d0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t u = word_of(w0, i), u8 = word_of(w8, i);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint2 bx = *(const uint2 *)(xq + (2 * i + h) * bstride);
            tc_mma(h ? d1 : d0, tc_q4_pair(u >> (8 * h)), tc_q4_pair(u8 >> (8 * h)),
                   tc_q4_pair(u >> (8 * h + 4)), tc_q4_pair(u8 >> (8 * h + 4)), bx.x, bx.y);
        }
    }
    const float s0 = sl_f16f((unsigned short)sc0), s1 = sl_f16f((unsigned short)(sc0 >> 16));
    const float t0 = sl_f16f((unsigned short)sc8), t1 = sl_f16f((unsigned short)(sc8 >> 16));
    acc[0] = fmaf(d0[0] + d1[0], s0, acc[0]);
    acc[1] = fmaf(d0[1] + d1[1], s1, acc[1]);
    acc[2] = fmaf(d0[2] + d1[2], t0, acc[2]);
    acc[3] = fmaf(d0[3] + d1[3], t1, acc[3]);
}

// Steps s .. of one load set into acc. xb, cstride: the B source of step 0 and the bytes a step.
__device__ __forceinline__ void gemv_tc_compute(float (&acc)[4], const uint4 (&raw)[GEMV_TC_B][2],
                                                const uint32_t (&sc)[GEMV_TC_B][2], const char *xb,
                                                int cstride, int bstride, int s, int nsteps)
{
#pragma unroll
    for (int b = 0; b < GEMV_TC_B; b++) {
        if (s + b >= nsteps)
            break;
        gemv_tc_step(acc, raw[b][0], raw[b][1], sc[b][0], sc[b][1], xb + (s + b) * cstride, bstride);
    }
}

// B holds x only in column n = g (hi, g < 4) or g - 4 (lo) at thread n's k positions (see the
// top): this thread's B source for step 0 (its word of x, or the zero word), the bytes between
// its words of one step and the bytes a step (both 0 for the zero word).
struct gemv_tc_bsrc {
    const char *xb;
    int bstride, cstride;
};

// After the first loads are issued: wait for the previous kernel, let the next one start, stage
// the block's x slice and the zero word, and return this thread's B source.
__device__ __forceinline__ gemv_tc_bsrc gemv_tc_begin(uint4 *xs, uint4 *zero, const gemv_args &a,
                                                      const gemv_tc_geom &G)
{
    gemv_wait_previous();
    gemv_allow_next();
    gemv_tc_stage_x(xs, a, G.c0, G.nch);
    if (threadIdx.x == 0)
        *zero = make_uint4(0u, 0u, 0u, 0u);
    __syncthreads();
    const bool mine = (G.g & 3) == G.q;
    gemv_tc_bsrc b;
    b.xb = mine ? (const char *)(xs + G.q) + 8 * (G.g >> 2) : (const char *)zero;
    b.bstride = mine ? 16 * a.chp : 0;
    b.cstride = mine ? 64 : 0; // a step is 4 chunks of 16 bytes
    return b;
}

// The block's sums: row g of the warp is the quad's acc[0] + acc[1], row g + 8 acc[2] + acc[3]
// (every chunk, hi and lo), to out or, split, to the workspace and the split's finish.
__device__ __forceinline__ void gemv_tc_store(const float (&acc)[4], const gemv_args &a, long long rw,
                                              long long rt0, long long tile, int g, int q)
{
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

// The block's work for row tile `tile` of the launch (blockIdx.y: the column split), one token.
// Launched with dynamic shared memory for a cps-chunk slice (128 bytes a chunk).
__device__ __forceinline__ void gemv_tc_body(const gemv_args &a, long long tile)
{
    extern __shared__ uint4 xs_tc[];
    __shared__ uint4 tc_zero;
    const gemv_tc_geom G = gemv_tc_geom_of(a, tile);
    const int nsteps = G.nsteps;

    uint4 raw[2][GEMV_TC_B][2];
    uint32_t sc[2][GEMV_TC_B][2];
    gemv_tc_load(raw[0], sc[0], G, 0);
    gemv_prefetch<SL_WF_Q4, GEMV_TC_R>(a, G.rt0, G.c0 + 4 * GEMV_TC_B, G.nch - 4 * GEMV_TC_B,
                                       G.warp, G.lane);
    const gemv_tc_bsrc bs = gemv_tc_begin(xs_tc, &tc_zero, a, G);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = 0; s < nsteps; s += 2 * GEMV_TC_B) {
        gemv_tc_load(raw[1], sc[1], G, s + GEMV_TC_B);
        gemv_tc_compute(acc, raw[0], sc[0], bs.xb, bs.cstride, bs.bstride, s, nsteps);
        gemv_tc_load(raw[0], sc[0], G, s + 2 * GEMV_TC_B);
        gemv_tc_compute(acc, raw[1], sc[1], bs.xb, bs.cstride, bs.bstride, s + GEMV_TC_B, nsteps);
    }

    gemv_tc_store(acc, a, G.rw, G.rt0, tile, G.g, G.q);
}

// ---- the ring variant: weights through shared memory ---------------------------------------------
//
// A thread's loads go by cp.async into its own slots of a ring in shared memory, D steps deep
// (D - 1 in flight while one is decoded), holding no registers (72 a thread, not 127); a thread
// reads back only what it copied itself, so the ring needs no barrier. The first D steps are
// copied before the dependency wait, a prefetch that lands where it is used.
//
// Measured (H100, one token, bench/results/gemv-h100-2026-12-06-run3.md): made to answer ncu's
// picture of the register kernel in an expert group (an instruction every 2nd cycle per
// scheduler, 3.6 warps each, half the cycles none ready, mostly waiting on global loads), it is
// slower there (0.499 of copy vs 0.598): so the group's limit is not the loads in flight. It wins
// on single matrices at one block an SM (2048x7168: 0.455 vs 0.377; 7168x2048: 0.429 vs 0.432),
// where a launch's ramp and tail are most of its time: the next kernel's blocks find room and
// start their rings before this one ends. So: single matrices take it, groups the register one.

enum {
    GEMV_TC_SLOT = 40,    // ring bytes a thread a step: rows g, g + 8 (16 each), their scale words
    GEMV_TC_RING_FILL = 1, // blocks an SM its split aims for (72 registers: 3 fit), so that under
                           // dependent launch the next kernel's blocks find room and start their
                           // rings before this one ends (H100, single 2048x7168: 0.361 of copy
                           // at 2, 0.435 at 1, the same call)
};

// Blocks an SM the GEMV kernels are compiled for: one from two tokens, two at one token
// (registers for a sweep of loads in flight), three for the ring (its loads hold none).
constexpr int gemv_min_blocks(int NT, int R, int S)
{
    return NT > 1 ? 1 : R == GEMV_TC_R && S > 2 ? 3 : 2;
}

// The ring's bytes for depth D (S = 2: the register kernel, no ring).
static inline size_t gemv_tc_ring_bytes(int D)
{
    return D > 2 ? (size_t)D * GEMV_THREADS * GEMV_TC_SLOT : 0;
}

// Bind S to the ring depth c->gemv.ring names (0: the register kernel, S = 2; 4 or 6; 8 measured
// no better than 6 and went: cp_async_wait covers up to 5 groups pending).
#define GEMV_TC_RING_DISPATCH(ring, ...)                                                           \
    switch (ring) {                                                                                \
    case 0: { constexpr int S = 2; __VA_ARGS__; } break;                                           \
    case 4: { constexpr int S = 4; __VA_ARGS__; } break;                                           \
    default: { constexpr int S = 6; __VA_ARGS__; } break;                                          \
    }

// Step s's copies (chunk 4 s + q of rows g and g + 8, their scale words) into ring slot d.
__device__ __forceinline__ void gemv_tc_ring_issue(uint4 *rw, uint32_t *rs, const gemv_tc_geom &G,
                                                   int s, int d)
{
    const int t = threadIdx.x, ch = 4 * s, q = G.q;
    cp_async16(rw + (2 * d) * GEMV_THREADS + t, (const uint4 *)G.wg + ch + q, 16);
    cp_async16(rw + (2 * d + 1) * GEMV_THREADS + t, (const uint4 *)G.wg8 + ch + q, 16);
    cp_async4(rs + (2 * d) * GEMV_THREADS + t, G.sg + 2 * s + (q & 1), 4);
    cp_async4(rs + (2 * d + 1) * GEMV_THREADS + t, G.sg8 + 2 * s + (q & 1), 4);
}

// gemv_tc_body with the ring of depth D: launched with dynamic shared memory for the x slice
// (128 bytes a chunk) and gemv_tc_ring_bytes(D) after it.
template <int D>
__device__ __forceinline__ void gemv_tc_ring_body(const gemv_args &a, long long tile)
{
    extern __shared__ uint4 xs_tc[];
    __shared__ uint4 tc_zero;
    const gemv_tc_geom G = gemv_tc_geom_of(a, tile);
    const int nsteps = G.nsteps;
    uint4 *rw = xs_tc + 8 * a.chp;
    uint32_t *rs = (uint32_t *)(rw + 2 * D * GEMV_THREADS);

    // the first D steps fly while the previous kernel ends and x is staged (one group a step,
    // empty past the end, so that "all but the newest D - 1 groups" is always step s)
#pragma unroll
    for (int p = 0; p < D; p++) {
        if (p < nsteps)
            gemv_tc_ring_issue(rw, rs, G, p, p);
        cp_async_commit();
    }
    const gemv_tc_bsrc bs = gemv_tc_begin(xs_tc, &tc_zero, a, G);
    const int t = threadIdx.x;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s0 = 0; s0 < nsteps; s0 += D) {
#pragma unroll
        for (int d = 0; d < D; d++) {
            const int s = s0 + d;
            if (s >= nsteps)
                break;
            cp_async_wait(D - 1);
            gemv_tc_step(acc, rw[(2 * d) * GEMV_THREADS + t], rw[(2 * d + 1) * GEMV_THREADS + t],
                         rs[(2 * d) * GEMV_THREADS + t], rs[(2 * d + 1) * GEMV_THREADS + t],
                         bs.xb + s * bs.cstride, bs.bstride);
            if (s + D < nsteps) // into the slot just read (its words are in registers)
                gemv_tc_ring_issue(rw, rs, G, s + D, d);
            cp_async_commit();
        }
    }
    gemv_tc_store(acc, a, G.rw, G.rt0, tile, G.g, G.q);
}

#endif
