// The backend's device memory: one cudaMalloc cut up first-fit. Host-side bookkeeping only (no
// CUDA calls here): a table of blocks in offset order that tiles the whole range, neighbouring
// free blocks merged on free. Allocation is O(blocks) and happens at load time, never per token.
#include "cuda/internal.cuh"

#include <stdlib.h>
#include <string.h>

static int arena_grow(sl_cuda_arena *a)
{
    if (a->n < a->cap)
        return 0;
    int cap = a->cap ? 2 * a->cap : 64;
    sl_cuda_block *b = (sl_cuda_block *)realloc(a->blk, (size_t)cap * sizeof *b);
    if (!b)
        return SL_E_NOMEM;
    a->blk = b;
    a->cap = cap;
    return 0;
}

int sl_cuda_arena_init(sl_cuda_arena *a, char *base, size_t size)
{
    memset(a, 0, sizeof *a);
    a->base = base;
    a->size = size;
    if (arena_grow(a))
        return SL_E_NOMEM;
    a->blk[0] = {0, size, 0};
    a->n = 1;
    return 0;
}

int sl_cuda_arena_alloc(sl_cuda_arena *a, size_t bytes, void **out)
{
    size_t need = (bytes + SL_CUDA_ALIGN - 1) / SL_CUDA_ALIGN * SL_CUDA_ALIGN;
    if (need == 0)
        need = SL_CUDA_ALIGN;
    if (need < bytes) // overflow
        return SL_E_NOMEM;
    for (int i = a->first_free; i < a->n; i++) {
        sl_cuda_block *b = &a->blk[i];
        if (b->used || b->size < need)
            continue;
        if (b->size > need) { // split: the tail stays free
            if (arena_grow(a))
                return SL_E_NOMEM;
            b = &a->blk[i];
            memmove(&a->blk[i + 2], &a->blk[i + 1], (size_t)(a->n - i - 1) * sizeof *b);
            a->blk[i + 1] = {b->off + need, b->size - need, 0};
            a->n++;
            b->size = need;
        }
        b->used = 1;
        a->used += need;
        if (a->used > a->peak)
            a->peak = a->used;
        while (a->first_free < a->n && a->blk[a->first_free].used)
            a->first_free++;
        *out = a->base + b->off;
        return 0;
    }
    return SL_E_NOMEM;
}

int sl_cuda_arena_free(sl_cuda_arena *a, void *p)
{
    if ((char *)p < a->base || (char *)p >= a->base + a->size)
        return SL_E_ARG;
    size_t off = (size_t)((char *)p - a->base);
    int lo = 0, hi = a->n - 1, i = -1;
    while (lo <= hi) { // the block that starts at off
        int mid = (lo + hi) / 2;
        if (a->blk[mid].off == off) {
            i = mid;
            break;
        }
        if (a->blk[mid].off < off)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    if (i < 0 || !a->blk[i].used)
        return SL_E_ARG;
    a->blk[i].used = 0;
    a->used -= a->blk[i].size;
    if (i + 1 < a->n && !a->blk[i + 1].used) { // merge the next block into this one
        a->blk[i].size += a->blk[i + 1].size;
        memmove(&a->blk[i + 1], &a->blk[i + 2], (size_t)(a->n - i - 2) * sizeof a->blk[0]);
        a->n--;
    }
    if (i > 0 && !a->blk[i - 1].used) { // merge this block into the previous one
        a->blk[i - 1].size += a->blk[i].size;
        memmove(&a->blk[i], &a->blk[i + 1], (size_t)(a->n - i - 1) * sizeof a->blk[0]);
        a->n--;
        i--;
    }
    if (i < a->first_free)
        a->first_free = i;
    return 0;
}

void sl_cuda_arena_fini(sl_cuda_arena *a)
{
    free(a->blk);
    memset(a, 0, sizeof *a);
}
