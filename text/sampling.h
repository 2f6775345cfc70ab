/* (to be merged into text/text.h once the tokenizer lands) Sampling and the chat template. */
#ifndef SL_TEXT_SAMPLING_H
#define SL_TEXT_SAMPLING_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- sampling ----------------------------------------------------------------------------
 * Order, as llama.cpp: repetition penalty over the last repeat_last_n ids -> (temperature 0:
 * argmax) -> top-k -> softmax(logits / temperature) -> top-p (smallest set with mass >= p) ->
 * min-p (drop p < min_p * p_max) -> renormalise -> draw with a seeded xoshiro256** stream. */
typedef struct sl_sampler_params {
    float temperature;    /* 0: greedy */
    int top_k;            /* 0: off */
    float top_p;          /* 1: off */
    float min_p;          /* 0: off */
    float repeat_penalty; /* 1: off; >1 divides positive logits, multiplies negative ones */
    int repeat_last_n;    /* window of past ids the penalty looks at */
    uint64_t seed;
} sl_sampler_params;

/* Defaults: temperature 0.6, top_p 0.95 (DeepSeek's recommended), top_k 0, min_p 0, no penalty. */
sl_sampler_params sl_sampler_defaults(void);

typedef struct sl_sampler sl_sampler;

/* All workspace for a vocabulary of `vocab` ids is allocated here, none per token. */
int sl_sampler_create(const sl_sampler_params *p, int vocab, sl_sampler **out, sl_error *e);
void sl_sampler_destroy(sl_sampler *s);

/* Pick the next id from logits (vocab floats; modified in place). history: ids so far (for the
 * repetition penalty). Returns the id. Cost: O(vocab) plus a sort of the top-k / candidates. */
int sl_sampler_sample(sl_sampler *s, float *logits, const int32_t *history, int n_history);

/* ---- chat template (DeepSeek-V3 / R1) ----------------------------------------------------
 * <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜>{reply}<｜end▁of▁sentence｜>...
 * then <｜Assistant｜> to ask for the next reply, as tokenizer_config.json's chat_template. */
typedef enum { SL_ROLE_SYSTEM, SL_ROLE_USER, SL_ROLE_ASSISTANT } sl_role;
typedef struct sl_chat_msg {
    sl_role role;
    const char *content;
} sl_chat_msg;

/* Render messages into buf (NUL-terminated). with_bos: start with the BOS text (first turn of a
 * conversation; later turns continue the same KV cache and omit it). add_generation_prompt:
 * end with <｜Assistant｜>. Returns the length, or SL_E_ARG when buf is too small. */
int sl_chat_render(const sl_chat_msg *msgs, int n, bool with_bos, bool add_generation_prompt,
                   char *buf, size_t cap);

#endif
