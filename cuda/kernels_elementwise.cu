// Element-wise and row ops: embed, RMSNorm, RoPE, SiLU-mul, add, zero, row copies, and the
// gather / scatter-add that let one expert serve all of its tokens in one launch. Each is one
// pass over its bytes (memory-bound); one block per row where a row needs a reduction or an
// index, else a grid-stride loop. Products that the CPU reference rounds one at a time use
// __fmul_rn / __fadd_rn so nvcc does not fuse them into an FMA: results match it bit for bit
// where the CPU's order of operations is kept.
#include "cuda/internal.cuh"

enum { ROW_THREADS = 256 };

// ---- embed: out row t = table row ids[t], decoded; bytes: n rows of the table in, n*cols*4 out

template <int FMT>
__global__ void embed_kernel(float *out, sl_wdev w, const int32_t *ids, int *deverr)
{
    int t = blockIdx.x;
    int id = ids[t];
    float *o = out + (size_t)t * w.cols;
    bool bad = id < 0 || (long long)id >= w.rows;
    if (bad && threadIdx.x == 0)
        atomicOr(deverr, SL_CUDA_DEVERR_EMBED_ID);
    for (long long c = threadIdx.x; c < w.cols; c += blockDim.x)
        o[c] = bad ? __uint_as_float(0x7fc00000u) : sl_wval<FMT>(w, id, c);
}

void sl_cuda_embed(sl_backend *b, float *out, const sl_weight *table, const int32_t *ids, int n)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0)
        return;
    if (table->fmt < 0 || table->fmt >= SL_WF_COUNT) {
        SL_CUDA_BAD(c, "embed: table format %d is not a weight format", table->fmt);
        return;
    }
    sl_wdev w = sl_cuda_wdev(table);
    SL_CUDA_FMT_DISPATCH(table->fmt,
                         embed_kernel<FMT><<<n, ROW_THREADS, 0, c->compute>>>(out, w, ids, c->deverr_dev));
    CUDA_LAUNCHED(c, "embed");
}

// ---- rmsnorm: one block per row; reads the row twice (the second time from L1/L2) ----------------

__global__ void rmsnorm_kernel(float *out, int os, const float *x, int xs, const float *w, int dim,
                               float eps)
{
    const float *xr = x + (size_t)blockIdx.x * xs;
    float *orow = out + (size_t)blockIdx.x * os;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = sl_block_reduce<false>(ss); // every read of the row is done before any write (in place)
    // transformers: x * rsqrt(mean(x^2) + eps), then weight * x, all fp32 (as cpu/ops.c)
    float r = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        orow[i] = __fmul_rn(w[i], __fmul_rn(xr[i], r));
}

void sl_cuda_rmsnorm(sl_backend *b, float *out, int os, const float *x, int xs, const float *w,
                     int n, int dim, float eps)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0)
        return;
    if (dim <= 0) {
        SL_CUDA_BAD(c, "rmsnorm: dim %d", dim);
        return;
    }
    rmsnorm_kernel<<<n, ROW_THREADS, 0, c->compute>>>(out, os, x, xs, w, dim, eps);
    CUDA_LAUNCHED(c, "rmsnorm");
}

// ---- rope: one thread per (token, head, pair); angle in fp32, cos/sin in double as cpu/ops.c ----

__global__ void rope_kernel(float *x, int n, int n_heads, int ts, int hs, int half,
                            const int32_t *pos, const float *inv_freq, float attn_factor)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)n * n_heads * half)
        return;
    int i = (int)(k % half);
    int h = (int)((k / half) % n_heads);
    int t = (int)(k / ((long long)half * n_heads));
    float ang = __fmul_rn((float)pos[t], inv_freq[i]);
    double sd, cd;
    sincos((double)ang, &sd, &cd);
    float cs = __fmul_rn((float)cd, attn_factor);
    float sn = __fmul_rn((float)sd, attn_factor);
    float *p = x + (size_t)t * ts + (size_t)h * hs + 2 * i;
    float a = p[0], bb = p[1];
    p[0] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(bb, sn));
    p[1] = __fadd_rn(__fmul_rn(bb, cs), __fmul_rn(a, sn));
}

void sl_cuda_rope(sl_backend *b, float *x, int n, int n_heads, int ts, int hs, int rope_dim,
                  const int32_t *pos, const float *inv_freq, float attn_factor)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0 || n_heads <= 0 || rope_dim <= 0)
        return;
    if (rope_dim % 2) {
        SL_CUDA_BAD(c, "rope: odd rope_dim %d", rope_dim);
        return;
    }
    size_t total = (size_t)n * n_heads * (rope_dim / 2);
    rope_kernel<<<sl_cuda_blocks(total, 256), 256, 0, c->compute>>>(x, n, n_heads, ts, hs, rope_dim / 2,
                                                                    pos, inv_freq, attn_factor);
    CUDA_LAUNCHED(c, "rope");
}

// ---- flat element-wise ops: grid-stride loops --------------------------------------------------

__global__ void silu_mul_kernel(float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    }
}

__global__ void add_kernel(float *y, const float *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

static unsigned flat_blocks(sl_cuda_ctx *c, size_t n)
{
    unsigned g = sl_cuda_blocks(n, 256), cap = (unsigned)c->sm_count * 16;
    return g < cap ? g : cap;
}

void sl_cuda_silu_mul(sl_backend *b, float *out, const float *gate, const float *up, size_t n)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n == 0)
        return;
    silu_mul_kernel<<<flat_blocks(c, n), 256, 0, c->compute>>>(out, gate, up, n);
    CUDA_LAUNCHED(c, "silu_mul");
}

void sl_cuda_add(sl_backend *b, float *y, const float *x, size_t n)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n == 0)
        return;
    add_kernel<<<flat_blocks(c, n), 256, 0, c->compute>>>(y, x, n);
    CUDA_LAUNCHED(c, "add");
}

void sl_cuda_zero(sl_backend *b, float *p, size_t n)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n == 0)
        return;
    CUDA_CHECK(c, cudaMemsetAsync(p, 0, n * sizeof(float), c->compute));
}

// ---- row ops: one block per row ---------------------------------------------------------------

__global__ void copy_rows_kernel(float *dst, int ds, const float *src, int ss, int dim)
{
    const float *s = src + (size_t)blockIdx.x * ss;
    float *d = dst + (size_t)blockIdx.x * ds;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        d[i] = s[i];
}

__global__ void gather_rows_kernel(float *out, const float *x, const int32_t *rows, int dim)
{
    const float *s = x + (size_t)rows[blockIdx.x] * dim;
    float *d = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        d[i] = s[i];
}

// Race-free without atomics: within one call the rows are distinct tokens (one expert's token
// list; a token picks an expert at most once), so no two blocks write the same row of y.
__global__ void scatter_add_rows_kernel(float *y, const float *x, const int32_t *rows,
                                        const float *weights, int dim)
{
    float wj = weights[blockIdx.x];
    const float *s = x + (size_t)blockIdx.x * dim;
    float *d = y + (size_t)rows[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        d[i] = __fadd_rn(d[i], __fmul_rn(wj, s[i]));
}

void sl_cuda_copy_rows(sl_backend *b, float *dst, int ds, const float *src, int ss, int n, int dim)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n <= 0 || dim <= 0)
        return;
    copy_rows_kernel<<<n, ROW_THREADS, 0, c->compute>>>(dst, ds, src, ss, dim);
    CUDA_LAUNCHED(c, "copy_rows");
}

void sl_cuda_gather_rows(sl_backend *b, float *out, const float *x, const int32_t *rows,
                         int n_rows, int dim)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n_rows <= 0 || dim <= 0)
        return;
    gather_rows_kernel<<<n_rows, ROW_THREADS, 0, c->compute>>>(out, x, rows, dim);
    CUDA_LAUNCHED(c, "gather_rows");
}

void sl_cuda_scatter_add_rows(sl_backend *b, float *y, const float *x, const int32_t *rows,
                              const float *weights, int n_rows, int dim)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c || n_rows <= 0 || dim <= 0)
        return;
    scatter_add_rows_kernel<<<n_rows, ROW_THREADS, 0, c->compute>>>(y, x, rows, weights, dim);
    CUDA_LAUNCHED(c, "scatter_add_rows");
}
