/* fp32 -> weight formats (the converter's path; quant.h gives the layouts and the rules).
 *
 * Scale planes may be unaligned (they follow an odd-length code plane), so they are written
 * with memcpy. Quotients are taken in double so a value sitting on a rounding midpoint is not
 * pushed across it by an fp32 division. */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { FP8_BLOCK = 128, GROUP = 32 };

static int64_t qz_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* The smallest f16 >= x (x >= 0), so a group's scale never shrinks below what its bound needs;
 * beyond 65504 it saturates there (no real weight group gets near). */
static uint16_t f16_up(double x)
{
    uint16_t h = sl_f32_to_f16((float)x);
    while (h < 0x7c00u && (double)sl_f16_to_f32(h) < x)
        h++; /* positive halves are ordered like their bit patterns, subnormal to normal too */
    return h < 0x7c00u ? h : 0x7bffu;
}

static void put_f16(unsigned char *plane, size_t i, uint16_t h) { memcpy(plane + 2 * i, &h, 2); }

/* ---- FP8: codes of v / s per 128 x 128 block -------------------------------------------- */

static void fp8_encode(const float *src, int64_t rows, int64_t cols, const unsigned char *scales,
                       uint8_t *q)
{
    int64_t nbc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = src + r * cols;
        uint8_t *qr = q + r * cols;
        for (int64_t j = 0; j < nbc; j++) {
            float s;
            memcpy(&s, scales + 4 * ((r / FP8_BLOCK) * nbc + j), 4);
            /* Divide as DeepSeek's quantizer does (x / s): then fl(fl(q * s) / s) == q exactly
             * enough that official codes come back unchanged. */
            for (int64_t c = j * FP8_BLOCK; c < qz_min(cols, (j + 1) * FP8_BLOCK); c++)
                qr[c] = sl_f32_to_fp8e4m3(row[c] / s);
        }
    }
}

static void quantize_fp8(const float *src, int64_t rows, int64_t cols, uint8_t *dst)
{
    unsigned char *scales = dst + rows * cols;
    int64_t nbc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
    for (int64_t b0 = 0; b0 < rows; b0 += FP8_BLOCK) {
        for (int64_t j = 0; j < nbc; j++) {
            float amax = 0.0f;
            for (int64_t r = b0; r < qz_min(rows, b0 + FP8_BLOCK); r++)
                for (int64_t c = j * FP8_BLOCK; c < qz_min(cols, (j + 1) * FP8_BLOCK); c++)
                    amax = fmaxf(amax, fabsf(src[r * cols + c]));
            float s = amax > 0.0f ? amax / 448.0f : 1.0f; /* 448: largest e4m3 */
            memcpy(scales + 4 * ((b0 / FP8_BLOCK) * nbc + j), &s, 4);
        }
    }
    fp8_encode(src, rows, cols, scales, dst);
}

void sl_quantize_fp8_scaled(const float *src, int64_t rows, int64_t cols, const float *scale,
                            void *dst)
{
    size_t ns =
        (size_t)((rows + FP8_BLOCK - 1) / FP8_BLOCK) * (size_t)((cols + FP8_BLOCK - 1) / FP8_BLOCK);
    unsigned char *scales = (unsigned char *)dst + rows * cols;
    memcpy(scales, scale, ns * 4);
    fp8_encode(src, rows, cols, scales, dst);
}

/* ---- Q8: q = round(v / s), s = amax / 127 rounded up to f16 ----------------------------- */

static void quantize_q8(const float *src, int64_t rows, int64_t cols, int8_t *q)
{
    unsigned char *scales = (unsigned char *)q + rows * cols;
    int64_t ng = (cols + GROUP - 1) / GROUP;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < ng; g++) {
            const float *v = src + r * cols + g * GROUP;
            int8_t *qg = q + r * cols + g * GROUP;
            int n = (int)qz_min(GROUP, cols - g * GROUP);
            float amax = 0.0f;
            for (int i = 0; i < n; i++)
                amax = fmaxf(amax, fabsf(v[i]));
            /* Rounding s up keeps |v| / s <= 127: no code is clamped, every error <= s/2. */
            uint16_t h = f16_up((double)amax / 127.0);
            double s = sl_f16_to_f32(h);
            for (int i = 0; i < n; i++) {
                double c = s > 0.0 ? nearbyint(v[i] / s) : 0.0;
                qg[i] = (int8_t)(c > 127.0 ? 127 : c < -127.0 ? -127 : c);
            }
            put_f16(scales, (size_t)(r * ng + g), h);
        }
    }
}

/* ---- Q4: nibble = round(v / s) + 8, codes -8..7 ----------------------------------------
 * The code range is lopsided, so the scale's sign is chosen to put the group's largest
 * magnitude `big` on -8, the long side, and `other` (largest magnitude of the opposite sign) on
 * the 7 side. Two magnitudes keep every error within |s|/2:
 *   tight  max(big / 8.5, other / 7.5)  finest step; big itself lands half a step off
 *   exact  max(big / 8,   other / 7.5)  big lands exactly on -8
 * and the group keeps whichever gives the lower squared error (both tried with the f16 scale
 * actually stored). Measured once while choosing, on N(0,1) groups of 32 (2M groups, fp32
 * scales, relative RMS error; bench/codec.c re-measures amax/7 vs this rule on an expert):
 *   amax/7 (codes -7..7)                 0.0970
 *   -signed_max/8, clamping (llama q4_0) 0.0859  (breaks the |s|/2 bound on the other side)
 *   tight alone                          0.0850
 *   exact alone                          0.0857
 *   better of tight/exact (this)         0.0831  (14% below amax/7)
 *   34-point search of bounded scales    0.0816  (17x the work, for 2% more)
 * With one element 100x its group, tight alone rounds that outlier by up to half a (huge) step
 * and is the worst choice (1.37 vs 0.90 for the others); the better-of-two is the best there too.
 */

static double q4_sse(const float *v, int n, double s)
{
    double e = 0.0;
    for (int i = 0; i < n; i++) {
        double c = nearbyint(v[i] / s);
        c = c > 7.0 ? 7.0 : c < -8.0 ? -8.0 : c;
        double d = c * s - v[i];
        e += d * d;
    }
    return e;
}

static void quantize_q4(const float *src, int64_t rows, int64_t cols, uint8_t *q)
{
    int64_t rb = (cols + 1) / 2; /* bytes per row */
    unsigned char *scales = q + rows * rb;
    int64_t ng = (cols + GROUP - 1) / GROUP;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *qr = q + r * rb;
        for (int64_t g = 0; g < ng; g++) {
            const float *v = src + r * cols + g * GROUP;
            int n = (int)qz_min(GROUP, cols - g * GROUP);
            double pmax = 0.0, nmax = 0.0;
            for (int i = 0; i < n; i++) {
                pmax = fmax(pmax, v[i]);
                nmax = fmax(nmax, -v[i]);
            }
            int neg = pmax > nmax; /* largest magnitude is positive: a negative s maps it to -8 */
            double big = neg ? pmax : nmax, other = neg ? nmax : pmax;
            uint16_t h = 0;
            if (big > 0.0) {
                uint16_t ht = f16_up(fmax(big / 8.5, other / 7.5));
                uint16_t he = f16_up(fmax(big / 8.0, other / 7.5));
                double st = sl_f16_to_f32(ht), se = sl_f16_to_f32(he);
                if (neg)
                    st = -st, se = -se;
                h = ht == he || q4_sse(v, n, st) <= q4_sse(v, n, se) ? ht : he;
                if (neg)
                    h |= 0x8000u;
            }
            double s = sl_f16_to_f32(h);
            for (int i = 0; i < n; i++) {
                double c = s != 0.0 ? nearbyint(v[i] / s) : 0.0;
                int nib = (int)(c > 7.0 ? 7.0 : c < -8.0 ? -8.0 : c) + 8;
                int64_t col = g * GROUP + i;
                uint8_t *b = qr + col / 2;
                if (col % 2 == 0)
                    *b = (uint8_t)nib | 0x80u; /* high nibble 8 (value 0) until column 2i+1 */
                else
                    *b = (uint8_t)((*b & 0x0fu) | (nib << 4));
            }
            put_f16(scales, (size_t)(r * ng + g), h);
        }
    }
}

void sl_quantize(sl_wformat fmt, const float *src, int64_t rows, int64_t cols, void *dst)
{
    if (rows < 0 || cols < 0)
        abort(); /* shapes come from a checked config; a caller bug */
    size_t n = (size_t)rows * (size_t)cols;
    switch (fmt) {
    case SL_WF_F32: memcpy(dst, src, n * sizeof(float)); return;
    case SL_WF_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = sl_f32_to_bf16(src[i]);
            memcpy((unsigned char *)dst + 2 * i, &h, 2);
        }
        return;
    case SL_WF_FP8: quantize_fp8(src, rows, cols, dst); return;
    case SL_WF_Q8: quantize_q8(src, rows, cols, dst); return;
    case SL_WF_Q4: quantize_q4(src, rows, cols, dst); return;
    case SL_WF_COUNT: break;
    }
    abort(); /* not a sl_wformat: the caller broke an invariant */
}
