/* Each CPU op against a direct formula evaluated in double: RMSNorm, interleaved RoPE, YaRN
 * frequencies (inference/model.py's precompute_freqs_cis form), the group-limited router,
 * matmul, SwiGLU. Inputs are fresh random numbers; the seed is printed. */
#include "cpu/cpu.h"
#include "model/model.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned ops_seed(void)
{
    unsigned s = (unsigned)time(NULL) ^ (unsigned)clock();
    cr_log_info("seed %u", s);
    srand(s);
    return s;
}

static float ops_randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

Test(ops, rmsnorm_matches_formula)
{
    ops_seed();
    enum { N = 5, D = 203, XS = 211 };
    float x[N * XS], w[D], out[N * D];
    for (int i = 0; i < N * XS; i++)
        x[i] = 3.0f * ops_randn();
    for (int i = 0; i < D; i++)
        w[i] = 1.0f + 0.3f * ops_randn();
    sl_cpu_rmsnorm(out, D, x, XS, w, N, D, 1e-6f);
    for (int t = 0; t < N; t++) {
        double ss = 0;
        for (int i = 0; i < D; i++)
            ss += (double)x[t * XS + i] * x[t * XS + i];
        double r = 1.0 / sqrt(ss / D + 1e-6);
        for (int i = 0; i < D; i++) {
            double want = w[i] * x[t * XS + i] * r;
            cr_assert_float_eq(out[t * D + i], want, 1e-5 * (1 + fabs(want)), "t %d i %d", t, i);
        }
    }
}

/* RoPE as the official checkpoint's complex form: (x[2i] + j x[2i+1]) * e^{j pos f_i} * a. */
Test(ops, rope_rotates_interleaved_pairs)
{
    ops_seed();
    enum { N = 4, HEADS = 3, HS = 40, R = 16, TS = HEADS * HS };
    float x[N * TS], x0[N * TS], inv[R / 2];
    int32_t pos[N] = {0, 1, 17, 1000};
    for (int i = 0; i < N * TS; i++)
        x0[i] = x[i] = ops_randn();
    for (int i = 0; i < R / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * i / R);
    float af = 1.1f;
    sl_cpu_rope(x + 8, N, HEADS, TS, HS, R, pos, inv, af); /* rope part at offset 8 of each head */
    for (int t = 0; t < N; t++)
        for (int h = 0; h < HEADS; h++)
            for (int i = 0; i < HS; i++) {
                int k = t * TS + h * HS + i;
                if (i < 8 || i >= 8 + R) {
                    cr_assert_eq(x[k], x0[k], "untouched lane %d changed", i);
                    continue;
                }
                int p = (i - 8) / 2, odd = (i - 8) & 1;
                double ang = (double)(float)((float)pos[t] * inv[p]);
                double re = x0[k - odd], im = x0[k - odd + 1];
                double want = odd ? (im * cos(ang) + re * sin(ang)) * af : (re * cos(ang) - im * sin(ang)) * af;
                cr_assert_float_eq(x[k], want, 2e-5, "t %d h %d lane %d: %f vs %f", t, h, i, x[k], want);
            }
}

/* YaRN per the DeepSeek-V3 paper / inference/model.py: frequencies beyond the correction range are
 * divided by the factor, those below kept, a linear ramp between; softmax scale gets mscale^2. */
Test(ops, yarn_frequencies_match_reference_formula)
{
    sl_config c = {0};
    c.qk_rope_head_dim = 64;
    c.qk_nope_head_dim = 128;
    c.rope_theta = 10000.0;
    c.rope_kind = SL_ROPE_YARN;
    c.rope_factor = 40.0;
    c.rope_original_max_pos = 4096;
    c.rope_beta_fast = 32;
    c.rope_beta_slow = 1;
    c.rope_mscale = 1.0;
    c.rope_mscale_all_dim = 1.0;
    float inv[32], af, scale;
    sl_rope_params(&c, inv, &af, &scale);
    int dim = 64;
    double base = 10000.0, factor = 40.0;
#define CORR(rot) (dim * log(4096 / ((rot) * 2 * M_PI)) / (2 * log(base)))
    double low = fmax(floor(CORR(32.0)), 0), high = fmin(ceil(CORR(1.0)), dim - 1);
    for (int i = 0; i < dim / 2; i++) {
        double f = 1.0 / pow(base, 2.0 * i / dim);
        double ramp = fmin(fmax((i - low) / (high - low), 0), 1);
        double smooth = 1 - ramp;
        double want = f / factor * (1 - smooth) + f * smooth;
        cr_assert_float_eq(inv[i], want, 1e-6 * want, "freq %d: %g vs %g", i, inv[i], want);
    }
    cr_assert_float_eq(af, 1.0, 1e-7, "mscale == mscale_all_dim gives attention factor 1");
    double m = 0.1 * 1.0 * log(factor) + 1.0;
    cr_assert_float_eq(scale, pow(192, -0.5) * m * m, 1e-7);

    /* without mscale keys transformers scales cos/sin by 0.1 ln(factor) + 1 and leaves the softmax */
    c.rope_mscale = c.rope_mscale_all_dim = 0;
    sl_rope_params(&c, inv, &af, &scale);
    cr_assert_float_eq(af, 0.1 * log(factor) + 1.0, 1e-6);
    cr_assert_float_eq(scale, pow(192, -0.5), 1e-7);

    c.rope_kind = SL_ROPE_NONE;
    sl_rope_params(&c, inv, &af, &scale);
    for (int i = 0; i < dim / 2; i++)
        cr_assert_float_eq(inv[i], 1.0 / pow(base, 2.0 * i / dim), 1e-6 / pow(base, 2.0 * i / dim));
}

static float ops_logit(double s) { return (float)log(s / (1 - s)); } /* sigmoid^-1 */

/* Hand-made scores: 8 experts in 4 groups of 2, keep 2 groups, pick 2 experts. */
Test(router, group_limit_excludes_best_single_expert)
{
    /* group 0: {0.95, 0.05} sum 1.00; group 1: {0.6, 0.6} 1.2; group 2: {0.55, 0.55} 1.1;
     * group 3: {0.5, 0.1} 0.6. Expert 0 has the best score but its group ranks third. */
    double s[8] = {0.95, 0.05, 0.6, 0.6, 0.55, 0.55, 0.5, 0.1};
    float lg[8];
    for (int i = 0; i < 8; i++)
        lg[i] = ops_logit(s[i]);
    int32_t idx[2];
    float w[2];
    sl_cpu_moe_route(idx, w, lg, NULL, 1, 8, 4, 2, 2, true, 2.5f);
    cr_assert((idx[0] == 2 || idx[0] == 3) && (idx[1] == 2 || idx[1] == 3) && idx[0] != idx[1],
              "picked %d, %d", idx[0], idx[1]);
    cr_assert_float_eq(w[0], 2.5 * 0.5, 1e-5);
    cr_assert_float_eq(w[1], 2.5 * 0.5, 1e-5);
}

Test(router, bias_changes_selection_not_weights)
{
    double s[8] = {0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6, 0.4};
    float lg[8], bias[8] = {0};
    for (int i = 0; i < 8; i++)
        lg[i] = ops_logit(s[i]);
    bias[7] = 1.0f; /* lifts expert 7 (score 0.4) and its group above everything */
    int32_t idx[3];
    float w[3];
    sl_cpu_moe_route(idx, w, lg, bias, 1, 8, 1, 1, 3, false, 1.0f);
    cr_assert_eq(idx[0], 7, "bias must make expert 7 the first choice, got %d", idx[0]);
    cr_assert_eq(idx[1], 0);
    cr_assert_eq(idx[2], 2);
    cr_assert_float_eq(w[0], 0.4, 1e-6, "weight is the unbiased sigmoid score");
    cr_assert_float_eq(w[1], 0.9, 1e-6);
    cr_assert_float_eq(w[2], 0.8, 1e-6);
}

/* Random logits against a brute-force reference: enumerate group subsets by score sum. */
Test(router, random_scores_match_bruteforce)
{
    ops_seed();
    enum { E = 16, G = 4, TG = 2, K = 4, N = 200 };
    float lg[N * E], bias[E], w[N * K];
    int32_t idx[N * K];
    for (int i = 0; i < N * E; i++)
        lg[i] = 2 * ops_randn();
    for (int i = 0; i < E; i++)
        bias[i] = 0.1f * ops_randn();
    sl_cpu_moe_route(idx, w, lg, bias, N, E, G, TG, K, true, 1.5f);
    for (int t = 0; t < N; t++) {
        double sc[E], ch[E], gs[G];
        for (int i = 0; i < E; i++) {
            sc[i] = 1 / (1 + exp(-(double)lg[t * E + i]));
            ch[i] = sc[i] + bias[i];
        }
        for (int g = 0; g < G; g++) { /* top-2 of 4 by sorting */
            double v[4];
            memcpy(v, ch + g * 4, sizeof v);
            for (int a = 0; a < 4; a++)
                for (int b2 = a + 1; b2 < 4; b2++)
                    if (v[b2] > v[a]) {
                        double tmp = v[a];
                        v[a] = v[b2];
                        v[b2] = tmp;
                    }
            gs[g] = v[0] + v[1];
        }
        /* a group is kept iff fewer than TG groups beat it */
        bool keep[G];
        for (int g = 0; g < G; g++) {
            int better = 0;
            for (int h = 0; h < G; h++)
                better += gs[h] > gs[g];
            keep[g] = better < TG;
        }
        /* an expert is picked iff it is in a kept group and fewer than K eligible ones beat it */
        double sum = 0;
        bool pick[E];
        for (int i = 0; i < E; i++) {
            int better = 0;
            for (int j = 0; j < E; j++)
                better += keep[j / 4] && ch[j] > ch[i];
            pick[i] = keep[i / 4] && better < K;
            if (pick[i])
                sum += sc[i];
        }
        for (int k = 0; k < K; k++) {
            int e = idx[t * K + k];
            cr_assert(pick[e], "token %d: expert %d should not be picked", t, e);
            cr_assert_float_eq(w[t * K + k], sc[e] / sum * 1.5, 1e-5);
        }
    }
}

Test(ops, matmul_and_swiglu_match_formula)
{
    ops_seed();
    sl_backend *b;
    sl_error e;
    cr_assert_eq(sl_cpu_backend_create(2, &b, &e), 0);
    enum { N = 7, ROWS = 131, COLS = 77 };
    static float x[N * COLS], wd[ROWS * COLS], out[N * ROWS], up[N * ROWS], sw[N * ROWS];
    for (int i = 0; i < N * COLS; i++)
        x[i] = ops_randn();
    for (int i = 0; i < ROWS * COLS; i++)
        wd[i] = ops_randn();
    sl_weight w = {ROWS, COLS, 0 /* SL_WF_F32 */, wd};
    b->ops->matmul(b, out, x, &w, N);
    for (int t = 0; t < N; t++)
        for (int r = 0; r < ROWS; r++) {
            double acc = 0;
            for (int c = 0; c < COLS; c++)
                acc += (double)x[t * COLS + c] * wd[r * COLS + c];
            cr_assert_float_eq(out[t * ROWS + r], acc, 1e-4 * (1 + fabs(acc)));
        }
    for (int i = 0; i < N * ROWS; i++)
        up[i] = ops_randn();
    b->ops->silu_mul(b, sw, out, up, N * ROWS);
    for (int i = 0; i < N * ROWS; i++) {
        double g = out[i], want = g / (1 + exp(-g)) * up[i];
        cr_assert_float_eq(sw[i], want, 1e-5 * (1 + fabs(want)));
    }
    b->ops->destroy(b);
}
