/* Text -> ids, in Hugging Face tokenizers' order: added tokens cut out (the non-normalized ones,
 * then the normalized ones in what is left), each Split regex of the pre-tokenizer applied to every
 * piece the previous one left, then BPE per piece. Pieces are handled depth-first as they are
 * found, so nothing but the ids and the BPE scratch is stored. */
#include "text/tokenizer_internal.h"

#include <stdlib.h>

typedef struct enc {
    const sl_tokenizer *t;
    const uint8_t *text;
    int32_t *ids;
    size_t cap, n;
    sl_bpe_scratch bpe;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    sl_error *err;
} enc;

static void emit(void *ctx, int32_t id)
{
    enc *e = ctx;
    if (e->n < e->cap)
        e->ids[e->n] = id;
    e->n++;
}

/* Offset of the first byte that breaks UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF),
 * or len when it is all valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return i;
        if (len - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return len;
}

static size_t char_len(uint8_t c) { return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static int piece(enc *e, int level, size_t a, size_t b);

/* Run split regex `level` over text[a, b) as its own subject (lookarounds see only the piece, as in
 * HF), recursing into every match and every gap between matches ("Isolated"). Empty matches follow
 * the Rust onig crate's find_iter: one right after the previous match is skipped by a character. */
static int split(enc *e, int level, size_t a, size_t b)
{
    const pcre2_code *re = e->t->split[level];
    PCRE2_SPTR subj = e->text + a;
    size_t len = b - a, start = 0, prev = 0, last_end = SIZE_MAX;
    while (start <= len) {
        int rc = pcre2_match(re, subj, len, start, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jit) { /* a long piece: give JIT a bigger stack, retry */
            e->jit = pcre2_jit_stack_create(64 << 10, 64 << 20, NULL);
            if (!e->jit)
                return sl_errorf(e->err, SL_E_NOMEM, "encode: out of memory for the regex stack");
            pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sl_errorf(e->err, SL_E_FORMAT, "encode: pre-tokenizer regex %d failed at byte %zu: %s", level,
                             a + start, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t s = ov[0], t = ov[1] < ov[0] ? ov[0] : ov[1];
        if (s == t && last_end == t) {
            start = t < len ? t + char_len(subj[t]) : len + 1;
            continue;
        }
        start = last_end = t;
        if (prev < s) {
            int r = piece(e, level + 1, a + prev, a + s);
            if (r)
                return r;
        }
        if (s < t) {
            int r = piece(e, level + 1, a + s, a + t);
            if (r)
                return r;
        }
        prev = t;
    }
    return prev < len ? piece(e, level + 1, a + prev, b) : 0;
}

static int piece(enc *e, int level, size_t a, size_t b)
{
    if (level < e->t->n_splits)
        return split(e, level, a, b);
    if (sl_bpe_word(e->t, &e->bpe, e->text + a, b - a, emit, e))
        return sl_errorf(e->err, SL_E_NOMEM, "encode: out of memory for a %zu-byte piece", b - a);
    return 0;
}

/* Longest added token starting at text[i] (bytes up to b), or -1; sets *end. */
static int32_t trie_match(const sl_trie *tr, const uint8_t *text, size_t i, size_t b, size_t *end)
{
    if (!(tr->first[text[i] >> 3] & (1u << (text[i] & 7))))
        return -1;
    int32_t node = 0, best = -1;
    for (size_t j = i; j < b; j++) {
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != text[j])
            ch = tr->nodes[ch].sibling;
        if (ch < 0)
            break;
        node = ch;
        if (tr->nodes[node].token >= 0)
            best = tr->nodes[node].token, *end = j + 1;
    }
    return best;
}

/* Cut added tokens of `tr` out of text[a, b), leftmost-longest; the text between goes to
 * `next` (the second trie, or the pre-tokenizer). */
static int added_split(enc *e, const sl_trie *tr, const sl_trie *next, size_t a, size_t b)
{
    if (!tr->n)
        return next ? added_split(e, next, NULL, a, b) : piece(e, 0, a, b);
    size_t prev = a;
    for (size_t i = a; i < b;) {
        size_t end;
        int32_t id = trie_match(tr, e->text, i, b, &end);
        if (id < 0) {
            i++;
            continue;
        }
        if (prev < i) {
            int r = next ? added_split(e, next, NULL, prev, i) : piece(e, 0, prev, i);
            if (r)
                return r;
        }
        emit(e, id);
        i = prev = end;
    }
    if (prev < b)
        return next ? added_split(e, next, NULL, prev, b) : piece(e, 0, prev, b);
    return 0;
}

int sl_tokenizer_encode(const sl_tokenizer *t, const char *utf8, size_t len, int32_t *ids, size_t cap, size_t *n_out,
                        sl_error *err)
{
    *n_out = 0;
    const uint8_t *text = (const uint8_t *)utf8;
    size_t bad = utf8_invalid_at(text, len);
    if (bad < len)
        return sl_errorf(err, SL_E_ARG, "encode: text is not valid UTF-8 at byte %zu (0x%02X)", bad, text[bad]);
    enc e = {.t = t, .text = text, .ids = ids, .cap = cap, .err = err};
    e.md = pcre2_match_data_create(8, NULL);
    e.mctx = pcre2_match_context_create(NULL);
    if (!e.md || !e.mctx) {
        pcre2_match_data_free(e.md);
        pcre2_match_context_free(e.mctx);
        return sl_errorf(err, SL_E_NOMEM, "encode: out of memory");
    }
    /* PCRE2's default match limit (10^7 steps) stops `\s*[\r\n]+` backtracking over a run of
     * ~10 MB of spaces; Oniguruma has no such limit, so neither do we: the patterns are linear. */
    pcre2_set_match_limit(e.mctx, UINT32_MAX);
    pcre2_set_depth_limit(e.mctx, UINT32_MAX);
    int rc = added_split(&e, &t->trie_raw, &t->trie_norm, 0, len);
    sl_bpe_scratch_free(&e.bpe);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    if (e.jit)
        pcre2_jit_stack_free(e.jit);
    if (rc)
        return rc;
    *n_out = e.n;
    if (e.n > cap)
        return sl_errorf(err, SL_E_ARG, "encode: the text needs %zu ids, the buffer holds %zu", e.n, cap);
    return 0;
}
