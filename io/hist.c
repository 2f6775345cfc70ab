/* Latency histogram: log-linear buckets, like HdrHistogram with 5 significant bits.
 * Values below 64 ns have a bucket each; above, each power of two [2^k, 2^(k+1)) is cut into 32
 * equal buckets, so a bucket is at most 1/32 of its lower bound wide. */
#include "io/io.h"

#include <string.h>

#define SUB_BITS 5
#define SUB (1u << SUB_BITS)        /* 32 buckets per power of two */
#define EXACT (2u * SUB)            /* 0..63 exact */
#define TOP_EXP 40                  /* 2^41 ns clamps into the last bucket */

unsigned sl_io_hist_bucket(uint64_t ns)
{
    if (ns < EXACT)
        return (unsigned)ns;
    if (ns >= (UINT64_C(1) << (TOP_EXP + 1)))
        return SL_IO_HIST_BUCKETS - 1;
    unsigned exp = 63u - (unsigned)__builtin_clzll(ns); /* >= 6 */
    unsigned sub = (unsigned)(ns >> (exp - SUB_BITS)) & (SUB - 1);
    return EXACT + (exp - (SUB_BITS + 1)) * SUB + sub;
}

void sl_io_hist_range(unsigned bucket, uint64_t *lo, uint64_t *hi)
{
    if (bucket < EXACT) {
        *lo = *hi = bucket;
        return;
    }
    if (bucket >= SL_IO_HIST_BUCKETS)
        bucket = SL_IO_HIST_BUCKETS - 1;
    unsigned exp = (bucket - EXACT) / SUB + SUB_BITS + 1;
    unsigned sub = (bucket - EXACT) % SUB;
    uint64_t width = UINT64_C(1) << (exp - SUB_BITS);
    *lo = (UINT64_C(1) << exp) + sub * width;
    *hi = *lo + width - 1;
}

void sl_io_hist_add(sl_io_hist *h, uint64_t ns)
{
    h->b[sl_io_hist_bucket(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void sl_io_hist_merge(sl_io_hist *into, const sl_io_hist *h)
{
    for (unsigned i = 0; i < SL_IO_HIST_BUCKETS; i++)
        into->b[i] += h->b[i];
    into->count += h->count;
    into->sum_ns += h->sum_ns;
    if (h->max_ns > into->max_ns)
        into->max_ns = h->max_ns;
}

double sl_io_hist_quantile_us(const sl_io_hist *h, double q)
{
    if (h->count == 0)
        return 0.0;
    if (q > 1.0)
        q = 1.0;
    /* rank of the wanted sample, 1-based: smallest r with r >= q * count */
    double want = q * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want || rank == 0)
        rank++;
    uint64_t seen = 0;
    for (unsigned i = 0; i < SL_IO_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            sl_io_hist_range(i, &lo, &hi);
            if (hi > h->max_ns)
                hi = h->max_ns; /* the top bucket never reports past the largest sample */
            if (lo > hi)
                lo = hi;
            return 0.5 * ((double)lo + (double)hi) / 1000.0;
        }
    }
    return (double)h->max_ns / 1000.0;
}
