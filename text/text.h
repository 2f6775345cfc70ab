/* text/: the DeepSeek-V3 tokenizer (read from a Hugging Face tokenizer.json), sampling and the
 * chat template.
 *
 * Encoding follows Hugging Face `tokenizers` step for step, so ids match it for any UTF-8 input:
 *   1. added tokens ("<｜User｜>", "<｜begin▁of▁sentence｜>", ...) are cut out first, leftmost-longest,
 *      those with "normalized": false in one pass and then those with "normalized": true;
 *   2. the normalizer (only the identity is supported: null or an empty Sequence);
 *   3. the pre-tokenizer: each Split regex of the Sequence cuts every piece the previous one made
 *      (behavior "Isolated": a match and the text between matches are pieces), then ByteLevel maps
 *      each byte to the GPT-2 byte->unicode alphabet;
 *   4. byte-level BPE on each piece: merges applied lowest rank first, ties leftmost.
 * Encoding never adds BOS/EOS: a caller that wants them prepends sl_tokenizer_bos().
 *
 * Regexes run on PCRE2 (UTF + UCP, JIT when available). Its Unicode tables (Unicode 14 in Debian
 * 12's PCRE2 10.42) are topped up for \p{L} \p{M} \p{N} \p{P} \p{S} with the code points that
 * Unicode 16 (the Oniguruma inside `tokenizers` 0.23) added, and \s is spelled out as Oniguruma's
 * set (with U+0085, without U+180E), so the classes agree with Hugging Face's.
 *
 * Decoding maps each token back to its bytes (ByteLevel decoder: a token whose every character is
 * in the byte alphabet becomes those bytes, any other token, like "<｜User｜>", its own UTF-8) and
 * emits UTF-8 text as characters complete; invalid sequences become U+FFFD, one per maximal
 * subpart, exactly as Rust's String::from_utf8_lossy and JavaScript's TextDecoder do.
 *
 * A loaded sl_tokenizer is read-only: any number of threads may encode and decode with it at once. */
#ifndef SL_TEXT_H
#define SL_TEXT_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_tokenizer sl_tokenizer;

/* Load a tokenizer from a tokenizer.json path (or a directory holding tokenizer.json). A
 * tokenizer_config.json beside it, when present, names bos_token / eos_token.
 * Out: *out, free with sl_tokenizer_free. Errors: SL_E_IO (cannot read), SL_E_FORMAT (bad JSON,
 * bad merges, ...), SL_E_MISSING (no "model", ...), SL_E_UNSUPPORTED (a pre-tokenizer, model or
 * normalizer other than DeepSeek-V3's kind); the message names the file and what is wrong.
 * Cost: ~0.25 s and ~50 MB transient (the parsed JSON) for DeepSeek-V3's 7.8 MB file; ~10 MB
 * stays resident. */
int sl_tokenizer_load(const char *path, sl_tokenizer **out, sl_error *err);

/* The same from memory: `json` (len bytes, need not be NUL-terminated) is tokenizer.json's text,
 * `config` (config_len bytes) tokenizer_config.json's or NULL. `origin` names the source in error
 * messages ("model.sluice: tokenizer"). */
int sl_tokenizer_load_json(const char *json, size_t len, const char *config, size_t config_len, const char *origin,
                           sl_tokenizer **out, sl_error *err);

/* Free a tokenizer; NULL is allowed. */
void sl_tokenizer_free(sl_tokenizer *tok);

/* Encode len bytes of UTF-8 text into ids[0 .. cap). Every id covers at least one byte of text, so
 * cap >= len is always enough. Out: *n_out = the number of ids the text needs, also when they do
 * not fit. Errors: SL_E_ARG when the text is not valid UTF-8 (the message gives the byte offset)
 * or when cap < *n_out (ids holds the first cap ids); SL_E_NOMEM; SL_E_FORMAT if PCRE2 fails.
 * Cost: one pass of each regex plus O(n log n) BPE per piece: ~12 MB/s on mixed text, ~3 MB/s
 * when the whole input is one piece (a megabyte of letters or spaces); scratch is allocated once
 * per call and grown only for a longer piece, never per token. */
int sl_tokenizer_encode(const sl_tokenizer *tok, const char *utf8, size_t len, int32_t *ids, size_t cap, size_t *n_out,
                        sl_error *err);

/* Streaming decoder state: holds the bytes of a UTF-8 character that is not complete yet.
 * Zero-initialise it (or call sl_detok_reset) before the first token. */
typedef struct sl_detok {
    uint8_t pending[4]; /* bytes of the unfinished character */
    uint8_t n_pending;  /* how many of them */
    uint8_t need;       /* total bytes that character needs (2..4), 0 when none is open */
    uint8_t lo, hi;     /* allowed range of the next continuation byte (Unicode Table 3-7) */
} sl_detok;

void sl_detok_reset(sl_detok *st);

/* Most bytes one sl_tokenizer_decode_next call can write: size the out buffer with this. */
size_t sl_tokenizer_max_piece(const sl_tokenizer *tok);

/* Feed one id; writes the text it completes to out (cap >= sl_tokenizer_max_piece) and sets
 * *n_out. A token that ends inside a character writes nothing for that character until a later
 * token completes it. Errors: SL_E_ARG for an id that names no token, or a too small cap. */
int sl_tokenizer_decode_next(const sl_tokenizer *tok, sl_detok *st, int32_t id, char *out, size_t cap, size_t *n_out,
                             sl_error *err);

/* End of stream: an unfinished character becomes U+FFFD. Writes 0 or 3 bytes (cap >= 3). */
size_t sl_detok_flush(sl_detok *st, char *out, size_t cap);

/* Decode a whole id sequence (decode_next over all ids, then flush) into out[0 .. cap).
 * Out: *n_out = bytes the text needs, also when they do not fit (then SL_E_ARG). 3 bytes per
 * byte of token text always suffice. */
int sl_tokenizer_decode(const sl_tokenizer *tok, const int32_t *ids, size_t n, char *out, size_t cap, size_t *n_out,
                        sl_error *err);

/* One past the largest id (model vocab and added tokens: 128815 for DeepSeek-V3). */
int32_t sl_tokenizer_n_vocab(const sl_tokenizer *tok);

/* The token's string as tokenizer.json spells it ("Ġthe", "<｜User｜>"); NULL for an id that names
 * no token. Sets *len (not NUL-terminated). */
const char *sl_tokenizer_token(const sl_tokenizer *tok, int32_t id, size_t *len);

/* The bytes the token decodes to (" the", "<｜User｜>"); may be part of a UTF-8 character. NULL for
 * an id that names no token. */
const uint8_t *sl_tokenizer_token_bytes(const sl_tokenizer *tok, int32_t id, size_t *len);

/* The id of a token given its tokenizer.json string (added tokens included), or -1. */
int32_t sl_tokenizer_token_id(const sl_tokenizer *tok, const char *str, size_t len);

/* True for added tokens marked "special" (begin/end of sentence, placeholders, ...). */
bool sl_tokenizer_is_special(const sl_tokenizer *tok, int32_t id);

/* BOS / EOS ids: tokenizer_config.json's bos_token / eos_token when it was given, else the added
 * tokens "<｜begin▁of▁sentence｜>" / "<｜end▁of▁sentence｜>"; -1 when neither exists. */
int32_t sl_tokenizer_bos(const sl_tokenizer *tok);
int32_t sl_tokenizer_eos(const sl_tokenizer *tok);

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
