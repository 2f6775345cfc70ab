/* quant/ chunk codec: round trips, the raw fallback and its threshold, and every way a stored
 * chunk can be wrong (flipped bytes, truncation, wrong sizes, unknown codec) giving a named
 * error and never a crash. The checksum is checked against XXH3's published empty-input value. */
#include "quant/quant.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

static uint64_t codec_t_rng;

static uint64_t codec_t_next(void) /* splitmix64 */
{
    uint64_t z = (codec_t_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void codec_t_seed(const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    codec_t_rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    cr_log_info("%s: seed %llu", what, (unsigned long long)codec_t_rng);
}

static size_t codec_t_range(size_t lo, size_t hi) { return lo + codec_t_next() % (hi - lo + 1); }

static unsigned char *codec_t_alloc(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    return p;
}

static void codec_t_random(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)codec_t_next();
}

/* Compressible like fp8 weights: bytes drawn from a skewed distribution (few exponents common),
 * plus a run of zeros so zstd also finds matches. */
static void codec_t_skewed(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = codec_t_next();
        p[i] = (unsigned char)((r & 7) | (((r >> 3) % 3 == 0 ? 0x38 : 0x30)) | ((r >> 8) & 0x80));
    }
    memset(p + n / 2, 0, n / 8);
}

static int codec_t_contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

Test(codec, checksum_is_xxh3_64)
{
    /* XXH3_64bits of the empty input with seed 0, from the xxHash specification's test vectors */
    cr_assert_eq(sl_checksum("", 0), 0x2D06800538D394C2ull);
    codec_t_seed("checksum_is_xxh3_64");
    unsigned char b[1000];
    codec_t_random(b, sizeof b);
    uint64_t h = sl_checksum(b, sizeof b);
    b[codec_t_range(0, sizeof b - 1)] ^= (unsigned char)(1u << codec_t_range(0, 7));
    cr_assert_neq(sl_checksum(b, sizeof b), h, "one flipped bit must change the checksum");
}

Test(codec, round_trip_compressible_and_random)
{
    codec_t_seed("round_trip_compressible_and_random");
    for (int it = 0; it < 12; it++) {
        size_t n = it == 0 ? 0 : it == 1 ? 1 : codec_t_range(2, 1 << 20);
        int skewed = it % 2 == 0;
        unsigned char *src = codec_t_alloc(n), *dec = codec_t_alloc(n + 1);
        if (skewed)
            codec_t_skewed(src, n);
        else
            codec_t_random(src, n);
        size_t cap = sl_codec_bound(n);
        unsigned char *enc = codec_t_alloc(cap);
        sl_codec codec;
        size_t en;
        int level = (int)codec_t_range(1, 9);
        cr_assert_eq(sl_codec_encode(src, n, level, 0.02, enc, cap, &codec, &en), 0);
        cr_assert_leq(en, n, "a stored chunk is never larger than raw");
        if (skewed && n > 4096)
            cr_assert_eq(codec, SL_CODEC_ZSTD, "skewed %zu bytes at level %d stored raw", n, level);
        if (!skewed)
            cr_assert_eq(codec, SL_CODEC_RAW, "random bytes should fall back to raw (n %zu)", n);
        if (codec == SL_CODEC_RAW)
            cr_assert_eq(en, n);
        sl_error e = {0};
        dec[n] = 0x5a;
        int rc = sl_codec_decode(codec, enc, en, dec, n, sl_checksum(src, n), "chunk 1", &e);
        cr_assert_eq(rc, 0, "%s", e.msg);
        cr_assert_eq(memcmp(dec, src, n), 0, "decoded bytes differ (n %zu, codec %d)", n, codec);
        cr_assert_eq(dec[n], 0x5a, "decode wrote past n");
        free(src), free(dec), free(enc);
    }
}

Test(codec, min_saving_decides_raw_or_zstd)
{
    codec_t_seed("min_saving_decides_raw_or_zstd");
    size_t n = 1 << 20;
    unsigned char *src = codec_t_alloc(n), *enc = codec_t_alloc(sl_codec_bound(n));
    codec_t_random(src, n);
    memset(src, 0, n / 2); /* about half compressible */
    sl_codec codec;
    size_t z;
    cr_assert_eq(sl_codec_encode(src, n, 3, 0.0, enc, sl_codec_bound(n), &codec, &z), 0);
    cr_assert_eq(codec, SL_CODEC_ZSTD);
    double saving = 1.0 - (double)z / (double)n;
    cr_assert(saving > 0.4 && saving < 0.6, "saving %g", saving);
    size_t en;
    cr_assert_eq(sl_codec_encode(src, n, 3, saving - 1e-4, enc, sl_codec_bound(n), &codec, &en), 0);
    cr_assert_eq(codec, SL_CODEC_ZSTD, "saving %g just above the threshold", saving);
    cr_assert_eq(en, z);
    cr_assert_eq(sl_codec_encode(src, n, 3, saving + 1e-4, enc, sl_codec_bound(n), &codec, &en), 0);
    cr_assert_eq(codec, SL_CODEC_RAW, "saving %g just below the threshold", saving);
    cr_assert_eq(en, n);
    cr_assert_eq(memcmp(enc, src, n), 0);
    free(src), free(enc);
}

Test(codec, encode_respects_cap)
{
    codec_t_seed("encode_respects_cap");
    size_t n = 50000;
    unsigned char *src = codec_t_alloc(n), *enc = codec_t_alloc(n + 64);
    codec_t_random(src, n);
    memset(enc, 0xee, n + 64);
    sl_codec codec;
    size_t en;
    /* random bytes need the raw copy, which does not fit in n - 1 */
    cr_assert_eq(sl_codec_encode(src, n, 1, 0.02, enc, n - 1, &codec, &en), SL_E_ARG);
    for (size_t i = n - 1; i < n + 64; i++)
        cr_assert_eq(enc[i], 0xee, "byte %zu past cap written", i);
    /* compressible bytes fit in a small cap as zstd */
    memset(src, 7, n);
    cr_assert_eq(sl_codec_encode(src, n, 1, 0.02, enc, 1000, &codec, &en), 0);
    cr_assert_eq(codec, SL_CODEC_ZSTD);
    cr_assert_leq(en, 1000);
    free(src), free(enc);
}

/* An encoded zstd chunk with its checksum, for the corruption tests. */
typedef struct {
    unsigned char *src, *enc;
    size_t n, en;
    uint64_t sum;
} codec_t_chunk;

static codec_t_chunk codec_t_make(size_t n)
{
    codec_t_chunk c = {codec_t_alloc(n), codec_t_alloc(sl_codec_bound(n)), n, 0, 0};
    codec_t_skewed(c.src, n);
    sl_codec codec;
    cr_assert_eq(sl_codec_encode(c.src, n, 3, 0.02, c.enc, sl_codec_bound(n), &codec, &c.en), 0);
    cr_assert_eq(codec, SL_CODEC_ZSTD);
    c.sum = sl_checksum(c.src, n);
    return c;
}

/* A flipped byte gives SL_E_FORMAT or SL_E_CHECKSUM, or, where zstd has slack (a Huffman or
 * FSE table entry no symbol uses, say: seen about once in a few thousand flips), decodes to the
 * very same bytes. Never success with different bytes, never a crash. */
Test(codec, flipped_byte_in_zstd_stream_is_format_or_checksum_error)
{
    codec_t_seed("flipped_byte_in_zstd_stream_is_format_or_checksum_error");
    codec_t_chunk c = codec_t_make(64 * 1024);
    unsigned char *bad = codec_t_alloc(c.en), *dec = codec_t_alloc(c.n);
    int formats = 0, checksums = 0, harmless = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(bad, c.enc, c.en);
        size_t at = it < 40 ? (size_t)it % c.en : codec_t_range(0, c.en - 1); /* header too */
        bad[at] ^= (unsigned char)codec_t_range(1, 255);
        sl_error e = {0};
        int rc = sl_codec_decode(SL_CODEC_ZSTD, bad, c.en, dec, c.n, c.sum,
                                 "chunk 1234 (layer 7 expert 200)", &e);
        if (rc == 0) {
            cr_assert_eq(memcmp(dec, c.src, c.n), 0, "byte %zu flipped: success, other bytes", at);
            harmless++;
            continue;
        }
        cr_assert(rc == SL_E_FORMAT || rc == SL_E_CHECKSUM, "byte %zu flipped: rc %d (%s)", at, rc,
                  e.msg);
        cr_assert(codec_t_contains(e.msg, "chunk 1234 (layer 7 expert 200)"), "message: %s", e.msg);
        cr_assert_eq(e.code, rc);
        if (rc == SL_E_CHECKSUM)
            cr_assert(codec_t_contains(e.msg, "checksum"), "message: %s", e.msg);
        formats += rc == SL_E_FORMAT;
        checksums += rc == SL_E_CHECKSUM;
    }
    cr_log_info("300 flips: %d format errors, %d checksum mismatches, %d harmless", formats,
                checksums, harmless);
    cr_assert_lt(harmless, 30, "most flips must be caught");
    free(bad), free(dec), free(c.src), free(c.enc);
}

Test(codec, truncated_or_extended_zstd_stream_is_format_error)
{
    codec_t_seed("truncated_or_extended_zstd_stream_is_format_error");
    codec_t_chunk c = codec_t_make(100000);
    unsigned char *dec = codec_t_alloc(c.n), *longer = codec_t_alloc(c.en + 7);
    sl_error e = {0};
    size_t cut[] = {0, 1, 5, c.en / 2, c.en - 1};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        int rc = sl_codec_decode(SL_CODEC_ZSTD, c.enc, cut[i], dec, c.n, c.sum, "chunk 9", &e);
        cr_assert_eq(rc, SL_E_FORMAT, "cut to %zu of %zu: rc %d (%s)", cut[i], c.en, rc, e.msg);
        cr_assert(codec_t_contains(e.msg, "chunk 9"), "message: %s", e.msg);
    }
    memcpy(longer, c.enc, c.en);
    codec_t_random(longer + c.en, 7);
    int rc = sl_codec_decode(SL_CODEC_ZSTD, longer, c.en + 7, dec, c.n, c.sum, "chunk 9", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "trailing garbage: rc %d (%s)", rc, e.msg);
    free(dec), free(longer), free(c.src), free(c.enc);
}

Test(codec, flipped_byte_in_raw_chunk_is_checksum_error)
{
    codec_t_seed("flipped_byte_in_raw_chunk_is_checksum_error");
    size_t n = codec_t_range(1, 100000);
    unsigned char *src = codec_t_alloc(n), *dec = codec_t_alloc(n);
    codec_t_random(src, n);
    uint64_t sum = sl_checksum(src, n);
    src[codec_t_range(0, n - 1)] ^= (unsigned char)codec_t_range(1, 255);
    sl_error e = {0};
    int rc = sl_codec_decode(SL_CODEC_RAW, src, n, dec, n, sum, "chunk 77 (layer 3 core)", &e);
    cr_assert_eq(rc, SL_E_CHECKSUM, "rc %d (%s)", rc, e.msg);
    cr_assert(codec_t_contains(e.msg, "chunk 77 (layer 3 core)") &&
                  codec_t_contains(e.msg, "checksum"),
              "message: %s", e.msg);
    /* in place (src == dst) is a pure verify */
    rc = sl_codec_decode(SL_CODEC_RAW, src, n, src, n, sl_checksum(src, n), "chunk 77", &e);
    cr_assert_eq(rc, 0, "%s", e.msg);
    free(src), free(dec);
}

Test(codec, wrong_expected_size_or_codec_is_format_error)
{
    codec_t_seed("wrong_expected_size_or_codec_is_format_error");
    codec_t_chunk c = codec_t_make(codec_t_range(5000, 200000));
    unsigned char *dec = codec_t_alloc(c.n + 1);
    sl_error e = {0};
    int rc = sl_codec_decode(SL_CODEC_ZSTD, c.enc, c.en, dec, c.n - 1, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "n - 1: rc %d (%s)", rc, e.msg);
    cr_assert(codec_t_contains(e.msg, "chunk 5"), "message: %s", e.msg);
    rc = sl_codec_decode(SL_CODEC_ZSTD, c.enc, c.en, dec, c.n + 1, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "n + 1: rc %d (%s)", rc, e.msg);
    rc = sl_codec_decode(SL_CODEC_RAW, c.src, c.n, dec, c.n + 1, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "raw n + 1: rc %d (%s)", rc, e.msg);
    rc = sl_codec_decode(SL_CODEC_RAW, c.src, c.n, dec, c.n - 1, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "raw n - 1: rc %d (%s)", rc, e.msg);
    rc = sl_codec_decode((sl_codec)7, c.enc, c.en, dec, c.n, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "codec 7: rc %d (%s)", rc, e.msg);
    cr_assert(codec_t_contains(e.msg, "codec 7"), "message: %s", e.msg);
    /* a raw chunk declared as zstd */
    rc = sl_codec_decode(SL_CODEC_ZSTD, c.src, c.n, dec, c.n, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "raw bytes as zstd: rc %d (%s)", rc, e.msg);
    /* a frame that does not state its size (not what sl_codec_encode writes, but a valid zstd
     * frame): the decoded length itself must be checked */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    cr_assert_not_null(cc);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    unsigned char *nosize = codec_t_alloc(ZSTD_compressBound(c.n));
    size_t zn = ZSTD_compress2(cc, nosize, ZSTD_compressBound(c.n), c.src, c.n);
    cr_assert(!ZSTD_isError(zn));
    cr_assert_eq(ZSTD_getFrameContentSize(nosize, zn), ZSTD_CONTENTSIZE_UNKNOWN);
    rc = sl_codec_decode(SL_CODEC_ZSTD, nosize, zn, dec, c.n + 1, c.sum, "chunk 5", &e);
    cr_assert_eq(rc, SL_E_FORMAT, "unsized frame, n + 1: rc %d (%s)", rc, e.msg);
    cr_assert_eq(sl_codec_decode(SL_CODEC_ZSTD, nosize, zn, dec, c.n, c.sum, "chunk 5", &e), 0,
                 "%s", e.msg);
    ZSTD_freeCCtx(cc);
    free(nosize);
    /* no sl_error, no name: still a code, no crash */
    cr_assert_eq(sl_codec_decode(SL_CODEC_ZSTD, c.enc, c.en / 2, dec, c.n, c.sum, NULL, NULL),
                 SL_E_FORMAT);
    free(dec), free(c.src), free(c.enc);
}

/* Many threads decoding at once: no shared state to trip over. */
typedef struct {
    codec_t_chunk *c;
    int fails;
} codec_t_job;

static void *codec_t_worker(void *arg)
{
    codec_t_job *j = arg;
    unsigned char *dec = malloc(j->c->n);
    unsigned char *enc = malloc(sl_codec_bound(j->c->n));
    if (!dec || !enc) {
        j->fails = -1;
        free(dec), free(enc);
        return NULL;
    }
    for (int i = 0; i < 20; i++) {
        sl_codec codec;
        size_t en;
        if (sl_codec_encode(j->c->src, j->c->n, 1 + i % 5, 0.02, enc, sl_codec_bound(j->c->n),
                            &codec, &en) != 0 ||
            sl_codec_decode(codec, enc, en, dec, j->c->n, j->c->sum, "chunk", NULL) != 0 ||
            memcmp(dec, j->c->src, j->c->n) != 0)
            j->fails++;
    }
    free(dec), free(enc);
    return NULL;
}

Test(codec, concurrent_encode_decode)
{
    codec_t_seed("concurrent_encode_decode");
    enum { T = 6 };
    codec_t_chunk c[T];
    codec_t_job jobs[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        c[t] = codec_t_make(codec_t_range(10000, 300000));
        jobs[t] = (codec_t_job){&c[t], 0};
        cr_assert_eq(pthread_create(&th[t], NULL, codec_t_worker, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(jobs[t].fails, 0, "thread %d: %d failed round trips", t, jobs[t].fails);
        free(c[t].src), free(c[t].enc);
    }
}
