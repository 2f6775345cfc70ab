/* Streaming detokenisation: token bytes pass through a UTF-8 decoder (the WHATWG / Unicode
 * "maximal subpart" algorithm, the one Rust's from_utf8_lossy and JavaScript's TextDecoder use),
 * which releases a character only once its last byte has arrived and turns each ill-formed
 * subsequence into one U+FFFD. */
#include "text/tokenizer_internal.h"

#include <string.h>

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

void sl_detok_reset(sl_detok *st) { *st = (sl_detok){0}; }

size_t sl_tokenizer_max_piece(const sl_tokenizer *t)
{
    /* worst case: 3 held bytes and every byte of the token each become a 3-byte U+FFFD */
    return 3 * ((size_t)t->max_dec_len + 3) + 4;
}

/* Feed one byte; appends released text at out + *o (the caller guarantees room). */
static void feed(sl_detok *st, uint8_t b, char *out, size_t *o)
{
    for (;;) {
        if (st->need == 0) {
            if (b < 0x80) {
                out[(*o)++] = (char)b;
                return;
            }
            st->lo = 0x80, st->hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF)
                st->need = 2;
            else if (b >= 0xE0 && b <= 0xEF)
                st->need = 3, st->lo = b == 0xE0 ? 0xA0 : 0x80, st->hi = b == 0xED ? 0x9F : 0xBF;
            else if (b >= 0xF0 && b <= 0xF4)
                st->need = 4, st->lo = b == 0xF0 ? 0x90 : 0x80, st->hi = b == 0xF4 ? 0x8F : 0xBF;
            else { /* 0x80..0xC1, 0xF5..0xFF never start a character */
                memcpy(out + *o, REPL, 3), *o += 3;
                return;
            }
            st->pending[0] = b, st->n_pending = 1;
            return;
        }
        if (b < st->lo || b > st->hi) { /* the open character is ill-formed: U+FFFD, then b anew */
            memcpy(out + *o, REPL, 3), *o += 3;
            st->need = st->n_pending = 0;
            continue;
        }
        st->lo = 0x80, st->hi = 0xBF;
        st->pending[st->n_pending++] = b;
        if (st->n_pending == st->need) {
            memcpy(out + *o, st->pending, st->need), *o += st->need;
            st->need = st->n_pending = 0;
        }
        return;
    }
}

int sl_tokenizer_decode_next(const sl_tokenizer *t, sl_detok *st, int32_t id, char *out, size_t cap, size_t *n_out,
                             sl_error *err)
{
    *n_out = 0;
    size_t n;
    const uint8_t *b = sl_tokenizer_token_bytes(t, id, &n);
    if (!b)
        return sl_errorf(err, SL_E_ARG, "%s: id %d names no token (vocab has %d ids)", t->origin, id, t->n_vocab);
    if (cap < 3 * (n + 3))
        return sl_errorf(err, SL_E_ARG, "decode: output buffer of %zu bytes is smaller than the %zu a token may need",
                         cap, 3 * (n + 3));
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        feed(st, b[i], out, &o);
    *n_out = o;
    return 0;
}

size_t sl_detok_flush(sl_detok *st, char *out, size_t cap)
{
    if (st->need == 0 || cap < 3)
        return 0;
    sl_detok_reset(st);
    memcpy(out, REPL, 3);
    return 3;
}

int sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap, size_t *n_out,
                        sl_error *err)
{
    *n_out = 0;
    sl_detok st = {0};
    size_t need = 0;
    char tmp[8]; /* one byte fed releases at most a U+FFFD and a 4-byte character */
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *b = sl_tokenizer_token_bytes(t, ids[i], &len);
        if (!b)
            return sl_errorf(err, SL_E_ARG, "%s: ids[%zu] = %d names no token (vocab has %d ids)", t->origin, i, ids[i],
                             t->n_vocab);
        for (size_t j = 0; j < len; j++) {
            size_t k = 0;
            feed(&st, b[j], tmp, &k);
            if (need + k <= cap)
                memcpy(out + need, tmp, k);
            need += k;
        }
    }
    size_t k = sl_detok_flush(&st, tmp, sizeof tmp);
    if (need + k <= cap)
        memcpy(out + need, tmp, k);
    need += k;
    *n_out = need;
    if (need > cap)
        return sl_errorf(err, SL_E_ARG, "decode: the text needs %zu bytes, the buffer holds %zu", need, cap);
    return 0;
}
