// Tiled fp32 GEMM for many tokens, C(b, i, j) = sum_k A(b, i, k) B(b, j, k), with the operands
// decoded into shared memory tile by tile:
//   - matmul (more tokens than the GEMV takes) on f32 weights, or on any format when pinned
//     (sl_cuda_set_gemm_path): A = the token rows x, B = the weight (decoded 8 columns per load
//     where cols % 8 == 0, else one element at a time); bf16/fp8/q8/q4 weights otherwise take
//     the tensor cores (kernels_tc_path.cu);
//   - MLA attention: A and B strided fp32 views of q, the latent cache, scores, kv_b (see
//     sl_gemm_operand), batched over heads.
// A block computes a BM x BN tile of C with (BM/TM) x (BN/TN) threads, TM x TN outputs each,
// stepping k by BK: bytes moved per step are (BM + BN) * BK operands into shared memory for
// BM * BN * BK FMAs, so with BM = BN = 128 it is bound by fp32 FMA throughput, not memory.
// Few tiles (small M or N, long K) are split along k into `splits` blocks whose partial sums go to
// the backend's workspace and are added in split order by a second kernel: results do not depend
// on timing (no atomics).
// Measured (bench/kernels, H100 SXM, expert 2048x7168): 8-11 TFLOP/s at 16 tokens (1.2-1.6x
// cuBLAS fp32 SGEMM on the widened weight), 15-21 at 128, 17-22 at 1024 (0.4x SGEMM; 0.03x
// cuBLAS bf16; the tensor-core path of kernels_tc.cu keeps fp32 accuracy with two bf16 products).
#include "cuda/internal.cuh"

template <int BM_, int BN_, int BK_, int TM_, int TN_> struct gemm_cfg {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
    static constexpr int NTY = BM / TM, NTX = BN / TN, THREADS = NTX * NTY;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "float4 fragments");
};
typedef gemm_cfg<4, 256, 16, 4, 4> cfg_tiny;     // M <= 4 (per-head decode products): 64 threads
typedef gemm_cfg<16, 128, 32, 4, 4> cfg_small;   // M <= 16: 128 threads
typedef gemm_cfg<64, 128, 32, 8, 8> cfg_medium;  // M <= 64: 128 threads
typedef gemm_cfg<128, 128, 16, 8, 8> cfg_large;  // 256 threads

// ---- tile loaders: fill sm[k][r] (k < BK, r < TILE) with operand rows r0.., columns k0.., zero
// outside [rows) x [kend) --------------------------------------------------------------------

// Strided fp32 (sl_gemm_operand). Threads walk the operand's unit-stride direction so global
// reads coalesce: along r when rfast, else along k; 4 elements per 16-byte load when `vec` (the
// host checked alignment, strides and bounds: see strided()).
struct ld_strided {
    sl_gemm_operand o;
    int K;
    bool rfast, vec;

    __device__ __forceinline__ const float *at(int b, int r, int k) const
    {
        return k < o.K1 ? o.p1 + b * o.sb1 + r * o.sr1 + k * o.sk1
                        : o.p2 + b * o.sb2 + r * o.sr2 + (k - o.K1) * o.sk2;
    }

    __device__ __forceinline__ float get(int b, int r, int k, int kend) const
    {
        return r < o.rows && k < kend ? *at(b, r, k) : 0.0f;
    }

    // One task after another (for tiles with few tasks a thread).
    template <int TILE, int BK, int NT>
    __device__ __forceinline__ void load_simple(float (*sm)[TILE + 4], int b, int r0, int k0,
                                                int kend) const
    {
        if (vec && rfast) {
            for (int e = threadIdx.x; e < TILE * BK / 4; e += NT) {
                int r = 4 * (e % (TILE / 4)), k = e / (TILE / 4);
                int gr = r0 + r, gk = k0 + k;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (gk < kend && gr + 3 < o.rows)
                    v = __ldg((const float4 *)at(b, gr, gk));
                else if (gk < kend)
                    v = make_float4(get(b, gr, gk, kend), get(b, gr + 1, gk, kend),
                                    get(b, gr + 2, gk, kend), get(b, gr + 3, gk, kend));
                *(float4 *)&sm[k][r] = v;
            }
        } else if (vec) {
            for (int e = threadIdx.x; e < TILE * BK / 4; e += NT) {
                int k = 4 * (e % (BK / 4)), r = e / (BK / 4);
                int gr = r0 + r, gk = k0 + k;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (gk < kend && gr < o.rows)
                    v = __ldg((const float4 *)at(b, gr, gk));
                sm[k][r] = v.x, sm[k + 1][r] = v.y, sm[k + 2][r] = v.z, sm[k + 3][r] = v.w;
            }
        } else {
            for (int e = threadIdx.x; e < TILE * BK; e += NT) {
                int r = rfast ? e % TILE : e / BK, k = rfast ? e / TILE : e % BK;
                sm[k][r] = get(b, r0 + r, k0 + k, kend);
            }
        }
    }

    // Loaders issue a batch of a thread's loads (compile-time counts, unrolled) into registers
    // before storing any of them: with a plain run-time loop each load would wait for the previous
    // one's store, one memory latency per element. Batches bound the registers this takes.
    template <int TILE, int BK, int NT>
    __device__ __forceinline__ void load(float (*sm)[TILE + 4], int b, int r0, int k0, int kend) const
    {
        if constexpr (NT >= 256) { // the large tile: 2 tasks a thread; batching only adds spills
            load_simple<TILE, BK, NT>(sm, b, r0, k0, kend);
            return;
        }
        constexpr int V = TILE * BK / 4, VI = (V + NT - 1) / NT, VB = VI < 4 ? VI : 4; // float4 tasks
        constexpr int S = TILE * BK, SI = (S + NT - 1) / NT, SB = SI < 8 ? SI : 8;     // scalar tasks
        if (vec && rfast) { // 4 consecutive rows at one k: one float4 in, one float4 out
#pragma unroll 1 // batch by batch: unrolled, the per-task addresses would all be kept live
            for (int i0 = 0; i0 < VI; i0 += VB) {
                float4 v[VB];
#pragma unroll
                for (int it = 0; it < VB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    int r = 4 * (e % (TILE / 4)), k = e / (TILE / 4);
                    int gr = r0 + r, gk = k0 + k;
                    v[it] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (i0 + it < VI && e < V && gk < kend && gr + 3 < o.rows)
                        v[it] = __ldg((const float4 *)at(b, gr, gk));
                    else if (i0 + it < VI && e < V && gk < kend)
                        v[it] = make_float4(get(b, gr, gk, kend), get(b, gr + 1, gk, kend),
                                            get(b, gr + 2, gk, kend), get(b, gr + 3, gk, kend));
                }
#pragma unroll
                for (int it = 0; it < VB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    if (i0 + it < VI && e < V)
                        *(float4 *)&sm[e / (TILE / 4)][4 * (e % (TILE / 4))] = v[it];
                }
            }
        } else if (vec) { // 4 consecutive k of one row (kend, K1 multiples of 4)
#pragma unroll 1 // batch by batch: unrolled, the per-task addresses would all be kept live
            for (int i0 = 0; i0 < VI; i0 += VB) {
                float4 v[VB];
#pragma unroll
                for (int it = 0; it < VB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    int k = 4 * (e % (BK / 4)), r = e / (BK / 4);
                    int gr = r0 + r, gk = k0 + k;
                    v[it] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (i0 + it < VI && e < V && gk < kend && gr < o.rows)
                        v[it] = __ldg((const float4 *)at(b, gr, gk));
                }
#pragma unroll
                for (int it = 0; it < VB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    int k = 4 * (e % (BK / 4)), r = e / (BK / 4);
                    if (i0 + it < VI && e < V) {
                        sm[k][r] = v[it].x, sm[k + 1][r] = v[it].y;
                        sm[k + 2][r] = v[it].z, sm[k + 3][r] = v[it].w;
                    }
                }
            }
        } else {
#pragma unroll 1 // batch by batch: unrolled, the per-task addresses would all be kept live
            for (int i0 = 0; i0 < SI; i0 += SB) {
                float v[SB];
#pragma unroll
                for (int it = 0; it < SB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    int r = rfast ? e % TILE : e / BK, k = rfast ? e / TILE : e % BK;
                    v[it] = i0 + it < SI && e < S ? get(b, r0 + r, k0 + k, kend) : 0.0f;
                }
#pragma unroll
                for (int it = 0; it < SB; it++) {
                    int e = threadIdx.x + (i0 + it) * NT;
                    int r = rfast ? e % TILE : e / BK, k = rfast ? e / TILE : e % BK;
                    if (i0 + it < SI && e < S)
                        sm[k][r] = v[it];
                }
            }
        }
    }
};

// A weight, one element at a time (any shape). Threads walk k (the weight's unit stride).
template <int FMT> struct ld_welem {
    sl_wdev w;

    template <int TILE, int BK, int NT>
    __device__ __forceinline__ void load(float (*sm)[TILE + 4], int, int r0, int k0, int kend) const
    {
        constexpr int S = TILE * BK, SI = (S + NT - 1) / NT, SB = SI < 8 ? SI : 8; // as ld_strided
#pragma unroll 1
        for (int i0 = 0; i0 < SI; i0 += SB) {
            float v[SB];
#pragma unroll
            for (int it = 0; it < SB; it++) {
                int e = threadIdx.x + (i0 + it) * NT;
                int k = e % BK, r = e / BK;
                long long gr = (long long)r0 + r;
                int gk = k0 + k;
                v[it] = i0 + it < SI && e < S && gr < w.rows && gk < kend ? sl_wval<FMT>(w, gr, gk) : 0.0f;
            }
#pragma unroll
            for (int it = 0; it < SB; it++) {
                int e = threadIdx.x + (i0 + it) * NT;
                if (i0 + it < SI && e < S)
                    sm[e % BK][e / BK] = v[it];
            }
        }
    }
};

// A weight with cols % 8 == 0 and a 16-byte aligned value plane: 8 consecutive columns of a row
// per load (32 bytes f32, 16 bf16, 8 fp8/q8, 4 q4) with one scale. Threads walk rows so the 8
// shared-memory stores of a warp hit 32 different banks.
template <int FMT> struct ld_wvec8 {
    sl_wdev w;

    __device__ __forceinline__ void decode8(long long r, int k, float v[8]) const
    {
        if (FMT == SL_WF_F32) {
            const float4 *p = (const float4 *)(w.data + (r * w.cols + k) * 4);
            float4 a = __ldg(p), b = __ldg(p + 1);
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
            v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        } else if (FMT == SL_WF_BF16) {
            uint4 a = __ldg((const uint4 *)(w.data + (r * w.cols + k) * 2));
            uint32_t u[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                v[2 * q] = __uint_as_float(u[q] << 16);
                v[2 * q + 1] = __uint_as_float(u[q] & 0xffff0000u);
            }
        } else if (FMT == SL_WF_FP8) {
            uint2 a = __ldg((const uint2 *)(w.data + r * w.cols + k));
            float s = __ldg((const float *)w.scales + (r / 128) * w.ncb + k / 128);
            float2 p0 = sl_fp8x2f(a.x), p1 = sl_fp8x2f(a.x >> 16), p2 = sl_fp8x2f(a.y),
                   p3 = sl_fp8x2f(a.y >> 16);
            v[0] = p0.x * s, v[1] = p0.y * s, v[2] = p1.x * s, v[3] = p1.y * s;
            v[4] = p2.x * s, v[5] = p2.y * s, v[6] = p3.x * s, v[7] = p3.y * s;
        } else if (FMT == SL_WF_Q8) {
            uint2 a = __ldg((const uint2 *)(w.data + r * w.cols + k));
            float s = sl_f16f(__ldg((const unsigned short *)w.scales + r * w.ng + k / 32));
            uint32_t lo = a.x ^ 0x80808080u, hi = a.y ^ 0x80808080u;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                v[q] = sl_i8f(lo, q) * s;
                v[4 + q] = sl_i8f(hi, q) * s;
            }
        } else { // Q4
            uint32_t a = __ldg((const unsigned int *)(w.data + r * w.rb + k / 2));
            float s = sl_f16f(__ldg((const unsigned short *)w.scales + r * w.ng + k / 32));
#pragma unroll
            for (int q = 0; q < 8; q++)
                v[q] = sl_q4f((a >> (4 * q)) & 15u) * s;
        }
    }

    template <int TILE, int BK, int NT>
    __device__ __forceinline__ void load(float (*sm)[TILE + 4], int, int r0, int k0, int kend) const
    {
        constexpr int V = TILE * (BK / 8), VI = (V + NT - 1) / NT, VB = VI < 2 ? VI : 2; // as ld_strided
#pragma unroll 1
        for (int i0 = 0; i0 < VI; i0 += VB) {
            float v[VB][8];
#pragma unroll
            for (int it = 0; it < VB; it++) {
                int e = threadIdx.x + (i0 + it) * NT;
                int r = e % TILE, kc = e / TILE;
                long long gr = (long long)r0 + r;
                int gk = k0 + kc * 8;
                if (i0 + it < VI && e < V && gr < w.rows && gk < kend) { // kend: a multiple of 8
                    decode8(gr, gk, v[it]);
                } else {
#pragma unroll
                    for (int q = 0; q < 8; q++)
                        v[it][q] = 0.0f;
                }
            }
#pragma unroll
            for (int it = 0; it < VB; it++) {
                int e = threadIdx.x + (i0 + it) * NT;
                int r = e % TILE, kc = e / TILE;
                if (i0 + it < VI && e < V)
#pragma unroll
                    for (int q = 0; q < 8; q++)
                        sm[kc * 8 + q][r] = v[it][q];
            }
        }
    }
};

// ---- the kernel ------------------------------------------------------------------------------

struct gemm_out {
    float *c;          // final C (splits == 1)
    long long cb, ci, cj;
    float *work;       // partial sums [split][batch][M][N] (splits > 1)
};

template <class CFG, class LA, class LB>
__global__ void __launch_bounds__(CFG::THREADS)
    gemm_kernel(LA la, LB lb, gemm_out o, int M, int N, int K, int batch, int splits, int kchunk)
{
    constexpr int BM = CFG::BM, BN = CFG::BN, BK = CFG::BK, TM = CFG::TM, TN = CFG::TN;
    constexpr int NTX = CFG::NTX, NTY = CFG::NTY, NT = CFG::THREADS;
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[BK][BN + 4];

    const int j0 = blockIdx.x * BN, i0 = blockIdx.y * BM;
    const int b = blockIdx.z / splits, split = blockIdx.z % splits;
    const int kbeg = split * kchunk, kend = min(K, kbeg + kchunk);
    const int tx = threadIdx.x % NTX, ty = threadIdx.x / NTX;

    float acc[TM][TN];
#pragma unroll
    for (int m = 0; m < TM; m++)
#pragma unroll
        for (int n = 0; n < TN; n++)
            acc[m][n] = 0.0f;

    for (int k0 = kbeg; k0 < kend; k0 += BK) {
        la.template load<BM, BK, NT>(As, b, i0, k0, kend);
        lb.template load<BN, BK, NT>(Bs, b, j0, k0, kend);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float a[TM], bv[TN];
#pragma unroll
            for (int p = 0; p < TM / 4; p++) {
                float4 v = *(const float4 *)&As[k][p * NTY * 4 + ty * 4];
                a[4 * p] = v.x, a[4 * p + 1] = v.y, a[4 * p + 2] = v.z, a[4 * p + 3] = v.w;
            }
#pragma unroll
            for (int q = 0; q < TN / 4; q++) {
                float4 v = *(const float4 *)&Bs[k][q * NTX * 4 + tx * 4];
                bv[4 * q] = v.x, bv[4 * q + 1] = v.y, bv[4 * q + 2] = v.z, bv[4 * q + 3] = v.w;
            }
#pragma unroll
            for (int m = 0; m < TM; m++)
#pragma unroll
                for (int n = 0; n < TN; n++)
                    acc[m][n] = fmaf(a[m], bv[n], acc[m][n]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < TM; m++) {
        int i = i0 + (m / 4) * NTY * 4 + ty * 4 + (m % 4);
        if (i >= M)
            continue;
#pragma unroll
        for (int n = 0; n < TN; n++) {
            int j = j0 + (n / 4) * NTX * 4 + tx * 4 + (n % 4);
            if (j >= N)
                continue;
            if (splits == 1)
                o.c[b * o.cb + i * o.ci + j * o.cj] = acc[m][n];
            else
                o.work[(((long long)split * batch + b) * M + i) * N + j] = acc[m][n];
        }
    }
}

__global__ void splitk_reduce_kernel(gemm_out o, int M, int N, int batch, int splits)
{
    long long total = (long long)batch * M * N;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int sp = 0; sp < splits; sp++)
            s += o.work[sp * total + e];
        int j = (int)(e % N);
        int i = (int)((e / N) % M);
        int b = (int)(e / ((long long)N * M));
        o.c[b * o.cb + i * o.ci + j * o.cj] = s;
    }
}

// Pick the split along k so that about two blocks per SM run, within the workspace, each split
// at least 4 k-steps long.
template <class CFG, class LA, class LB>
static void gemm_run(sl_cuda_ctx *c, const LA &la, const LB &lb, gemm_out o, int M, int N, int K,
                     int batch, const char *what)
{
    long long tiles_n = (N + CFG::BN - 1) / CFG::BN, tiles_m = (M + CFG::BM - 1) / CFG::BM;
    long long tiles = tiles_n * tiles_m * batch;
    if (tiles_n > 0x7fffffffLL || tiles_m > 65535) {
        SL_CUDA_BAD(c, "%s: a %d x %d product is too large for the GEMM grid", what, M, N);
        return;
    }
    long long splits = 1, target = 2LL * c->sm_count;
    if (tiles < target) {
        splits = (target + tiles - 1) / tiles;
        long long by_k = K / (4 * CFG::BK);
        if (splits > by_k)
            splits = by_k;
        long long by_work = (long long)(c->work_floats / ((size_t)batch * M * N));
        if (splits > by_work)
            splits = by_work;
        if (splits < 1)
            splits = 1;
    }
    int kchunk = K;
    if (splits > 1) {
        long long per = (K + splits - 1) / splits;
        kchunk = (int)((per + CFG::BK - 1) / CFG::BK * CFG::BK);
        splits = (K + kchunk - 1) / kchunk;
    }
    if (batch * splits > 65535) {
        SL_CUDA_BAD(c, "%s: batch %d x splits %lld exceeds the grid", what, batch, splits);
        return;
    }
    if (splits > 1)
        o.work = c->work;
    dim3 grid((unsigned)tiles_n, (unsigned)tiles_m, (unsigned)(batch * splits));
    gemm_kernel<CFG, LA, LB><<<grid, CFG::THREADS, 0, c->compute>>>(la, lb, o, M, N, K, batch,
                                                                    (int)splits, kchunk);
    CUDA_LAUNCHED(c, what);
    if (splits > 1) {
        long long total = (long long)batch * M * N;
        unsigned blocks = sl_cuda_blocks((size_t)total, 256), cap = (unsigned)c->sm_count * 8;
        splitk_reduce_kernel<<<blocks < cap ? blocks : cap, 256, 0, c->compute>>>(o, M, N, batch,
                                                                                 (int)splits);
        CUDA_LAUNCHED(c, what);
    }
}

template <class LA, class LB>
static void gemm_pick(sl_cuda_ctx *c, const LA &la, const LB &lb, gemm_out o, int M, int N, int K,
                      int batch, const char *what)
{
    if (M <= 4)
        gemm_run<cfg_tiny>(c, la, lb, o, M, N, K, batch, what);
    else if (M <= 16)
        gemm_run<cfg_small>(c, la, lb, o, M, N, K, batch, what);
    else if (M <= 64)
        gemm_run<cfg_medium>(c, la, lb, o, M, N, K, batch, what);
    else
        gemm_run<cfg_large>(c, la, lb, o, M, N, K, batch, what);
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// Which load pattern an operand allows. Vector loads need 16-byte aligned bases and every
// stride that moves between vectors a multiple of 4 floats; along k also K1 and K multiples of 4
// (then kend is too: split boundaries are multiples of BK), so a vector never crosses a segment.
static ld_strided strided(const sl_gemm_operand &op, int K)
{
    ld_strided l;
    l.o = op;
    l.K = K;
    bool two = op.K1 < K;
    l.rfast = op.sr1 == 1 && (!two || op.sr2 == 1);
    if (l.rfast)
        l.vec = al16(op.p1) && op.sb1 % 4 == 0 && op.sk1 % 4 == 0 &&
                (!two || (al16(op.p2) && op.sb2 % 4 == 0 && op.sk2 % 4 == 0));
    else
        l.vec = op.sk1 == 1 && al16(op.p1) && op.sb1 % 4 == 0 && op.sr1 % 4 == 0 && op.K1 % 4 == 0 &&
                K % 4 == 0 && (!two || (op.sk2 == 1 && al16(op.p2) && op.sb2 % 4 == 0 && op.sr2 % 4 == 0));
    return l;
}

void sl_cuda_gemm_f32(sl_cuda_ctx *c, const sl_gemm_f32 *g)
{
    if (g->M <= 0 || g->N <= 0 || g->batch <= 0)
        return;
    gemm_out o = {g->c, g->cb, g->ci, g->cj, NULL};
    if (g->K <= 0) { // an empty sum: C = 0 (through the reduce kernel with no splits to add)
        gemm_out z = o;
        splitk_reduce_kernel<<<sl_cuda_blocks((size_t)g->batch * g->M * g->N, 256), 256, 0,
                               c->compute>>>(z, g->M, g->N, g->batch, 0);
        CUDA_LAUNCHED(c, "gemm (k = 0)");
        return;
    }
    gemm_pick(c, strided(g->a, g->K), strided(g->b, g->K), o, g->M, g->N, g->K, g->batch,
              "mla_attention (gemm)");
}

// out (n, rows) = x (n, cols) . W^T past the GEMV's token count: on tensor cores
// (kernels_tc_path.cu) unless the weights are f32 or this fp32 kernel is pinned
// (sl_cuda_set_gemm_path).
void sl_cuda_gemm_weight(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *wt, int n)
{
    if (sl_cuda_gemm_tc(c, out, x, wt, n))
        return;
    sl_wdev w = sl_cuda_wdev(wt);
    sl_gemm_operand xa = {x, NULL, 0, w.cols, 1, 0, 0, 0, (int)w.cols, n};
    ld_strided la = strided(xa, (int)w.cols);
    gemm_out o = {out, 0, w.rows, 1, NULL};
    bool vec8 = w.cols % 8 == 0 && ((uintptr_t)w.data & 15) == 0;
    int M = n, N = (int)w.rows, K = (int)w.cols;
    if (vec8) {
        SL_CUDA_FMT_DISPATCH(wt->fmt, ld_wvec8<FMT> lb = {w};
                             gemm_pick(c, la, lb, o, M, N, K, 1, "matmul (gemm)"));
    } else {
        SL_CUDA_FMT_DISPATCH(wt->fmt, ld_welem<FMT> lb = {w};
                             gemm_run<cfg_medium>(c, la, lb, o, M, N, K, 1, "matmul (gemm)"));
    }
}
