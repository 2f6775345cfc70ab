// matmul: out (n, rows) = x (n, cols) . W^T for every weight format. Few tokens are memory-bound
// and take the fused dequantize-GEMV (kernels_gemv.cu: each weight byte read once, all n dot
// products from the same registers); more tokens take the tiled GEMM that decodes weight tiles
// into shared memory (kernels_gemm.cu, on tensor cores for bf16/fp8/q8/q4: kernels_tc.cu). The
// crossover, per format (c->gemv.max_by_fmt), is where the GEMV's n fp32 FMAs per weight stop
// beating the tensor-core tiles: on an H100 at expert shapes 4 tokens for fp8/q8/q4, 6 for bf16,
// 12 for f32 weights, whose GEMM is fp32 FMA (bench/results/kernels-h100-2026-11-24-session2.md).
#include "cuda/internal.cuh"

void sl_cuda_matmul(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n)
{
    if (n == 0)
        return;
    if (n < 0 || !w || w->rows <= 0 || w->cols <= 0 || w->fmt < 0 || w->fmt >= SL_WF_COUNT ||
        !w->data) {
        SL_CUDA_BAD(c, "matmul: bad weight (%d x %d, format %d, data %p) or token count %d",
                    w ? w->rows : -1, w ? w->cols : -1, w ? w->fmt : -1, w ? w->data : NULL, n);
        return;
    }
    if (n <= c->gemv.max_by_fmt[w->fmt])
        sl_cuda_gemv(c, out, x, w, n);
    else
        sl_cuda_gemm_weight(c, out, x, w, n);
}
