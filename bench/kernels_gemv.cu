// bench/kernels: the few-token GEMV per format (one matrix per launch, plain and graph replay,
// the 32768x7168 matrix, the launch floor, SL_CUDA_GEMV sweeps) and the expert groups (a layer's
// experts per launch) — see bench/kernels.cu for what is measured against what.
#include "bench/kernels.h"

__global__ void empty_kernel() {}


// GEMV per format at both expert shapes, rotating over 64 copies, at each token count in ns;
// then (big) one 32768x7168 matrix at 1 token; then the launch floor (an empty kernel per graph
// node).
void bench_gemv(cublasHandle_t cb, double copy_gbps, const std::vector<int> &ns, int gemv_max,
                       bool big, const std::vector<std::string> &specs)
{
    const int shapes[2][2] = {{2048, 7168}, {7168, 2048}}; // gate/up, down
    enum { E = 64 };
    int nmax = 1;
    for (int n : ns)
        nmax = n > nmax ? n : nmax;
    for (int s = 0; s < 2; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        std::vector<float> wf = randv((size_t)rows * cols, 1.0f / sqrtf((float)cols));
        std::vector<float> x = randv((size_t)nmax * cols, 1.0f);
        float *dx = (float *)dput(x.data(), x.size() * 4);
        float *dout = (float *)dalloc((size_t)nmax * rows * 4), *dref = (float *)dalloc((size_t)nmax * rows * 4);
        for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
            if (!fmt_wanted(fmt))
                continue;
            const char *fname = sl_wformat_get(fmt)->name;
            size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
            std::vector<unsigned char> enc(nb);
            sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
            std::vector<float> deq((size_t)rows * cols);
            sl_dequantize_rows((sl_wformat)fmt, enc.data(), rows, cols, 0, rows, deq.data());
            float *dq = (float *)dput(deq.data(), deq.size() * 4); // what our kernels compute with
            std::vector<sl_weight> w(E);
            for (int k = 0; k < E; k++)
                w[k] = sl_weight{rows, cols, fmt, dput(enc.data(), nb)};
            for (int n : ns) {
                int reps = 4 * E;
                auto call = [&](int r) { B->ops->matmul(B, dout, dx, &w[r % E], n); };
                const float one = 1.0f, zero = 0.0f;
                CB(cublasSgemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, dq, cols, dx, cols,
                               &zero, dref, rows));
                for (const std::string &spec : specs) { // variants: graph replay only
                    std::string all = "max=16,pdl=1,pf=-1,fill=2,rows=0,small=1," + spec;
                    if (sl_cuda_gemv_tune(B, all.c_str()))
                        check_backend("gemv tune");
                    poison(dout, (size_t)n * rows);
                    double mg = time_graph_ms(reps, call);
                    double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                    double ggbps = (double)nb * reps / (mg * 1e-3) / 1e9;
                    row("gemv", fname, rows, cols, n, 0, spec.c_str(), mg * 1e3 / reps, ggbps,
                        2.0 * n * rows * cols * reps / (mg * 1e-3) / 1e12, "d2d-copy", ggbps / copy_gbps, chk);
                }
                if (!specs.empty())
                    continue;
                poison(dout, (size_t)n * rows);
                double m = time_ms(reps, call);
                double chk = rel_l2_dev(dout, dref, (size_t)n * rows);
                poison(dout, (size_t)n * rows);
                double mg = time_graph_ms(reps, call);
                double chk_g = rel_l2_dev(dout, dref, (size_t)n * rows);
                chk = chk_g > chk || chk_g != chk_g ? chk_g : chk;
                double gbps = (double)nb * reps / (m * 1e-3) / 1e9, ggbps = (double)nb * reps / (mg * 1e-3) / 1e9;
                double fl = 2.0 * n * rows * cols * reps / 1e12;
                // cuda/kernels_gemv.cu's per-format crossover, unless SL_CUDA_GEMV sets max=
                static const int by_fmt[SL_WF_COUNT] = {12, 6, 4, 4, 4};
                const char *kind = n <= (gemv_max > 0 ? gemv_max : by_fmt[fmt]) ? "gemv" : "gemm";
                row(kind, fname, rows, cols, n, 0, "stream", m * 1e3 / reps, gbps, fl / (m * 1e-3),
                    "d2d-copy", gbps / copy_gbps, chk);
                row(kind, fname, rows, cols, n, 0, "graph", mg * 1e3 / reps, ggbps, fl / (mg * 1e-3),
                    "d2d-copy", ggbps / copy_gbps, chk);
            }
            for (auto &k : w)
                B->ops->free(B, k.data);
            B->ops->free(B, dq);
        }
        B->ops->free(B, dx);
        B->ops->free(B, dout);
        B->ops->free(B, dref);
    }

    // one large matrix (32768 x 7168, 235 M weights, well past L2): the streaming rate with the
    // per-launch cost amortised
    const int brows = 32768, bcols = 7168;
    std::vector<float> bwf = big ? randv((size_t)brows * bcols, 1.0f / sqrtf((float)bcols)) : std::vector<float>();
    for (int fmt = 0; fmt < SL_WF_COUNT && big; fmt++) {
        const int rows = brows, cols = bcols;
        const char *fname = sl_wformat_get(fmt)->name;
        size_t nb = sl_wformat_bytes((sl_wformat)fmt, rows, cols);
        const std::vector<float> &wf = bwf;
        std::vector<unsigned char> enc(nb);
        sl_quantize((sl_wformat)fmt, wf.data(), rows, cols, enc.data());
        sl_weight w = {rows, cols, fmt, dput(enc.data(), nb)};
        std::vector<float> x = randv(cols, 1.0f);
        float *dx = (float *)dput(x.data(), x.size() * 4), *dout = (float *)dalloc((size_t)rows * 4);
        int reps = 8;
        auto call = [&](int) { B->ops->matmul(B, dout, dx, &w, 1); };
        double mg = time_graph_ms(reps, call);
        double gbps = (double)nb * reps / (mg * 1e-3) / 1e9;
        row("gemv-big", fname, rows, cols, 1, 0, "graph", mg * 1e3 / reps, gbps,
            2.0 * rows * cols * reps / (mg * 1e-3) / 1e12, "d2d-copy", gbps / copy_gbps, -1);
        B->ops->free(B, w.data);
        B->ops->free(B, dx);
        B->ops->free(B, dout);
    }

    // the launch floor: what a graph node costs with no work in it
    int reps = 256;
    double mg = time_graph_ms(reps, [&](int) { empty_kernel<<<132, 256, 0, S>>>(); });
    row("launch", "-", 0, 0, 0, 0, "graph", mg * 1e3 / reps, 0, 0, "-", 0, -1);
}

// Expert groups per format at DeepSeek-V3 shapes: 8 experts a call, n tokens each (every expert
// takes all n), rotating over 64 experts; the grouped op and the per-expert loop it replaces.
void bench_expert_group(double copy_gbps, const std::vector<int> &ns)
{
    enum { H = 7168, I = 2048, E = 64, G = 8 };
    int nmax = 1;
    for (int n : ns)
        nmax = n > nmax ? n : nmax;
    std::vector<float> wgu = randv((size_t)I * H, 1.0f / sqrtf((float)H));
    std::vector<float> wd = randv((size_t)H * I, 1.0f / sqrtf((float)I));
    std::vector<float> x = randv((size_t)nmax * H, 1.0f);
    float *dx = (float *)dput(x.data(), x.size() * 4);
    float *dout = (float *)dalloc((size_t)nmax * H * 4), *dref = (float *)dalloc((size_t)nmax * H * 4);
    // the loop's buffers, and the group's scratch for G * nmax rows
    float *ex = (float *)dalloc((size_t)nmax * H * 4), *eg = (float *)dalloc((size_t)nmax * I * 4);
    float *eu = (float *)dalloc((size_t)nmax * I * 4);
    float *scratch = (float *)dalloc((size_t)G * nmax * (2 * I + H) * 4);
    std::vector<int32_t> rows((size_t)G * nmax);
    std::vector<float> roww((size_t)G * nmax);
    for (int i = 0; i < G * nmax; i++)
        roww[i] = 0.05f + 0.3f * (float)rand() / RAND_MAX;
    float *drw = (float *)dput(roww.data(), roww.size() * 4);
    int32_t *drows = (int32_t *)dalloc(rows.size() * 4);
    for (int fmt = 0; fmt < SL_WF_COUNT; fmt++) {
        if (!fmt_wanted(fmt))
            continue;
        const char *fname = sl_wformat_get(fmt)->name;
        size_t nb_gu = sl_wformat_bytes((sl_wformat)fmt, I, H), nb_d = sl_wformat_bytes((sl_wformat)fmt, H, I);
        std::vector<unsigned char> egu(nb_gu), ed(nb_d);
        sl_quantize((sl_wformat)fmt, wgu.data(), I, H, egu.data());
        sl_quantize((sl_wformat)fmt, wd.data(), H, I, ed.data());
        std::vector<sl_expert_weights> ew(E);
        for (int k = 0; k < E; k++)
            ew[k] = sl_expert_weights{sl_weight{I, H, fmt, dput(egu.data(), nb_gu)},
                                      sl_weight{I, H, fmt, dput(egu.data(), nb_gu)},
                                      sl_weight{H, I, fmt, dput(ed.data(), nb_d)}};
        const double bytes = (double)G * (2 * nb_gu + nb_d);
        for (int n : ns) {
            for (int i = 0; i < G; i++)
                for (int t = 0; t < n; t++)
                    rows[(size_t)i * n + t] = t;
            CK(cudaMemcpy(drows, rows.data(), (size_t)G * n * 4, cudaMemcpyHostToDevice));
            auto group_of = [&](int r) {
                sl_expert_group g;
                g.n = G;
                for (int i = 0; i < G; i++) {
                    g.w[i] = &ew[(r * G + i) % E];
                    g.start[i] = i * n;
                    g.count[i] = n;
                }
                return g;
            };
            auto grouped = [&](int r) {
                sl_expert_group g = group_of(r);
                B->ops->expert_group(B, dout, dx, drows, drw, &g, scratch);
            };
            auto loop = [&](int r) {
                sl_expert_group g = group_of(r);
                for (int i = 0; i < G; i++) {
                    const sl_expert_weights *w = g.w[i];
                    const int32_t *ri = drows + g.start[i];
                    B->ops->gather_rows(B, ex, dx, ri, n, H);
                    B->ops->matmul(B, eg, ex, &w->gate, n);
                    B->ops->matmul(B, eu, ex, &w->up, n);
                    B->ops->silu_mul(B, eg, eg, eu, (size_t)n * I);
                    B->ops->matmul(B, ex, eg, &w->down, n);
                    B->ops->scatter_add_rows(B, dout, ex, ri, drw + g.start[i], n, H);
                }
            };
            // check: one group from zero against the loop from zero, the scratch poisoned
            B->ops->zero(B, dout, (size_t)n * H);
            loop(0);
            CK(cudaMemcpyAsync(dref, dout, (size_t)n * H * 4, cudaMemcpyDeviceToDevice, S));
            poison(scratch, (size_t)G * n * (2 * I + H));
            B->ops->zero(B, dout, (size_t)n * H);
            grouped(0);
            check_backend("expert group");
            double chk = rel_l2_dev(dout, dref, (size_t)n * H);
            int reps = 8 * (E / G);
            const char *kinds[2] = {"exp-group", "exp-loop"};
            for (int k = 0; k < 2; k++) {
                double m = k == 0 ? time_ms(reps, grouped) : time_ms(reps, loop);
                double mg = k == 0 ? time_graph_ms(reps, grouped) : time_graph_ms(reps, loop);
                double fl = 2.0 * 3 * n * (double)I * H * G * reps / 1e12;
                for (int gmode = 0; gmode < 2; gmode++) {
                    double ms_ = gmode ? mg : m;
                    double gbps = bytes * reps / (ms_ * 1e-3) / 1e9;
                    row(kinds[k], fname, I, H, n, 0, gmode ? "graph" : "stream", ms_ * 1e3 / reps, gbps,
                        fl / (ms_ * 1e-3), "d2d-copy", gbps / copy_gbps, k == 0 ? chk : -1);
                }
            }
        }
        for (auto &w : ew) {
            B->ops->free(B, w.gate.data);
            B->ops->free(B, w.up.data);
            B->ops->free(B, w.down.data);
        }
    }
    void *bufs[] = {dx, dout, dref, ex, eg, eu, scratch, drw, drows};
    for (void *p : bufs)
        B->ops->free(B, p);
}
