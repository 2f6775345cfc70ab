// Routed experts of one layer as a group (model.h's expert_group): at decode each expert matrix
// (7168x2048 / 2048x7168: 3-15 MB by format) streams in a few microseconds, and one launch per
// matrix leaves a fixed ~2-3 us each on the table (bench/results/gemv-h100-2026-11-24.md). Here
// the whole group takes four launches whatever its size:
//   1. gate and up of every expert in one GEMV launch (grid over matrix x row tile x column
//      split), each block staging its expert's token rows of x straight from the layer input
//      through the row indices (the gather folded in);
//   2. silu(gate) * up over all the group's rows at once;
//   3. down of every expert in one GEMV launch;
//   4. one scatter: the block of each token's first row in the group adds all of that token's
//      rows in group order, so every output row has one writer and its sum runs in the order of
//      the per-expert loop (no atomics, results independent of timing).
// The GEMV bodies are kernels_gemv.cu's (gemv.cuh), so every weight byte is read once and each
// launch is bound by bytes(all the group's matrices) / DRAM bandwidth plus one launch's fixed
// cost instead of one per matrix. An expert with more tokens than the GEMV takes for its format
// (c->gemv.max_by_fmt), a misaligned or odd-shaped one, or one in a different format than the
// group's first, runs through matmul (gather into its scratch rows first) inside the same
// steps; the silu and the scatter still cover the whole group. Scratch (model.h): gate
// (R, inter), up (R, inter), gathered x / down output (R, hidden), R = the group's token rows.
#include "cuda/gemv_tc.cuh"

enum { GROUP_MATS = 2 * SL_EXPERT_GROUP_MAX, GROUP_SCATTER_THREADS = 256 };

// The matrices of one grouped launch (one shape and format), each with its own tokens. Passed
// by value (__grid_constant__: indexed by block, read from the parameter bank, never copied).
struct gemv_group_mats {
    const uint8_t *data[GROUP_MATS];  // value plane; its scales follow it (quant.h's layout)
    const float *x[GROUP_MATS];       // token rows (n, cols), or the rows xrows picks
    const int32_t *xrows[GROUP_MATS]; // NULL, or token t is row xrows[t] of x
    float *out[GROUP_MATS];           // (n, rows)
    int n[GROUP_MATS];                // tokens, 1 .. the kernel's NT
};

struct gemv_group_args {
    gemv_args a;      // what the matrices share: shape and format (a.w), split, workspace
    long long tiles;  // blocks along one matrix's rows
    gemv_group_mats m;
};
static_assert(sizeof(gemv_group_args) <= 4096, "kernel parameters are limited to 4 KiB");

template <int FMT, int NT, int R, int S>
__global__ void __launch_bounds__(GEMV_THREADS, gemv_min_blocks(NT, R, S))
gemv_group_kernel(const __grid_constant__ gemv_group_args g)
{
    const long long m = blockIdx.x / g.tiles, tile = blockIdx.x % g.tiles;
    gemv_args a = g.a;
    a.w.data = g.m.data[m];
    a.w.scales = a.w.data + a.w.rb * a.w.rows;
    a.x = g.m.x[m];
    a.xrows = g.m.xrows[m];
    a.out = g.m.out[m];
    a.n = g.m.n[m];
    if (gridDim.y > 1) { // this matrix's share of the split sums and arrival counters
        a.part += m * gridDim.y * NT * a.part_rows;
        a.count += m * g.tiles;
    }
    if constexpr (R == GEMV_TC_R && S > 2)
        gemv_tc_ring_body<S>(a, tile);
    else if constexpr (R == GEMV_TC_R)
        gemv_tc_body(a, tile);
    else
        gemv_fast_body<FMT, NT, R, S>(a, tile);
}

// Every matrix of mm (n_mats of them, shape and format as w) times its tokens: the split kernel
// in the shape R, S (or q4's tensor-core kernel: R = GEMV_TC_R) for every format, the 4-row
// kernel of single f32/bf16 matrices not being faster here (H100, 8 experts at one token: f32
// 0.960 either way, bf16 0.886 vs 0.906 split, fp8 0.729 vs 0.787: bench/results/
// gemv-h100-2026-12-06.md), with the columns split for the launch's total row tiles. Launches as many matrices at a time
// as the split workspace and counters hold; false, having launched nothing, when not even one.
template <int FMT, int NT, int R, int S>
static bool group_launch(sl_cuda_ctx *c, const sl_wdev &w, const gemv_group_mats &mm, int n_mats)
{
    constexpr int C = gemv_chunk<FMT>::cols, ROWS = 8 * R;
    gemv_group_args g;
    memset(&g, 0, sizeof g);
    g.a.w = w;
    g.a.w.data = NULL;
    g.a.w.scales = NULL;
    const long long nchunk = w.cols / C, tiles = (w.rows + ROWS - 1) / ROWS;
    const long long cps = gemv_split_cps(c, C, NT, nchunk, tiles * n_mats, R == GEMV_TC_R ? 4 : 32,
                                         R == GEMV_TC_R && S > 2 ? GEMV_TC_RING_FILL : 0);
    const long long nsplit = (nchunk + cps - 1) / cps;
    long long per = n_mats;
    if (nsplit > 1) {
        long long by_count = SL_CUDA_GEMV_COUNTERS / tiles;
        long long by_work = (long long)(c->work_floats / ((size_t)nsplit * NT * (size_t)w.rows));
        per = per < by_count ? per : by_count;
        per = per < by_work ? per : by_work;
        if (per < 1)
            return false;
        g.a.part = c->work;
        g.a.count = c->gemv_count;
    }
    g.tiles = tiles;
    g.a.cps = (int)cps;
    g.a.chp = (int)(cps | 1);
    const int pf_kb = c->gemv.prefetch_kb;
    g.a.pf_row = pf_kb * 1024 / ROWS;
    g.a.row0 = 0;
    g.a.part_rows = w.rows;
    const size_t smem = (size_t)NT * (C / 4) * g.a.chp * sizeof(float4) +
                        (R == GEMV_TC_R ? gemv_tc_ring_bytes(S) : 0);
    for (int m0 = 0; m0 < n_mats; m0 += (int)per) {
        int k = n_mats - m0 < per ? n_mats - m0 : (int)per;
        for (int i = 0; i < k; i++) {
            g.m.data[i] = mm.data[m0 + i];
            g.m.x[i] = mm.x[m0 + i];
            g.m.xrows[i] = mm.xrows[m0 + i];
            g.m.out[i] = mm.out[m0 + i];
            g.m.n[i] = mm.n[m0 + i];
        }
        dim3 grid((unsigned)(k * tiles), (unsigned)nsplit);
        gemv_launch_ex(c, gemv_group_kernel<FMT, NT, R, S>, grid, dim3(GEMV_THREADS), smem, g);
        CUDA_LAUNCHED(c, "expert_group (gemv)");
    }
    return true;
}

static bool group_gemv(sl_cuda_ctx *c, const sl_weight *shape, const gemv_group_mats &mm,
                       int n_mats, int max_n)
{
    if (n_mats < 1)
        return true;
    sl_wdev w = sl_cuda_wdev(shape);
    bool done = false;
    SL_CUDA_FMT_DISPATCH(shape->fmt, GEMV_NT_DISPATCH(max_n, {
        // (if constexpr: the one-token shapes are compiled for one token only)
        if constexpr (NT == 1 && FMT == SL_WF_Q4)
            if (c->gemv.tc && gemv_tc_ok(w)) {
                GEMV_TC_RING_DISPATCH(c->gemv.ring < 0 ? 0 : c->gemv.ring,
                                      done = group_launch<FMT, NT, GEMV_TC_R, S>(c, w, mm, n_mats));
                break;
            }
        if constexpr (NT == 1)
            done = c->gemv.wide   ? group_launch<FMT, NT, GEMV_R1, 2>(c, w, mm, n_mats)
                   : c->gemv.deep ? group_launch<FMT, NT, GEMV_R, 3>(c, w, mm, n_mats)
                                  : group_launch<FMT, NT, GEMV_R, 2>(c, w, mm, n_mats);
        else
            done = group_launch<FMT, NT, GEMV_R, 2>(c, w, mm, n_mats);
    }));
    return done;
}

// ---- the scatter ------------------------------------------------------------------------------

struct group_rows {
    int n;                           // experts
    int start[SL_EXPERT_GROUP_MAX];  // first entry in rows / row_w
    int count[SL_EXPERT_GROUP_MAX];
    int off[SL_EXPERT_GROUP_MAX];    // first group row (row of y)
};

// Block j is group row j (expert i's k-th token, j = off[i] + k). Its threads look through all R
// group rows for the same token: if one comes before j, another block owns the token and this
// one stops; otherwise this block adds every one of the token's rows (at most one per expert)
// in expert order, each as y += w * row, rounded as scatter_add_rows rounds it.
__global__ void __launch_bounds__(GROUP_SCATTER_THREADS)
group_scatter_kernel(float *out, const float *y, const int32_t *rows, const float *row_w,
                     const __grid_constant__ group_rows g, int R, int dim)
{
    __shared__ int tok, earlier;
    __shared__ int at[SL_EXPERT_GROUP_MAX]; // the token's group row in expert e, or -1
    __shared__ float wt[SL_EXPERT_GROUP_MAX];
    const int j = blockIdx.x;
    if (threadIdx.x == 0) {
        int i = 0;
        while (i + 1 < g.n && j >= g.off[i + 1])
            i++;
        tok = rows[g.start[i] + j - g.off[i]];
        earlier = 0;
    }
    if (threadIdx.x < SL_EXPERT_GROUP_MAX)
        at[threadIdx.x] = -1;
    __syncthreads();
    for (int jj = threadIdx.x; jj < R; jj += blockDim.x) {
        int e = 0;
        while (e + 1 < g.n && jj >= g.off[e + 1])
            e++;
        const int entry = g.start[e] + jj - g.off[e];
        if (rows[entry] != tok)
            continue;
        if (jj < j) {
            earlier = 1; // every writer writes 1
        } else {         // one row per expert: at[e] has one writer
            at[e] = jj;
            wt[e] = row_w[entry];
        }
    }
    __syncthreads();
    if (earlier)
        return;
    float *d = out + (long long)tok * dim;
    for (int col = threadIdx.x; col < dim; col += blockDim.x) {
        float acc = d[col];
        for (int e = 0; e < g.n; e++)
            if (at[e] >= 0)
                acc = __fadd_rn(acc, __fmul_rn(wt[e], y[(long long)at[e] * dim + col]));
        d[col] = acc;
    }
}

// ---- the op -----------------------------------------------------------------------------------

static bool same_shape(const sl_weight *w, int rows, int cols)
{
    return w->rows == rows && w->cols == cols && w->data && w->fmt >= 0 && w->fmt < SL_WF_COUNT;
}

void sl_cuda_expert_group(sl_backend *b, float *out, const float *x, const int32_t *rows,
                          const float *row_w, const sl_expert_group *g, float *scratch)
{
    sl_cuda_ctx *c = sl_cuda_enter(b);
    if (!c)
        return;
    if (!g || g->n < 1 || g->n > SL_EXPERT_GROUP_MAX || !g->w[0] || !out || !x || !rows ||
        !row_w || !scratch) {
        SL_CUDA_BAD(c, "expert_group: bad arguments (group %p of %d experts, max %d)", (const void *)g,
                    g ? g->n : -1, SL_EXPERT_GROUP_MAX);
        return;
    }
    const int n = g->n, I = g->w[0]->gate.rows, H = g->w[0]->gate.cols;
    group_rows gr;
    memset(&gr, 0, sizeof gr);
    gr.n = n;
    long long R = 0;
    for (int i = 0; i < n; i++) {
        const sl_expert_weights *w = g->w[i];
        if (!w || g->count[i] < 1 || g->start[i] < 0 || !same_shape(&w->gate, I, H) ||
            !same_shape(&w->up, I, H) || !same_shape(&w->down, H, I)) {
            SL_CUDA_BAD(c, "expert_group: expert %d of %d: no weights, %d rows, or not the shape of "
                        "the first (%d x %d)", i, n, g->count[i], I, H);
            return;
        }
        gr.start[i] = g->start[i];
        gr.count[i] = g->count[i];
        gr.off[i] = (int)R;
        R += g->count[i];
    }
    float *G = scratch, *U = G + R * I, *Y = U + R * I; // (R, I), (R, I), (R, H)

    // the experts the grouped GEMV takes: few tokens, aligned, in the first such one's formats
    bool grouped[SL_EXPERT_GROUP_MAX];
    int fmt_gu = -1, fmt_d = -1, max_n = 0, ns = 0;
    for (int i = 0; i < n; i++) {
        const sl_expert_weights *w = g->w[i];
        const float *gi = G + (long long)gr.off[i] * I;
        bool ok = g->count[i] <= c->gemv.max_by_fmt[w->gate.fmt] && w->gate.fmt == w->up.fmt &&
                  (fmt_gu < 0 || (w->gate.fmt == fmt_gu && w->down.fmt == fmt_d)) &&
                  gemv_fast_ok(sl_cuda_wdev(&w->gate), x) && gemv_fast_ok(sl_cuda_wdev(&w->up), x) &&
                  gemv_fast_ok(sl_cuda_wdev(&w->down), gi);
        if (ok && fmt_gu < 0)
            fmt_gu = w->gate.fmt, fmt_d = w->down.fmt;
        grouped[i] = ok;
        ns += ok;
        max_n = ok && g->count[i] > max_n ? g->count[i] : max_n;
    }

    // 1. gate and up
    gemv_group_mats mm;
    memset(&mm, 0, sizeof mm);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!grouped[i])
            continue;
        const int32_t *ri = rows + g->start[i];
        const long long o = (long long)gr.off[i] * I;
        mm.data[k] = (const uint8_t *)g->w[i]->gate.data, mm.x[k] = x, mm.xrows[k] = ri;
        mm.out[k] = G + o, mm.n[k++] = g->count[i];
        mm.data[k] = (const uint8_t *)g->w[i]->up.data, mm.x[k] = x, mm.xrows[k] = ri;
        mm.out[k] = U + o, mm.n[k++] = g->count[i];
    }
    int first = 0; // the first grouped expert: its weights give the launches' format
    while (first < n - 1 && !grouped[first])
        first++;
    bool gu_grouped = ns > 0 && group_gemv(c, &g->w[first]->gate, mm, k, max_n);
    for (int i = 0; i < n; i++) {
        if (grouped[i] && gu_grouped)
            continue;
        const long long o = (long long)gr.off[i] * I;
        float *yi = Y + (long long)gr.off[i] * H;
        sl_cuda_gather_rows(b, yi, x, rows + g->start[i], g->count[i], H);
        sl_cuda_matmul(c, G + o, yi, &g->w[i]->gate, g->count[i]);
        sl_cuda_matmul(c, U + o, yi, &g->w[i]->up, g->count[i]);
    }

    // 2. silu(gate) * up over every row of the group
    sl_cuda_silu_mul(b, G, G, U, (size_t)R * I);

    // 3. down
    memset(&mm, 0, sizeof mm);
    k = 0;
    for (int i = 0; i < n; i++) {
        if (!grouped[i])
            continue;
        mm.data[k] = (const uint8_t *)g->w[i]->down.data, mm.x[k] = G + (long long)gr.off[i] * I;
        mm.xrows[k] = NULL, mm.out[k] = Y + (long long)gr.off[i] * H, mm.n[k++] = g->count[i];
    }
    bool d_grouped = ns > 0 && group_gemv(c, &g->w[first]->down, mm, k, max_n);
    for (int i = 0; i < n; i++)
        if (!(grouped[i] && d_grouped))
            sl_cuda_matmul(c, Y + (long long)gr.off[i] * H, G + (long long)gr.off[i] * I,
                           &g->w[i]->down, g->count[i]);

    // 4. the weighted sum into out, each row's adds in group order
    group_scatter_kernel<<<(unsigned)R, GROUP_SCATTER_THREADS, 0, c->compute>>>(out, Y, rows, row_w,
                                                                               gr, (int)R, H);
    CUDA_LAUNCHED(c, "expert_group (scatter)");
}

// ---- setup ------------------------------------------------------------------------------------

template <int FMT> static cudaError_t group_allow_smem()
{
    cudaError_t err = cudaSuccess;
    for (int n = 1; n <= GEMV_MAX_T && err == cudaSuccess; n++)
        GEMV_NT_DISPATCH(n, err = cudaFuncSetAttribute(gemv_group_kernel<FMT, NT, GEMV_R, 2>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      GEMV_SMEM));
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(gemv_group_kernel<FMT, 1, GEMV_R1, 2>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_SMEM);
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(gemv_group_kernel<FMT, 1, GEMV_R, 3>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, GEMV_SMEM);
    if constexpr (FMT == SL_WF_Q4)
        for (int ring : {0, 4, 6})
            if (err == cudaSuccess)
                GEMV_TC_RING_DISPATCH(ring, err = cudaFuncSetAttribute(
                                                gemv_group_kernel<FMT, 1, GEMV_TC_R, S>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                GEMV_SMEM + (int)gemv_tc_ring_bytes(S)));
    return err;
}

cudaError_t sl_cuda_expert_group_init(void)
{
    cudaError_t err = cudaSuccess;
    for (int fmt = 0; fmt < SL_WF_COUNT && err == cudaSuccess; fmt++)
        SL_CUDA_FMT_DISPATCH(fmt, err = group_allow_smem<FMT>());
    return err;
}
