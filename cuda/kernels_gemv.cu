// Few-token matrix products (1 <= n <= 16; the matmul op sends up to 12 here): out (n, rows) =
// x (n, cols) . W^T with W decoded in registers. Every weight byte is read once per call, so at
// n = 1 the bound is bytes(W) / DRAM bandwidth (7168x2048 at q4: 8.3 MB with scales, ~2.7 us on
// an H100); each weight costs n fp32 FMAs plus its decode, so from a few tokens on the FMA units
// bind instead (2048x7168 at 8 tokens: 235 MFLOP, ~4 us at the H100's fp32 rate).
//
// Split kernel (fp8, q8 and q4 at one token, every format from two; rows of whole 16-byte chunks,
// 16-byte aligned planes and token rows): a block of 8 warps owns 32 consecutive rows and one
// column slice ("split") of whole 16-byte chunks; a warp owns 4 of the rows, its lanes walk the
// slice's chunks (lane l: chunks l, l+32, ...), so a warp reads 4 x 512 contiguous bytes per step,
// with the next step's loads in flight during the decode.
//   - x: the block first copies its slice of the n token rows into shared memory, laid out
//     [token][column-in-chunk / 4][chunk] so that a warp's 16-byte reads at one column offset
//     are consecutive (no bank conflicts); each x value read serves the warp's 4 rows. fp8's
//     128x128 block scale and q4's nibble weights (below) are folded into this copy.
//   - decode: 2-3 instructions a weight (f32 0, bf16 1, fp8 1.5 with the sm_89+ e4m3x2 -> f16x2
//     conversion, q8 2 with a byte permute into an fp32 mantissa, q4 2.25 with a mask into one);
//     q8/q4 scales multiply a chunk's partial sum once (n > 4: each weight, to save registers).
//   - splits: columns are cut into slices when there are too few row tiles to give each SM
//     `fill` blocks (2048 rows = 64 tiles), or when n tokens of x would not fit in 96 KiB of
//     shared memory. Each split writes partial sums to the backend's workspace; the last block of
//     a row tile to arrive (a self-resetting counter) adds them in split order, so results never
//     depend on timing.
//   - one token: `wide` (the default) takes 8 rows a warp (64-row blocks); wide=0 is 4 rows a
//     warp with one sweep of loads in flight, `deep` 4 rows with two sweeps in flight (a ring of
//     3 register sets). wide and deep put more weight bytes in flight per SM (2 blocks of 8 warps
//     at 103-128 registers: one sweep of 4 rows is 32 KiB an SM, about what 3 TB/s needs over a
//     ~1 us DRAM latency); wide also halves x staging per weight. Measured (H100, expert group):
//     wide 0.775 / 0.509 of copy for q8 / q4, wide=0 0.745 / 0.480, deep 0.756 / 0.478. So q4
//     is not bound by bytes in flight (deep gains nothing) and little by x staging (wide halves
//     it for +3%).
// Tensor-core kernel (q4 at one token, rows of whole 128-column steps; c->gemv.tc):
//   gemv_tc.cuh. The same split, staging and launch as the split kernel, 16 rows a warp, slices
//   of 4-chunk steps; a q4 weight pair costs one mask-or (one lop3) and one bf16 subtract, the
//   products and sums go to mma.m16n8k16 with x as bf16 hi + lo (the split kernel's precision).
//   ncu put the q4 group at the issue rate, not the DRAM (bench/results/gemv-h100-2026-12-06-
//   run3.md): ~3.1 instructions a weight until ptxas's two LOP3s per mask-or became one and the
//   B masking a zero word, then 0.534 -> 0.598 of copy in an expert group. Single matrices take
//   its ring form (loads by cp.async into shared memory, one block an SM): 0.37 -> 0.45 on
//   2048x7168, where a launch's ramp and tail are most of the time.
// Rows kernel (f32, bf16 at one token, single matrices): 4 rows a block, x straight from L1;
//   see below. (fp8 went to the split kernel at 8 rows a warp: 0.548 -> 0.641 on 2048x7168,
//   0.511 -> 0.684 on 7168x2048; f32/bf16 stay: 0.946 / 0.874 here against 0.909 / 0.767 there.)
// Both are launched with programmatic dependent launch (sm_90+): a kernel's blocks start while
// the previous kernel on the stream ends and load their first weights then; they wait for it
// (griddepcontrol.wait) only before reading x or writing anything. So a weight must not be
// written by the kernel launched just before the GEMV on the same stream (uploads are copies,
// ordered by events: fine).
// Generic kernel (any shape, any alignment): 4 rows a block, one element at a time.
// Measured (bench/kernels, H100 SXM, graph replay, 64 expert copies, over the 3.0 TB/s copy
// rate, gate 2048x7168 / down 7168x2048), one token: f32 0.96/0.94, bf16 0.88/0.83,
// fp8 0.64/0.68, q8 0.63/0.67, q4 0.45/0.43 (bench/results/gemv-h100-2026-12-06-run3.md);
// 8 tokens: 0.12 (q4) .. 0.72 (f32), 2x the GEMM (gemv-h100-2026-11-24.md). What is left on
// single matrices is a fixed ~2-3 us per launch (a new grid, the first loads' latency, the
// block sums), a large share of a 7-15 MB matrix: an expert group's 24 matrices in 4 launches
// reach 0.79-0.98 for every format but q4 (0.60, issue-bound).
#include "cuda/gemv_rows.cuh"
#include "cuda/gemv_tc.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- kernels (bodies in gemv.cuh) -------------------------------------------------------------

template <int FMT, int NT, int R, int S>
__global__ void __launch_bounds__(GEMV_THREADS, gemv_min_blocks(NT, R, S)) gemv_fast_kernel(gemv_args a)
{
    if constexpr (R == GEMV_TC_R && S > 2)
        gemv_tc_ring_body<S>(a, blockIdx.x);
    else if constexpr (R == GEMV_TC_R)
        gemv_tc_body(a, blockIdx.x);
    else
        gemv_fast_body<FMT, NT, R, S>(a, blockIdx.x);
}

// Generic kernel: any shape and alignment, 4 rows a block, threads along the row.
template <int FMT, int NT>
__global__ void __launch_bounds__(GEMV_THREADS) gemv_generic_kernel(float *out, const float *x,
                                                                    sl_wdev w, int n)
{
    const long long r0 = (long long)blockIdx.x * 4;
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int r = 0; r < 4; r++)
            acc[t][r] = 0.0f;
    for (long long c = threadIdx.x; c < w.cols; c += blockDim.x) {
        float xv[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            xv[t] = t < n ? x[(long long)t * w.cols + c] : 0.0f;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            long long row = r0 + r < w.rows ? r0 + r : w.rows - 1;
            float v = sl_wval<FMT>(w, row, c);
#pragma unroll
            for (int t = 0; t < NT; t++)
                acc[t][r] = fmaf(v, xv[t], acc[t][r]);
        }
    }
    gemv_generic_finish<NT>(acc, out, n, w.rows, r0);
}

// Rows kernel (f32, bf16 at one token): gemv_rows.cuh's gemv_rows_body, 4 rows a block.
template <int FMT>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_rows_kernel(float *out, const float *x, sl_wdev w)
{
    gemv_rows_body<FMT>(out, x, NULL, w, (long long)blockIdx.x * 4);
}

// ---- host side ---------------------------------------------------------------------------------

template <int FMT, int NT>
static void gemv_generic_launch(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n)
{
    int threads = (int)((w.cols + 31) / 32 * 32);
    threads = threads > GEMV_THREADS ? GEMV_THREADS : threads;
    unsigned blocks = (unsigned)((w.rows + 3) / 4);
    gemv_generic_kernel<FMT, NT><<<blocks, threads, 0, c->compute>>>(out, x, w, n);
}

// One token, 4 rows a block: threads enough that each walks about 4 chunks of its rows, so that
// decoding one chunk overlaps the loads of others; 32..256 (measured on an H100).
template <int FMT>
static void gemv_rows_launch(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w)
{
    const long long chunks = w.cols / gemv_chunk<FMT>::cols, cpt = 4;
    int threads = (int)(((chunks + cpt - 1) / cpt + 31) / 32 * 32);
    threads = threads < 32 ? 32 : threads > GEMV_THREADS ? GEMV_THREADS : threads;
    gemv_launch_ex(c, gemv_rows_kernel<FMT>, dim3((unsigned)((w.rows + 3) / 4)), dim3(threads), 0,
                   out, x, w);
}

// Columns cut as gemv_split_cps says; rows go in launches of at most as many row tiles as there
// are counters and workspace for.
template <int FMT, int NT, int R, int S>
static void gemv_fast_launch(sl_cuda_ctx *c, float *out, const float *x, const sl_wdev &w, int n)
{
    constexpr int C = gemv_chunk<FMT>::cols, ROWS = 8 * R;
    const long long nchunk = w.cols / C;
    const long long cps = gemv_split_cps(c, C, NT, nchunk, (w.rows + ROWS - 1) / ROWS,
                                         R == GEMV_TC_R ? 4 : 32,
                                         R == GEMV_TC_R && S > 2 ? GEMV_TC_RING_FILL : 0);
    const long long nsplit = (nchunk + cps - 1) / cps;

    gemv_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.x = x, a.w = w, a.n = n;
    a.cps = (int)cps;
    a.chp = (int)(cps | 1);
    const int pf_kb = c->gemv.prefetch_kb;
    a.pf_row = pf_kb * 1024 / ROWS;
    long long per_launch = w.rows;
    if (nsplit > 1) {
        long long by_count = (long long)SL_CUDA_GEMV_COUNTERS * ROWS;
        long long by_work = (long long)(c->work_floats / (size_t)(nsplit * NT));
        per_launch = per_launch < by_count ? per_launch : by_count;
        per_launch = per_launch < by_work ? per_launch : by_work;
        if (c->gemv.launch_rows > 0 && per_launch > c->gemv.launch_rows)
            per_launch = c->gemv.launch_rows;
        per_launch = per_launch >= w.rows ? w.rows : per_launch / 128 * 128;
        if (per_launch < 128) { // no room to split (a tiny workspace): the slow, exact path
            gemv_generic_launch<FMT, NT>(c, out, x, w, n);
            return;
        }
        a.part = c->work;
        a.count = c->gemv_count;
    }
    const size_t smem = (size_t)NT * (C / 4) * a.chp * sizeof(float4) +
                        (R == GEMV_TC_R ? gemv_tc_ring_bytes(S) : 0);
    for (long long r0 = 0; r0 < w.rows; r0 += per_launch) {
        a.row0 = r0;
        a.part_rows = w.rows - r0 < per_launch ? w.rows - r0 : per_launch;
        dim3 grid((unsigned)((a.part_rows + ROWS - 1) / ROWS), (unsigned)nsplit);
        gemv_launch_ex(c, gemv_fast_kernel<FMT, NT, R, S>, grid, dim3(GEMV_THREADS), smem, a);
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
    bool rows = fast && n == 1 && wt->fmt <= SL_WF_BF16 && c->gemv.rows_kernel;
    SL_CUDA_FMT_DISPATCH(wt->fmt, GEMV_NT_DISPATCH(n, {
        // (if constexpr: the one-token shapes are compiled for one token only, the 4-row kernel
        // for the formats that take it)
        if constexpr (FMT <= SL_WF_BF16)
            if (rows) {
                gemv_rows_launch<FMT>(c, out, x, w);
                break;
            }
        if (!fast)
            gemv_generic_launch<FMT, NT>(c, out, x, w, n);
        else if constexpr (NT == 1) {
            if constexpr (FMT == SL_WF_Q4)
                if (c->gemv.tc && gemv_tc_ok(w)) {
                    GEMV_TC_RING_DISPATCH(c->gemv.ring < 0 ? 6 : c->gemv.ring,
                                          gemv_fast_launch<FMT, NT, GEMV_TC_R, S>(c, out, x, w, n));
                    break;
                }
            if (c->gemv.wide)
                gemv_fast_launch<FMT, NT, GEMV_R1, 2>(c, out, x, w, n);
            else if (c->gemv.deep)
                gemv_fast_launch<FMT, NT, GEMV_R, 3>(c, out, x, w, n);
            else
                gemv_fast_launch<FMT, NT, GEMV_R, 2>(c, out, x, w, n);
        } else
            gemv_fast_launch<FMT, NT, GEMV_R, 2>(c, out, x, w, n);
    }));
    CUDA_LAUNCHED(c, "matmul (gemv)");
}

// Defaults measured on an H100 (bench/results/gemv-h100-2026-11-24.md); SL_CUDA_GEMV or
// sl_cuda_gemv_tune override them for benchmarks, e.g. "max=8,pdl=0,pf=0,fill=2,small=0,wide=1".
static void gemv_cfg_parse(sl_cuda_gemv_cfg *g, const char *s, bool pdl_ok)
{
    while (s && *s) {
        char key[16];
        int val;
        if (sscanf(s, "%15[a-z]=%d", key, &val) == 2) {
            if (!strcmp(key, "max")) {
                g->max_tokens = val < 1 ? 1 : val > GEMV_MAX_T ? GEMV_MAX_T : val;
                for (int f = 0; f < SL_WF_COUNT; f++)
                    g->max_by_fmt[f] = g->max_tokens;
            }
            else if (!strcmp(key, "pdl"))
                g->pdl = pdl_ok && val != 0; // only where the device has it
            else if (!strcmp(key, "pf"))
                g->prefetch_kb = val < 0 ? 0 : val > 1024 ? 1024 : val;
            else if (!strcmp(key, "fill"))
                g->fill = val < 1 ? 1 : val > 16 ? 16 : val;
            else if (!strcmp(key, "rows"))
                g->launch_rows = val < 0 ? 0 : val;
            else if (!strcmp(key, "small"))
                g->rows_kernel = val != 0;
            else if (!strcmp(key, "wide"))
                g->wide = val != 0;
            else if (!strcmp(key, "deep"))
                g->deep = val != 0;
            else if (!strcmp(key, "tc"))
                g->tc = val != 0;
            else if (!strcmp(key, "ring"))
                g->ring = val < 0 ? -1 : val == 0 || val == 4 ? val : 6;
        }
        s = strchr(s, ',');
        if (s)
            s++;
    }
}

template <int FMT> static cudaError_t gemv_allow_smem()
{
    cudaError_t err = cudaSuccess;
    for (int n = 1; n <= GEMV_MAX_T && err == cudaSuccess; n++)
        GEMV_NT_DISPATCH(n, err = cudaFuncSetAttribute(gemv_fast_kernel<FMT, NT, GEMV_R, 2>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      GEMV_SMEM));
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(gemv_fast_kernel<FMT, 1, GEMV_R1, 2>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_SMEM);
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(gemv_fast_kernel<FMT, 1, GEMV_R, 3>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_SMEM);
    if constexpr (FMT == SL_WF_Q4)
        for (int ring : {0, 4, 6})
            if (err == cudaSuccess)
                GEMV_TC_RING_DISPATCH(ring, err = cudaFuncSetAttribute(
                                                gemv_fast_kernel<FMT, 1, GEMV_TC_R, S>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                GEMV_SMEM + (int)gemv_tc_ring_bytes(S)));
    return err;
}

cudaError_t sl_cuda_gemv_init(sl_cuda_ctx *c)
{
    int major = 0;
    cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device);
    if (err != cudaSuccess)
        return err;
    c->gemv.max_tokens = 12;
    // the GEMV/GEMM crossover per format against the tensor-core GEMM, H100 graph replay at
    // expert shapes (bench/results/kernels-h100-2026-11-24-session2.md): f32 weights stay on the
    // GEMV to 12 (their GEMM is fp32 FMA); bf16 even at 6-8; fp8/q8/q4 even at 4-6
    const int by_fmt[SL_WF_COUNT] = {12, 6, 4, 4, 4};
    for (int f = 0; f < SL_WF_COUNT; f++)
        c->gemv.max_by_fmt[f] = by_fmt[f];
    c->gemv.pdl = major >= 9;
    c->gemv.prefetch_kb = 0; // q4 had 32: its expert group 0.541 -> 0.575 of copy without (H100)
    c->gemv.fill = 2;
    c->gemv.launch_rows = 0;
    c->gemv.rows_kernel = true;
    c->gemv.wide = true; // measured ahead of R = 4 and of deep (gemv.cuh's GEMV_R1)
    c->gemv.deep = false;
    c->gemv.tc = true; // q4 expert group at one token 0.504 -> 0.532 of copy (H100)
    c->gemv.ring = -1; // single matrices 6, expert groups 0 (internal.cuh)
    gemv_cfg_parse(&c->gemv, getenv("SL_CUDA_GEMV"), major >= 9);
    err = cudaMemsetAsync(c->gemv_count, 0, SL_CUDA_GEMV_COUNTERS * sizeof(unsigned), c->compute);
    for (int fmt = 0; fmt < SL_WF_COUNT && err == cudaSuccess; fmt++)
        SL_CUDA_FMT_DISPATCH(fmt, err = gemv_allow_smem<FMT>());
    if (err == cudaSuccess)
        err = sl_cuda_expert_group_init();
    return err;
}

extern "C" int sl_cuda_gemv_tune(sl_backend *b, const char *spec)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return SL_E_DEVICE;
    int major = 0;
    CUDA_CHECK_RET(c, cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device),
                   SL_E_DEVICE);
    gemv_cfg_parse(&c->gemv, spec, major >= 9);
    return 0;
}

extern "C" void sl_cuda_gemv_tokens(sl_backend *b, int out[5])
{
    static_assert(SL_WF_COUNT == 5, "cuda.h's sl_cuda_gemv_tokens takes 5 formats");
    const sl_cuda_ctx *c = sl_cuda_ctx_of(b);
    for (int f = 0; f < SL_WF_COUNT; f++)
        out[f] = c->gemv.max_by_fmt[f];
}
