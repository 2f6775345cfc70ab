/* Byte-level BPE of one pre-tokenized piece, as Hugging Face tokenizers' Word::merge_all: a
 * min-heap of candidate merges ordered by (rank, position); the lowest rank merges first, equal
 * ranks left to right. Stale heap entries (a side already merged away) are skipped when popped.
 * O(n log n) in the piece's length, so a long run of letters costs no more than its size. */
#include "text/tokenizer_internal.h"

#include <stdlib.h>

typedef struct sl_bpe_entry {
    uint32_t rank, pos; /* pos: index of the left symbol */
    int32_t id;         /* the merged token */
} sl_bpe_entry;

static bool before(const sl_bpe_entry *a, const sl_bpe_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(sl_bpe_entry *h, size_t *n, sl_bpe_entry e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

/* Put e at hole i and sift it down through h[0 .. n). */
static void sift_down(sl_bpe_entry *h, size_t n, size_t i, sl_bpe_entry e)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static sl_bpe_entry heap_pop(sl_bpe_entry *h, size_t *n)
{
    sl_bpe_entry top = h[0];
    --(*n);
    if (*n)
        sift_down(h, *n, 0, h[*n]);
    return top;
}

static int grow(sl_bpe_scratch *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = n < 256 ? 256 : n + n / 2;
    int32_t *sym = realloc(s->sym, cap * sizeof *sym);
    if (sym)
        s->sym = sym;
    int32_t *prev = realloc(s->prev, cap * sizeof *prev);
    if (prev)
        s->prev = prev;
    int32_t *next = realloc(s->next, cap * sizeof *next);
    if (next)
        s->next = next;
    uint8_t *alive = realloc(s->alive, cap);
    if (alive)
        s->alive = alive;
    if (!sym || !prev || !next || !alive)
        return SL_E_NOMEM;
    s->cap = cap;
    return 0;
}

/* Every symbol can have at most one live entry per neighbour pair it forms; pushes are bounded by
 * the initial pairs plus two per merge, so 3n entries suffice. */
static int grow_heap(sl_bpe_scratch *s, size_t n)
{
    if (3 * n <= s->heap_cap)
        return 0;
    size_t cap = 3 * n < 768 ? 768 : 3 * n + n;
    sl_bpe_entry *h = realloc(s->heap, cap * sizeof *h);
    if (!h)
        return SL_E_NOMEM;
    s->heap = h, s->heap_cap = cap;
    return 0;
}

int sl_bpe_word(const sl_tokenizer *t, sl_bpe_scratch *s, const uint8_t *bytes, size_t n,
                void (*emit)(void *ctx, int32_t id), void *ctx)
{
    if (n == 0)
        return 0;
    if (n == 1) {
        emit(ctx, t->byte_id[bytes[0]]);
        return 0;
    }
    if (n > UINT32_MAX / 4)
        return SL_E_NOMEM;
    if (grow(s, n) || grow_heap(s, n))
        return SL_E_NOMEM;
    int32_t *sym = s->sym, *prev = s->prev, *next = s->next;
    uint8_t *alive = s->alive;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[bytes[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        alive[i] = 1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const sl_merge_slot *m = sl_merge_find(t, sym[i], sym[i + 1]);
        if (m)
            s->heap[hn++] = (sl_bpe_entry){m->rank, (uint32_t)i, m->id};
    }
    for (size_t i = hn / 2; i-- > 0;) /* heapify in O(n) */
        sift_down(s->heap, hn, i, s->heap[i]);
    while (hn > 0) {
        sl_bpe_entry top = heap_pop(s->heap, &hn);
        uint32_t p = top.pos;
        if (!alive[p] || next[p] < 0)
            continue;
        int32_t r = next[p];
        /* stale: the pair at p is no longer the one this entry was made for */
        const sl_merge_slot *m = sl_merge_find(t, sym[p], sym[r]);
        if (!m || m->id != top.id)
            continue;
        sym[p] = top.id;
        alive[r] = 0;
        next[p] = next[r];
        if (next[r] >= 0)
            prev[next[r]] = (int32_t)p;
        if (prev[p] >= 0) {
            const sl_merge_slot *ml = sl_merge_find(t, sym[prev[p]], sym[p]);
            if (ml)
                heap_push(s->heap, &hn, (sl_bpe_entry){ml->rank, (uint32_t)prev[p], ml->id});
        }
        if (next[p] >= 0) {
            const sl_merge_slot *mr = sl_merge_find(t, sym[p], sym[next[p]]);
            if (mr)
                heap_push(s->heap, &hn, (sl_bpe_entry){mr->rank, p, mr->id});
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        emit(ctx, sym[i]);
    return 0;
}

void sl_bpe_scratch_free(sl_bpe_scratch *s)
{
    free(s->sym), free(s->prev), free(s->next), free(s->alive), free(s->heap);
    *s = (sl_bpe_scratch){0};
}
