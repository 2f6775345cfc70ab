// cuda/ private: the backend context, error recording (CUDA_CHECK), weight-format decoding on
// the device, and the entry points one kernels_*.cu file offers the others.
#ifndef SL_CUDA_INTERNAL_CUH
#define SL_CUDA_INTERNAL_CUH

#include "cuda/cuda.h"

extern "C" {
#include "quant/quant.h"
}

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>

// Activations are stored fp32 everywhere in this backend (and accumulation always is fp32). The
// bf16 mode (sl_cuda_set_activations) rounds them where the many-token matrix products read them
// (kernels_tc.cu's act_split_kernel), not in memory.
typedef float sl_act_t;

// ---- the arena: first-fit over one cudaMalloc ------------------------------------------------
// Blocks tile [0, size) in offset order; neighbours that are both free are merged on free.
struct sl_cuda_block {
    size_t off, size;
    int used;
};

struct sl_cuda_arena {
    char *base;
    size_t size, used, peak;
    sl_cuda_block *blk;
    int n, cap;
    int first_free; // no free block has a lower index (a hint: scans start here)
};

enum { SL_CUDA_ALIGN = 256 };

// 0, or SL_E_NOMEM (no free block large enough, or no host memory for the block table).
int sl_cuda_arena_init(sl_cuda_arena *a, char *base, size_t size);
int sl_cuda_arena_alloc(sl_cuda_arena *a, size_t bytes, void **out);
// 0, or SL_E_ARG when p was not handed out by this arena (or was freed already).
int sl_cuda_arena_free(sl_cuda_arena *a, void *p);
void sl_cuda_arena_fini(sl_cuda_arena *a);

// ---- the context ----------------------------------------------------------------------------

// Bits a kernel sets in the device error word (mapped host memory, read after a sync).
enum {
    SL_CUDA_DEVERR_EMBED_ID = 1,   // embed: a token id outside the table
    SL_CUDA_DEVERR_ROUTE = 2,      // moe_route: fewer eligible experts than top_k
};

// Few-token matmul settings (kernels_gemv.cu): defaults from measurement, overridable for
// benchmarks with SL_CUDA_GEMV="max=12,pdl=1,pf=0,fill=2,rows=0,small=1,wide=1,deep=0,tc=1,ring=-1"
// (any subset, comma separated) or sl_cuda_gemv_tune().
struct sl_cuda_gemv_cfg {
    int max_tokens;    // matmuls of up to this many tokens take the GEMV (1..16, default 12)
    int max_by_fmt[SL_WF_COUNT]; // the same per weight format: where the tensor-core GEMM of
                       // kernels_tc.cu overtakes (f32 12, bf16 6, fp8/q8/q4 4); max= sets all
    bool pdl;          // programmatic dependent launch (sm_90+): overlap with the previous kernel
    int prefetch_kb;   // L2 prefetch per block before the dependency wait, KiB (default 0:
                       // none; q4's 32 cost its expert group 0.034 of copy bandwidth)
    int fill;          // blocks per SM that the split along columns aims for
    int launch_rows;   // split launches cover at most this many rows (0: as counters and the
                       // workspace allow; a test hook for the multi-launch path)
    bool rows_kernel;  // one token, f32/bf16, a single matrix (not an expert group): the
                       // 4-rows-a-block kernel, not the split one
    bool wide;         // one token, split kernel: GEMV_R1 rows a warp, not GEMV_R
    bool deep;         // one token, split kernel, not wide: 2 sweeps of loads in flight, not 1
    bool tc;           // one token, q4: the tensor-core kernel (gemv_tc.cuh), not the split one
    int ring;          // the tensor-core kernel's loads: 0 through registers, 4 / 6 through a
                       // ring of that many steps in shared memory; -1 (default): 6 for single
                       // matrices (H100, one token: 2048x7168 0.377 -> 0.455 of copy, 7168x2048
                       // 0.432 -> 0.429), 0 for expert groups (0.598 vs 0.499 at 6)
};

enum { SL_CUDA_GEMV_COUNTERS = 16384 };
struct sl_cuda_blas;

struct sl_cuda_ctx {
    int device;
    int sm_count;
    cudaStream_t compute, copy;
    bool compute_ok, copy_ok;
    char *vram;           // the one cudaMalloc
    size_t vram_bytes;
    sl_cuda_arena arena;  // serves ops->alloc
    float *work;          // split-K partial sums (tail of vram), work_floats long
    size_t work_floats;
    int *deverr_host;     // mapped pinned word kernels set bits in
    int *deverr_dev;
    bool sync_each;       // SL_CUDA_SYNC=1: synchronise after every launch
    sl_cuda_gemv_cfg gemv; // set by sl_cuda_gemv_init (kernels_gemv.cu)
    unsigned *gemv_count; // SL_CUDA_GEMV_COUNTERS split-K arrival counters (zeroed, self-resetting)
    int smem_optin;       // shared memory one block may opt in to (bytes)
    bool act_bf16;        // sl_cuda_set_activations: many-token matmuls round x to bf16
    int gemm_path;        // sl_cuda_gemm_path: SL_CUDA_GEMM_AUTO unless a test or bench pins one
    int gemm_tile;        // token tile of the tensor-core kernel (0: chosen by token count)
    int cc;               // compute capability, 10 major + minor (90: wgmma, kernels_wgmma.cu)
    int wg_stages;        // SL_CUDA_WGMMA="stages=S,fill=F" (benchmarks): pipeline depth of the
    int wg_fill;          // wgmma kernel, blocks per SM its split-K aims for (0: automatic)
    sl_cuda_blas *blas;   // cuBLAS, loaded on first use (cublas.cu); NULL before or when absent
    int blas_state;       // 0 not tried, 1 loaded, -1 unavailable (reason in blas_msg)
    char blas_msg[160];
    pthread_mutex_t mu;   // arena and error state (ops may come from several host threads)
    int err;              // sticky: 0 or SL_E_*
    char errmsg[512];
};

static inline sl_cuda_ctx *sl_cuda_ctx_of(sl_backend *b) { return (sl_cuda_ctx *)b->ctx; }

// Record the first error (later ones are dropped: the first is the cause). `what` names the
// call, func/file/line where it was made.
void sl_cuda_record(sl_cuda_ctx *c, int code, const char *func, const char *file, int line,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void sl_cuda_record_cuda(sl_cuda_ctx *c, cudaError_t err, const char *call, const char *func,
                         const char *file, int line);

// Check a CUDA runtime call; on failure record "func (file:line): call: ErrorName: text".
#define CUDA_CHECK(c, call)                                                                        \
    do {                                                                                           \
        cudaError_t cuda_check_err_ = (call);                                                      \
        if (cuda_check_err_ != cudaSuccess)                                                        \
            sl_cuda_record_cuda((c), cuda_check_err_, #call, __func__, __FILE__, __LINE__);        \
    } while (0)

// Same, and return `ret` from the calling function on failure.
#define CUDA_CHECK_RET(c, call, ret)                                                               \
    do {                                                                                           \
        cudaError_t cuda_check_err_ = (call);                                                      \
        if (cuda_check_err_ != cudaSuccess) {                                                      \
            sl_cuda_record_cuda((c), cuda_check_err_, #call, __func__, __FILE__, __LINE__);        \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

// After every kernel launch: launch errors (bad configuration) now, and with SL_CUDA_SYNC=1 the
// kernel's own faults, named by the op that launched it.
#define CUDA_LAUNCHED(c, what)                                                                     \
    do {                                                                                           \
        CUDA_CHECK((c), cudaGetLastError());                                                       \
        if ((c)->sync_each) {                                                                      \
            cudaError_t cuda_check_err_ = cudaStreamSynchronize((c)->compute);                     \
            if (cuda_check_err_ != cudaSuccess)                                                    \
                sl_cuda_record_cuda((c), cuda_check_err_, what, __func__, __FILE__, __LINE__);     \
        }                                                                                          \
    } while (0)

// Bad arguments to an op (which returns void): record SL_E_ARG with the op's name.
#define SL_CUDA_BAD(c, ...) sl_cuda_record((c), SL_E_ARG, __func__, __FILE__, __LINE__, __VA_ARGS__)

// An op's prologue: the context, or NULL when a sticky error means the op must be skipped.
sl_cuda_ctx *sl_cuda_enter(sl_backend *b);

// 1-D launch geometry for `n` independent items.
// Split-K of a tiled matmul (kernels_tc.cu, kernels_wgmma.cu): k-steps per split, so that
// `tiles` output tiles fill about `slots` resident blocks (occupancy x SMs) when they are fewer,
// each split keeps at least min_steps of the kt steps, and the splits' partial sums (n x rows
// floats each) fit work_floats. kt when no split is needed or possible.
static inline int sl_cuda_split_k_chunk(long long tiles, long long slots, long long kt,
                                        int min_steps, int n, long long rows, size_t work_floats)
{
    long long splits = 1;
    if (tiles < slots) {
        splits = slots / tiles;
        long long by_k = kt / min_steps, by_work = (long long)(work_floats / ((size_t)n * rows));
        splits = splits > by_k ? by_k : splits;
        splits = splits > by_work ? by_work : splits;
        splits = splits < 1 ? 1 : splits;
    }
    return (int)((kt + splits - 1) / splits);
}

static inline unsigned sl_cuda_blocks(size_t n, unsigned threads)
{
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g > 0x7fffffffu ? 0x7fffffffu : (g ? g : 1));
}

// ---- weight formats on the device ------------------------------------------------------------
// A weight as kernels see it. Planes as quant.h lays them out; `scales` points just past the
// value plane (it may be unaligned for odd shapes: the generic paths read it byte by byte).
struct sl_wdev {
    const uint8_t *data;
    const uint8_t *scales;
    long long rows, cols;
    int fmt;
    long long ncb; // FP8: scale columns, ceil(cols / 128)
    long long ng;  // Q8/Q4: scale groups per row, ceil(cols / 32)
    long long rb;  // bytes of one row of the value plane
};

sl_wdev sl_cuda_wdev(const sl_weight *w);

__device__ __forceinline__ float sl_bf16f(uint32_t h) { return __uint_as_float(h << 16); }

__device__ __forceinline__ float sl_f16f(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

// e4m3fn byte -> fp32, exact, with no denormal arithmetic (so it holds under -ftz too): a normal
// code's 7 magnitude bits placed under fp32's exponent field with the bias raised by 127 - 7 =
// 120 are its value; a subnormal one (exponent 0) is m * 2^-9; 0x7f/0xff are NaN.
__device__ __forceinline__ float sl_fp8f(uint32_t b)
{
    uint32_t mag = b & 0x7fu;
    float norm = __uint_as_float((mag << 20) + (120u << 23));
    float sub = (__uint_as_float(0x4b000000u | mag) - 8388608.0f) * 0x1p-9f;
    float v = mag >= 8 ? norm : sub;
    v = mag == 0x7fu ? __uint_as_float(0x7fc00000u) : v;
    return __uint_as_float(__float_as_uint(v) | ((b & 0x80u) << 24));
}

// Two e4m3 codes (low 16 bits of `two`, first code in the low byte) -> exact fp32 values through
// the hardware conversion to f16 (one instruction on sm_89+; NaN codes stay NaN).
__device__ __forceinline__ float2 sl_fp8x2f(uint32_t two)
{
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(two & 0xffffu), __NV_E4M3);
    return __half22float2(__half2(h));
}

// Byte k of `word` as a signed int8, converted exactly to fp32 with one byte permute and one add
// (2^23 + (u ^ 0x80) in an fp32's mantissa, minus 2^23 + 128); `word` has been xor-ed with
// 0x80808080 by the caller.
__device__ __forceinline__ float sl_i8f(uint32_t word_x80, int k)
{
    return __uint_as_float(__byte_perm(word_x80, 0x4b000000u, 0x7650u + k)) - 8388736.0f;
}

// A nibble (0..15) minus 8, exactly, without the conversion unit.
__device__ __forceinline__ float sl_q4f(uint32_t nib) { return __uint_as_float(0x4b000000u | nib) - 8388616.0f; }

// An unaligned little-endian load of 2 or 4 bytes (scale planes of odd shapes).
__device__ __forceinline__ uint32_t sl_ld_u16(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8; }
__device__ __forceinline__ uint32_t sl_ld_u32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// Element (r, c) of a weight decoded to fp32 exactly as quant/'s sl_dequantize_rows does (one
// fp32 product of the code and its scale). Any shape and alignment; byte loads for scales.
template <int FMT>
__device__ __forceinline__ float sl_wval(const sl_wdev &w, long long r, long long c)
{
    if (FMT == SL_WF_F32)
        return ((const float *)w.data)[r * w.cols + c];
    if (FMT == SL_WF_BF16)
        return sl_bf16f(((const uint16_t *)w.data)[r * w.cols + c]);
    if (FMT == SL_WF_FP8) {
        float s = __uint_as_float(sl_ld_u32(w.scales + 4 * ((r / 128) * w.ncb + c / 128)));
        return sl_fp8f(w.data[r * w.cols + c]) * s;
    }
    if (FMT == SL_WF_Q8) {
        float s = sl_f16f((uint16_t)sl_ld_u16(w.scales + 2 * (r * w.ng + c / 32)));
        return (float)(int8_t)w.data[r * w.cols + c] * s;
    }
    // Q4: column 2i in the low nibble of byte i of the row, 2i+1 in the high one
    float s = sl_f16f((uint16_t)sl_ld_u16(w.scales + 2 * (r * w.ng + c / 32)));
    uint32_t byte = w.data[r * w.rb + c / 2];
    int nib = (c & 1) ? (int)(byte >> 4) : (int)(byte & 15u);
    return (float)(nib - 8) * s;
}

// Run `body` with FMT bound to the weight's format as a compile-time constant.
#define SL_CUDA_FMT_DISPATCH(fmt, ...)                                                             \
    switch (fmt) {                                                                                 \
    case SL_WF_F32: { constexpr int FMT = SL_WF_F32; __VA_ARGS__; } break;                        \
    case SL_WF_BF16: { constexpr int FMT = SL_WF_BF16; __VA_ARGS__; } break;                      \
    case SL_WF_FP8: { constexpr int FMT = SL_WF_FP8; __VA_ARGS__; } break;                        \
    case SL_WF_Q8: { constexpr int FMT = SL_WF_Q8; __VA_ARGS__; } break;                          \
    case SL_WF_Q4: { constexpr int FMT = SL_WF_Q4; __VA_ARGS__; } break;                          \
    default: break;                                                                                \
    }

// ---- block reductions (blockDim.x a multiple of 32, at most 1024; every thread calls) --------
__device__ __forceinline__ float sl_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float sl_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The block's sum (or max) of v, returned to every thread. Uses 33 floats of shared memory;
// safe to call repeatedly (it synchronises before reusing them).
template <bool MAX>
__device__ __forceinline__ float sl_block_reduce(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = MAX ? sl_warp_max(v) : sl_warp_sum(v);
    __syncthreads(); // an earlier call may still be reading part/total
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float p = lane < nw ? part[lane] : (MAX ? -INFINITY : 0.0f);
        p = MAX ? sl_warp_max(p) : sl_warp_sum(p);
        if (lane == 0)
            total = p;
    }
    __syncthreads();
    return total;
}

// ---- entry points between files --------------------------------------------------------------

// out (n, w->rows) = x (n, w->cols) . W^T: GEMV for n <= c->gemv.max_by_fmt[fmt], GEMM above
// (kernels_matmul.cu).
void sl_cuda_matmul(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
// The few-token path (1 <= n <= 16, kernels_gemv.cu) and the many-token one (kernels_gemm.cu).
void sl_cuda_gemv(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
void sl_cuda_gemm_weight(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
// The many-token matmul on tensor cores for bf16/fp8/q8/q4 weights: the fused kernel, the wgmma
// one or cuBLAS, whichever the path choice takes (kernels_tc_path.cu); false when it does not
// take this call (f32 weights, the SIMT path pinned, no workspace room).
bool sl_cuda_gemm_tc(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
// The fused tensor-core kernel alone (kernels_tc.cu), activations split hi + lo unless
// c->act_bf16; false when it does not take this call (f32 weights, no workspace room).
bool sl_cuda_gemm_fused(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
// The same on Hopper's wgmma in bf16-activation mode (kernels_wgmma.cu); false when it does not
// take this call (another GPU or mode, cols % 64 != 0, misaligned planes, no workspace room).
bool sl_cuda_gemm_wgmma(sl_cuda_ctx *c, float *out, const float *x, const sl_weight *w, int n);
// kernels_tc.cu's passes, shared with kernels_wgmma.cu and kernels_tc_path.cu's cuBLAS calls:
// x (n, K) -> bf16 hi (n, kp) rounded to nearest even and, when lo is not NULL, lo = bf16(x - hi),
// natural column order, zero past K; and out[e] = sum of work[s total + e] over s < splits, in
// split order.
void sl_cuda_tc_act_bf16(sl_cuda_ctx *c, const float *x, int n, int K, int kp, uint16_t *hi,
                         uint16_t *lo);
void sl_cuda_tc_sum_splits(sl_cuda_ctx *c, float *out, const float *work, size_t total, int splits);

// cuBLAS (cublas.cu), loaded with dlopen on first use. The top SL_CUDA_BLAS_WS bytes of the
// workspace are its scratch (set once; matmuls that call it keep their own data below).
enum { SL_CUDA_BLAS_WS = 8 << 20 };
// The loaded library, or NULL when it cannot be had (reason in c->blas_msg; not an op error).
sl_cuda_blas *sl_cuda_blas_get(sl_cuda_ctx *c);
void sl_cuda_blas_close(sl_cuda_blas *bl);
// out (n, m) (column-major m x n, leading dimension ldo) = W (m, k) . X^T + beta * out, with W
// and X bf16 row-major (leading dimensions ldw, ldx in elements); fp32 accumulation and output.
void sl_cuda_blas_gemm_bf16(sl_cuda_ctx *c, int m, int n, int k, const void *w, int ldw,
                            const void *x, int ldx, float *out, int ldo, float beta);

// model.h's expert_group (kernels_expert_group.cu).
void sl_cuda_expert_group(sl_backend *b, float *out, const float *x, const int32_t *rows,
                          const float *row_w, const sl_expert_group *g, float *scratch);

// At backend creation, after c->device, c->sm_count and c->gemv_count are set: reads
// SL_CUDA_GEMV, zeroes the counters, raises the GEMV kernels' shared-memory limit.
cudaError_t sl_cuda_gemv_init(sl_cuda_ctx *c);

// A strided fp32 operand of the generic GEMM: X(b, r, k) = p1[b*sb1 + r*sr1 + k*sk1] for k < K1,
// p2[b*sb2 + r*sr2 + (k-K1)*sk2] for K1 <= k < K (a second segment along k, e.g. MLA's rope
// part; K1 = K when there is none). Rows r >= rows read as 0.
struct sl_gemm_operand {
    const float *p1, *p2;
    long long sb1, sr1, sk1, sb2, sr2, sk2;
    int K1;
    int rows;
};

// C(b, i, j) = sum_k A(b, i, k) B(b, j, k) for b < batch, i < M, j < N, k < K, written to
// C[b*cb + i*ci + j*cj]. fp32, fixed summation order (split-K partial sums are added in order).
struct sl_gemm_f32 {
    sl_gemm_operand a, b;
    float *c;
    long long cb, ci, cj;
    int M, N, K, batch;
};
void sl_cuda_gemm_f32(sl_cuda_ctx *c, const sl_gemm_f32 *g);

void sl_cuda_mla_attention(sl_backend *b, float *out, const float *q, const float *latent,
                           const float *krope, const sl_weight *kv_b, int n, int pos0,
                           const sl_mla_dims *d, bool absorbed, float *scratch);
size_t sl_cuda_mla_scratch_floats(const sl_mla_dims *d, int n, int T, bool absorbed);

void sl_cuda_moe_route(sl_backend *b, int32_t *idx, float *wts, const float *logits,
                       const float *bias, int n, int n_experts, int n_group, int topk_group,
                       int top_k, bool norm, float scale);

// kernels_elementwise.cu
void sl_cuda_embed(sl_backend *b, float *out, const sl_weight *table, const int32_t *ids, int n);
void sl_cuda_rmsnorm(sl_backend *b, float *out, int os, const float *x, int xs, const float *w,
                     int n, int dim, float eps);
void sl_cuda_rope(sl_backend *b, float *x, int n, int n_heads, int ts, int hs, int rope_dim,
                  const int32_t *pos, const float *inv_freq, float attn_factor);
void sl_cuda_silu_mul(sl_backend *b, float *out, const float *gate, const float *up, size_t n);
void sl_cuda_zero(sl_backend *b, float *p, size_t n);
void sl_cuda_add(sl_backend *b, float *y, const float *x, size_t n);
void sl_cuda_copy_rows(sl_backend *b, float *dst, int ds, const float *src, int ss, int n, int dim);
void sl_cuda_gather_rows(sl_backend *b, float *out, const float *x, const int32_t *rows,
                         int n_rows, int dim);
void sl_cuda_scatter_add_rows(sl_backend *b, float *y, const float *x, const int32_t *rows,
                              const float *weights, int n_rows, int dim);
// softmax of S rows in place for MLA (kernels_attention.cu uses it)
void sl_cuda_causal_softmax(sl_cuda_ctx *c, float *s, int rows, int ld, int heads, int pos0,
                            float scale);

#endif
