// bench/kernels: the CUDA backend's matrix and attention kernels against the machine's own limits,
// measured in the same run (DESIGN.md, "Performance method"):
//   - GEMV (1..16 tokens) per weight format at 7168x2048 and 2048x7168, rotating over 64
//     distinct expert copies so L2 (50 MB on an H100) cannot hold them: achieved GB/s of weight
//     bytes, over the device-to-device copy bandwidth (bytes read + written) of a 1 GiB copy;
//     plain launches ("stream") and CUDA-graph replay ("graph"); every result checked (rel L2)
//     against cuBLAS SGEMM on the dequantized weight, output poisoned with NaN before each mode;
//   - the same GEMV on one 32768x7168 matrix: the streaming rate with launch costs amortised;
//   - the launch floor: an empty kernel per graph node;
//   - expert GEMM at 16, 128 and 1024 tokens per format, both activation modes, every path
//     (bench_gemm): TFLOP/s over cuBLAS bf16 (bf16 x bf16 -> fp32, tensor cores) on the same
//     shape, each checked against the SGEMM result on the dequantized weight (rel L2);
//   - MLA decode (absorbed form, 1 token, 128 heads, kv_lora 512, rope 64) at 4K and 32K context,
//     rotating over 8 layers' caches: GB/s of latent + rope-key bytes read;
//   - expert groups (model.h's expert_group): 8 experts of 2048x7168 gate/up and 7168x2048 down
//     per call, the given tokens each (default 1), rotating over 64 distinct experts (8 groups,
//     1.6-11.3 GB by format, so L2 holds none): GB/s of the group's weight bytes over the copy
//     rate, next to the per-expert loop of ops it replaces (gather, 3 matmuls, silu, scatter per
//     expert); the group is checked (rel L2) against the loop, its scratch poisoned with NaN.
// Prints a table and writes CSV (first lines: device, runtime, date as comments).
//
// Build: `make bench` (build/bench/kernels).
// Run: build/bench/kernels [out.csv [all|mm|gemv|mla [token counts]]]
//   default build/bench/kernels.csv, all; mm = GEMV and GEMM; gemv = GEMV only, at the
//   comma-separated token counts (default 1,2,4,8,16); gemv-experts = without the big matrix;
//   gemv-sweep = the experts under each of the ';'-separated SL_CUDA_GEMV settings in the next
//   argument (graph replay), e.g. "pdl=0;small=0;fill=3"; expert-group = the expert groups only,
//   at the token counts given (default 1). SL_CUDA_GEMV (cuda/internal.cuh) tunes the GEMV (and
//   the group's GEMV); with max=k, counts above k take the GEMM and are labelled so.
//   gemm = the expert GEMM only; gemm1 FMT ROWS COLS N BF16 PATH TILE = one matmul (for ncu).
//   SL_BENCH_FMTS="q4,fp8" limits the GEMV and expert-group benchmarks to those weight formats
//   (a short run for ncu: the 64 copies of one format, not of all five).
#include "bench/kernels.h"

sl_backend *B;
cudaStream_t S;
FILE *CSV;

void check_backend(const char *what)
{
    sl_error e = {0};
    if (sl_cuda_sync(B, &e)) {
        fprintf(stderr, "%s: %s\n", what, e.msg);
        exit(1);
    }
}

void *dalloc(size_t bytes)
{
    void *p;
    if (B->ops->alloc(B, bytes, &p)) {
        fprintf(stderr, "out of backend memory for %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

void *dput(const void *h, size_t bytes)
{
    void *p = dalloc(bytes);
    if (B->ops->upload(B, p, h, bytes)) {
        fprintf(stderr, "upload: %s\n", sl_cuda_backend_error(B));
        exit(1);
    }
    return p;
}

static float randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

std::vector<float> randv(size_t n, float scale)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = scale * randn();
    return v;
}

void row(const char *kind, const char *fmt, int rows, int cols, int tokens, int ctx,
                const char *mode, double us, double gbps, double tflops, const char *ref,
                double ratio, double check)
{
    printf("%-8s %-5s %5d x %-5d %4d tok %5d ctx %-6s %9.2f us %7.1f GB/s %6.2f TFLOP/s  %-11s %6.3f",
           kind, fmt, rows, cols, tokens, ctx, mode, us, gbps, tflops, ref, ratio);
    if (check >= 0)
        printf("  check %.1e", check);
    printf("\n");
    fprintf(CSV, "%s,%s,%d,%d,%d,%d,%s,%.3f,%.2f,%.4f,%s,%.4f,%.3g\n", kind, fmt, rows, cols,
            tokens, ctx, mode, us, gbps, tflops, ref, ratio, check);
    fflush(CSV); // a run stopped at its time limit keeps its rows
    fflush(stdout);
}

double rel_l2_dev(const float *got_d, const float *want_d, size_t n)
{
    std::vector<float> g(n), w(n);
    CK(cudaStreamSynchronize(S)); // the compute stream does not order with cudaMemcpy's
    CK(cudaMemcpy(g.data(), got_d, n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(w.data(), want_d, n * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] - w[i];
        num += d * d;
        den += (double)w[i] * w[i];
    }
    return sqrt(num / den);
}

__global__ void f32_to_bf16(const float *in, __nv_bfloat16 *out, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(in[i]);
}

void poison(float *p, size_t n) { CK(cudaMemsetAsync(p, 0xff, n * 4, S)); } // NaN

bool fmt_wanted(int fmt)
{
    const char *list = getenv("SL_BENCH_FMTS"), *name = sl_wformat_get(fmt)->name;
    if (!list || !*list)
        return true;
    size_t len = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += len)
        if ((p == list || p[-1] == ',') && (p[len] == ',' || p[len] == 0))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *csv_path = argc > 1 ? argv[1] : "build/bench/kernels.csv";
    const char *only = argc > 2 ? argv[2] : "all"; // all, mm, gemv, gemv-experts, gemv-sweep, gemm, gemm1, mla, expert-group
    bool eg_only = !strcmp(only, "expert-group");
    std::vector<int> ns;
    for (const char *p = argc > 3 ? argv[3] : eg_only ? "1" : "1,2,4,8,16"; p; p = strchr(p, ','), p = p ? p + 1 : p)
        if (atoi(p) > 0)
            ns.push_back(atoi(p));
    // gemv-sweep: SL_CUDA_GEMV variants, ';'-separated, each timed (graph replay) on the experts
    std::vector<std::string> specs;
    if (!strcmp(only, "gemv-sweep"))
        for (const char *p = argc > 4 ? argv[4] : ""; *p;) {
            const char *e = strchr(p, ';');
            specs.push_back(e ? std::string(p, e - p) : std::string(p));
            p = e ? e + 1 : p + strlen(p);
        }
    // the GEMV's token limit, as cuda/ reads it (labels: counts above it run the GEMM)
    int gemv_max = 0; // 0: cuda/kernels_gemv.cu's per-format defaults
    const char *tune = getenv("SL_CUDA_GEMV");
    if (tune && strstr(tune, "max="))
        gemv_max = atoi(strstr(tune, "max=") + 4);
    if (tune)
        printf("SL_CUDA_GEMV=%s\n", tune);
    if (sl_cuda_device_count() == 0) {
        fprintf(stderr, "bench/kernels: no CUDA device\n");
        return 2;
    }
    sl_error e = {0};
    // one matmul (for a profiler, which saves and restores the device memory a kernel may touch):
    // a small budget; else all free memory
    size_t budget = strcmp(only, "gemm1") == 0 ? (size_t)4 << 30 : 0;
    if (sl_cuda_backend_create(0, budget, &B, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    S = (cudaStream_t)sl_cuda_compute_stream(B);
    cublasHandle_t cb;
    CB(cublasCreate(&cb));
    CB(cublasSetStream(cb, S));
    CSV = fopen(csv_path, "w");
    if (!CSV) {
        perror(csv_path);
        return 1;
    }
    char dev[256];
    sl_cuda_describe(0, dev, sizeof dev);
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", gmtime(&now));
    printf("device: %s\ncuda runtime %d.%d, nvcc %d.%d, %s UTC\n", dev, rt / 1000, rt % 1000 / 10,
           __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, date);
    fprintf(CSV, "# device: %s\n# cuda runtime %d.%d, nvcc %d.%d, %s UTC\n", dev, rt / 1000,
            rt % 1000 / 10, __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, date);
    if (tune)
        fprintf(CSV, "# SL_CUDA_GEMV=%s\n", tune);
    fprintf(CSV, "kind,format,rows,cols,tokens,context,mode,time_us,gbps,tflops,reference,ratio,check\n");
    srand(1234);

    if (strcmp(only, "gemm1") == 0 && argc >= 10) {
        bench_gemm1(argv + 3);
        B->ops->destroy(B);
        return 0;
    }
    // ---- the copy bandwidth the GEMV is measured against ------------------------------------
    size_t cbytes = (size_t)1 << 30;
    void *c0 = dalloc(cbytes), *c1 = dalloc(cbytes);
    double ms = time_ms(10, [&](int) { CK(cudaMemcpyAsync(c1, c0, cbytes, cudaMemcpyDeviceToDevice, S)); });
    double copy_gbps = 2.0 * cbytes * 10 / (ms * 1e-3) / 1e9;
    row("d2d-copy", "-", 0, 0, 0, 0, "stream", ms * 1e3 / 10, copy_gbps, 0, "-", 1.0, -1);
    B->ops->free(B, c0);
    B->ops->free(B, c1);

    // ---- GEMV and expert GEMM per format ---------------------------------------------------------
    bool mm = !strcmp(only, "all") || !strcmp(only, "mm");
    if (mm || !strcmp(only, "gemv") || !strcmp(only, "gemv-experts") || !strcmp(only, "gemv-sweep"))
        bench_gemv(cb, copy_gbps, ns, gemv_max, !strcmp(only, "gemv") || mm, specs);
    if (mm || strcmp(only, "gemm") == 0)
        bench_gemm(cb);

    // ---- expert groups ---------------------------------------------------------------------------
    if (eg_only || !strcmp(only, "all"))
        bench_expert_group(copy_gbps, eg_only ? ns : std::vector<int>{1, 4});

    // ---- MLA decode (absorbed) ------------------------------------------------------------------
    sl_mla_dims d = {128, 128, 64, 128, 512, 0.135f};
    int qk = d.nope + d.rope, L = d.kv_lora;
    std::vector<float> kvb = randv((size_t)d.n_heads * (d.nope + d.v) * L, 1.0f / sqrtf((float)L));
    sl_weight kv_b = {d.n_heads * (d.nope + d.v), L, SL_WF_F32, dput(kvb.data(), kvb.size() * 4)};
    std::vector<float> q = randv((size_t)d.n_heads * qk, 1.0f);
    float *dq = (float *)dput(q.data(), q.size() * 4);
    float *dout = (float *)dalloc((size_t)d.n_heads * d.v * 4);
    for (int T : {4096, 32768}) {
        if (strcmp(only, "all") != 0 && strcmp(only, "mla") != 0)
            break;
        enum { LAYERS = 8 };
        std::vector<float> lat = randv((size_t)T * L, 1.0f), kr = randv((size_t)T * d.rope, 1.0f);
        float *dl[LAYERS], *dk[LAYERS];
        for (int k = 0; k < LAYERS; k++) {
            dl[k] = (float *)dput(lat.data(), lat.size() * 4);
            dk[k] = (float *)dput(kr.data(), kr.size() * 4);
        }
        float *scratch = (float *)dalloc(B->ops->mla_scratch_floats(&d, 1, T, true) * 4);
        int reps = 4 * LAYERS;
        auto call = [&](int r) {
            B->ops->mla_attention(B, dout, dq, dl[r % LAYERS], dk[r % LAYERS], &kv_b, 1, T - 1, &d,
                                  true, scratch);
        };
        double m = time_ms(reps, call), mg = time_graph_ms(reps, call);
        double bytes = (double)T * (L + d.rope) * 4;
        double flops = 4.0 * d.n_heads * T * (L + d.rope / 2.0);
        for (int k = 0; k < 2; k++) {
            double ms_ = k ? mg : m;
            double gbps = bytes * reps / (ms_ * 1e-3) / 1e9;
            row("mla-abs", "f32", d.n_heads, L, 1, T, k ? "graph" : "stream", ms_ * 1e3 / reps, gbps,
                flops * reps / (ms_ * 1e-3) / 1e12, "d2d-copy", gbps / copy_gbps, -1);
        }
        for (int k = 0; k < LAYERS; k++) {
            B->ops->free(B, dl[k]);
            B->ops->free(B, dk[k]);
        }
        B->ops->free(B, scratch);
    }
    check_backend("end");
    size_t cap, used, peak;
    sl_cuda_arena_stats(B, &cap, &used, &peak);
    printf("arena: %.2f GiB, peak use %.2f GiB\ncsv: %s\n", cap / 1073741824.0, peak / 1073741824.0,
           csv_path);
    fclose(CSV);
    cublasDestroy(cb);
    B->ops->destroy(B);
    return 0;
}
