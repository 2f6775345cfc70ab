// cuda/ private: the device side of the one-token 4-rows-a-block GEMV kernel (f32, bf16) and the
// block sums it shares with the generic kernel, as bodies that kernels_gemv.cu (one matrix a
// launch) wraps in kernels (its token-row gather, xrows, is kept for a caller that gathers). The split kernel
// and what both need (chunk decoding, dependent launch, host helpers) are gemv.cuh's.
#ifndef SL_CUDA_GEMV_ROWS_CUH
#define SL_CUDA_GEMV_ROWS_CUH

#include "cuda/gemv.cuh"

// ---- the generic and 4-row kernels' block sums --------------------------------------------------

template <int NT>
__device__ __forceinline__ void gemv_generic_finish(float (&acc)[NT][4], float *out, int n,
                                                    long long rows, long long r0)
{
    __shared__ float red[GEMV_WARPS][NT * 4];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float v = sl_warp_sum(acc[t][r]);
            if (lane == 0)
                red[warp][t * 4 + r] = v;
        }
    __syncthreads();
    for (int e = threadIdx.x; e < NT * 4; e += blockDim.x) { // a block may have 32 threads
        int t = e / 4, r = e % 4;
        float s = 0.0f;
        for (int k = 0; k < nw; k++)
            s += red[k][e];
        if (t < n && r0 + r < rows)
            out[(long long)t * rows + r0 + r] = s;
    }
}

// ---- one token, 4 rows a block (f32, bf16; fp8 measured slower than the split kernel) ----------
// The scale that applies to chunk ch of row `row` (1 for unscaled formats).
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

// Each thread walks the 16-byte chunks t, t + blockDim, ... of the block's 4 rows, two chunks a
// row in flight (8 loads); x comes straight from L1 (4 rows share each load), the block sums its
// threads' dots at the end. Many small blocks (2048 rows: 512) start loading at once and finish
// close together, which is what a 7-30 MB matrix needs at one token. With more tokens the x
// loads (shared by 4 rows only) dominate, and q8/q4's scales and wide chunks make them too
// scattered even at one token (measured: q8 0.49 here, 0.60-0.73 split), so those take the
// split kernel above.
// The block's rows are r0 .. r0+3; x is token row *xrow of x when xrow is not NULL.
template <int FMT>
__device__ __forceinline__ void gemv_rows_body(float *out, const float *x, const int32_t *xrow,
                                               const sl_wdev &w, long long r0)
{
    constexpr int C = gemv_chunk<FMT>::cols, U = 2;
    constexpr bool SCALED = FMT == SL_WF_FP8 || FMT == SL_WF_Q8; // (q8 works, but is slower here)
    const long long nchunk = w.cols / C;
    long long rowof[4];
#pragma unroll
    for (int r = 0; r < 4; r++) // rows past the end re-read the last row; not written
        rowof[r] = r0 + r < w.rows ? r0 + r : w.rows - 1;
    uint4 raw[U][4];
    float sc[U][4];
    auto load = [&](long long ch0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = ch0 + (long long)u * blockDim.x;
            const bool ok = ch < nchunk;
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const uint4 *p = (const uint4 *)(w.data + rowof[r] * w.rb) + ch;
                raw[u][r] = ok ? __ldg(p) : make_uint4(0, 0, 0, 0);
                sc[u][r] = ok ? chunk_scale<FMT>(w, rowof[r], ch) : 0.0f;
            }
        }
    };
    float acc[1][4] = {{0.0f, 0.0f, 0.0f, 0.0f}};
    long long ch0 = threadIdx.x;
    load(ch0); // weights before the previous kernel has finished: they are not its output
    gemv_wait_previous();
    gemv_allow_next();
    if (xrow)
        x += (long long)__ldcg(xrow) * w.cols;
    for (; ch0 < nchunk; ch0 += U * blockDim.x) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long long ch = ch0 + (long long)u * blockDim.x;
            if (ch >= nchunk)
                break;
            float part[4];
#pragma unroll
            for (int r = 0; r < 4; r++)
                part[r] = SCALED ? 0.0f : acc[0][r];
#pragma unroll
            for (int g = 0; g < C / 4; g++) {
                // a coherent load (not the read-only path): the previous kernel wrote x while
                // this one was already running
                const float4 xv = __ldca((const float4 *)(x + ch * C) + g);
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    float v[4];
                    decode4<FMT>(raw[u][r], g, v);
                    float a = part[r];
                    a = fmaf(v[0], xv.x, a);
                    a = fmaf(v[1], xv.y, a);
                    a = fmaf(v[2], xv.z, a);
                    a = fmaf(v[3], xv.w, a);
                    part[r] = a;
                }
            }
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[0][r] = SCALED ? fmaf(part[r], sc[u][r], acc[0][r]) : part[r];
        }
        if (ch0 + U * blockDim.x < nchunk)
            load(ch0 + U * blockDim.x);
    }
    gemv_generic_finish<1>(acc, out, 1, w.rows, r0);
}

#endif
