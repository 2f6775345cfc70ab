/* tokenizer.json -> the tables encode and decode run on: per-id strings and decoded bytes in one
 * arena, a string->id hash, a (left, right)->merge hash, added-token tries and compiled regexes.
 * Everything is allocated here, once; encoding allocates only its own scratch. */
#include "text/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define BOS_DEFAULT "<｜begin▁of▁sentence｜>"
#define EOS_DEFAULT "<｜end▁of▁sentence｜>"


static int load(const char *json, size_t len, const char *config, size_t config_len, const char *origin,
                const char *cfg_origin, sl_tokenizer **out, sl_error *err);

int sl_tokenizer_load(const char *path, sl_tokenizer **out, sl_error *err)
{
    *out = NULL;
    char file[PATH_MAX], dir[PATH_MAX];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (snprintf(file, sizeof file, "%s/tokenizer.json", path) >= (int)sizeof file)
            return sl_errorf(err, SL_E_ARG, "%s: path too long", path);
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file)
            return sl_errorf(err, SL_E_ARG, "%s: path too long", path);
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        else
            snprintf(dir, sizeof dir, ".");
    }
    char *json, *config = NULL;
    size_t len, config_len = 0;
    int rc = sl_read_file(file, &json, &len, err);
    if (rc)
        return rc;
    char cfg_path[PATH_MAX + 32];
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    if (access(cfg_path, F_OK) == 0 && (rc = sl_read_file(cfg_path, &config, &config_len, err))) {
        free(json);
        return rc;
    }
    rc = load(json, len, config, config_len, file, cfg_path, out, err);
    free(json);
    free(config);
    return rc;
}

/* ---- small helpers -------------------------------------------------------------------------- */

static uint64_t str_hash(const char *s, size_t n) { return XXH3_64bits(s, n); }

static const char *tok_str(const sl_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->str_len[id];
    return t->arena + t->str_off[id];
}

/* Insert or overwrite string -> id (the string is the id's own arena copy). */
static void hash_put(sl_tokenizer *t, int32_t id)
{
    size_t n;
    const char *s = tok_str(t, id, &n);
    for (uint32_t i = (uint32_t)str_hash(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t o = t->str_hash[i];
        if (o < 0) {
            t->str_hash[i] = id;
            return;
        }
        size_t on;
        const char *os = tok_str(t, o, &on);
        if (on == n && !memcmp(os, s, n)) {
            t->str_hash[i] = id;
            return;
        }
    }
}

int32_t sl_tokenizer_token_id(const sl_tokenizer *t, const char *s, size_t n)
{
    for (uint32_t i = (uint32_t)str_hash(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t o = t->str_hash[i];
        if (o < 0)
            return -1;
        size_t on;
        const char *os = tok_str(t, o, &on);
        if (on == n && !memcmp(os, s, n))
            return o;
    }
}

static int trie_add(sl_trie *tr, const char *s, size_t n, int32_t id)
{
    if (tr->n == 0) {
        tr->cap = 1024;
        tr->nodes = malloc((size_t)tr->cap * sizeof *tr->nodes);
        if (!tr->nodes)
            return SL_E_NOMEM;
        tr->nodes[0] = (sl_trie_node){-1, -1, -1, 0};
        tr->n = 1;
    }
    tr->first[(uint8_t)s[0] >> 3] |= (uint8_t)(1u << ((uint8_t)s[0] & 7));
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != c)
            ch = tr->nodes[ch].sibling;
        if (ch < 0) {
            if (tr->n == tr->cap) {
                sl_trie_node *g = realloc(tr->nodes, (size_t)tr->cap * 2 * sizeof *g);
                if (!g)
                    return SL_E_NOMEM;
                tr->nodes = g, tr->cap *= 2;
            }
            ch = tr->n++;
            tr->nodes[ch] = (sl_trie_node){-1, tr->nodes[node].child, -1, c};
            tr->nodes[node].child = ch;
        }
        node = ch;
    }
    tr->nodes[node].token = id;
    return 0;
}

static uint32_t next_pow2(uint64_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static bool flag(const cJSON *o, const char *key, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool is_null_or_absent(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return !v || cJSON_IsNull(v);
}

/* Decode one UTF-8 character of s[0..n); returns its length or 0 if malformed. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80)
        return *cp = s[0], 1;
    size_t l = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (!l || l > n)
        return 0;
    uint32_t c = s[0] & (0x7F >> l);
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    *cp = c;
    return l;
}

static size_t utf8_put(uint32_t c, char *o)
{
    if (c < 0x80)
        return o[0] = (char)c, 1;
    if (c < 0x800)
        return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), 2;
    o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 63)), o[2] = (char)(0x80 | (c & 63));
    return 3;
}

/* ---- the sections of tokenizer.json ------------------------------------------------------- */

static int check_normalizer(const cJSON *root, const char *origin, sl_error *err)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *ty = type_of(n);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (ty && !strcmp(ty, "Sequence") && cJSON_IsArray(list) && cJSON_GetArraySize(list) == 0)
        return 0;
    return sl_errorf(err, SL_E_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (only none)", origin,
                     ty ? ty : "?");
}

static int add_split(sl_tokenizer *t, const cJSON *p, const char *origin, sl_error *err)
{
    int idx = t->n_splits;
    if (idx == SL_TOK_MAX_SPLITS)
        return sl_errorf(err, SL_E_UNSUPPORTED, "%s: more than %d Split pre-tokenizers", origin, SL_TOK_MAX_SPLITS);
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
        return sl_errorf(err, SL_E_UNSUPPORTED,
                         "%s: Split pre-tokenizer %d: behavior \"%s\" is not supported (only Isolated)", origin, idx,
                         cJSON_IsString(beh) ? beh->valuestring : "?");
    if (flag(p, "invert", false))
        return sl_errorf(err, SL_E_UNSUPPORTED, "%s: Split pre-tokenizer %d: invert is not supported", origin, idx);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
    char *src;
    if (cJSON_IsString(re)) {
        if (!(src = sl_regex_for_pcre2(re->valuestring, origin, idx, err)))
            return err ? err->code : SL_E_UNSUPPORTED;
    } else if (cJSON_IsString(lit)) {
        size_t n = strlen(lit->valuestring);
        if (!(src = malloc(n + 5)))
            return sl_errorf(err, SL_E_NOMEM, "%s: out of memory", origin);
        if (strstr(lit->valuestring, "\\E")) {
            free(src);
            return sl_errorf(err, SL_E_UNSUPPORTED, "%s: Split pre-tokenizer %d: string pattern contains \\E", origin,
                             idx);
        }
        sprintf(src, "\\Q%s\\E", lit->valuestring);
    } else {
        return sl_errorf(err, SL_E_FORMAT, "%s: Split pre-tokenizer %d has no pattern.Regex or pattern.String", origin,
                         idx);
    }
    int ec;
    PCRE2_SIZE eo;
    /* Oniguruma's Ruby syntax: ^ and $ match at line breaks */
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &ec, &eo, NULL);
    free(src);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return sl_errorf(err, SL_E_UNSUPPORTED, "%s: Split pre-tokenizer %d: PCRE2 cannot compile its regex: %s",
                         origin, idx, (const char *)msg);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is absent */
    t->split[t->n_splits++] = code;
    return 0;
}

static int load_pretokenizer(sl_tokenizer *t, const cJSON *root, const char *origin, sl_error *err)
{
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!pt || cJSON_IsNull(pt))
        return sl_errorf(err, SL_E_UNSUPPORTED, "%s: no pre_tokenizer (a ByteLevel one is required)", origin);
    const char *ty = type_of(pt);
    const cJSON *list = NULL, *single = pt;
    if (ty && !strcmp(ty, "Sequence")) {
        list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        if (!cJSON_IsArray(list))
            return sl_errorf(err, SL_E_FORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" list", origin);
        single = NULL;
    }
    int n = list ? cJSON_GetArraySize(list) : 1;
    for (int i = 0; i < n; i++) {
        const cJSON *p = list ? cJSON_GetArrayItem(list, i) : single;
        const char *pty = type_of(p);
        if (pty && !strcmp(pty, "Split")) {
            int rc = add_split(t, p, origin, err);
            if (rc)
                return rc;
        } else if (pty && !strcmp(pty, "ByteLevel")) {
            if (i != n - 1)
                return sl_errorf(err, SL_E_UNSUPPORTED, "%s: ByteLevel pre-tokenizer must come last", origin);
            if (flag(p, "add_prefix_space", true))
                return sl_errorf(err, SL_E_UNSUPPORTED,
                                 "%s: ByteLevel pre-tokenizer with add_prefix_space is not supported", origin);
            if (flag(p, "use_regex", true))
                return sl_errorf(err, SL_E_UNSUPPORTED, "%s: ByteLevel pre-tokenizer with use_regex is not supported",
                                 origin);
            return 0;
        } else {
            return sl_errorf(err, SL_E_UNSUPPORTED,
                             "%s: pre-tokenizer \"%s\" is not supported (Split and ByteLevel are)", origin,
                             pty ? pty : "?");
        }
    }
    return sl_errorf(err, SL_E_UNSUPPORTED, "%s: pre_tokenizer lacks the final ByteLevel step", origin);
}

/* A JSON number that is an id in [0, INT32_MAX). */
static bool as_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= (double)INT32_MAX ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return false;
    *id = (int32_t)v->valuedouble;
    return true;
}

/* Config tokens are either "content" or {"__type": "AddedToken", "content": ...}. */
static int config_token(const sl_tokenizer *t, const cJSON *cfg, const char *key, const char *origin, int32_t *id,
                        sl_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v))
        return 1; /* not given */
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return sl_errorf(err, SL_E_FORMAT, "%s: %s is neither a string nor an AddedToken", origin, key);
    *id = sl_tokenizer_token_id(t, v->valuestring, strlen(v->valuestring));
    if (*id < 0)
        return sl_errorf(err, SL_E_FORMAT, "%s: %s \"%s\" is not a token", origin, key, v->valuestring);
    return 0;
}

/* Decoded bytes of each id (HF ByteLevel decoder): a token all of whose characters are in the
 * byte alphabet decodes to those bytes; any other token to its own UTF-8. */
static size_t decode_token(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_next((const uint8_t *)s + i, n - i, &cp);
        int b = l ? sl_cp_to_byte(cp) : -1;
        if (b < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[o++] = (char)b;
        i += l;
    }
    return o;
}

/* ---- the loader ------------------------------------------------------------------------------ */

typedef struct load_state {
    sl_tokenizer *t;
    const cJSON *vocab, *merges, *added;
    const char *origin;
    sl_error *err;
} load_state;

static int build_vocab(load_state *L)
{
    sl_tokenizer *t = L->t;
    const char *origin = L->origin;
    sl_error *err = L->err;
    /* pass 1: id range and arena size */
    int64_t max_id = -1;
    size_t bytes = 0, count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, L->vocab)
    {
        int32_t id;
        if (!as_id(e, &id))
            return sl_errorf(err, SL_E_FORMAT, "%s: model.vocab[\"%s\"] is not a valid id", origin, e->string);
        max_id = id > max_id ? id : max_id;
        bytes += 2 * strlen(e->string);
        count++;
    }
    size_t k = 0;
    cJSON_ArrayForEach(e, L->added)
    {
        int32_t id;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!as_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) || !cJSON_IsString(c) || !c->valuestring[0])
            return sl_errorf(err, SL_E_FORMAT, "%s: added_tokens entry %zu lacks a valid id or content", origin, k);
        k++;
        max_id = id > max_id ? id : max_id;
        bytes += 2 * strlen(c->valuestring);
        count++;
    }
    if (max_id < 0)
        return sl_errorf(err, SL_E_FORMAT, "%s: model.vocab is empty", origin);
    if (bytes >= UINT32_MAX)
        return sl_errorf(err, SL_E_FORMAT, "%s: vocab strings too large", origin);
    t->n_vocab = (int32_t)max_id + 1;
    size_t nv = (size_t)t->n_vocab;
    t->flags = calloc(nv, 1);
    t->str_off = calloc(nv, sizeof *t->str_off);
    t->str_len = calloc(nv, sizeof *t->str_len);
    t->dec_off = calloc(nv, sizeof *t->dec_off);
    t->dec_len = calloc(nv, sizeof *t->dec_len);
    t->arena = malloc(bytes + 1);
    t->str_mask = next_pow2(2 * count + 2) - 1;
    t->str_hash = malloc(((size_t)t->str_mask + 1) * sizeof *t->str_hash);
    if (!t->flags || !t->str_off || !t->str_len || !t->dec_off || !t->dec_len || !t->arena || !t->str_hash)
        return sl_errorf(err, SL_E_NOMEM, "%s: out of memory for %zu tokens", origin, nv);
    memset(t->str_hash, 0xff, ((size_t)t->str_mask + 1) * sizeof *t->str_hash);

    /* pass 2: strings into the arena; added tokens override a vocab entry of the same id */
    size_t at = 0;
    cJSON_ArrayForEach(e, L->vocab)
    {
        int32_t id = (int32_t)e->valuedouble;
        if (t->flags[id])
            return sl_errorf(err, SL_E_FORMAT, "%s: model.vocab gives id %d to two tokens", origin, id);
        size_t n = strlen(e->string);
        memcpy(t->arena + at, e->string, n);
        t->str_off[id] = (uint32_t)at, t->str_len[id] = (uint32_t)n;
        t->flags[id] = SL_TOKF_PRESENT;
        at += n;
        hash_put(t, id);
    }
    cJSON_ArrayForEach(e, L->added)
    {
        int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        bool special = flag(e, "special", false);
        if (flag(e, "single_word", false) || flag(e, "lstrip", false) || flag(e, "rstrip", false))
            return sl_errorf(err, SL_E_UNSUPPORTED,
                             "%s: added token \"%s\" uses single_word/lstrip/rstrip (not supported)", origin, c);
        size_t n = strlen(c);
        memcpy(t->arena + at, c, n);
        t->str_off[id] = (uint32_t)at, t->str_len[id] = (uint32_t)n;
        t->flags[id] = SL_TOKF_PRESENT | SL_TOKF_ADDED | (special ? SL_TOKF_SPECIAL : 0);
        at += n;
        hash_put(t, id);
        /* HF: an added token without "normalized" is normalized unless special */
        if (trie_add(flag(e, "normalized", !special) ? &t->trie_norm : &t->trie_raw, c, n, id))
            return sl_errorf(err, SL_E_NOMEM, "%s: out of memory", origin);
    }

    /* decoded bytes of every id */
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->flags[id])
            continue;
        size_t n;
        const char *s = tok_str(t, id, &n);
        size_t dn = decode_token(s, n, t->arena + at);
        t->dec_off[id] = (uint32_t)at, t->dec_len[id] = (uint32_t)dn;
        at += dn;
        if (dn > t->max_dec_len)
            t->max_dec_len = (uint32_t)dn;
    }
    t->arena_len = at;

    /* the single-byte tokens BPE starts from */
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = utf8_put(sl_byte_to_cp((uint8_t)b), s);
        t->byte_id[b] = sl_tokenizer_token_id(t, s, n);
        if (t->byte_id[b] < 0)
            return sl_errorf(err, SL_E_UNSUPPORTED, "%s: model.vocab lacks the token for byte 0x%02X (\"%.*s\")",
                             origin, b, (int)n, s);
    }
    return 0;
}

static int build_merges(load_state *L)
{
    sl_tokenizer *t = L->t;
    size_t n = (size_t)cJSON_GetArraySize(L->merges);
    t->merge_mask = next_pow2(2 * (uint64_t)n + 2) - 1;
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges)
        return sl_errorf(L->err, SL_E_NOMEM, "%s: out of memory for %zu merges", L->origin, n);
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].key = UINT64_MAX;
    char pair[1024];
    uint32_t rank = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, L->merges)
    {
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(m)) { /* "a b": exactly one space, as HF requires */
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return sl_errorf(L->err, SL_E_FORMAT,
                                 "%s: model.merges[%u] \"%s\" is not two tokens separated by one space", L->origin,
                                 rank, m->valuestring);
            a = m->valuestring, an = (size_t)(sp - a), b = sp + 1, bn = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring, an = strlen(a);
            b = cJSON_GetArrayItem(m, 1)->valuestring, bn = strlen(b);
        } else {
            return sl_errorf(L->err, SL_E_FORMAT, "%s: model.merges[%u] is neither \"a b\" nor [\"a\", \"b\"]",
                             L->origin, rank);
        }
        if (an + bn > sizeof pair)
            return sl_errorf(L->err, SL_E_FORMAT, "%s: model.merges[%u] is too long", L->origin, rank);
        int32_t ia = sl_tokenizer_token_id(t, a, an), ib = sl_tokenizer_token_id(t, b, bn);
        memcpy(pair, a, an), memcpy(pair + an, b, bn);
        int32_t ic = sl_tokenizer_token_id(t, pair, an + bn);
        if (ia < 0 || ib < 0 || ic < 0)
            return sl_errorf(L->err, SL_E_FORMAT, "%s: model.merges[%u] \"%.*s\" + \"%.*s\": %s is not in the vocab",
                             L->origin, rank, (int)an, a, (int)bn, b,
                             ia < 0   ? "the left token"
                             : ib < 0 ? "the right token"
                                      : "the merged token");
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        uint64_t h = key * 0x9e3779b97f4a7c15ull;
        for (uint32_t i = (uint32_t)(h >> 32) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
            sl_merge_slot *s = &t->merges[i];
            if (s->key == UINT64_MAX || s->key == key) { /* a repeated pair keeps its last rank, as HF's map */
                *s = (sl_merge_slot){key, rank, ic};
                break;
            }
        }
        rank++;
    }
    return 0;
}

int sl_tokenizer_load_json(const char *json, size_t len, const char *config, size_t config_len, const char *origin,
                           sl_tokenizer **out, sl_error *err)
{
    if (!origin)
        origin = "tokenizer.json";
    char cfg_origin[300];
    snprintf(cfg_origin, sizeof cfg_origin, "%s (tokenizer_config.json)", origin);
    return load(json, len, config, config_len, origin, cfg_origin, out, err);
}

static int load(const char *json, size_t len, const char *config, size_t config_len, const char *origin,
                const char *cfg_origin, sl_tokenizer **out, sl_error *err)
{
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false), *cfg = NULL;
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        return sl_errorf(err, SL_E_FORMAT, "%s: not valid JSON (error near byte %zu)", origin, at);
    }
    sl_tokenizer *t = calloc(1, sizeof *t);
    int rc = 0;
    if (!t) {
        rc = sl_errorf(err, SL_E_NOMEM, "%s: out of memory", origin);
        goto done;
    }
    snprintf(t->origin, sizeof t->origin, "%s", origin);
    t->bos = t->eos = -1;
    load_state L = {.t = t, .origin = origin, .err = err};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(model)) {
        rc = sl_errorf(err, SL_E_MISSING, "%s: no \"model\" object", origin);
        goto done;
    }
    const char *ty = type_of(model);
    if (ty && strcmp(ty, "BPE")) { /* old files omit the type */
        rc = sl_errorf(err, SL_E_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", origin, ty);
        goto done;
    }
    if (!is_null_or_absent(model, "dropout") || !is_null_or_absent(model, "continuing_subword_prefix") ||
        !is_null_or_absent(model, "end_of_word_suffix") || flag(model, "byte_fallback", false) ||
        flag(model, "ignore_merges", false)) {
        rc = sl_errorf(
            err, SL_E_UNSUPPORTED,
            "%s: BPE options dropout/continuing_subword_prefix/end_of_word_suffix/byte_fallback/ignore_merges are not "
            "supported",
            origin);
        goto done;
    }
    L.vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    L.merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    L.added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(L.vocab) || !cJSON_IsArray(L.merges)) {
        rc = sl_errorf(err, SL_E_MISSING, "%s: model lacks a \"vocab\" object or a \"merges\" list", origin);
        goto done;
    }
    if (L.added && !cJSON_IsArray(L.added)) {
        rc = sl_errorf(err, SL_E_FORMAT, "%s: added_tokens is not a list", origin);
        goto done;
    }
    const char *dty = type_of(cJSON_GetObjectItemCaseSensitive(root, "decoder"));
    if (!dty || strcmp(dty, "ByteLevel")) {
        rc = sl_errorf(err, SL_E_UNSUPPORTED, "%s: decoder \"%s\" is not supported (only ByteLevel)", origin,
                       dty ? dty : "none");
        goto done;
    }
    if ((rc = check_normalizer(root, origin, err)) || (rc = build_vocab(&L)) || (rc = build_merges(&L)) ||
        (rc = load_pretokenizer(t, root, origin, err)))
        goto done;

    if (config) {
        cfg = cJSON_ParseWithLength(config, config_len);
        if (!cJSON_IsObject(cfg)) {
            rc = sl_errorf(err, SL_E_FORMAT, "%s: not a valid JSON object", cfg_origin);
            goto done;
        }
    }
    int r;
    if ((r = config_token(t, cfg, "bos_token", cfg_origin, &t->bos, err)) < 0 ||
        (r = config_token(t, cfg, "eos_token", cfg_origin, &t->eos, err)) < 0) {
        rc = r;
        goto done;
    }
    if (t->bos < 0)
        t->bos = sl_tokenizer_token_id(t, BOS_DEFAULT, strlen(BOS_DEFAULT));
    if (t->eos < 0)
        t->eos = sl_tokenizer_token_id(t, EOS_DEFAULT, strlen(EOS_DEFAULT));
done:
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (rc) {
        sl_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void sl_tokenizer_free(sl_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->split[i]);
    free(t->flags), free(t->str_off), free(t->str_len), free(t->dec_off), free(t->dec_len);
    free(t->arena), free(t->str_hash), free(t->merges);
    free(t->trie_raw.nodes), free(t->trie_norm.nodes);
    free(t);
}

int32_t sl_tokenizer_n_vocab(const sl_tokenizer *t) { return t->n_vocab; }

const char *sl_tokenizer_token(const sl_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab || !t->flags[id])
        return NULL;
    return tok_str(t, id, len);
}

const uint8_t *sl_tokenizer_token_bytes(const sl_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab || !t->flags[id])
        return NULL;
    *len = t->dec_len[id];
    return (const uint8_t *)t->arena + t->dec_off[id];
}

bool sl_tokenizer_is_special(const sl_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->flags[id] & SL_TOKF_SPECIAL);
}

int32_t sl_tokenizer_bos(const sl_tokenizer *t) { return t->bos; }
int32_t sl_tokenizer_eos(const sl_tokenizer *t) { return t->eos; }
