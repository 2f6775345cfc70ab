/* quant/ weight formats: the scalar encoders against brute-force nearest-value oracles, the
 * format table and sizes against the layout arithmetic of quant.h, and quantize/dequantize
 * against a naive decoder written here from the documented layout plus per-element error bounds
 * stated in each format's own scale. */
#include "quant/quant.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t qf_rng;

static uint64_t qf_next(void) /* splitmix64 */
{
    uint64_t z = (qf_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void qf_seed(const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    qf_rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    cr_log_info("%s: seed %llu", what, (unsigned long long)qf_rng);
}

static int64_t qf_range(int64_t lo, int64_t hi) /* uniform in [lo, hi] */
{
    return lo + (int64_t)(qf_next() % (uint64_t)(hi - lo + 1));
}

static double qf_unit(void) { return ((qf_next() >> 11) + 0.5) * 0x1p-53; } /* (0, 1) */

static double qf_gauss(void) { return sqrt(-2.0 * log(qf_unit())) * cos(2.0 * M_PI * qf_unit()); }

static uint32_t qf_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float qf_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Per-element checks: a Criterion assertion per element costs microseconds even when it passes. */
#define QF_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

static void *qf_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    return p;
}

static size_t qf_up(int64_t a, int64_t b) { return (size_t)((a + b - 1) / b); }

/* Gaussian matrix, std 1/sqrt(7168) like DeepSeek's weights; `outliers`: one element per group
 * of 32 (and so per 128x128 block) made 100x larger. */
static float *qf_matrix(int64_t rows, int64_t cols, int outliers)
{
    float *x = qf_alloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = (float)(qf_gauss() / sqrt(7168.0));
    if (outliers)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < cols; g += 32) {
                int64_t c = g + qf_range(0, (cols - g < 32 ? cols - g : 32) - 1);
                x[r * cols + c] *= 100.0f;
            }
    return x;
}

static float qf_f16_at(const unsigned char *plane, size_t i)
{
    uint16_t h;
    memcpy(&h, plane + 2 * i, 2);
    return sl_f16_to_f32(h);
}

/* Naive decode of element (r, c) straight from the layout text in quant.h. */
static float qf_naive(sl_wformat f, const void *enc, int64_t rows, int64_t cols, int64_t r,
                      int64_t c)
{
    const unsigned char *b = enc;
    switch (f) {
    case SL_WF_F32: {
        float v;
        memcpy(&v, b + 4 * (r * cols + c), 4);
        return v;
    }
    case SL_WF_BF16: {
        uint16_t h;
        memcpy(&h, b + 2 * (r * cols + c), 2);
        return sl_bf16_to_f32(h);
    }
    case SL_WF_FP8: {
        float s;
        memcpy(&s, b + rows * cols + 4 * ((r / 128) * (int64_t)qf_up(cols, 128) + c / 128), 4);
        return sl_fp8e4m3_to_f32(b[r * cols + c]) * s;
    }
    case SL_WF_Q8: {
        float s = qf_f16_at(b + rows * cols, (size_t)(r * (int64_t)qf_up(cols, 32) + c / 32));
        return (float)(int8_t)b[r * cols + c] * s;
    }
    case SL_WF_Q4: {
        int64_t rb = (cols + 1) / 2;
        unsigned byte = b[r * rb + c / 2];
        int nib = c % 2 ? byte >> 4 : byte & 15;
        float s = qf_f16_at(b + rows * rb, (size_t)(r * (int64_t)qf_up(cols, 32) + c / 32));
        return (float)(nib - 8) * s;
    }
    default: cr_assert_fail("format %d", f);
    }
    return 0;
}

/* ---- fp8 e4m3 encoder --------------------------------------------------------------------- */

Test(quant_formats, fp8_encode_inverts_decode_for_every_code)
{
    for (unsigned c = 0; c < 256; c++) {
        float v = sl_fp8e4m3_to_f32((uint8_t)c);
        uint8_t back = sl_f32_to_fp8e4m3(v);
        if ((c & 0x7f) == 0x7f)
            QF_CHECK((back & 0x7f) == (0x7f), "NaN code 0x%02x re-encodes to 0x%02x", c, back);
        else
            QF_CHECK((back) == (c), "code 0x%02x (%a) re-encodes to 0x%02x", c, v, back);
    }
}

/* Nearest finite e4m3 to x by distance over all 127 magnitudes, ties to the even code, magnitudes
 * above 448 saturating; the sign copied from x. */
static uint8_t qf_fp8_nearest(float x)
{
    double a = fabs((double)x);
    unsigned best = 0;
    double bd = INFINITY;
    for (unsigned c = 0; c <= 0x7e; c++) {
        double d = fabs((double)sl_fp8e4m3_to_f32((uint8_t)c) - a);
        if (d < bd || (d == bd && (c & 1) == 0)) {
            bd = d;
            best = c;
        }
    }
    if (a > 448.0)
        best = 0x7e;
    return (uint8_t)(best | (signbit(x) ? 0x80u : 0u));
}

Test(quant_formats, fp8_encode_rounds_to_nearest_even_and_saturates)
{
    qf_seed("fp8_encode_rounds_to_nearest_even_and_saturates");
    int ties = 0;
    for (int i = 0; i < 60000; i++) {
        float x;
        switch (i % 4) {
        case 0: /* any magnitude from deep subnormal to beyond 448 */
            x = (float)ldexp(qf_unit(), (int)qf_range(-14, 10));
            break;
        case 1: { /* exact midpoint of two neighbouring codes */
            unsigned c = (unsigned)qf_range(0, 0x7d);
            x = (sl_fp8e4m3_to_f32((uint8_t)c) + sl_fp8e4m3_to_f32((uint8_t)(c + 1))) / 2;
            ties++;
            break;
        }
        case 2: { /* a code's value nudged by one fp32 ulp */
            float v = sl_fp8e4m3_to_f32((uint8_t)qf_range(0, 0x7e));
            x = nextafterf(v, qf_next() & 1 ? INFINITY : 0.0f);
            break;
        }
        default: /* random fp32 bit patterns that are not NaN */
            x = qf_float((uint32_t)qf_next() & 0x7f7fffffu);
            break;
        }
        if (qf_next() & 1)
            x = -x;
        uint8_t got = sl_f32_to_fp8e4m3(x), want = qf_fp8_nearest(x);
        QF_CHECK((got) == (want), "fp8(%a): got 0x%02x want 0x%02x", x, got, want);
    }
    cr_assert_gt(ties, 1000);
    cr_assert_eq(sl_f32_to_fp8e4m3(INFINITY), 0x7e);
    cr_assert_eq(sl_f32_to_fp8e4m3(-INFINITY), 0xfe);
    cr_assert_eq(sl_f32_to_fp8e4m3(1e30f), 0x7e);
    cr_assert_eq(sl_f32_to_fp8e4m3(NAN) & 0x7f, 0x7f);
}

/* ---- f16 encoder -------------------------------------------------------------------------- */

Test(quant_formats, f16_encode_inverts_decode_for_every_code)
{
    for (unsigned h = 0; h < 65536; h++) {
        float v = sl_f16_to_f32((uint16_t)h);
        uint16_t back = sl_f32_to_f16(v);
        if (isnan(v))
            QF_CHECK(isnan(sl_f16_to_f32(back)), "f16 NaN 0x%04x lost (0x%04x)", h, back);
        else
            QF_CHECK((back) == (h), "f16 0x%04x (%a) re-encodes to 0x%04x", h, v, back);
    }
}

/* Nearest half by bisection over the ordered positive codes, ties to even, |x| >= 65520 (the
 * midpoint of 65504 and 2^16) to inf. */
static uint16_t qf_f16_nearest(float x)
{
    double a = fabs((double)x);
    uint16_t sign = signbit(x) ? 0x8000u : 0u;
    if (a >= 65520.0)
        return sign | 0x7c00u;
    unsigned lo = 0, hi = 0x7bff; /* largest code with value <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if ((double)sl_f16_to_f32((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double dlo = a - sl_f16_to_f32((uint16_t)lo);
    double dhi = lo < 0x7bff ? (double)sl_f16_to_f32((uint16_t)(lo + 1)) - a : INFINITY;
    unsigned c = dlo < dhi ? lo : dhi < dlo ? lo + 1 : (lo & 1) ? lo + 1 : lo;
    return (uint16_t)(sign | c);
}

Test(quant_formats, f16_encode_rounds_to_nearest_even)
{
    qf_seed("f16_encode_rounds_to_nearest_even");
    for (int i = 0; i < 200000; i++) {
        float x;
        switch (i % 3) {
        case 0: x = (float)ldexp(qf_unit(), (int)qf_range(-26, 17)); break;
        case 1: { /* midpoints */
            unsigned c = (unsigned)qf_range(0, 0x7bfe);
            x = (float)(((double)sl_f16_to_f32((uint16_t)c) + sl_f16_to_f32((uint16_t)(c + 1))) /
                        2);
            break;
        }
        default: x = qf_float((uint32_t)qf_next() & 0x7f7fffffu); break;
        }
        if (qf_next() & 1)
            x = -x;
        uint16_t got = sl_f32_to_f16(x), want = qf_f16_nearest(x);
        QF_CHECK((got) == (want), "f16(%a): got 0x%04x want 0x%04x", x, got, want);
    }
    cr_assert_eq(sl_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(sl_f32_to_f16(-65520.0f), 0xfc00);
    cr_assert_eq(sl_f32_to_f16(65519.996f), 0x7bff);
    cr_assert(isnan(sl_f16_to_f32(sl_f32_to_f16(NAN))));
}

/* ---- table and sizes ---------------------------------------------------------------------- */

Test(quant_formats, table_names_parse_and_reject)
{
    const char *names[] = {"f32", "bf16", "fp8", "q8", "q4"};
    for (int f = 0; f < SL_WF_COUNT; f++) {
        const sl_wformat_info *in = sl_wformat_get(f);
        cr_assert_not_null(in);
        cr_assert_str_eq(in->name, names[f]);
        sl_wformat got = SL_WF_COUNT;
        cr_assert_eq(sl_wformat_parse(names[f], &got), 0);
        cr_assert_eq(got, f);
    }
    cr_assert_null(sl_wformat_get(-1));
    cr_assert_null(sl_wformat_get(SL_WF_COUNT));
    sl_wformat got;
    cr_assert_eq(sl_wformat_parse("q3", &got), SL_E_ARG);
    cr_assert_eq(sl_wformat_parse("", &got), SL_E_ARG);
    cr_assert_eq(sl_wformat_parse("Q4 ", &got), SL_E_ARG);
    cr_assert_eq(sl_wformat_parse(NULL, &got), SL_E_ARG);
    cr_assert_eq(sl_wformat_get(SL_WF_FP8)->block_rows, 128);
    cr_assert_eq(sl_wformat_get(SL_WF_FP8)->block_cols, 128);
    cr_assert_eq(sl_wformat_get(SL_WF_Q4)->block_rows, 1);
    cr_assert_eq(sl_wformat_get(SL_WF_Q4)->block_cols, 32);
    cr_assert_eq(sl_wformat_get(SL_WF_Q8)->block_cols, 32);
    cr_assert_eq(sl_wformat_get(SL_WF_BF16)->block_cols, 1);
}

/* Bytes from quant.h's layout text, in plain arithmetic. */
static size_t qf_layout_bytes(sl_wformat f, int64_t r, int64_t c)
{
    int64_t g = (c + 31) / 32;
    switch (f) {
    case SL_WF_F32: return (size_t)(4 * r * c);
    case SL_WF_BF16: return (size_t)(2 * r * c);
    case SL_WF_FP8: return (size_t)(r * c + 4 * ((r + 127) / 128) * ((c + 127) / 128));
    case SL_WF_Q8: return (size_t)(r * c + 2 * r * g);
    case SL_WF_Q4: return (size_t)(r * ((c + 1) / 2) + 2 * r * g);
    default: return 0;
    }
}

Test(quant_formats, bytes_follow_layout_arithmetic)
{
    qf_seed("bytes_follow_layout_arithmetic");
    for (int i = 0; i < 2000; i++) {
        int64_t r = qf_range(0, 20000), c = qf_range(0, 20000);
        for (int f = 0; f < SL_WF_COUNT; f++)
            QF_CHECK((sl_wformat_bytes(f, r, c)) == (qf_layout_bytes(f, r, c)), "%s %lldx%lld",
                     sl_wformat_get(f)->name, (long long)r, (long long)c);
    }
    cr_assert_eq(sl_wformat_bytes(SL_WF_Q4, 1, 1), 1 + 2);
    cr_assert_eq(sl_wformat_bytes(SL_WF_FP8, 1, 1), 1 + 4);
    cr_assert_eq(sl_wformat_bytes(SL_WF_Q4, -1, 5), 0);
    cr_assert_eq(sl_wformat_bytes((sl_wformat)SL_WF_COUNT, 4, 4), 0);
}

Test(quant_formats, bits_per_weight_matches_large_matrix_bytes)
{
    for (int f = 0; f < SL_WF_COUNT; f++) {
        double bpw = 8.0 * (double)sl_wformat_bytes(f, 7168, 2048) / (7168.0 * 2048.0);
        cr_assert_float_eq(sl_wformat_get(f)->bits_per_weight, bpw, 1e-12, "%s: table %g, bytes %g",
                           sl_wformat_get(f)->name, sl_wformat_get(f)->bits_per_weight, bpw);
    }
    cr_assert_eq(sl_wformat_get(SL_WF_Q4)->bits_per_weight, 4.5);
    cr_assert_eq(sl_wformat_get(SL_WF_Q8)->bits_per_weight, 8.5);
}

/* ---- round trips -------------------------------------------------------------------------- */

static void qf_shape(int i, int64_t *r, int64_t *c)
{
    static const int64_t fixed[][2] = {{1, 1}, {1, 33}, {129, 1}, {130, 257}, {3, 31}, {256, 64}};
    if (i < 6) {
        *r = fixed[i][0];
        *c = fixed[i][1];
    } else {
        *r = qf_range(1, 300);
        *c = qf_range(1, 300);
    }
}

/* Every element: dequantize == the naive layout decode (bitwise), and the error against the
 * source within the format's bound; scales as the documented rule says. */
static void qf_check_round_trip(sl_wformat f, int outliers)
{
    for (int it = 0; it < 14; it++) {
        int64_t rows, cols;
        qf_shape(it, &rows, &cols);
        float *x = qf_matrix(rows, cols, outliers);
        size_t nb = sl_wformat_bytes(f, rows, cols);
        unsigned char *enc = qf_alloc(nb + 16);
        memset(enc + nb, 0xa5, 16);
        sl_quantize(f, x, rows, cols, enc);
        for (int k = 0; k < 16; k++)
            cr_assert_eq(enc[nb + k], 0xa5, "%s %lldx%lld: wrote past sl_wformat_bytes",
                         sl_wformat_get(f)->name, (long long)rows, (long long)cols);
        float *y = qf_alloc((size_t)(rows * cols) * sizeof(float));
        sl_dequantize_rows(f, enc, rows, cols, 0, rows, y);
        float *bamax = qf_alloc(qf_up(rows, 128) * qf_up(cols, 128) * sizeof(float));
        for (size_t b = 0; b < qf_up(rows, 128) * qf_up(cols, 128); b++)
            bamax[b] = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float *m = &bamax[(r / 128) * qf_up(cols, 128) + c / 128];
                *m = fmaxf(*m, fabsf(x[r * cols + c]));
            }
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) {
                float v = x[r * cols + c], d = y[r * cols + c];
                float nv = qf_naive(f, enc, rows, cols, r, c);
                QF_CHECK((qf_bits(d)) == (qf_bits(nv)), "%s %lldx%lld (%lld,%lld): %a vs layout %a",
                         sl_wformat_get(f)->name, (long long)rows, (long long)cols, (long long)r,
                         (long long)c, d, nv);
                double err = fabs((double)d - v);
                switch (f) {
                case SL_WF_F32: QF_CHECK(qf_bits(d) == qf_bits(v), "f32 %a -> %a", v, d); break;
                case SL_WF_BF16: /* 8 significant bits: unit roundoff 2^-8 */
                    QF_CHECK((err) <= (ldexp(fabs(v), -8)), "bf16 %a -> %a", v, d);
                    break;
                case SL_WF_FP8: {
                    /* scale = amax/448 of the block, from the source directly */
                    float amax = bamax[(r / 128) * qf_up(cols, 128) + c / 128];
                    float s;
                    memcpy(&s, enc + rows * cols + 4 * ((r / 128) * qf_up(cols, 128) + c / 128), 4);
                    QF_CHECK(s == amax / 448.0f, "fp8 block scale %a, amax %a", s, amax);
                    QF_CHECK((enc[r * cols + c] & 0x7f) != (0x7f), "NaN code");
                    if (fabs(v) / s >= 0x1p-6) /* e4m3 normal: 4 significant bits, roundoff 2^-4 */
                        QF_CHECK((err) <= (ldexp(fabs(v), -4) * (1 + 1e-6)), "fp8 %a -> %a (s %a)",
                                 v, d, s);
                    else /* subnormal step 2^-9 s */
                        QF_CHECK((err) <= (ldexp(s, -10) * (1 + 1e-6)), "fp8 %a -> %a", v, d);
                    break;
                }
                case SL_WF_Q8:
                case SL_WF_Q4: {
                    int64_t g0 = c / 32 * 32, g1 = g0 + 32 < cols ? g0 + 32 : cols;
                    int64_t rb = f == SL_WF_Q8 ? cols : (cols + 1) / 2;
                    float s =
                        qf_f16_at(enc + rows * rb, (size_t)(r * (int64_t)qf_up(cols, 32) + c / 32));
                    double pmax = 0, nmax = 0;
                    for (int64_t j = g0; j < g1; j++) {
                        pmax = fmax(pmax, x[r * cols + j]);
                        nmax = fmax(nmax, -x[r * cols + j]);
                    }
                    double amax = fmax(pmax, nmax);
                    /* the rounding check: half a step, up to the double quotient's last bit */
                    QF_CHECK((err) <= (fabs(s) / 2 * (1 + 1e-9)), "%s %a -> %a (s %a)",
                             sl_wformat_get(f)->name, v, d, s);
                    if (f == SL_WF_Q8) {
                        /* amax/127 rounded up to a half: less than one half ulp above */
                        QF_CHECK(s >= amax / 127 && s <= amax / 127 * (1 + 0x1p-10) + 0x1p-24,
                                 "q8 scale %a for amax %a", s, amax);
                    } else {
                        /* never coarser than amax/7, never finer than the tight bound */
                        double big = pmax > nmax ? pmax : nmax, other = pmax > nmax ? nmax : pmax;
                        QF_CHECK(fabs(s) <= amax / 7 + 0x1p-24 &&
                                     fabs(s) >= fmax(big / 8.5, other / 7.5),
                                 "q4 scale %a for max %a / min %a", s, pmax, -nmax);
                        if (amax > 0)
                            QF_CHECK((s < 0) == (pmax > nmax), "scale sign puts amax on -8");
                    }
                    break;
                }
                default: break;
                }
            }
            if (f == SL_WF_Q4 && cols % 2) /* padding nibble: 8, value 0 */
                cr_assert_eq(enc[r * ((cols + 1) / 2) + cols / 2] >> 4, 8);
        }
        free(x);
        free(enc);
        free(y);
        free(bamax);
    }
}

Test(quant_formats, round_trip_f32_bf16_fp8_q8_q4_gaussian)
{
    qf_seed("round_trip_f32_bf16_fp8_q8_q4_gaussian");
    for (int f = 0; f < SL_WF_COUNT; f++)
        qf_check_round_trip(f, 0);
}

Test(quant_formats, round_trip_with_outliers)
{
    qf_seed("round_trip_with_outliers");
    for (int f = 0; f < SL_WF_COUNT; f++)
        qf_check_round_trip(f, 1);
}

Test(quant_formats, zero_groups_and_tiny_values)
{
    qf_seed("zero_groups_and_tiny_values");
    int64_t rows = 3, cols = 70;
    float x[3 * 70];
    for (int i = 0; i < rows * cols; i++) /* row 0 zeros; rows 1-2 in f16-subnormal scale range */
        x[i] = i < cols ? 0.0f : (float)(qf_gauss() * ldexp(1.0, (int)qf_range(-30, -18)));
    for (int f = SL_WF_FP8; f <= SL_WF_Q4; f++) {
        unsigned char enc[512];
        float y[3 * 70];
        sl_quantize(f, x, rows, cols, enc);
        sl_dequantize_rows(f, enc, rows, cols, 0, rows, y);
        for (int c = 0; c < cols; c++)
            QF_CHECK((y[c]) == (0.0f), "%s: zero row decodes to %a", sl_wformat_get(f)->name, y[c]);
        for (int i = cols; i < rows * cols; i++) {
            QF_CHECK(isfinite(y[i]), "%s: %a decodes to %a", sl_wformat_get(f)->name, x[i], y[i]);
            if (f == SL_WF_Q8 || f == SL_WF_Q4) {
                int64_t r = i / cols, c = i % cols;
                int64_t rb = f == SL_WF_Q8 ? cols : (cols + 1) / 2;
                float s = qf_f16_at(enc + rows * rb, (size_t)(r * 3 + c / 32));
                QF_CHECK(fabs((double)y[i] - x[i]) <= fabs(s) / 2 * (1 + 1e-9),
                         "%s: %a -> %a with scale %a", sl_wformat_get(f)->name, x[i], y[i], s);
            }
        }
    }
    /* fp8: an all-zero block gets scale 1 (amax 0), as documented */
    float z[4] = {0, 0, 0, 0}, s;
    unsigned char enc[8];
    sl_quantize(SL_WF_FP8, z, 2, 2, enc);
    memcpy(&s, enc + 4, 4);
    cr_assert_eq(s, 1.0f);
}

Test(quant_formats, dequantize_rows_subrange_equals_full_decode)
{
    qf_seed("dequantize_rows_subrange_equals_full_decode");
    for (int it = 0; it < 40; it++) {
        int64_t rows = qf_range(1, 300), cols = qf_range(1, 300);
        float *x = qf_matrix(rows, cols, it % 2);
        float *full = qf_alloc((size_t)(rows * cols) * sizeof(float));
        float *part = qf_alloc((size_t)(rows * cols + 1) * sizeof(float));
        for (int f = 0; f < SL_WF_COUNT; f++) {
            unsigned char *enc = qf_alloc(sl_wformat_bytes(f, rows, cols));
            sl_quantize(f, x, rows, cols, enc);
            sl_dequantize_rows(f, enc, rows, cols, 0, rows, full);
            int64_t r0 = qf_range(0, rows), n = qf_range(0, rows - r0);
            part[n * cols] = 12345.0f; /* sentinel just past the n rows */
            sl_dequantize_rows(f, enc, rows, cols, r0, n, part);
            cr_assert_eq(part[n * cols], 12345.0f, "%s wrote past n rows", sl_wformat_get(f)->name);
            cr_assert_eq(memcmp(part, full + r0 * cols, (size_t)(n * cols) * sizeof(float)), 0,
                         "%s %lldx%lld rows [%lld, %lld) differ from the full decode",
                         sl_wformat_get(f)->name, (long long)rows, (long long)cols, (long long)r0,
                         (long long)(r0 + n));
            free(enc);
        }
        free(x);
        free(full);
        free(part);
    }
}

/* ---- fp8 against the official path -------------------------------------------------------- */

/* A tensor as the official checkpoint has it: random non-NaN codes, each 128x128 block holding
 * a +-448 code (its scale is its amax/448), random scales. */
static uint8_t *qf_official_fp8(int64_t rows, int64_t cols, float **scales)
{
    int64_t nbr = (int64_t)qf_up(rows, 128), nbc = (int64_t)qf_up(cols, 128);
    uint8_t *q = qf_alloc((size_t)(rows * cols));
    *scales = qf_alloc((size_t)(nbr * nbc) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) {
        q[i] = (uint8_t)qf_next();
        if ((q[i] & 0x7f) == 0x7f)
            q[i] ^= 1;
    }
    for (int64_t br = 0; br < nbr; br++)
        for (int64_t bc = 0; bc < nbc; bc++) {
            (*scales)[br * nbc + bc] = (float)ldexp(1.0 + qf_unit(), (int)qf_range(-20, -6));
            int64_t r = br * 128 + qf_range(0, (rows - br * 128 < 128 ? rows - br * 128 : 128) - 1);
            int64_t c = bc * 128 + qf_range(0, (cols - bc * 128 < 128 ? cols - bc * 128 : 128) - 1);
            q[r * cols + c] = qf_next() & 1 ? 0x7e : 0xfe;
        }
    return q;
}

Test(quant_formats, fp8_official_bits_survive_dequant_then_quantize)
{
    qf_seed("fp8_official_bits_survive_dequant_then_quantize");
    for (int it = 0; it < 12; it++) {
        int64_t rows = qf_range(1, 400), cols = qf_range(1, 400);
        float *scales;
        uint8_t *q = qf_official_fp8(rows, cols, &scales);
        float *v = qf_alloc((size_t)(rows * cols) * sizeof(float));
        sl_fp8_block_dequant(q, scales, rows, cols, 128, 128, v); /* the official decode */
        size_t nb = sl_wformat_bytes(SL_WF_FP8, rows, cols), ns = nb - (size_t)(rows * cols);
        unsigned char *enc = qf_alloc(nb);
        /* with the same scales: every byte, codes and scales */
        sl_quantize_fp8_scaled(v, rows, cols, scales, enc);
        cr_assert_eq(memcmp(enc, q, (size_t)(rows * cols)), 0, "codes re-rounded (%lldx%lld)",
                     (long long)rows, (long long)cols);
        cr_assert_eq(memcmp(enc + rows * cols, scales, ns), 0, "scales changed");
        /* recomputing amax/448: the same codes; scales within one fp32 ulp */
        sl_quantize(SL_WF_FP8, v, rows, cols, enc);
        cr_assert_eq(memcmp(enc, q, (size_t)(rows * cols)), 0, "codes re-rounded by sl_quantize");
        for (size_t i = 0; i < ns / 4; i++) {
            float s;
            memcpy(&s, enc + rows * cols + 4 * i, 4);
            QF_CHECK((fabsf(s - scales[i])) <= (ldexpf(scales[i], -23)), "scale %zu: %a vs %a", i,
                     s, scales[i]);
        }
        free(q), free(scales), free(v), free(enc);
    }
}

Test(quant_formats, fp8_dequantize_matches_block_dequant_for_every_code_and_scale)
{
    qf_seed("fp8_dequantize_matches_block_dequant_for_every_code_and_scale");
    int64_t rows = 130, cols = 300; /* ragged edge blocks on both axes */
    uint8_t *enc = qf_alloc(sl_wformat_bytes(SL_WF_FP8, rows, cols));
    int64_t nbc = (int64_t)qf_up(cols, 128);
    float scales[2 * 3];
    for (int it = 0; it < 20; it++) {
        for (int64_t i = 0; i < rows * cols; i++)
            enc[i] = (uint8_t)qf_next(); /* NaN codes and subnormals included */
        if (it % 4 == 0)                 /* a block with no NaN code, to take the fast path */
            for (int64_t r = 0; r < 128; r++)
                for (int64_t c = 0; c < 128; c++)
                    if ((enc[r * cols + c] & 0x7f) == 0x7f)
                        enc[r * cols + c] = 0x01;
        for (int i = 0; i < 2 * nbc; i++) /* tiny, ordinary, and >= 2^7 (overflow-prone) scales */
            scales[i] =
                (float)ldexp(1.0 + qf_unit(), (int)qf_range(-130, 20)) * (qf_next() & 1 ? -1 : 1);
        memcpy(enc + rows * cols, scales, sizeof scales);
        float *a = qf_alloc((size_t)(rows * cols) * sizeof(float));
        float *b = qf_alloc((size_t)(rows * cols) * sizeof(float));
        sl_dequantize_rows(SL_WF_FP8, enc, rows, cols, 0, rows, a);
        sl_fp8_block_dequant(enc, scales, rows, cols, 128, 128, b);
        for (int64_t i = 0; i < rows * cols; i++) {
            if (isnan(b[i]))
                QF_CHECK(isnan(a[i]), "element %lld (code 0x%02x) should be NaN", (long long)i,
                         enc[i]);
            else
                QF_CHECK((qf_bits(a[i])) == (qf_bits(b[i])), "element %lld code 0x%02x: %a vs %a",
                         (long long)i, enc[i], a[i], b[i]);
        }
        free(a), free(b);
    }
    free(enc);
}

/* ---- q4 scale rule ------------------------------------------------------------------------ */

Test(quant_formats, q4_error_below_amax_over_7_rule)
{
    qf_seed("q4_error_below_amax_over_7_rule");
    int64_t rows = 128, cols = 512; /* 2048 groups */
    float *x = qf_matrix(rows, cols, 0);
    unsigned char *enc = qf_alloc(sl_wformat_bytes(SL_WF_Q4, rows, cols));
    float *y = qf_alloc((size_t)(rows * cols) * sizeof(float));
    sl_quantize(SL_WF_Q4, x, rows, cols, enc);
    sl_dequantize_rows(SL_WF_Q4, enc, rows, cols, 0, rows, y);
    double se = 0, se7 = 0;
    for (int64_t g = 0; g < rows * cols; g += 32) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[g + i]));
        double s7 = amax / 7.0;
        for (int i = 0; i < 32; i++) {
            double d7 = nearbyint(x[g + i] / s7) * s7 - x[g + i], d = (double)y[g + i] - x[g + i];
            se7 += d7 * d7;
            se += d * d;
        }
    }
    /* 14% lower RMS on N(0,1) groups (quantize.c); demand 8% over 2048 groups */
    cr_assert_lt(sqrt(se), 0.92 * sqrt(se7), "rms %g vs amax/7 %g", sqrt(se), sqrt(se7));
    free(x), free(enc), free(y);
}
