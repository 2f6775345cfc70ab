// The many-token matmul's path on tensor cores (sl_cuda_gemm_tc: bf16/fp8/q8/q4 weights past the
// GEMV's token count): the fused kernel (kernels_tc.cu), the wgmma kernel (kernels_wgmma.cu: sm_90,
// bf16-activation mode) or cuBLAS bf16 GEMMs (cublas.cu), chosen by token count, k and activation
// mode at the crossovers measured on an H100 (tc_use_blas, tc_use_wgmma below; bench/results/
// gemm-h100-2026-11-24.md, gemm-h100-2026-12-06.md), or pinned by sl_cuda_set_gemm_path. A path
// that does not take the call (another GPU, an odd shape, no cuBLAS, no workspace room) leaves it
// to the next: wgmma, cuBLAS, then the fused kernel.
// cuBLAS reads bf16 weights as stored and quantized ones from a bf16 copy made here
// (dequant_bf16_kernel: code * scale rounded to bf16, so in bf16-activation mode only). Bytes
// moved by the copy: the stored weight (1 or 1/2 byte a weight) and its scales read once, 2 bytes
// a weight written and read back by cuBLAS. What limits it is the workspace: a weight whose copy
// and activations do not both fit is copied a block of rows at a time, and every block repeats
// the activation pass.
#include "cuda/internal.cuh"
#include "cuda/tc_frag.cuh"

namespace {

// Weight rows r0 .. r0 + nr -> bf16 (nr, cols) row-major: code * scale in fp32, rounded to
// nearest even (the cuBLAS path of bf16-activation mode, the one place a weight is rounded).
// VEC: cols % 8 == 0 and a 16-byte aligned value plane, so a run of 8 codes is one load and one
// scale (q8/q4 groups and fp8 blocks are multiples of 8 columns).
template <int FMT, bool VEC>
__global__ void dequant_bf16_kernel(sl_wdev w, long long r0, long long nr, uint16_t *out)
{
    const long long runs = (w.cols + 7) / 8, total = nr * runs;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = r0 + e / runs, c = (e % runs) * 8;
        float v[8];
        if (VEC) {
            uint32_t wd[4];
            tc_decode8<FMT>(w.data + r * w.rb + c * tc_fmt<FMT>::RB / TC_BK, wd); // RB: bytes of 64 columns
            float s = FMT == SL_WF_FP8 ? __ldg((const float *)w.scales + (r / 128) * w.ncb + c / 128)
                                       : sl_f16f(__ldg((const unsigned short *)w.scales + r * w.ng + c / 32));
#pragma unroll
            for (int j = 0; j < 4; j++) {
                v[tc_perm(tc_fmt<FMT>::PERM, 2 * j)] = tc_u2f(wd[j] << 16) * s;
                v[tc_perm(tc_fmt<FMT>::PERM, 2 * j + 1)] = tc_u2f(wd[j] & 0xffff0000u) * s;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                v[i] = c + i < w.cols ? sl_wval<FMT>(w, r, c + i) : 0.0f;
        }
        uint16_t *o = out + (r - r0) * w.cols + c;
        if (VEC) {
            uint32_t h[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
                h[j] = *(const uint32_t *)&b;
            }
            *(uint4 *)o = make_uint4(h[0], h[1], h[2], h[3]);
        } else {
            for (int i = 0; i < 8 && c + i < w.cols; i++) {
                __nv_bfloat16 b = __float2bfloat16_rn(v[i]);
                o[i] = *(const uint16_t *)&b;
            }
        }
    }
}

// ---- host side ---------------------------------------------------------------------------------

template <int FMT>
static void dequant_bf16(sl_cuda_ctx *c, const sl_wdev &w, long long r0, long long nr, uint16_t *out)
{
    size_t total = (size_t)nr * ((w.cols + 7) / 8);
    unsigned blocks = sl_cuda_blocks(total, 256), cap = (unsigned)c->sm_count * 16;
    blocks = blocks < cap ? blocks : cap;
    if (w.cols % 8 == 0 && ((uintptr_t)w.data & 15) == 0)
        dequant_bf16_kernel<FMT, true><<<blocks, 256, 0, c->compute>>>(w, r0, nr, out);
    else
        dequant_bf16_kernel<FMT, false><<<blocks, 256, 0, c->compute>>>(w, r0, nr, out);
    CUDA_LAUNCHED(c, "matmul (weights to bf16)");
}

// cuBLAS bf16 GEMMs: on the stored weights for bf16, else on a bf16 copy (code * scale rounded,
// bf16-activation mode only) made in the workspace, a block of rows at a time; activations hi
// (and lo, added with beta = 1) in natural column order. Workspace: activations | weight copy |
// cuBLAS's own scratch at the top. False when cuBLAS is absent or the workspace too small.
static bool tc_blas(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n, bool lo)
{
    if (!sl_cuda_blas_get(c))
        return false;
    const int K = (int)w.cols, kp = (K + 7) / 8 * 8, fmt = w.fmt;
    size_t work = c->work_floats * sizeof(float);
    size_t room = work > (size_t)2 * SL_CUDA_BLAS_WS ? work - SL_CUDA_BLAS_WS : 0;
    // rows per weight copy: all of them when the copy and every token's activations fit, else
    // what half the room holds. (Half alone splits a 28 MiB expert copy, 2048 x 7168, into 2046
    // rows and 2 once the GEMV counters took 64 KiB of the 64 MiB workspace: 4x slower, since each
    // block repeats the activation pass; bench/results/gemm-h100-2026-12-06.md.)
    long long wrows = w.rows;
    size_t xall = (size_t)n * kp * 2 * (lo ? 2 : 1), wall = ((size_t)w.rows * K * 2 + 255) / 256 * 256;
    if (fmt != SL_WF_BF16 && wall > room / 2 && wall + xall > room)
        wrows = (long long)(room / 2 / ((size_t)K * 2));
    size_t wpart = fmt == SL_WF_BF16 ? 0 : ((size_t)wrows * K * 2 + 255) / 256 * 256;
    long long nc = wrows < 1 ? 0 : (long long)((room - wpart) / ((size_t)kp * 2 * (lo ? 2 : 1)));
    if (nc < 1)
        return false;
    uint16_t *wq = (uint16_t *)((char *)c->work + room - wpart);
    for (long long r0 = 0; r0 < w.rows; r0 += wrows) {
        long long nr = w.rows - r0 < wrows ? w.rows - r0 : wrows;
        const void *wb = wq;
        switch (fmt) {
        case SL_WF_BF16: wb = w.data + r0 * K * 2; break;
        case SL_WF_FP8: dequant_bf16<SL_WF_FP8>(c, w, r0, nr, wq); break;
        case SL_WF_Q8: dequant_bf16<SL_WF_Q8>(c, w, r0, nr, wq); break;
        default: dequant_bf16<SL_WF_Q4>(c, w, r0, nr, wq); break;
        }
        for (int t0 = 0; t0 < n; t0 += (int)nc) {
            int m = n - t0 < nc ? n - t0 : (int)nc;
            uint16_t *xh = (uint16_t *)c->work, *xl = lo ? xh + (size_t)m * kp : NULL;
            float *o = out + (size_t)t0 * w.rows + r0;
            sl_cuda_tc_act_bf16(c, x + (size_t)t0 * K, m, K, kp, xh, xl);
            sl_cuda_blas_gemm_bf16(c, (int)nr, m, K, wb, K, xh, kp, o, (int)w.rows, 0.0f);
            if (lo)
                sl_cuda_blas_gemm_bf16(c, (int)nr, m, K, wb, K, xl, kp, o, (int)w.rows, 1.0f);
        }
    }
    return true;
}

// Where cuBLAS beats the fused kernel on the H100 (bench/results/gemm-h100-2026-11-24.md):
//   - bf16 weights, read as stored (exact, both modes): from 64 tokens (0.90 vs 0.58-0.67 of
//     cuBLAS's own time in bf16 mode, 0.55-0.57 vs 0.49-0.60 in fp32 mode);
//   - quantized weights, copied to bf16 (bf16-activation mode only, which then rounds the
//     weights too): from 256 tokens (0.46-0.50 vs 0.33-0.42), and from 128 when k <= 4096, where
//     the fused kernel has few stages per block to amortise its pipeline fill and split-K sum
//     (7168x2048: 0.48-0.54 vs 0.42-0.47; 2048x7168: 0.48-0.51 vs 0.58-0.63 fused).
enum { TC_BLAS_MIN_BF16 = 64, TC_BLAS_MIN_QUANT = 256, TC_BLAS_MIN_QUANT_SHORT_K = 128, TC_SHORT_K = 4096 };

static bool tc_use_blas(const sl_cuda_ctx *c, const sl_wdev &w, int n, bool lo)
{
    bool exact = w.fmt == SL_WF_BF16 || !lo; // quantized weights in fp32 mode: never rounded
    if (c->gemm_path == SL_CUDA_GEMM_CUBLAS)
        return exact;
    if (c->gemm_path != SL_CUDA_GEMM_AUTO || !exact)
        return false;
    if (w.fmt == SL_WF_BF16)
        return n >= TC_BLAS_MIN_BF16;
    return n >= (w.cols <= TC_SHORT_K ? TC_BLAS_MIN_QUANT_SHORT_K : TC_BLAS_MIN_QUANT);
}

// Where the wgmma kernel (sm_90, bf16-activation mode) takes the call: pinned, or automatically
// for quantized weights between the fused kernel and cuBLAS on a bf16 copy (bench/results/gemm-
// h100-2026-12-06.md, ratios to cuBLAS bf16):
//   - cols <= TC_SHORT_K: from 96 tokens (at 64: fused 0.66-0.70, wgmma 0.56-0.60; at 128: wgmma
//     0.49-0.53, copy 0.48-0.54, fused 0.42-0.47) below 256 (at 256: copy 0.46-0.50, wgmma 0.40);
//   - longer k: from 192 (at 128 the fused kernel ties, 0.58-0.64 vs 0.58-0.66, and keeps the
//     weights exact; at 256 wgmma 0.52-0.54, fused 0.39-0.42) below 512 (at 1024 the copy 0.56-0.58,
//     wgmma 0.34-0.36).
enum { TC_WGMMA_MIN_SHORT_K = 96, TC_WGMMA_MAX_SHORT_K = 256, TC_WGMMA_MIN = 192, TC_WGMMA_MAX = 512 };

static bool tc_use_wgmma(const sl_cuda_ctx *c, const sl_wdev &w, int n)
{
    if (!c->act_bf16)
        return false;
    if (c->gemm_path == SL_CUDA_GEMM_WGMMA)
        return true;
    if (c->gemm_path != SL_CUDA_GEMM_AUTO || w.fmt == SL_WF_BF16)
        return false;
    if (w.cols <= TC_SHORT_K)
        return n >= TC_WGMMA_MIN_SHORT_K && n < TC_WGMMA_MAX_SHORT_K;
    return n >= TC_WGMMA_MIN && n < TC_WGMMA_MAX;
}

} // namespace

bool sl_cuda_gemm_tc(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *wt, int n)
{
    if (wt->fmt == SL_WF_F32 || c->gemm_path == SL_CUDA_GEMM_SIMT)
        return false;
    sl_wdev w = sl_cuda_wdev(wt);
    bool lo = !c->act_bf16;
    if (tc_use_wgmma(c, w, n) && sl_cuda_gemm_wgmma(c, out, x, wt, n))
        return true;
    if (tc_use_blas(c, w, n, lo) && tc_blas(c, out, x, w, n, lo))
        return true;
    return sl_cuda_gemm_fused(c, out, x, wt, n);
}
