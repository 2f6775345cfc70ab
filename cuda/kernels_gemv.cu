// Few-token matrix products (n <= 8): out (n, rows) = x (n, cols) . W^T with W decoded in
// registers. Memory-bound: every weight byte is read once per call, so the bound is
// bytes(W) / DRAM bandwidth (e.g. 7168x2048 at q4: 7.3 MB, ~2.5 us on an H100).
//
// Fast path (shapes whose rows are whole 16-byte chunks, 16-byte aligned planes): a block owns
// GEMV_R = 4 consecutive rows; each thread walks 16-byte chunks of those rows (one vector load
// per row per chunk, all four in flight together), decodes them in registers and multiplies them
// with the matching columns of all n tokens, so one load of x (float4, from L1) serves four rows
// and one load of a weight serves n tokens. The block then sums its threads' partial dots
// (warp shuffles, then shared memory). Columns per 16-byte chunk: f32 4, bf16 8, fp8 16, q8 16,
// q4 32; a chunk never straddles a scale group (q8/q4: 32 columns, fp8: 128).
// Decoding costs 2-3 instructions per weight (fp8: the sm_89+ hardware e4m3 -> f16
// conversion; q8: a byte permute into an fp32 mantissa; q4: a mask into one), and each chunk's
// scale multiplies the chunk's partial dot once, so the fp32 units keep up with DRAM at n = 1.
// Generic path (any shape, any alignment): the same block shape, one element at a time.
// Measured (bench/kernels, H100 SXM, 2026-11-24, d2d copy 3.0 TB/s, CUDA-graph replay, 1 token):
// one 32768x7168 matrix streams at 1.04 (f32, bf16), 0.95 (fp8), 0.98 (q8), 0.54 (q4) of the copy
// rate; a 7168x2048 expert (64 distinct copies) at 0.94 / 0.87 / 0.65 / 0.64 / 0.35, where the
// ~5 us fixed cost of a launch (ramp, block reduction, tail) is a large share of 7-8 MB; q4 is
// bound by its decode instructions (3 a weight). 8 tokens: 0.07 (q4) .. 0.64 (f32): the x loads
// (8 tokens x 4 bytes per weight, from L1) dominate.
#include "cuda/internal.cuh"

enum { GEMV_R = 4, GEMV_MAX_T = 8 };

template <int FMT> struct gemv_chunk;
template <> struct gemv_chunk<SL_WF_F32> { static constexpr int cols = 4; };
template <> struct gemv_chunk<SL_WF_BF16> { static constexpr int cols = 8; };
template <> struct gemv_chunk<SL_WF_FP8> { static constexpr int cols = 16; };
template <> struct gemv_chunk<SL_WF_Q8> { static constexpr int cols = 16; };
template <> struct gemv_chunk<SL_WF_Q4> { static constexpr int cols = 32; };

__device__ __forceinline__ uint32_t word_of(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The scale that applies to chunk `ch` of row `row` (1 for unscaled formats).
template <int FMT>
__device__ __forceinline__ float chunk_scale(const sl_wdev &w, long long row, long long ch)
{
    constexpr int C = gemv_chunk<FMT>::cols;
    if (FMT == SL_WF_FP8)
        return __ldg((const float *)w.scales + (row / 128) * w.ncb + (ch * C) / 128);
    if (FMT == SL_WF_Q8 || FMT == SL_WF_Q4)
        return sl_f16f(__ldg((const unsigned short *)w.scales + row * w.ng + (ch * C) / 32));
    return 1.0f;
}

// Columns 4g .. 4g+3 of a raw chunk, decoded without the scale (the caller applies it once per
// chunk to the chunk's partial dot: one multiply per 16-32 weights instead of one each).
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
// 16^k, so every product (n - 8) * x is the same fp32 number as unscaled.
template <int FMT> __device__ __forceinline__ float4 q4_prescale(float4 x)
{
    if (FMT == SL_WF_Q4) {
        x.y *= 0.0625f;
        x.z *= 0.00390625f;
        x.w *= 0.000244140625f;
    }
    return x;
}

// Sum each thread's acc[NT][GEMV_R] over the block and write the block's rows of out.
template <int NT>
__device__ __forceinline__ void gemv_finish(float (&acc)[NT][GEMV_R], float *out, long long rows,
                                            long long r0)
{
    __shared__ float red[8][NT * GEMV_R]; // blockDim.x <= 256
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < GEMV_R; r++) {
            float v = sl_warp_sum(acc[t][r]);
            if (lane == 0)
                red[warp][t * GEMV_R + r] = v;
        }
    __syncthreads();
    if (threadIdx.x < NT * GEMV_R) {
        int t = threadIdx.x / GEMV_R, r = threadIdx.x % GEMV_R;
        float s = 0.0f;
        for (int k = 0; k < nw; k++)
            s += red[k][threadIdx.x];
        if (r0 + r < rows)
            out[(long long)t * rows + r0 + r] = s;
    }
}

template <int FMT, int NT>
__global__ void __launch_bounds__(256) gemv_fast_kernel(float *out, const float *x, sl_wdev w)
{
    constexpr int C = gemv_chunk<FMT>::cols;
    constexpr bool SCALED = FMT == SL_WF_FP8 || FMT == SL_WF_Q8 || FMT == SL_WF_Q4;
    constexpr int U = NT <= 4 ? 2 : 1; // chunks per row in flight per thread (registers allowing)
    const long long nchunk = w.cols / C;
    const long long r0 = (long long)blockIdx.x * GEMV_R;
    float acc[NT][GEMV_R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < GEMV_R; r++)
            acc[t][r] = 0.0f;

    for (long long ch0 = threadIdx.x; ch0 < nchunk; ch0 += U * blockDim.x) {
        uint4 raw[U][GEMV_R];
        float sc[U][GEMV_R];
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long ch = ch0 + (long long)u * blockDim.x;
            bool ok = ch < nchunk;
#pragma unroll
            for (int r = 0; r < GEMV_R; r++) { // rows past the end re-read the last row; not written
                long long row = r0 + r < w.rows ? r0 + r : w.rows - 1;
                raw[u][r] = ok ? __ldg((const uint4 *)(w.data + row * w.rb) + ch) : make_uint4(0, 0, 0, 0);
                sc[u][r] = ok ? chunk_scale<FMT>(w, row, ch) : 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long ch = ch0 + (long long)u * blockDim.x;
            if (ch >= nchunk)
                break;
            float part[NT][GEMV_R];
#pragma unroll
            for (int t = 0; t < NT; t++)
#pragma unroll
                for (int r = 0; r < GEMV_R; r++)
                    part[t][r] = SCALED ? 0.0f : acc[t][r];
#pragma unroll
            for (int g = 0; g < C / 4; g++) {
                float4 xv[NT];
#pragma unroll
                for (int t = 0; t < NT; t++)
                    xv[t] = q4_prescale<FMT>(__ldg((const float4 *)(x + (long long)t * w.cols + ch * C) + g));
#pragma unroll
                for (int r = 0; r < GEMV_R; r++) {
                    float v[4];
                    decode4<FMT>(raw[u][r], g, v);
#pragma unroll
                    for (int t = 0; t < NT; t++) {
                        float a = part[t][r];
                        a = fmaf(v[0], xv[t].x, a);
                        a = fmaf(v[1], xv[t].y, a);
                        a = fmaf(v[2], xv[t].z, a);
                        a = fmaf(v[3], xv[t].w, a);
                        part[t][r] = a;
                    }
                }
            }
#pragma unroll
            for (int t = 0; t < NT; t++)
#pragma unroll
                for (int r = 0; r < GEMV_R; r++)
                    acc[t][r] = SCALED ? fmaf(part[t][r], sc[u][r], acc[t][r]) : part[t][r];
        }
    }
    gemv_finish<NT>(acc, out, w.rows, r0);
}

template <int FMT, int NT>
__global__ void __launch_bounds__(256) gemv_generic_kernel(float *out, const float *x, sl_wdev w)
{
    const long long r0 = (long long)blockIdx.x * GEMV_R;
    float acc[NT][GEMV_R];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < GEMV_R; r++)
            acc[t][r] = 0.0f;
    for (long long c = threadIdx.x; c < w.cols; c += blockDim.x) {
        float xv[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            xv[t] = x[(long long)t * w.cols + c];
#pragma unroll
        for (int r = 0; r < GEMV_R; r++) {
            long long row = r0 + r < w.rows ? r0 + r : w.rows - 1;
            float v = sl_wval<FMT>(w, row, c);
#pragma unroll
            for (int t = 0; t < NT; t++)
                acc[t][r] = fmaf(v, xv[t], acc[t][r]);
        }
    }
    gemv_finish<NT>(acc, out, w.rows, r0);
}

static int chunk_cols(int fmt)
{
    switch (fmt) {
    case SL_WF_F32: return 4;
    case SL_WF_BF16: return 8;
    case SL_WF_FP8:
    case SL_WF_Q8: return 16;
    default: return 32;
    }
}

// The fast path needs whole, 16-byte aligned chunks in every row, an aligned scale plane and
// 16-byte aligned token rows.
static bool gemv_fast_ok(const sl_wdev &w, const float *x)
{
    int cc = chunk_cols(w.fmt);
    return w.cols % cc == 0 && ((uintptr_t)w.data & 15) == 0 && ((uintptr_t)x & 15) == 0 &&
           w.rb % 16 == 0;
}

// Threads per block: enough that each walks about `cpt` chunks of its rows, so that decoding
// one chunk overlaps the loads of others (one chunk per thread would load everything, then
// compute everything); 32..256.
template <int FMT, int NT>
static void gemv_launch(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, bool fast)
{
    long long units = fast ? w.cols / gemv_chunk<FMT>::cols : w.cols;
    // measured on an H100 (bench/kernels): q4/q8 best at 2 chunks a thread, the rest at 4
    long long cpt = c->gemv_cpt ? c->gemv_cpt : (FMT == SL_WF_Q4 || FMT == SL_WF_Q8) ? 2 : 4;
    long long per = fast ? (units + cpt - 1) / cpt : units;
    int threads = (int)((per + 31) / 32 * 32);
    threads = threads < 32 ? 32 : threads > 256 ? 256 : threads;
    unsigned blocks = (unsigned)((w.rows + GEMV_R - 1) / GEMV_R);
    if (fast)
        gemv_fast_kernel<FMT, NT><<<blocks, threads, 0, c->compute>>>(out, x, w);
    else
        gemv_generic_kernel<FMT, NT><<<blocks, threads, 0, c->compute>>>(out, x, w);
}

template <int FMT>
static void gemv_fmt(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n, bool fast)
{
    switch (n) {
    case 1: gemv_launch<FMT, 1>(c, out, x, w, fast); break;
    case 2: gemv_launch<FMT, 2>(c, out, x, w, fast); break;
    case 3: gemv_launch<FMT, 3>(c, out, x, w, fast); break;
    case 4: gemv_launch<FMT, 4>(c, out, x, w, fast); break;
    case 5: gemv_launch<FMT, 5>(c, out, x, w, fast); break;
    case 6: gemv_launch<FMT, 6>(c, out, x, w, fast); break;
    case 7: gemv_launch<FMT, 7>(c, out, x, w, fast); break;
    default: gemv_launch<FMT, 8>(c, out, x, w, fast); break;
    }
}

void sl_cuda_gemv(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *wt, int n)
{
    if (n < 1 || n > GEMV_MAX_T) {
        SL_CUDA_BAD(c, "gemv: %d tokens (1..%d)", n, GEMV_MAX_T);
        return;
    }
    sl_wdev w = sl_cuda_wdev(wt);
    bool fast = gemv_fast_ok(w, x);
    SL_CUDA_FMT_DISPATCH(wt->fmt, gemv_fmt<FMT>(c, out, x, w, n, fast));
    CUDA_LAUNCHED(c, "matmul (gemv)");
}
