/* Private to text/tokenizer*.c and text/bpe.c: the loaded tokenizer's tables. */
#ifndef SL_TOKENIZER_INTERNAL_H
#define SL_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text/text.h"

enum { SL_TOK_MAX_SPLITS = 8 };

enum {                      /* sl_tokenizer.flags[id] */
       SL_TOKF_PRESENT = 1, /* the id names a token */
       SL_TOKF_ADDED = 2,   /* listed in "added_tokens" */
       SL_TOKF_SPECIAL = 4, /* added with "special": true */
};

/* BPE merge table entry: the pair (left id, right id) merges into `id` at priority `rank`. */
typedef struct sl_merge_slot {
    uint64_t key; /* (uint64)left << 32 | right; UINT64_MAX marks an empty slot */
    uint32_t rank;
    int32_t id;
} sl_merge_slot;

/* Byte trie of added-token contents, for leftmost-longest matching. Node 0 is the root. */
typedef struct sl_trie_node {
    int32_t child;   /* first child, -1 if none */
    int32_t sibling; /* next sibling, -1 if none */
    int32_t token;   /* id when a token ends here, else -1 */
    uint8_t byte;
} sl_trie_node;

typedef struct sl_trie {
    sl_trie_node *nodes;
    int32_t n, cap;
    uint8_t first[32]; /* bitmap of bytes that start some token: most positions fail here */
} sl_trie;

struct sl_tokenizer {
    char origin[256];            /* path or name, for messages */
    int32_t n_vocab;             /* one past the largest id */
    uint8_t *flags;              /* [n_vocab] SL_TOKF_* */
    uint32_t *str_off, *str_len; /* [n_vocab] token string (tokenizer.json spelling) in arena */
    uint32_t *dec_off, *dec_len; /* [n_vocab] decoded bytes in arena */
    char *arena;
    size_t arena_len;
    uint32_t max_dec_len; /* longest decoded token, bytes */

    int32_t *str_hash; /* open addressing over token strings -> id, -1 empty */
    uint32_t str_mask;

    sl_merge_slot *merges; /* open addressing over pairs */
    uint32_t merge_mask;

    int32_t byte_id[256]; /* id of the single-byte token of each byte */

    sl_trie trie_raw;  /* added tokens with "normalized": false, matched first */
    sl_trie trie_norm; /* those with "normalized": true, matched in what remains */

    int n_splits;
    pcre2_code *split[SL_TOK_MAX_SPLITS]; /* pre-tokenizer Split regexes, applied in order */

    int32_t bos, eos;
};

/* GPT-2's byte <-> unicode alphabet: byte b is spelled as code point sl_byte_to_cp(b); the
 * inverse gives -1 for code points outside the alphabet. */
uint32_t sl_byte_to_cp(uint8_t b);
int sl_cp_to_byte(uint32_t cp);

/* Look a merge up; returns the slot or NULL. */
static inline const sl_merge_slot *sl_merge_find(const sl_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    for (uint32_t i = (uint32_t)(h >> 32) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const sl_merge_slot *s = &t->merges[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

/* Scratch for sl_bpe_word, grown on demand (never per token). */
typedef struct sl_bpe_scratch {
    int32_t *sym;         /* [cap] token id of each symbol */
    int32_t *prev, *next; /* [cap] neighbours, -1 at the ends */
    uint8_t *alive;       /* [cap] */
    struct sl_bpe_entry *heap;
    size_t cap, heap_cap;
} sl_bpe_scratch;

/* BPE one pre-tokenized piece of n raw bytes; calls emit(ctx, id) for each resulting id in order.
 * Returns 0 or SL_E_NOMEM. */
int sl_bpe_word(const sl_tokenizer *t, sl_bpe_scratch *s, const uint8_t *bytes, size_t n,
                void (*emit)(void *ctx, int32_t id), void *ctx);
void sl_bpe_scratch_free(sl_bpe_scratch *s);

/* Rewrite a tokenizer.json regex so PCRE2 reads its Unicode classes as Oniguruma does (see
 * text.h). Returns a malloc'd NUL-terminated pattern, or NULL with *err filled. */
char *sl_regex_for_pcre2(const char *pattern, const char *origin, int idx, sl_error *err);

/* Extra ranges per class (PCRE2 class syntax, e.g. "\\x{1C89}-\\x{1C8A}..."); generated. */
const char *sl_unicode_extra(char cls);
extern const char sl_unicode_space[];

#endif
