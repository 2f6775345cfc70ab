/* The chunk codec: zstd or raw, and the XXH3-64 checksum of the decoded bytes.
 *
 * Contexts are made per call (ZSTD_compress / ZSTD_decompress): nothing is shared, so any number
 * of threads may call at once. Measured (bench/codec.c): a fresh decompression context costs
 * ~7 us per call, against ~34 ms to decode one 44 MB fp8 expert: 0.02%.
 *
 * FP8 byte planes, measured and NOT adopted. One expert (gate, up 2048x7168, down 7168x2048,
 * N(0, 1/sqrt(7168)), fp8 with 128x128 amax/448 scales, 44.05 MB), AMD EPYC, one thread, ratio =
 * fp8 bytes / zstd bytes, decode GB/s = zstd + join + XXH3 (bench/results/codec-vm-2026-11-24.md):
 *   level   plain          A: b>>3 | b&7 byte planes   B: b>>3 bytes | mantissas 3-bit packed
 *   1       1.2188  1.16   1.2096  0.73                1.2148  0.84
 *   3       1.2188  1.15   1.0449  0.35                1.1263  0.53
 *   9       1.2187  1.12   1.0815  0.31                1.1373  0.34
 * Plain zstd is within 1.3% of the order-0 entropy bound of these bytes (1.2346), and sign,
 * exponent and mantissa are close to independent, so no lossless split can gain more than that;
 * both splits compress worse and decode slower. A faster codec for fp8 would have to win on
 * speed (e.g. a GPU-side decoder), not on ratio. */
#include "quant/quant.h"

#include <math.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

uint64_t sl_checksum(const void *p, size_t n) { return XXH3_64bits(p, n); }

size_t sl_codec_bound(size_t n)
{
    size_t z = ZSTD_compressBound(n);
    return z > n ? z : n;
}

int sl_codec_encode(const void *src, size_t n, int level, double min_saving, void *dst, size_t cap,
                    sl_codec *codec_out, size_t *out_n)
{
    if (!(min_saving > 0.0)) /* NaN too: a stored zstd chunk is never larger than raw */
        min_saving = 0.0;
    if (min_saving > 1.0)
        min_saving = 1.0;
    /* Keep zstd only when n - z >= min_saving * n: give zstd no more room than that, so a
     * stream that would not pay stops with dstSize_tooSmall instead of being written out. */
    double lim = floor((double)n * (1.0 - min_saving));
    size_t zcap = lim < (double)cap ? (size_t)lim : cap;
    if (zcap > 0) {
        size_t r = ZSTD_compress(dst, zcap, src, n, level);
        if (!ZSTD_isError(r)) {
            *codec_out = SL_CODEC_ZSTD;
            *out_n = r;
            return 0;
        }
        ZSTD_ErrorCode c = ZSTD_getErrorCode(r);
        if (c == ZSTD_error_memory_allocation)
            return SL_E_NOMEM;
        if (c != ZSTD_error_dstSize_tooSmall)
            return SL_E_ARG; /* a parameter zstd refused */
    }
    if (cap < n)
        return SL_E_ARG;
    if (dst != src)
        memcpy(dst, src, n);
    *codec_out = SL_CODEC_RAW;
    *out_n = n;
    return 0;
}

int sl_codec_decode(sl_codec codec, const void *src, size_t src_n, void *dst, size_t n,
                    uint64_t checksum, const char *what, sl_error *e)
{
    if (!what)
        what = "chunk";
    switch (codec) {
    case SL_CODEC_RAW:
        if (src_n != n)
            return sl_errorf(e, SL_E_FORMAT, "%s: raw chunk stores %zu bytes, expected %zu", what,
                             src_n, n);
        if (dst != src)
            memcpy(dst, src, n);
        break;
    case SL_CODEC_ZSTD: {
        /* The frame header states the decoded size: a mismatch is caught before any work. */
        unsigned long long fcs = ZSTD_getFrameContentSize(src, src_n);
        if (fcs == ZSTD_CONTENTSIZE_ERROR)
            return sl_errorf(e, SL_E_FORMAT, "%s: not a zstd frame (%zu stored bytes)", what,
                             src_n);
        if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != (unsigned long long)n)
            return sl_errorf(e, SL_E_FORMAT, "%s: zstd frame holds %llu bytes, expected %zu", what,
                             fcs, n);
        size_t r = ZSTD_decompress(dst, n, src, src_n);
        if (ZSTD_isError(r)) {
            if (ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
                return sl_errorf(e, SL_E_NOMEM, "%s: zstd could not allocate its context", what);
            return sl_errorf(e, SL_E_FORMAT, "%s: corrupt zstd stream (%s)", what,
                             ZSTD_getErrorName(r));
        }
        if (r != n)
            return sl_errorf(e, SL_E_FORMAT, "%s: zstd stream decodes to %zu bytes, expected %zu",
                             what, r, n);
        break;
    }
    default: return sl_errorf(e, SL_E_FORMAT, "%s: unknown codec %d", what, (int)codec);
    }
    uint64_t got = sl_checksum(dst, n);
    if (got != checksum)
        return sl_errorf(e, SL_E_CHECKSUM,
                         "%s: checksum mismatch: stored %016llx, decoded bytes hash to %016llx",
                         what, (unsigned long long)checksum, (unsigned long long)got);
    return 0;
}
