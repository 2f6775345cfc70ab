/* quant/: scalar conversions, bulk decode and fp8 block dequant against direct formulas
 * (ldexp of sign, exponent, mantissa), a naive block reference, and a real fixture tensor. */
#include "quant/quant.h"

#include "format/format.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t quant_test_rng;

static uint64_t quant_test_next(void) /* splitmix64 */
{
    uint64_t z = (quant_test_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void quant_test_seed(const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    quant_test_rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
    cr_log_info("%s: seed %llu", what, (unsigned long long)quant_test_rng);
}

static int64_t quant_test_range(int64_t lo, int64_t hi) /* uniform in [lo, hi] */
{
    return lo + (int64_t)(quant_test_next() % (uint64_t)(hi - lo + 1));
}

static uint32_t quant_test_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float quant_test_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* e4m3fn from its definition: (-1)^s * 2^(e-7) * (1 + m/8), subnormal 2^-6 * m/8, S.1111.111 NaN. */
static double quant_test_fp8_ref(unsigned b)
{
    int s = (b >> 7) & 1, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    double mag = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -mag : mag;
}

/* ---- fp8 e4m3 ----------------------------------------------------------------------------- */

Test(quant, fp8_all_codes_match_formula)
{
    for (unsigned b = 0; b < 256; b++) {
        float got = sl_fp8e4m3_to_f32((uint8_t)b);
        double want = quant_test_fp8_ref(b);
        if (isnan(want)) {
            cr_assert(isnan(got), "code 0x%02x must be NaN, got %g", b, got);
            continue;
        }
        float wf = (float)want;
        cr_assert_eq((double)wf, want, "reference value of 0x%02x not exact in fp32", b);
        cr_assert_eq(quant_test_bits(got), quant_test_bits(wf), "code 0x%02x: got %a want %a", b,
                     got, wf);
    }
}

Test(quant, fp8_nan_codes_max_and_smallest_subnormal)
{
    int nans = 0;
    float maxv = 0;
    for (unsigned b = 0; b < 256; b++) {
        float v = sl_fp8e4m3_to_f32((uint8_t)b);
        if (isnan(v)) {
            nans++;
            cr_assert((b & 0x7f) == 0x7f, "code 0x%02x decodes to NaN", b);
        } else {
            cr_assert(isfinite(v), "code 0x%02x decodes to inf (e4m3fn has no inf)", b);
            maxv = fmaxf(maxv, fabsf(v));
        }
    }
    cr_assert_eq(nans, 2);
    cr_assert_eq(maxv, 448.0f);
    cr_assert_eq(sl_fp8e4m3_to_f32(0x7e), 448.0f);
    cr_assert_eq(sl_fp8e4m3_to_f32(0xfe), -448.0f);
    cr_assert_eq(sl_fp8e4m3_to_f32(0x01), ldexpf(1.0f, -9));
    cr_assert_eq(sl_fp8e4m3_to_f32(0x08), ldexpf(1.0f, -6)); /* smallest normal */
    cr_assert(signbit(sl_fp8e4m3_to_f32(0x80)) && sl_fp8e4m3_to_f32(0x80) == 0.0f);
}

/* ---- f16 ---------------------------------------------------------------------------------- */

static double quant_test_f16_ref(unsigned h)
{
    int s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    double mag;
    if (e == 31)
        mag = m ? NAN : INFINITY;
    else if (e == 0)
        mag = ldexp(m, -24); /* 2^-14 * m/1024 */
    else
        mag = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -mag : mag;
}

Test(quant, f16_all_codes_match_formula)
{
    for (unsigned h = 0; h < 65536; h++) {
        float got = sl_f16_to_f32((uint16_t)h);
        double want = quant_test_f16_ref(h);
        if (isnan(want)) {
            cr_assert(isnan(got), "f16 0x%04x must be NaN, got %g", h, got);
            continue;
        }
        cr_assert_eq(quant_test_bits(got), quant_test_bits((float)want),
                     "f16 0x%04x: got %a want %a", h, got, want);
    }
    cr_assert(isinf(sl_f16_to_f32(0x7c00)) && sl_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(sl_f16_to_f32(0xfc00)) && sl_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(sl_f16_to_f32(0x7c01)) && isnan(sl_f16_to_f32(0xfe00)));
    cr_assert_eq(sl_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(sl_f16_to_f32(0x0001), ldexpf(1.0f, -24));
}

/* ---- bf16 --------------------------------------------------------------------------------- */

static double quant_test_bf16_ref(unsigned h)
{
    int s = (h >> 15) & 1, e = (h >> 7) & 255, m = h & 127;
    double mag;
    if (e == 255)
        mag = m ? NAN : INFINITY;
    else if (e == 0)
        mag = ldexp(m, -133); /* 2^-126 * m/128 */
    else
        mag = ldexp(1.0 + m / 128.0, e - 127);
    return s ? -mag : mag;
}

Test(quant, bf16_all_codes_match_formula_and_round_trip)
{
    for (unsigned h = 0; h < 65536; h++) {
        float f = sl_bf16_to_f32((uint16_t)h);
        double want = quant_test_bf16_ref(h);
        if (isnan(want)) {
            cr_assert(isnan(f), "bf16 0x%04x must be NaN", h);
            cr_assert(isnan(sl_bf16_to_f32(sl_f32_to_bf16(f))), "bf16 NaN 0x%04x lost", h);
            continue;
        }
        cr_assert_eq(quant_test_bits(f), quant_test_bits((float)want), "bf16 0x%04x: %a vs %a", h,
                     f, want);
        cr_assert_eq(sl_f32_to_bf16(f), h, "bf16 0x%04x does not round-trip", h);
    }
}

/* Nearest bf16 to x by comparing distances in double to both neighbours (exact: both are fp32
 * values a few binades apart). Ties go to the even pattern. Beyond the largest finite bf16 the
 * upper neighbour is 2^128 (inf), as IEEE overflow rounding prescribes. */
static uint16_t quant_test_bf16_nearest(float x)
{
    uint32_t u = quant_test_bits(x);
    uint16_t lo = (uint16_t)(u >> 16); /* toward zero */
    uint16_t hi = (uint16_t)(lo + 1);  /* away from zero (0x7f80 / 0xff80 is inf) */
    double ax = fabs((double)x);
    double vlo = fabs(quant_test_bf16_ref(lo));
    double vhi = (hi & 0x7fff) == 0x7f80 ? ldexp(1.0, 128) : fabs(quant_test_bf16_ref(hi));
    double dlo = ax - vlo, dhi = vhi - ax;
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return hi;
    return (lo & 1) ? hi : lo;
}

Test(quant, f32_to_bf16_rounds_to_nearest_even)
{
    quant_test_seed("f32_to_bf16_rounds_to_nearest_even");
    int ties = 0;
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)quant_test_next();
        switch (i % 4) {
        case 1: u = (u & 0xffff0000u) | 0x8000u; break;  /* exact tie */
        case 2: u = (u & 0xffff0000u) | 0x7fffu; break;  /* just below a tie */
        case 3: u = (u & 0xffff0000u) | 0x8001u; break;  /* just above a tie */
        }
        float x = quant_test_float(u);
        if (isnan(x))
            continue;
        if ((u & 0xffffu) == 0x8000u)
            ties++;
        uint16_t got = sl_f32_to_bf16(x), want = quant_test_bf16_nearest(x);
        cr_assert_eq(got, want, "x = %a (0x%08x): got 0x%04x want 0x%04x", x, u, got, want);
    }
    cr_assert_gt(ties, 1000);
    /* fixed edges: largest finite rounds up to inf only from the tie upward */
    cr_assert_eq(sl_f32_to_bf16(quant_test_float(0x7f7f7fffu)), 0x7f7f);
    cr_assert_eq(sl_f32_to_bf16(quant_test_float(0x7f7f8000u)), 0x7f80);
    cr_assert_eq(sl_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(sl_f32_to_bf16(-INFINITY), 0xff80);
}

Test(quant, f32_to_bf16_keeps_nan)
{
    /* payload only in the dropped half: plain truncation would give inf */
    const uint32_t nans[] = {0x7f800001u, 0xff800001u, 0x7fc00000u, 0x7f80ffffu, 0xffffffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = sl_f32_to_bf16(quant_test_float(nans[i]));
        cr_assert(isnan(sl_bf16_to_f32(h)), "NaN 0x%08x became 0x%04x", nans[i], h);
        cr_assert_eq(h & 0x8000, (nans[i] >> 16) & 0x8000, "NaN 0x%08x lost its sign", nans[i]);
        cr_assert(h & 0x0040, "NaN 0x%08x is not quiet: 0x%04x", nans[i], h);
    }
}

/* ---- bulk decode -------------------------------------------------------------------------- */

Test(quant, decode_to_f32_matches_scalar_for_every_dtype)
{
    quant_test_seed("decode_to_f32_matches_scalar_for_every_dtype");
    enum { N = 1001 };
    static unsigned char buf[4 * N + 1];
    static float out[N + 1];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)quant_test_next();
    const unsigned char *src = buf + 1; /* unaligned, as inside an mmapped checkpoint */
    const float guard = 12345.0f;
    for (int dt = SL_DT_F32; dt <= SL_DT_F8_E4M3; dt++) {
        out[N] = guard;
        sl_decode_to_f32(dt, src, out, N);
        cr_assert_eq(out[N], guard, "dtype %d wrote past n", dt);
        for (size_t i = 0; i < N; i++) {
            float want;
            uint16_t h;
            switch (dt) {
            case SL_DT_F32: memcpy(&want, src + 4 * i, 4); break;
            case SL_DT_F16: memcpy(&h, src + 2 * i, 2); want = (float)quant_test_f16_ref(h); break;
            case SL_DT_BF16: memcpy(&h, src + 2 * i, 2); want = (float)quant_test_bf16_ref(h); break;
            default: want = (float)quant_test_fp8_ref(src[i]); break;
            }
            if (isnan(want) && dt != SL_DT_F32)
                cr_assert(isnan(out[i]), "dtype %d element %zu must be NaN", dt, i);
            else /* f32 is a copy: NaN payloads included */
                cr_assert_eq(quant_test_bits(out[i]), quant_test_bits(want),
                             "dtype %d element %zu: %a vs %a", dt, i, out[i], want);
        }
    }
}

Test(quant, decode_unknown_dtype_aborts, .signal = SIGABRT)
{
    float out[1];
    unsigned char in[4] = {0};
    sl_decode_to_f32(SL_DT_F8_E4M3 + 1, in, out, 1);
}

/* ---- fp8 block dequant -------------------------------------------------------------------- */

/* Checks sl_fp8_block_dequant on one shape against an element-by-element reference:
 * fp32(fp8 value) * its block's scale, one fp32 multiply. Random codes (NaN codes included)
 * and random positive scales over a wide range. */
static void quant_test_block_case(int64_t rows, int64_t cols, int br, int bc)
{
    int64_t nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
    size_t n = (size_t)(rows * cols);
    uint8_t *q = malloc(n ? n : 1);
    float *scale = malloc((size_t)(nbr * nbc) * sizeof(float));
    float *out = malloc((n + 1) * sizeof(float));
    cr_assert(q && scale && out);
    for (size_t i = 0; i < n; i++)
        q[i] = (uint8_t)quant_test_next();
    for (int64_t i = 0; i < nbr * nbc; i++)
        scale[i] = (float)ldexp(1.0 + (double)(quant_test_next() >> 11) * 0x1p-53,
                                (int)quant_test_range(-30, 4));
    const float guard = -777.0f;
    out[n] = guard;
    sl_fp8_block_dequant(q, scale, rows, cols, br, bc, out);
    cr_assert_eq(out[n], guard, "%lldx%lld block %dx%d wrote past the end", (long long)rows,
                 (long long)cols, br, bc);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            float v = (float)quant_test_fp8_ref(q[r * cols + c]);
            float s = scale[(r / br) * nbc + c / bc];
            float want = v * s;
            float got = out[r * cols + c];
            if (isnan(want)) {
                cr_assert(isnan(got), "%lldx%lld block %dx%d: [%lld][%lld] must be NaN",
                          (long long)rows, (long long)cols, br, bc, (long long)r, (long long)c);
                continue;
            }
            cr_assert_eq(quant_test_bits(got), quant_test_bits(want),
                         "%lldx%lld block %dx%d: [%lld][%lld] got %a want %a", (long long)rows,
                         (long long)cols, br, bc, (long long)r, (long long)c, got, want);
        }
    }
    free(q);
    free(scale);
    free(out);
}

Test(quant, fp8_block_dequant_matches_naive_reference)
{
    quant_test_seed("fp8_block_dequant_matches_naive_reference");
    static const int64_t shapes[][2] = {{200, 136}, {1, 1}, {129, 257}, {128, 128}, {256, 384},
                                        {7, 300},   {300, 7}, {127, 129}};
    static const int blocks[][2] = {{128, 128}, {3, 5}, {1, 1}, {5, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t j = 0; j < sizeof blocks / sizeof blocks[0]; j++)
            quant_test_block_case(shapes[i][0], shapes[i][1], blocks[j][0], blocks[j][1]);
    for (int k = 0; k < 20; k++)
        quant_test_block_case(quant_test_range(1, 300), quant_test_range(1, 300),
                              (int)quant_test_range(1, 130), (int)quant_test_range(1, 130));
}

/* ---- fixture: fp8 weights of tiny-a against the bf16 weights they were quantized from ------ */

/* Reads one tensor of a safetensors file (8-byte LE header length, JSON header, data) into a
 * fresh malloc'd buffer; checks dtype and that the byte range fits. */
static void *quant_test_read_tensor(const char *path, const char *name, const char *dtype,
                                    int64_t *shape, size_t esize, size_t *nbytes)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s (run from the repository root)", path);
    unsigned char len8[8];
    cr_assert_eq(fread(len8, 1, 8, f), 8, "%s: short header", path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i];
    cr_assert(hlen > 0 && hlen < (1u << 26), "%s: header length %llu", path,
              (unsigned long long)hlen);
    char *hdr = malloc(hlen + 1);
    cr_assert(hdr);
    cr_assert_eq(fread(hdr, 1, hlen, f), hlen, "%s: short header", path);
    hdr[hlen] = 0;
    cJSON *root = cJSON_Parse(hdr);
    cr_assert(root, "%s: header is not JSON", path);
    cJSON *t = cJSON_GetObjectItemCaseSensitive(root, name);
    cr_assert(cJSON_IsObject(t), "%s: no tensor %s", path, name);
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    cr_assert(cJSON_IsString(dt) && strcmp(dt->valuestring, dtype) == 0, "%s: %s is not %s", path,
              name, dtype);
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    cr_assert(cJSON_GetArraySize(sh) == 2 && cJSON_GetArraySize(off) == 2);
    shape[0] = (int64_t)cJSON_GetArrayItem(sh, 0)->valuedouble;
    shape[1] = (int64_t)cJSON_GetArrayItem(sh, 1)->valuedouble;
    long begin = (long)cJSON_GetArrayItem(off, 0)->valuedouble;
    long end = (long)cJSON_GetArrayItem(off, 1)->valuedouble;
    cr_assert_eq((size_t)(end - begin), (size_t)(shape[0] * shape[1]) * esize, "%s: %s size",
                 path, name);
    *nbytes = (size_t)(end - begin);
    void *data = malloc(*nbytes);
    cr_assert(data);
    cr_assert_eq(fseek(f, (long)(8 + hlen) + begin, SEEK_SET), 0);
    cr_assert_eq(fread(data, 1, *nbytes, f), *nbytes, "%s: %s truncated", path, name);
    cJSON_Delete(root);
    free(hdr);
    fclose(f);
    return data;
}

/* The fixture was made by w (fp32, bf16-exact) -> s = blockmax/448, q = e4m3(w / s), so
 * q * s must be within half an fp8 ulp (times s) of w, and each block's largest |w| maps to 448. */
Test(quant, fp8_block_dequant_reproduces_fixture_bf16_weights)
{
    const char *name = "model.layers.0.mlp.down_proj.weight"; /* 200 x 320: ragged both ways */
    char sname[128];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const char *fp8_path = "tests/fixtures/tiny-a-fp8/model-00001-of-00002.safetensors";
    const char *bf16_path = "tests/fixtures/tiny-a-bf16/model-00001-of-00002.safetensors";
    int64_t qs[2], ss[2], ws[2];
    size_t qn, sn, wn;
    uint8_t *q = quant_test_read_tensor(fp8_path, name, "F8_E4M3", qs, 1, &qn);
    float *sc_raw = quant_test_read_tensor(fp8_path, sname, "F32", ss, 4, &sn);
    uint16_t *w_raw = quant_test_read_tensor(bf16_path, name, "BF16", ws, 2, &wn);
    int64_t rows = qs[0], cols = qs[1];
    cr_assert(ws[0] == rows && ws[1] == cols);
    cr_assert(ss[0] == (rows + 127) / 128 && ss[1] == (cols + 127) / 128);

    float *scale = malloc(sn), *w = malloc(wn * 2), *deq = malloc(qn * sizeof(float));
    cr_assert(scale && w && deq);
    sl_decode_to_f32(SL_DT_F32, sc_raw, scale, sn / 4);
    sl_decode_to_f32(SL_DT_BF16, w_raw, w, wn / 2);
    sl_fp8_block_dequant(q, scale, rows, cols, 128, 128, deq);

    double worst = 0;
    for (int64_t bi = 0; bi < ss[0]; bi++) {
        for (int64_t bj = 0; bj < ss[1]; bj++) {
            float s = scale[bi * ss[1] + bj];
            int64_t amax = -1;
            for (int64_t r = bi * 128; r < rows && r < bi * 128 + 128; r++) {
                for (int64_t c = bj * 128; c < cols && c < bj * 128 + 128; c++) {
                    int64_t i = r * cols + c;
                    double x = fabs((double)w[i]) / s;
                    /* half ulp of e4m3 at x: 2^-4 relative for normals, 2^-10 for subnormals */
                    double tol = fmax(x * 0x1p-4, 0x1p-10) * s * (1 + 0x1p-16);
                    double err = fabs((double)deq[i] - (double)w[i]);
                    cr_assert(err <= tol, "%s[%lld][%lld]: deq %a vs bf16 %a (scale %a)", name,
                              (long long)r, (long long)c, deq[i], w[i], s);
                    worst = fmax(worst, err / tol);
                    if (amax < 0 || fabsf(w[i]) > fabsf(w[amax]))
                        amax = i;
                }
            }
            cr_assert(fabs(fabs((double)deq[amax]) - fabs((double)w[amax])) <=
                          fabs((double)w[amax]) * 0x1p-20,
                      "%s block (%lld,%lld): max %a dequantized to %a", name, (long long)bi,
                      (long long)bj, w[amax], deq[amax]);
        }
    }
    cr_log_info("fixture %s: worst |deq - bf16| = %.3f of half an fp8 ulp", name, worst);
    free(q);
    free(sc_raw);
    free(w_raw);
    free(scale);
    free(w);
    free(deq);
}
