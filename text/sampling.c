/* Token sampling: penalties, truncation (top-k, top-p, min-p), temperature, seeded draw. */
#include "text/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sl_sampler {
    sl_sampler_params p;
    int vocab;
    uint64_t rng[4];  /* xoshiro256** state */
    int32_t *idx;     /* (vocab) candidate ids */
    float *prob;      /* (vocab) probabilities of the candidates, in candidate order */
    float *w;         /* (vocab) unnormalised weights by id */
    uint8_t *seen;    /* (vocab) penalty marks */
};

sl_sampler_params sl_sampler_defaults(void)
{
    return (sl_sampler_params){.temperature = 0.6f, .top_k = 0, .top_p = 0.95f, .min_p = 0.0f,
                               .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 bits */
static double next_unit(uint64_t s[4]) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

int sl_sampler_create(const sl_sampler_params *p, int vocab, sl_sampler **out, sl_error *e)
{
    if (vocab < 1 || p->temperature < 0 || p->top_k < 0 || p->top_p <= 0 || p->top_p > 1 ||
        p->min_p < 0 || p->min_p > 1 || p->repeat_penalty <= 0 || p->repeat_last_n < 0)
        return sl_errorf(e, SL_E_ARG,
                         "sampler: temperature >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p <= 1, "
                         "repeat penalty > 0 (got %g, %d, %g, %g, %g)",
                         p->temperature, p->top_k, p->top_p, p->min_p, p->repeat_penalty);
    sl_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->idx = malloc((size_t)vocab * sizeof *s->idx);
        s->prob = malloc((size_t)vocab * sizeof *s->prob);
        s->w = malloc((size_t)vocab * sizeof *s->w);
        s->seen = calloc((size_t)vocab, 1);
    }
    if (!s || !s->idx || !s->prob || !s->w || !s->seen) {
        sl_sampler_destroy(s);
        return sl_errorf(e, SL_E_NOMEM, "sampler: no memory for a vocabulary of %d", vocab);
    }
    s->p = *p;
    s->vocab = vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void sl_sampler_destroy(sl_sampler *s)
{
    if (!s)
        return;
    free(s->idx);
    free(s->prob);
    free(s->w);
    free(s->seen);
    free(s);
}

static int by_logit_desc(const void *a, const void *b, void *ctx)
{
    const float *lg = ctx;
    float x = lg[*(const int32_t *)a], y = lg[*(const int32_t *)b];
    if (x != y)
        return x > y ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b; /* ties: lower id first, deterministic */
}

/* Move the k largest (by logit) of idx[0..n) to the front, sorted descending. */
static void top_sorted(int32_t *idx, int n, int k, const float *logits)
{
    /* partial selection: keep a sorted front of size k, insert larger ones */
    void *lg = (void *)logits;
    if (k >= n) {
        qsort_r(idx, (size_t)n, sizeof *idx, by_logit_desc, lg);
        return;
    }
    qsort_r(idx, (size_t)k, sizeof *idx, by_logit_desc, lg);
    for (int i = k; i < n; i++) {
        int32_t c = idx[i];
        if (by_logit_desc(&c, &idx[k - 1], lg) >= 0)
            continue;
        int32_t evicted = idx[k - 1];
        int j = k - 1;
        while (j > 0 && by_logit_desc(&c, &idx[j - 1], lg) < 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = c;
        idx[i] = evicted; /* idx stays a permutation of the vocabulary */
    }
}

int sl_sampler_sample(sl_sampler *s, float *logits, const int32_t *history, int n_history)
{
    const sl_sampler_params *p = &s->p;
    int V = s->vocab;
    if (p->repeat_penalty != 1.0f && n_history > 0) {
        int from = n_history > p->repeat_last_n ? n_history - p->repeat_last_n : 0;
        for (int i = from; i < n_history; i++) {
            int id = history[i];
            if (id < 0 || id >= V || s->seen[id])
                continue;
            s->seen[id] = 1;
            logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty : logits[id] * p->repeat_penalty;
        }
        for (int i = from; i < n_history; i++)
            if (history[i] >= 0 && history[i] < V)
                s->seen[history[i]] = 0;
    }
    if (p->temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
    for (int i = 0; i < V; i++)
        s->idx[i] = i;
    int n;
    if (p->top_k > 0 && p->top_k < V) {
        /* candidates: the top-k, sorted by logit, renormalised among themselves */
        n = p->top_k;
        top_sorted(s->idx, V, n, logits);
        double mx = logits[s->idx[0]], sum = 0;
        for (int i = 0; i < n; i++) {
            s->prob[i] = (float)exp(((double)logits[s->idx[i]] - mx) / p->temperature);
            sum += s->prob[i];
        }
        for (int i = 0; i < n; i++)
            s->prob[i] = (float)(s->prob[i] / sum);
    } else {
        /* the whole vocabulary: weights by id, then only as long a sorted prefix as top-p and
         * min-p need (64, 512, 4096, ... ids), not a sort of all 129,280 every token */
        float mx = logits[0];
        for (int i = 1; i < V; i++)
            mx = logits[i] > mx ? logits[i] : mx;
        double total = 0;
        for (int i = 0; i < V; i++) {
            s->w[i] = expf((logits[i] - mx) / p->temperature);
            total += s->w[i];
        }
        if (p->top_p >= 1.0f && p->min_p <= 0.0f) { /* plain temperature: no order needed */
            double r = next_unit(s->rng) * total, acc = 0;
            for (int i = 0; i < V; i++) {
                acc += s->w[i];
                if (r < acc)
                    return i;
            }
            return V - 1;
        }
        for (n = 64;; n *= 8) {
            if (n > 4096 || n > V) /* past that a full sort beats insertion */
                n = V;
            top_sorted(s->idx, V, n, logits);
            double acc = 0;
            for (int i = 0; i < n; i++)
                acc += s->w[s->idx[i]];
            bool p_done = p->top_p >= 1.0f || acc >= p->top_p * total;
            bool min_done = p->min_p <= 0.0f || s->w[s->idx[n - 1]] < p->min_p * s->w[s->idx[0]];
            if ((p_done && min_done) || n == V)
                break;
        }
        for (int i = 0; i < n; i++)
            s->prob[i] = (float)(s->w[s->idx[i]] / total);
    }
    if (p->top_p < 1.0f) {
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (acc >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0.0f) {
        float cut = p->min_p * s->prob[0];
        int keep = 1;
        while (keep < n && s->prob[keep] >= cut)
            keep++;
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++)
        total += s->prob[i];
    double r = next_unit(s->rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc)
            return s->idx[i];
    }
    return s->idx[n - 1];
}

/* ---- chat template ---- */

static int put(char *buf, size_t cap, size_t *at, const char *s)
{
    size_t l = strlen(s);
    if (*at + l + 1 > cap)
        return SL_E_ARG;
    memcpy(buf + *at, s, l + 1);
    *at += l;
    return 0;
}

int sl_chat_render(const sl_chat_msg *msgs, int n, bool with_bos, bool add_generation_prompt,
                   char *buf, size_t cap)
{
    size_t at = 0;
    int rc = 0;
    if (cap == 0)
        return SL_E_ARG;
    buf[0] = 0;
    if (with_bos)
        rc |= put(buf, cap, &at, "<｜begin▁of▁sentence｜>");
    /* system prompts first, joined by a blank line, as the official template */
    bool first = true;
    for (int i = 0; i < n; i++) {
        if (msgs[i].role != SL_ROLE_SYSTEM)
            continue;
        if (!first)
            rc |= put(buf, cap, &at, "\n\n");
        rc |= put(buf, cap, &at, msgs[i].content);
        first = false;
    }
    for (int i = 0; i < n; i++) {
        if (msgs[i].role == SL_ROLE_USER) {
            rc |= put(buf, cap, &at, "<｜User｜>");
            rc |= put(buf, cap, &at, msgs[i].content);
        } else if (msgs[i].role == SL_ROLE_ASSISTANT) {
            rc |= put(buf, cap, &at, "<｜Assistant｜>");
            rc |= put(buf, cap, &at, msgs[i].content);
            rc |= put(buf, cap, &at, "<｜end▁of▁sentence｜>");
        }
    }
    if (add_generation_prompt)
        rc |= put(buf, cap, &at, "<｜Assistant｜>");
    return rc ? SL_E_ARG : (int)at;
}
