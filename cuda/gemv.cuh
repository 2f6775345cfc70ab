// cuda/ private: the device side of the few-token GEMV (kernels_gemv.cu says what it does and
// what limits it) as bodies that both kernels_gemv.cu (one matrix a launch) and
// kernels_expert_group.cu (every matrix of an expert group in one launch) wrap in kernels, and
// the host helpers both launch them with. The 4-rows-a-block kernel's body: gemv_rows.cuh.
#ifndef SL_CUDA_GEMV_CUH
#define SL_CUDA_GEMV_CUH

#include "cuda/internal.cuh"

#include <string.h>

enum {
    GEMV_MAX_T = 16,                 // tokens one call serves
    GEMV_R = 4,                      // rows per warp
    GEMV_R1 = 8,                     // rows per warp at one token when c->gemv.wide: twice the
                                     // weight bytes in flight per lane (128) and half the x reads
                                     // and x staging per weight; 128 registers, 2 blocks an SM.
                                     // The default (H100, expert group at one token: q8 0.751
                                     // -> 0.775 of copy, q4 0.494 -> 0.509, the rest equal:
                                     // bench/results/gemv-h100-2026-12-06.md)
    GEMV_WARPS = 8,                  // warps per block
    GEMV_THREADS = 32 * GEMV_WARPS,
    GEMV_ROWS = GEMV_R * GEMV_WARPS, // rows per block: 32 divides 128, so a block's rows share
                                     // their fp8 scale row
    GEMV_SMEM = 96 * 1024,           // x slice per block, bytes (two blocks per SM)
};

template <int FMT> struct gemv_chunk;
template <> struct gemv_chunk<SL_WF_F32> { static constexpr int cols = 4; };
template <> struct gemv_chunk<SL_WF_BF16> { static constexpr int cols = 8; };
template <> struct gemv_chunk<SL_WF_FP8> { static constexpr int cols = 16; };
template <> struct gemv_chunk<SL_WF_Q8> { static constexpr int cols = 16; };
template <> struct gemv_chunk<SL_WF_Q4> { static constexpr int cols = 32; };

static inline int chunk_cols(int fmt)
{
    switch (fmt) {
    case SL_WF_F32: return 4;
    case SL_WF_BF16: return 8;
    case SL_WF_FP8:
    case SL_WF_Q8: return 16;
    default: return 32;
    }
}

__device__ __forceinline__ uint32_t word_of(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Columns 4g .. 4g+3 of a raw chunk, decoded without the scale.
template <int FMT>
__device__ __forceinline__ void decode4(const uint4 &raw, int g, float v[4])
{
    if (FMT == SL_WF_F32) {
        v[0] = __uint_as_float(raw.x);
        v[1] = __uint_as_float(raw.y);
        v[2] = __uint_as_float(raw.z);
        v[3] = __uint_as_float(raw.w);
    } else if (FMT == SL_WF_BF16) {
        uint32_t a = word_of(raw, 2 * g), b = word_of(raw, 2 * g + 1);
        v[0] = __uint_as_float(a << 16);
        v[1] = __uint_as_float(a & 0xffff0000u);
        v[2] = __uint_as_float(b << 16);
        v[3] = __uint_as_float(b & 0xffff0000u);
    } else if (FMT == SL_WF_FP8) {
        uint32_t a = word_of(raw, g);
        float2 lo = sl_fp8x2f(a), hi = sl_fp8x2f(a >> 16);
        v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
    } else if (FMT == SL_WF_Q8) {
        uint32_t a = word_of(raw, g) ^ 0x80808080u;
#pragma unroll
        for (int k = 0; k < 4; k++)
            v[k] = sl_i8f(a, k);
    } else { // Q4: bytes 2g, 2g+1 of the chunk, low nibble first (see q4_prescale)
        uint32_t h = (g & 1) ? word_of(raw, g / 2) >> 16 : word_of(raw, g / 2);
        v[0] = __uint_as_float(0x4b000000u | (h & 0x000fu)) - 8388616.0f;  // (n0 - 8)
        v[1] = __uint_as_float(0x4b000000u | (h & 0x00f0u)) - 8388736.0f;  // (n1 - 8) * 16
        v[2] = __uint_as_float(0x4b000000u | (h & 0x0f00u)) - 8390656.0f;  // (n2 - 8) * 256
        v[3] = __uint_as_float(0x4b000000u | (h & 0xf000u)) - 8421376.0f;  // (n3 - 8) * 4096
    }
}

// Q4 decodes the four nibbles of two bytes where they lie, each left multiplied by 16^k (one
// mask-or and one exact subtraction per weight, no shifts); the matching x values are divided by
// 16^k when x is staged, so every product (n - 8) * x is the same fp32 number as unscaled.
__device__ __forceinline__ float4 q4_prescale(float4 x)
{
    x.y *= 0.0625f;
    x.z *= 0.00390625f;
    x.w *= 0.000244140625f;
    return x;
}

// ---- programmatic dependent launch (no-ops before sm_90 and in launches without it) -----------

// Wait until the previous kernel on the stream has finished and its writes are visible.
__device__ __forceinline__ void gemv_wait_previous()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Let the next kernel on the stream start its blocks (they wait for this one before reading).
__device__ __forceinline__ void gemv_allow_next()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// ---- the fast (split) kernel ---------------------------------------------------------------------

struct gemv_args {
    float *out;          // (n, rows)
    const float *x;      // (n, cols)
    const int32_t *xrows; // NULL, or token t's row of x is xrows[t] (a gather folded into staging)
    sl_wdev w;
    int n;               // tokens; the kernel's NT >= n, the others are computed on zeros
    long long row0;      // first row of this launch (a multiple of 128)
    int cps;             // chunks per split (the last split may have fewer)
    int chp;             // shared-memory stride between column offsets: cps, made odd
    int pf_row;          // bytes of each row's slice to prefetch into L2 before the wait
    float *part;         // split partial sums [split][NT][part_rows] (gridDim.y > 1)
    long long part_rows; // rows of this launch
    unsigned *count;     // one arrival counter per row tile (gridDim.y > 1)
};

// Ask L2 for pf_row bytes of each of this warp's rows from chunk c0 on (and their scales); a
// hint issued before the dependency wait, so it overlaps the previous kernel's end.
template <int FMT, int R>
__device__ __forceinline__ void gemv_prefetch(const gemv_args &a, long long rt0, long long c0,
                                              int nch, int warp, int lane)
{
    constexpr int C = gemv_chunk<FMT>::cols;
    const int bytes = min(nch * 16, a.pf_row);
    if (bytes <= 0)
        return;
#pragma unroll
    for (int i = 0; i < R; i++) {
        const long long row = rt0 + warp * R + i;
        if (row >= a.w.rows)
            break;
        const uintptr_t p = (uintptr_t)(a.w.data + row * a.w.rb + c0 * 16);
        for (uintptr_t q = (p & ~(uintptr_t)127) + 128 * lane; q < p + bytes; q += 32 * 128)
            prefetch_l2((const void *)q);
        if ((FMT == SL_WF_Q8 || FMT == SL_WF_Q4) && lane == 0) {
            const uint8_t *s = a.w.scales + 2 * (row * a.w.ng + c0 * C / 32);
            prefetch_l2(s);
            prefetch_l2(s + 2 * (nch * C / 32) - 1);
        }
    }
}

// Copy the block's slice of x (all NT tokens) to shared memory: float4 g of chunk ch of token t
// at xs[(t * C/4 + g) * chp + ch]. fp8: times the block scale of the block's rows; q4: prescaled.
template <int FMT, int NT>
__device__ __forceinline__ void gemv_stage_x(float4 *xs, const gemv_args &a, long long rt0,
                                             long long c0, int nch)
{
    constexpr int C = gemv_chunk<FMT>::cols, C4 = C / 4;
    const int n4 = nch * C4;
    const long long col0 = c0 * C;
    const float *fp8_scales = (const float *)a.w.scales + (rt0 / 128) * a.w.ncb;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *src = NULL;
        if (t < a.n) // (rows past n are not read: an xrows entry may not exist)
            src = (const float4 *)(a.x + (long long)(a.xrows ? __ldcg(a.xrows + t) : t) * a.w.cols +
                                   col0);
        enum { B = 4 }; // loads in flight per thread before the first store
        for (int j0 = threadIdx.x; j0 < n4; j0 += B * GEMV_THREADS) {
            float4 v[B];
#pragma unroll
            for (int b = 0; b < B; b++) {
                const int j = j0 + b * GEMV_THREADS;
                v[b] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (t < a.n && j < n4)
                    v[b] = __ldcg(src + j); // L2: the previous kernel may have just written it
            }
#pragma unroll
            for (int b = 0; b < B; b++) {
                const int j = j0 + b * GEMV_THREADS;
                if (j >= n4)
                    break;
                if (FMT == SL_WF_FP8) {
                    float s = __ldg(fp8_scales + (col0 + 4 * j) / 128);
                    v[b].x *= s, v[b].y *= s, v[b].z *= s, v[b].w *= s;
                }
                if (FMT == SL_WF_Q4)
                    v[b] = q4_prescale(v[b]);
                int ch = j / C4, g = j % C4;
                xs[(t * C4 + g) * a.chp + ch] = v[b];
            }
        }
    }
}

// One chunk (16 bytes of each of the warp's 4 rows) times all NT tokens, into acc.
template <int FMT, int NT, int R>
__device__ __forceinline__ void gemv_chunk_dot(float (&acc)[NT][R], const uint4 (&raw)[R],
                                               const float (&sc)[R], const float4 *xs, int chp)
{
    constexpr int C4 = gemv_chunk<FMT>::cols / 4;
    constexpr bool ROW_SCALED = FMT == SL_WF_Q8 || FMT == SL_WF_Q4;
    constexpr bool EACH = ROW_SCALED && NT > 4; // scale each weight: no second set of sums
    constexpr bool PART = ROW_SCALED && !EACH;  // sum the chunk, then scale it once
    float part[NT][R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < R; i++)
            part[t][i] = PART ? 0.0f : acc[t][i];
#pragma unroll
    for (int g = 0; g < C4; g++) {
        float v[R][4];
#pragma unroll
        for (int i = 0; i < R; i++) {
            decode4<FMT>(raw[i], g, v[i]);
            if (EACH)
#pragma unroll
                for (int k = 0; k < 4; k++)
                    v[i][k] *= sc[i];
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 xv = xs[(t * C4 + g) * chp];
#pragma unroll
            for (int i = 0; i < R; i++) {
                float s = part[t][i];
                s = fmaf(v[i][0], xv.x, s);
                s = fmaf(v[i][1], xv.y, s);
                s = fmaf(v[i][2], xv.z, s);
                s = fmaf(v[i][3], xv.w, s);
                part[t][i] = s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < R; i++)
            acc[t][i] = PART ? fmaf(part[t][i], sc[i], acc[t][i]) : part[t][i];
}

// Chunk ch of the warp's rows (16 bytes each; read-only weights, not the previous kernel's
// output, so they may be read before its end) and its q8/q4 row scales. Row i of the warp is
// row min(i, last) from wrow/srow (rows past the end re-read the last one; not written).
template <int FMT, int R>
__device__ __forceinline__ void gemv_load(uint4 (&raw)[R], float (&sc)[R], const uint8_t *wrow,
                                          const unsigned short *srow, long long rb, long long ng,
                                          int last, int ch)
{
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int r = i < last ? i : last;
        raw[i] = __ldcs((const uint4 *)(wrow + r * rb) + ch);
        if (FMT == SL_WF_Q8)
            sc[i] = sl_f16f(__ldcs(srow + r * ng + ch / 2)); // c0 is even: splits are whole sweeps
        else if (FMT == SL_WF_Q4)
            sc[i] = sl_f16f(__ldcs(srow + r * ng + ch));
        else
            sc[i] = 1.0f;
    }
}

// One step of the recursive halving below: lanes with bit M set keep the upper half of b[0..H*2)
// and add their partner's copy of it, the others the lower half.
template <int M, int VP>
__device__ __forceinline__ void gemv_halve(float (&b)[VP], int lane)
{
    constexpr int H = VP * M / 32;
    const bool up = lane & M;
#pragma unroll
    for (int k = 0; k < H; k++) {
        float keep = up ? b[k + H] : b[k], send = up ? b[k] : b[k + H];
        b[k] = keep + __shfl_xor_sync(0xffffffffu, send, M);
    }
    if constexpr (M > 1)
        gemv_halve<M / 2, VP>(b, lane);
}

// The warp sum of each of v[0..V): lane l gets sums l * VP/32 .. l * VP/32 + VP/32 - 1 in b,
// VP = V rounded up to a power of two >= 32 (recursive halving: ~V shuffles, not 5 V).
template <int V, int VP>
__device__ __forceinline__ void gemv_warp_reduce(const float (&v)[V], float (&b)[VP], int lane)
{
#pragma unroll
    for (int k = 0; k < VP; k++)
        b[k] = k < V ? v[k] : 0.0f;
    gemv_halve<16, VP>(b, lane);
}

// Write the warp's sums (token t, row rw + i): to out, or to the workspace when split.
template <int NT, int R>
__device__ __forceinline__ void gemv_store(const float (&acc)[NT][R], const gemv_args &a,
                                           long long rw, int lane)
{
    constexpr int V = NT * R;
    float v[V];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < R; i++)
            v[t * R + i] = acc[t][i];
    auto put = [&](int e, float s) {
        int t = e / R, i = e % R;
        long long row = rw + i;
        if (t >= a.n || row >= a.w.rows)
            return;
        if (gridDim.y == 1)
            a.out[(long long)t * a.w.rows + row] = s;
        else
            a.part[((long long)blockIdx.y * NT + t) * a.part_rows + (row - a.row0)] = s;
    };
    if constexpr (V <= 8) { // few sums: a full butterfly each, lane e writes sum e
#pragma unroll
        for (int e = 0; e < V; e++) {
            float s = sl_warp_sum(v[e]);
            if (lane == e)
                put(e, s);
        }
    } else {
        constexpr int VP = V <= 32 ? 32 : V <= 64 ? 64 : 128;
        float b[VP];
        gemv_warp_reduce<V, VP>(v, b, lane);
#pragma unroll
        for (int j = 0; j < VP / 32; j++)
            if (lane * (VP / 32) + j < V)
                put(lane * (VP / 32) + j, b[j]);
    }
}

// Split blocks: the last of a row tile's gridDim.y blocks to arrive adds the partial sums in
// split order (the threadfence-reduction pattern) and leaves the counter at 0 for the next use.
// `tile`: the row tile's index in the launch (its counter).
template <int ROWS>
__device__ __forceinline__ void gemv_split_finish(const gemv_args &a, int nt, long long rt0,
                                                  long long tile)
{
    __shared__ bool last;
    __threadfence(); // this thread's partial sums, before the block's arrival is counted
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicInc(a.count + tile, gridDim.y - 1) == gridDim.y - 1;
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    for (int e = threadIdx.x; e < a.n * ROWS; e += GEMV_THREADS) {
        int t = e / ROWS;
        long long row = rt0 + e % ROWS;
        if (row >= a.w.rows)
            continue;
        const float *p = a.part + (long long)t * a.part_rows + (row - a.row0);
        float s = 0.0f;
        for (unsigned sp = 0; sp < gridDim.y; sp++)
            s += __ldcg(p + (long long)sp * nt * a.part_rows);
        a.out[(long long)t * a.w.rows + row] = s;
    }
}

// The split kernel's work for row tile `tile` of the launch (blockIdx.y: the column split).
// Launched with dynamic shared memory for NT tokens of a cps-chunk slice of x.
template <int FMT, int NT, int R = GEMV_R, int S = 2>
__device__ __forceinline__ void gemv_fast_body(const gemv_args &a, long long tile)
{
    constexpr int C = gemv_chunk<FMT>::cols;
    extern __shared__ float4 xs[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long c0 = (long long)blockIdx.y * a.cps; // first chunk of the block's split
    const int nch = (int)min((long long)a.cps, a.w.cols / C - c0);
    const long long rt0 = a.row0 + tile * (8 * R);

    // rows past the end re-read the last row; their sums are not written
    const long long rw = rt0 + warp * R;
    const int last = (int)min((long long)R - 1, a.w.rows - 1 - rw);
    const uint8_t *wrow = a.w.data + rw * a.w.rb + c0 * 16;
    const unsigned short *srow = (const unsigned short *)a.w.scales + rw * a.w.ng + c0 * C / 32;
    // the first S - 1 sweeps' weights fly while the previous kernel ends and x is staged
    uint4 raw[S][R];
    float sc[S][R];
#pragma unroll
    for (int d = 0; d < S - 1; d++)
        if (lane + 32 * d < nch)
            gemv_load<FMT, R>(raw[d], sc[d], wrow, srow, a.w.rb, a.w.ng, last, lane + 32 * d);
    gemv_prefetch<FMT, R>(a, rt0, c0 + 32 * (S - 1), nch - 32 * (S - 1), warp, lane);
    gemv_wait_previous();
    gemv_allow_next();
    gemv_stage_x<FMT, NT>(xs, a, rt0, c0, nch);
    __syncthreads();

    float acc[NT][R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < R; i++)
            acc[t][i] = 0.0f;
    // a ring of S register sets: sweep k decodes from set k % S while the next S - 1 fly
    for (int ch0 = lane; ch0 < nch; ch0 += 32 * S) {
#pragma unroll
        for (int d = 0; d < S; d++) {
            const int ch = ch0 + 32 * d, ahead = ch + 32 * (S - 1);
            if (ch >= nch)
                break;
            if (ahead < nch)
                gemv_load<FMT, R>(raw[(d + S - 1) % S], sc[(d + S - 1) % S], wrow, srow, a.w.rb,
                                  a.w.ng, last, ahead);
            gemv_chunk_dot<FMT, NT, R>(acc, raw[d], sc[d], xs + ch, a.chp);
        }
    }
    gemv_store<NT, R>(acc, a, rw, lane);
    if (gridDim.y > 1)
        gemv_split_finish<8 * R>(a, NT, rt0, tile);
}

// ---- host side ---------------------------------------------------------------------------------

// kernels_expert_group.cu: raise its GEMV kernels' shared-memory limit (sl_cuda_gemv_init calls
// it with the device current).
cudaError_t sl_cuda_expert_group_init(void);

// The fast paths need whole, 16-byte aligned chunks in every row, an aligned scale plane and
// 16-byte aligned token rows.
static inline bool gemv_fast_ok(const sl_wdev &w, const float *x)
{
    int cc = chunk_cols(w.fmt);
    return w.cols % cc == 0 && ((uintptr_t)w.data & 15) == 0 && ((uintptr_t)x & 15) == 0 &&
           w.rb % 16 == 0;
}

// With programmatic dependent launch where the device has it (c->gemv.pdl).
template <class... Args>
static inline void gemv_launch_ex(sl_cuda_ctx *c, void (*kernel)(Args...), dim3 grid, dim3 block,
                                  size_t smem, Args... args)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->compute;
    cfg.attrs = &attr;
    cfg.numAttrs = c->gemv.pdl ? 1 : 0;
    CUDA_CHECK(c, cudaLaunchKernelEx(&cfg, kernel, args...));
}

// Chunks per column split for a launch of `tiles` row tiles of nchunk chunks (C columns each)
// at NT tokens: slices of whole sweeps (`unit` chunks: 32 for the split kernel, one per lane; 4,
// a step, for the tensor-core kernel) so that about `fill` blocks per SM run (0: c->gemv.fill),
// within the shared memory for x.
static inline long long gemv_split_cps(const sl_cuda_ctx *c, int C, int NT, long long nchunk,
                                       long long tiles, int unit = 32, int fill = 0)
{
    const long long sweeps = (nchunk + unit - 1) / unit;
    fill = fill > 0 ? fill : c->gemv.fill;
    long long want = (long long)((double)fill * c->sm_count / tiles + 0.5);
    want = want < 1 ? 1 : want > sweeps ? sweeps : want;
    long long cps = (sweeps + want - 1) / want * unit;
    const long long cps_max = GEMV_SMEM / (16 * C / 4 * NT) - 1; // room for chp = cps | 1
    if (cps > cps_max)
        cps = cps_max >= unit ? cps_max / unit * unit : cps_max;
    if (cps > nchunk)
        cps = nchunk;
    return cps;
}

// Run `body` with NT bound to the token count n (1..16) as a compile-time constant.
#define GEMV_NT_DISPATCH(n, ...)                                                                   \
    switch (n) {                                                                                   \
    case 1: { constexpr int NT = 1; __VA_ARGS__; } break;                                          \
    case 2: { constexpr int NT = 2; __VA_ARGS__; } break;                                          \
    case 3: { constexpr int NT = 3; __VA_ARGS__; } break;                                          \
    case 4: { constexpr int NT = 4; __VA_ARGS__; } break;                                          \
    case 5: { constexpr int NT = 5; __VA_ARGS__; } break;                                          \
    case 6: { constexpr int NT = 6; __VA_ARGS__; } break;                                          \
    case 7: { constexpr int NT = 7; __VA_ARGS__; } break;                                          \
    case 8: { constexpr int NT = 8; __VA_ARGS__; } break;                                          \
    case 9:                                                                                        \
    case 10: { constexpr int NT = 10; __VA_ARGS__; } break;                                        \
    case 11:                                                                                       \
    case 12: { constexpr int NT = 12; __VA_ARGS__; } break;                                        \
    default: { constexpr int NT = 16; __VA_ARGS__; } break;                                        \
    }

#endif
