/* Destination memory for reads: page-aligned anonymous mappings. Large ones are 2 MiB-aligned
 * and hinted for transparent huge pages, so registering them pins 512x fewer page structs. */
#include "io/io.h"

#include <stdint.h>
#include <sys/mman.h>

#define HUGE_SZ ((size_t)2 << 20)

void *sl_io_buffer_alloc(size_t len)
{
    if (len == 0)
        return NULL;
    size_t pad = len >= HUGE_SZ ? HUGE_SZ : 0;
    size_t map = len + pad;
    if (map < len)
        return NULL;
    char *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (!pad)
        return m;
    /* trim to a 2 MiB-aligned window of exactly len (rounded to pages) */
    uintptr_t a = ((uintptr_t)m + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1);
    size_t head = a - (uintptr_t)m;
    size_t keep = (len + 4095) & ~(size_t)4095;
    if (head)
        munmap(m, head);
    size_t tail = map - head - keep;
    if (tail)
        munmap((char *)a + keep, tail);
    madvise((void *)a, keep, MADV_HUGEPAGE); /* a hint; failure is harmless */
    return (void *)a;
}

void sl_io_buffer_free(void *p, size_t len)
{
    if (p && len)
        munmap(p, (len + 4095) & ~(size_t)4095);
}
