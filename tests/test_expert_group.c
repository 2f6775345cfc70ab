/* Routed experts computed as a group (model.h's expert_group op and the providers' experts_ready)
 * on the CPU backend: the op equals the per-expert loop of ops bit for bit and a direct formula
 * within fp32 rounding; the forward pass gives the same logits, bit for bit, with and without
 * the op; a streamed model with room for every expert hands them out in groups and still
 * matches the resident run. */
#include "cpu/cpu.h"
#include "format/format.h"
#include "model/model.h"
#include "quant/quant.h"
#include "stream/stream.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void eg_seed(void)
{
    unsigned s = (unsigned)time(NULL) ^ (unsigned)getpid();
    cr_log_info("seed %u", s);
    srand(s);
}

static float eg_randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

static sl_weight eg_weight(int fmt, int rows, int cols)
{
    float *f = malloc((size_t)rows * cols * sizeof(float));
    cr_assert(f);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        f[i] = eg_randn() / sqrtf((float)cols);
    void *enc = malloc(sl_wformat_bytes((sl_wformat)fmt, rows, cols));
    cr_assert(enc);
    sl_quantize((sl_wformat)fmt, f, rows, cols, enc);
    free(f);
    return (sl_weight){rows, cols, fmt, enc};
}

/* A group of n experts (formats cycling from fmt0) over T tokens: expert i takes count[i]
 * distinct tokens in a random order, its entries placed at a random block of rows/row_w. */
typedef struct {
    int n, T, H, I, total;
    sl_expert_weights w[SL_EXPERT_GROUP_MAX];
    sl_expert_group g;
    int32_t rows[SL_EXPERT_GROUP_MAX * 64];
    float row_w[SL_EXPERT_GROUP_MAX * 64];
} eg_case;

static void eg_case_make(eg_case *c, int n, int T, int H, int I, const int *count, int fmt0, bool mixed)
{
    memset(c, 0, sizeof *c);
    c->n = n, c->T = T, c->H = H, c->I = I;
    int order[SL_EXPERT_GROUP_MAX];
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) { /* blocks of rows in another order than the group's */
        int j = rand() % (i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    int at[SL_EXPERT_GROUP_MAX];
    for (int k = 0, pos = 0; k < n; k++) {
        at[order[k]] = pos;
        pos += count[order[k]];
    }
    c->g.n = n;
    for (int i = 0; i < n; i++) {
        int fmt = mixed ? (fmt0 + i) % SL_WF_COUNT : fmt0;
        c->w[i] = (sl_expert_weights){eg_weight(fmt, I, H), eg_weight(fmt, I, H), eg_weight(fmt, H, I)};
        c->g.w[i] = &c->w[i];
        c->g.start[i] = at[i];
        c->g.count[i] = count[i];
        cr_assert(count[i] <= T && count[i] <= 64);
        int perm[64];
        for (int t = 0; t < T; t++)
            perm[t] = t;
        for (int t = T - 1; t > 0; t--) {
            int j = rand() % (t + 1), x = perm[t];
            perm[t] = perm[j], perm[j] = x;
        }
        for (int k = 0; k < count[i]; k++) {
            c->rows[at[i] + k] = perm[k];
            c->row_w[at[i] + k] = 0.1f + (float)rand() / RAND_MAX;
        }
        c->total += count[i];
    }
}

static void eg_case_free(eg_case *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->w[i].gate.data);
        free(c->w[i].up.data);
        free(c->w[i].down.data);
    }
}

static float *eg_randv(size_t n)
{
    float *p = malloc(n * sizeof(float));
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        p[i] = eg_randn();
    return p;
}

/* The op against the loop of ops (bit for bit) and against double-precision sums over the
 * dequantized weights (rel L2 1e-5). */
static void eg_check_op(eg_case *c)
{
    sl_backend *b;
    sl_error e = {0};
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    cr_assert(b->ops->expert_group, "the CPU backend has expert_group");
    const sl_backend_ops *op = b->ops;
    int T = c->T, H = c->H, I = c->I;
    float *x = eg_randv((size_t)T * H), *out0 = eg_randv((size_t)T * H);
    float *got = malloc((size_t)T * H * sizeof(float)), *loop = malloc((size_t)T * H * sizeof(float));
    size_t sf = sl_expert_group_scratch_floats(&c->g);
    cr_assert_eq(sf, (size_t)c->total * (2 * I + H));
    float *scratch = malloc(sf * sizeof(float));
    for (size_t i = 0; i < sf; i++)
        scratch[i] = NAN;
    memcpy(got, out0, (size_t)T * H * sizeof(float));
    memcpy(loop, out0, (size_t)T * H * sizeof(float));
    op->expert_group(b, got, x, c->rows, c->row_w, &c->g, scratch);

    float *xe = malloc((size_t)T * H * sizeof(float)), *ge = malloc((size_t)T * I * sizeof(float));
    float *ue = malloc((size_t)T * I * sizeof(float));
    for (int i = 0; i < c->n; i++) {
        int cnt = c->g.count[i], s = c->g.start[i];
        op->gather_rows(b, xe, x, c->rows + s, cnt, H);
        op->matmul(b, ge, xe, &c->w[i].gate, cnt);
        op->matmul(b, ue, xe, &c->w[i].up, cnt);
        op->silu_mul(b, ge, ge, ue, (size_t)cnt * I);
        op->matmul(b, xe, ge, &c->w[i].down, cnt);
        op->scatter_add_rows(b, loop, xe, c->rows + s, c->row_w + s, cnt, H);
    }
    cr_assert_arr_eq(got, loop, (size_t)T * H * sizeof(float), "expert_group differs from the loop of ops");

    /* direct formula, double precision */
    double *want = malloc((size_t)T * H * sizeof(double)), *gd = malloc((size_t)I * sizeof(double));
    float *wg = malloc((size_t)I * H * sizeof(float)), *wu = malloc((size_t)I * H * sizeof(float));
    float *wd = malloc((size_t)H * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * H; i++)
        want[i] = out0[i];
    for (int i = 0; i < c->n; i++) {
        const sl_expert_weights *w = &c->w[i];
        sl_dequantize_rows((sl_wformat)w->gate.fmt, w->gate.data, I, H, 0, I, wg);
        sl_dequantize_rows((sl_wformat)w->up.fmt, w->up.data, I, H, 0, I, wu);
        sl_dequantize_rows((sl_wformat)w->down.fmt, w->down.data, H, I, 0, H, wd);
        for (int k = 0; k < c->g.count[i]; k++) {
            int t = c->rows[c->g.start[i] + k];
            double rw = c->row_w[c->g.start[i] + k];
            const float *xt = x + (size_t)t * H;
            for (int r = 0; r < I; r++) {
                double a = 0, u = 0;
                for (int j = 0; j < H; j++) {
                    a += (double)wg[(size_t)r * H + j] * xt[j];
                    u += (double)wu[(size_t)r * H + j] * xt[j];
                }
                gd[r] = a / (1 + exp(-a)) * u;
            }
            for (int r = 0; r < H; r++) {
                double y = 0;
                for (int j = 0; j < I; j++)
                    y += (double)wd[(size_t)r * I + j] * gd[j];
                want[(size_t)t * H + r] += rw * y;
            }
        }
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)T * H; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += (want[i] - out0[i]) * (want[i] - out0[i]);
    }
    cr_expect_leq(sqrt(num / den), 1e-5, "expert_group vs formula: rel L2 %.3g of the added part",
                  sqrt(num / den));
    free(want), free(gd), free(wg), free(wu), free(wd);
    free(x), free(out0), free(got), free(loop), free(scratch), free(xe), free(ge), free(ue);
    b->ops->destroy(b);
}

Test(expert_group, cpu_op_equals_loop_of_ops_one_token_each)
{
    eg_seed();
    static eg_case c;
    int count[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    eg_case_make(&c, 8, 1, 96, 40, count, SL_WF_BF16, false);
    eg_check_op(&c);
    eg_case_free(&c);
}

Test(expert_group, cpu_op_equals_loop_of_ops_ragged_counts_mixed_formats)
{
    eg_seed();
    static eg_case c;
    int count[SL_EXPERT_GROUP_MAX];
    for (int i = 0; i < SL_EXPERT_GROUP_MAX; i++)
        count[i] = 1 + rand() % 6;
    eg_case_make(&c, SL_EXPERT_GROUP_MAX, 6, 64, 32, count, SL_WF_F32, true);
    eg_check_op(&c);
    eg_case_free(&c);
}

/* ---- the forward pass with and without the op ------------------------------------------ */

static sl_backend_ops eg_plain_ops; /* the CPU ops without expert_group */

static float *eg_logits(sl_backend *b, const char *fixture, int *rows, int *vocab)
{
    char src[256];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    sl_error e = {0};
    sl_model *m;
    cr_assert_eq(sl_model_load_hf(src, b, 16, &m, &e), 0, "%s", e.msg);
    const int32_t prompt[] = {5, 77, 301, 12, 190, 44, 9};
    enum { NP = 7, NG = 6 };
    *vocab = sl_model_config(m)->vocab_size;
    *rows = NP + NG;
    float *lg = malloc((size_t)*rows * *vocab * sizeof(float));
    sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_create(m, 32, &kv, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_model_forward(m, &kv, prompt, NP, true, lg, &e), 0, "%s", e.msg);
    for (int i = 0; i < NG; i++) {
        const float *row = lg + (size_t)(NP - 1 + i) * *vocab;
        int32_t best = 0;
        for (int v = 1; v < *vocab; v++)
            if (row[v] > row[best])
                best = v;
        cr_assert_eq(sl_model_forward(m, &kv, &best, 1, false, lg + (size_t)(NP + i) * *vocab, &e), 0,
                     "%s", e.msg);
    }
    sl_kv_cache_destroy(m, &kv);
    sl_model_free(m);
    return lg;
}

static void eg_check_forward(const char *fixture)
{
    sl_backend *b, *p;
    sl_error e = {0};
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    cr_assert_eq(sl_cpu_backend_create(2, &p, &e), 0);
    eg_plain_ops = *p->ops;
    eg_plain_ops.expert_group = NULL;
    p->ops = &eg_plain_ops;
    int rows, vocab, rows2, vocab2;
    float *grouped = eg_logits(b, fixture, &rows, &vocab);
    float *single = eg_logits(p, fixture, &rows2, &vocab2);
    cr_assert_eq(rows, rows2);
    cr_assert_arr_eq(grouped, single, (size_t)rows * vocab * sizeof(float),
                     "%s: logits with expert groups differ from one expert at a time", fixture);
    free(grouped);
    free(single);
    b->ops->destroy(b);
    p->ops->destroy(p);
}

Test(expert_group, forward_with_groups_equals_one_at_a_time_tiny_a) { eg_check_forward("tiny-a-bf16"); }
Test(expert_group, forward_with_groups_equals_one_at_a_time_tiny_b_fp8) { eg_check_forward("tiny-b-fp8"); }

/* ---- a streamed model hands out groups ----------------------------------------------------- */

static struct {
    sl_backend_ops ops;
    void (*group)(sl_backend *, float *, const float *, const int32_t *, const float *,
                  const sl_expert_group *, float *);
    int calls, experts, largest;
} eg_count;

static void eg_counting_group(sl_backend *b, float *out, const float *x, const int32_t *rows,
                              const float *row_w, const sl_expert_group *g, float *scratch)
{
    eg_count.calls++;
    eg_count.experts += g->n;
    eg_count.largest = g->n > eg_count.largest ? g->n : eg_count.largest;
    eg_count.group(b, out, x, rows, row_w, g, scratch);
}

Test(expert_group, streamed_experts_come_in_groups_and_match_resident)
{
    const char *fixture = "tiny-b-bf16";
    char dir[64] = "/tmp/sluice-expert-group-XXXXXX", src[256], path[256];
    cr_assert(mkdtemp(dir));
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    snprintf(path, sizeof path, "%s/%s.sluice", dir, fixture);
    sl_convert_opts co;
    sl_convert_opts_default(&co);
    co.threads = 2;
    sl_error e = {0};
    cr_assert_eq(sl_convert(src, path, &co, NULL, &e), 0, "convert: %s", e.msg);

    sl_backend *b;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    int rows, vocab;
    float *want = eg_logits(b, fixture, &rows, &vocab);
    eg_count.ops = *b->ops;
    eg_count.group = b->ops->expert_group;
    eg_count.ops.expert_group = eg_counting_group;
    b->ops = &eg_count.ops;

    /* every expert gets a backend slot: from the second token on, a layer's experts are hits */
    sl_stream *st;
    sl_model *m;
    sl_stream_opts so = {.host_budget = 1 << 26, .workers = 2, .prefetch = true, .max_tokens = 16,
                         .max_ctx = 32};
    cr_assert_eq(sl_stream_open(path, b, &so, &st, &m, &e), 0, "%s", e.msg);
    const int32_t prompt[] = {5, 77, 301, 12, 190, 44, 9};
    enum { NP = 7, NG = 6 };
    float *got = malloc((size_t)rows * vocab * sizeof(float));
    sl_kv_cache kv;
    cr_assert_eq(sl_kv_cache_create(m, 32, &kv, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_model_forward(m, &kv, prompt, NP, true, got, &e), 0, "%s", e.msg);
    for (int i = 0; i < NG; i++) {
        int32_t t = 0;
        const float *row = want + (size_t)(NP - 1 + i) * vocab; /* the resident run's ids */
        for (int v = 1; v < vocab; v++)
            if (row[v] > row[t])
                t = v;
        cr_assert_eq(sl_model_forward(m, &kv, &t, 1, false, got + (size_t)(NP + i) * vocab, &e), 0,
                     "%s", e.msg);
    }
    sl_kv_cache_destroy(m, &kv);
    sl_stream_stats s;
    sl_stream_get_stats(st, &s);
    sl_stream_close(st);

    cr_log_info("%d expert groups, %d experts, largest %d; tier-1 hits %llu of %llu", eg_count.calls,
                eg_count.experts, eg_count.largest, (unsigned long long)s.tier1_hits,
                (unsigned long long)s.requests);
    cr_assert_eq((uint64_t)eg_count.experts, s.requests, "every requested expert went through a group");
    cr_assert_gt(s.tier1_hits, 0);
    cr_assert_gt(eg_count.largest, 1, "hits of one layer must come out together");
    cr_assert_lt(eg_count.calls, eg_count.experts);
    for (int r = 0; r < rows; r++) {
        double num = 0, den = 0;
        for (int v = 0; v < vocab; v++) {
            double d = (double)got[(size_t)r * vocab + v] - want[(size_t)r * vocab + v];
            num += d * d;
            den += (double)want[(size_t)r * vocab + v] * want[(size_t)r * vocab + v];
        }
        cr_expect_leq(sqrt(num / den), 1e-6, "row %d: streamed vs resident rel L2 %.3g", r, sqrt(num / den));
    }
    free(want);
    free(got);
    b->ops->destroy(b);
    unlink(path);
    rmdir(dir);
}
