/* Pre-tokenizer regexes from tokenizer.json are written for Oniguruma; PCRE2 reads the same
 * syntax for everything DeepSeek-V3 uses except the contents of its Unicode classes. This rewrite
 * tops up \p{L} \p{M} \p{N} \p{P} \p{S} with the newer Unicode code points (tokenizer_unicode.c)
 * and spells \s \S as Oniguruma's set, inside and outside bracket classes. Other escapes are
 * copied as they are. */
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t n, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* Length of the UTF-8 character starting at p (1 for a stray byte). */
static size_t char_len(const char *p)
{
    unsigned char c = (unsigned char)*p;
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

char *sl_regex_for_pcre2(const char *pat, const char *origin, int idx, sl_error *err)
{
    buf b = {0};
    bool in_class = false;
    size_t n = strlen(pat);
    for (size_t i = 0; i < n;) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char e = pat[i + 1];
            /* \p{X} / \P{X} / \p{^X} with X one of our classes */
            if ((e == 'p' || e == 'P') && pat[i + 2] == '{') {
                size_t j = i + 3;
                bool neg = e == 'P';
                if (pat[j] == '^')
                    neg = !neg, j++;
                const char *extra = j + 1 < n && pat[j + 1] == '}' ? sl_unicode_extra(pat[j]) : NULL;
                if (extra) {
                    char prop[8] = {'\\', 'p', '{', pat[j], '}', 0};
                    if (in_class) {
                        if (neg) {
                            free(b.p);
                            sl_errorf(
                                err, SL_E_UNSUPPORTED,
                                "%s: pre-tokenizer regex %d: a negated class \\P{%c} inside [...] is not supported",
                                origin, idx, pat[j]);
                            return NULL;
                        }
                        puts_(&b, prop), puts_(&b, extra);
                    } else {
                        puts_(&b, neg ? "[^" : "["), puts_(&b, prop), puts_(&b, extra), puts_(&b, "]");
                    }
                    i = j + 2;
                    continue;
                }
            }
            if (e == 's' || e == 'S') {
                if (in_class && e == 'S') {
                    free(b.p);
                    sl_errorf(err, SL_E_UNSUPPORTED, "%s: pre-tokenizer regex %d: \\S inside [...] is not supported",
                              origin, idx);
                    return NULL;
                }
                if (in_class)
                    puts_(&b, sl_unicode_space);
                else
                    puts_(&b, e == 's' ? "[" : "[^"), puts_(&b, sl_unicode_space), puts_(&b, "]");
                i += 2;
                continue;
            }
            size_t l = 1 + char_len(pat + i + 1);
            put(&b, pat + i, l);
            i += l;
            continue;
        }
        if (c == '[') {
            if (in_class) {
                if (pat[i + 1] == ':') { /* POSIX [:name:] */
                    const char *end = strstr(pat + i, ":]");
                    if (end) {
                        put(&b, pat + i, (size_t)(end + 2 - (pat + i)));
                        i = (size_t)(end + 2 - pat);
                        continue;
                    }
                }
                free(b.p);
                sl_errorf(err, SL_E_UNSUPPORTED,
                          "%s: pre-tokenizer regex %d: nested [...] classes (Oniguruma only) are not supported", origin,
                          idx);
                return NULL;
            }
            in_class = true;
            put(&b, "[", 1), i++;
            if (pat[i] == '^')
                put(&b, "^", 1), i++;
            if (pat[i] == ']') /* a ']' first in a class is literal */
                put(&b, "]", 1), i++;
            continue;
        }
        if (c == ']' && in_class)
            in_class = false;
        size_t l = char_len(pat + i);
        put(&b, pat + i, l);
        i += l;
    }
    if (b.oom || !b.p) {
        free(b.p);
        if (b.oom) {
            sl_errorf(err, SL_E_NOMEM, "%s: out of memory rewriting pre-tokenizer regex %d", origin, idx);
            return NULL;
        }
        return strdup("");
    }
    return b.p;
}
