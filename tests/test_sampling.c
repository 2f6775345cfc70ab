/* Sampling against the distributions it must draw from, computed directly from fixed logits:
 * temperature softmax, top-k, top-p, min-p truncation; seed reproducibility; the chat template
 * against tokenizer_config.json's chat_template rendered by hand. */
#include "text/text.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SAMP_V = 8, SAMP_DRAWS = 200000 };
static const float samp_logits[SAMP_V] = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -3.0f};

/* Expected probabilities: softmax(l/T) over the kept ids, renormalised. */
static void samp_expected(float T, const bool keep[SAMP_V], double out[SAMP_V])
{
    double sum = 0;
    for (int i = 0; i < SAMP_V; i++) {
        out[i] = keep[i] ? exp(samp_logits[i] / T) : 0;
        sum += out[i];
    }
    for (int i = 0; i < SAMP_V; i++)
        out[i] /= sum;
}

static void samp_check(sl_sampler_params p, const bool keep[SAMP_V])
{
    p.seed = (uint64_t)time(NULL);
    cr_log_info("seed %llu", (unsigned long long)p.seed);
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, SAMP_V, &s, NULL), 0);
    long count[SAMP_V] = {0};
    float l[SAMP_V];
    for (int d = 0; d < SAMP_DRAWS; d++) {
        memcpy(l, samp_logits, sizeof l);
        count[sl_sampler_sample(s, l, NULL, 0)]++;
    }
    sl_sampler_destroy(s);
    double want[SAMP_V];
    samp_expected(p.temperature, keep, want);
    for (int i = 0; i < SAMP_V; i++) {
        double got = (double)count[i] / SAMP_DRAWS;
        double sd = sqrt(want[i] * (1 - want[i]) / SAMP_DRAWS);
        if (!keep[i])
            cr_assert_eq(count[i], 0, "id %d must never be drawn, drawn %ld times", i, count[i]);
        else
            cr_assert(fabs(got - want[i]) < 5 * sd + 1e-4, "id %d: frequency %.4f, expected %.4f", i,
                      got, want[i]);
    }
}

Test(sampling, temperature_softmax_distribution)
{
    sl_sampler_params p = {.temperature = 0.7f, .top_p = 1.0f, .repeat_penalty = 1.0f};
    bool keep[SAMP_V] = {1, 1, 1, 1, 1, 1, 1, 1};
    samp_check(p, keep);
}

Test(sampling, top_k_keeps_k_largest)
{
    sl_sampler_params p = {.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .repeat_penalty = 1.0f};
    bool keep[SAMP_V] = {1, 1, 1, 0, 0, 0, 0, 0};
    samp_check(p, keep);
}

Test(sampling, top_p_keeps_smallest_set_reaching_p)
{
    /* softmax at T=1: p0 .405 p1 .245 p2 .149 ..., cumulative .405 .650 .799: top-p 0.7 keeps
     * ids 0..2 (the first prefix whose mass reaches 0.7) */
    sl_sampler_params p = {.temperature = 1.0f, .top_p = 0.7f, .repeat_penalty = 1.0f};
    bool keep[SAMP_V] = {1, 1, 1, 0, 0, 0, 0, 0};
    double all[SAMP_V], acc = 0;
    bool everything[SAMP_V] = {1, 1, 1, 1, 1, 1, 1, 1};
    samp_expected(1.0f, everything, all);
    for (int i = 0; i < 3; i++)
        acc += all[i];
    cr_assert(acc >= 0.7 && acc - all[2] < 0.7, "test premise: ids 0..2 are the top-p set");
    samp_check(p, keep);
}

Test(sampling, min_p_drops_unlikely)
{
    /* min_p 0.3 at T=1: keep p_i >= 0.3 p_0, i.e. l_i >= 2 + ln 0.3 = 0.796: ids 0, 1, 2 */
    sl_sampler_params p = {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.3f, .repeat_penalty = 1.0f};
    bool keep[SAMP_V] = {1, 1, 1, 0, 0, 0, 0, 0};
    samp_check(p, keep);
}

Test(sampling, greedy_is_argmax_and_penalty_applies)
{
    sl_sampler_params p = {.temperature = 0.0f, .top_p = 1.0f, .repeat_penalty = 4.0f, .repeat_last_n = 8};
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, SAMP_V, &s, NULL), 0);
    float l[SAMP_V];
    memcpy(l, samp_logits, sizeof l);
    cr_assert_eq(sl_sampler_sample(s, l, NULL, 0), 0);
    memcpy(l, samp_logits, sizeof l);
    int32_t hist[2] = {0, 0}; /* 2.0 / 4 = 0.5 < 1.5: id 1 wins; a repeated id is penalised once */
    cr_assert_eq(sl_sampler_sample(s, l, hist, 2), 1);
    cr_assert_float_eq(l[0], 0.5f, 1e-6);
    sl_sampler_destroy(s);
}

Test(sampling, same_seed_same_sequence)
{
    sl_sampler_params p = sl_sampler_defaults();
    p.seed = 42;
    int V = 1000;
    float *base = malloc(V * sizeof(float)), *l = malloc(V * sizeof(float));
    srand(7);
    for (int i = 0; i < V; i++)
        base[i] = (float)rand() / RAND_MAX * 4;
    int seq[2][64];
    for (int run = 0; run < 2; run++) {
        sl_sampler *s;
        cr_assert_eq(sl_sampler_create(&p, V, &s, NULL), 0);
        for (int t = 0; t < 64; t++) {
            memcpy(l, base, V * sizeof(float));
            seq[run][t] = sl_sampler_sample(s, l, NULL, 0);
        }
        sl_sampler_destroy(s);
    }
    cr_assert_arr_eq(seq[0], seq[1], sizeof seq[0]);
    p.seed = 43;
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, V, &s, NULL), 0);
    int differ = 0;
    for (int t = 0; t < 64; t++) {
        memcpy(l, base, V * sizeof(float));
        differ += sl_sampler_sample(s, l, NULL, 0) != seq[0][t];
    }
    cr_assert_gt(differ, 0, "another seed must give another sequence");
    sl_sampler_destroy(s);
    free(base);
    free(l);
}

Test(sampling, bad_parameters_are_refused)
{
    sl_sampler_params p = sl_sampler_defaults();
    sl_sampler *s;
    sl_error e;
    p.top_p = 1.5f;
    cr_assert_eq(sl_sampler_create(&p, 10, &s, &e), SL_E_ARG);
    p = sl_sampler_defaults();
    p.temperature = -1;
    cr_assert_eq(sl_sampler_create(&p, 10, &s, &e), SL_E_ARG);
}

/* Expected strings follow tokenizer_config.json's jinja template by hand. */
Test(chat_template, renders_like_official_template)
{
    sl_chat_msg m[] = {{SL_ROLE_SYSTEM, "Be brief."},
                       {SL_ROLE_USER, "Hi"},
                       {SL_ROLE_ASSISTANT, "Hello."},
                       {SL_ROLE_USER, "2+2?"}};
    char buf[512];
    int n = sl_chat_render(m, 4, true, true, buf, sizeof buf);
    const char *want = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>Hello."
                       "<｜end▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>";
    cr_assert_str_eq(buf, want);
    cr_assert_eq(n, (int)strlen(want));
    /* a later turn continues the cache: no BOS, no system */
    n = sl_chat_render(m + 3, 1, false, true, buf, sizeof buf);
    cr_assert_str_eq(buf, "<｜User｜>2+2?<｜Assistant｜>");
    cr_assert_eq(sl_chat_render(m, 4, true, true, buf, 10), SL_E_ARG, "too small a buffer");
}

/* On a DeepSeek-sized vocabulary the nucleus is found from a growing sorted prefix: every draw
 * must fall inside the top-p set computed here by a full sort, with the right frequencies. */
static float ops_like_randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

static int samp_desc(const void *a, const void *b, void *ctx)
{
    const float *l = ctx;
    float x = l[*(const int *)a], y = l[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : 0;
}

Test(sampling, top_p_on_a_large_vocabulary_stays_in_the_nucleus)
{
    enum { V = 129280, DRAWS = 2000 };
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("seed %u", seed);
    srand(seed);
    float *base = malloc(V * sizeof(float)), *l = malloc(V * sizeof(float));
    int *order = malloc(V * sizeof(int));
    for (int i = 0; i < V; i++) {
        base[i] = 6.0f * ops_like_randn(); /* peaked like real logits: a nucleus of tens of ids */
        order[i] = i;
    }
    qsort_r(order, V, sizeof(int), samp_desc, base);
    double total = 0, mx = base[order[0]];
    for (int i = 0; i < V; i++)
        total += exp(base[i] - mx);
    /* the nucleus: the smallest prefix whose mass reaches 0.9 */
    char *in = calloc(V, 1);
    double acc = 0;
    for (int i = 0; i < V && acc < 0.9 * total; i++) {
        acc += exp(base[order[i]] - mx);
        in[order[i]] = 1;
    }
    double p_top = exp(base[order[0]] - mx) / acc;
    sl_sampler_params p = {.temperature = 1.0f, .top_p = 0.9f, .repeat_penalty = 1.0f, .seed = seed};
    sl_sampler *s;
    cr_assert_eq(sl_sampler_create(&p, V, &s, NULL), 0);
    long top = 0;
    for (int d = 0; d < DRAWS; d++) {
        memcpy(l, base, V * sizeof(float));
        int id = sl_sampler_sample(s, l, NULL, 0);
        cr_assert(in[id], "draw %d: id %d is outside the nucleus", d, id);
        top += id == order[0];
    }
    double sd = sqrt(p_top * (1 - p_top) / DRAWS);
    cr_assert(fabs((double)top / DRAWS - p_top) < 5 * sd + 1e-4, "top id frequency %.4f, expected %.4f",
              (double)top / DRAWS, p_top);
    sl_sampler_destroy(s);
    free(base);
    free(l);
    free(order);
    free(in);
}
