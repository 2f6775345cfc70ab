/* Weight formats -> fp32, a range of rows at a time. This runs inside the CPU backend's matmul
 * for every weight row (n = 1, cols up to 18432), so it allocates nothing, walks each row once
 * and hoists one scale per block or group. Scale planes may be unaligned: read with memcpy. */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { FP8_BLOCK = 128, GROUP = 32 };

/* e4m3fn code -> fp32, built by the compiler from the definition (same values as fp8.c's table,
 * which tests compare against sl_fp8e4m3_to_f32):
 *   e = (b >> 3) & 15, m = b & 7;  e == 0: m * 2^-9;  else (8 + m) * 2^(e - 10);  0x7f, 0xff NaN
 * Used for ragged blocks, NaN codes and scales too large for the shift path below. */
#define DQ_E(b) (((b) >> 3) & 15)
#define DQ_M(b) ((b)&7)
#define DQ_MAG(b)                                                                                  \
    (DQ_E(b) == 0 ? DQ_M(b) * 0x1p-9f : (8 + DQ_M(b)) * (float)(1 << DQ_E(b)) * 0x1p-10f)
#define DQ_VAL(b) (((b)&0x7f) == 0x7f ? NAN : (((b)&0x80) ? -DQ_MAG(b) : DQ_MAG(b)))
#define DQ_4(b) DQ_VAL(b), DQ_VAL((b) + 1), DQ_VAL((b) + 2), DQ_VAL((b) + 3)
#define DQ_16(b) DQ_4(b), DQ_4((b) + 4), DQ_4((b) + 8), DQ_4((b) + 12)
#define DQ_64(b) DQ_16(b), DQ_16((b) + 16), DQ_16((b) + 32), DQ_16((b) + 48)
static const float fp8_value[256] = {DQ_64(0), DQ_64(64), DQ_64(128), DQ_64(192)};

static int64_t dq_min(int64_t a, int64_t b) { return a < b ? a : b; }

static inline float dq_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f16 scale bits -> fp32 inline (one per 32 weights; a call each would cost as much as the
 * group): the half's exponent/mantissa bits shifted into an fp32 and scaled by 2^(127-15) give
 * the exact value for normals and subnormals alike; inf/NaN (never written) take the slow path. */
static inline float dq_f16(const unsigned char *plane, int64_t i)
{
    uint16_t h;
    memcpy(&h, plane + 2 * i, 2);
    if ((h & 0x7c00u) == 0x7c00u)
        return sl_f16_to_f32(h);
    float f = dq_bits((uint32_t)(h & 0x7fffu) << 13) * 0x1p112f;
    return (h & 0x8000u) ? -f : f;
}

/* Speed: the loops below are written so gcc -O2 vectorizes them (fixed trip counts, restrict,
 * no table gathers). Measured while choosing (one 7168-wide row per call, AMD EPYC, ns/weight):
 * fp8 with a 256-entry table 0.44, the shift path below 0.18 (0.27 with a per-weight NaN
 * select instead of the per-block check); q4 with a byte -> pair table 0.41, int convert 0.24.
 * Current figures for every format: bench/results/codec-*.md. */

/* e4m3 code b -> fp32 without a table: sign to bit 31, exponent+mantissa to bits 20..26 make
 * an fp32 equal to value(b) * 2^-120 (e4m3 subnormals land on fp32 subnormals, also exact), so
 * multiplying by s * 2^120 (exact while |s| < 2^7) rounds once, like value(b) * s. The NaN codes
 * would come out as 480 * s: a byte-wise OR over the block spots them first (cheap: 16 codes per
 * vector op) and sends the block to the table. */
static void fp8_block(const uint8_t *restrict qb, int n, float s, float *restrict out)
{
    if (n == FP8_BLOCK && fabsf(s) < 0x1p7f) {
        uint8_t nan = 0;
        for (int i = 0; i < FP8_BLOCK; i++)
            nan |= (uint8_t)((qb[i] & 0x7fu) + 1u); /* bit 7 set only for 0x7f, 0xff */
        if (!(nan & 0x80u)) {
            float s120 = s * 0x1p120f;
            for (int i = 0; i < FP8_BLOCK; i++) {
                uint32_t u = ((uint32_t)(qb[i] & 0x80u) << 24) | ((uint32_t)(qb[i] & 0x7fu) << 20);
                out[i] = dq_bits(u) * s120;
            }
            return;
        }
    }
    for (int i = 0; i < n; i++)
        out[i] = fp8_value[qb[i]] * s; /* as sl_fp8_block_dequant */
}

static void dq_fp8(const uint8_t *q, int64_t rows, int64_t cols, int64_t r0, int64_t n, float *dst)
{
    const unsigned char *scales = q + rows * cols;
    int64_t nbc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
    for (int64_t r = r0; r < r0 + n; r++) {
        const unsigned char *srow = scales + 4 * (r / FP8_BLOCK) * nbc;
        for (int64_t j = 0; j < nbc; j++) {
            float s;
            memcpy(&s, srow + 4 * j, 4);
            int64_t c0 = j * FP8_BLOCK;
            fp8_block(q + r * cols + c0, (int)(dq_min(cols, c0 + FP8_BLOCK) - c0), s,
                      dst + (r - r0) * cols + c0);
        }
    }
}

static void dq_q8(const int8_t *q, int64_t rows, int64_t cols, int64_t r0, int64_t n,
                  float *restrict dst)
{
    const unsigned char *scales = (const unsigned char *)q + rows * cols;
    int64_t ng = (cols + GROUP - 1) / GROUP;
    for (int64_t r = r0; r < r0 + n; r++) {
        const int8_t *restrict qr = q + r * cols;
        float *restrict out = dst + (r - r0) * cols;
        for (int64_t g = 0; g < ng; g++) {
            float s = dq_f16(scales, r * ng + g);
            int64_t c0 = g * GROUP, c1 = dq_min(cols, c0 + GROUP);
            if (c1 - c0 == GROUP) {
                for (int i = 0; i < GROUP; i++)
                    out[c0 + i] = (float)qr[c0 + i] * s;
            } else {
                for (int64_t c = c0; c < c1; c++)
                    out[c] = (float)qr[c] * s;
            }
        }
    }
}

static void dq_q4(const uint8_t *q, int64_t rows, int64_t cols, int64_t r0, int64_t n,
                  float *restrict dst)
{
    int64_t rb = (cols + 1) / 2;
    const unsigned char *scales = q + rows * rb;
    int64_t ng = (cols + GROUP - 1) / GROUP;
    for (int64_t r = r0; r < r0 + n; r++) {
        const uint8_t *restrict qr = q + r * rb;
        float *restrict out = dst + (r - r0) * cols;
        for (int64_t g = 0; g < ng; g++) {
            float s = dq_f16(scales, r * ng + g);
            int64_t c0 = g * GROUP, c1 = dq_min(cols, c0 + GROUP);
            const uint8_t *restrict qg = qr + c0 / 2; /* c0 is even: groups are 32 wide */
            float *restrict og = out + c0;
            if (c1 - c0 == GROUP) {
                for (int i = 0; i < GROUP / 2; i++) {
                    og[2 * i] = (float)((qg[i] & 15) - 8) * s;
                    og[2 * i + 1] = (float)((qg[i] >> 4) - 8) * s;
                }
            } else {
                for (int64_t i = 0; i < c1 - c0; i++)
                    og[i] = (float)(((qg[i / 2] >> (4 * (i & 1))) & 15) - 8) * s;
            }
        }
    }
}

/* bf16 is the top half of an fp32: widen with a shift, 64 at a time so the loop vectorizes. */
static void dq_bf16(const unsigned char *b, int64_t n, float *restrict dst)
{
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint16_t h[64];
        uint32_t u[64];
        memcpy(h, b + 2 * i, sizeof h);
        for (int k = 0; k < 64; k++)
            u[k] = (uint32_t)h[k] << 16;
        memcpy(dst + i, u, sizeof u);
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        dst[i] = dq_bits((uint32_t)h << 16);
    }
}

void sl_dequantize_rows(sl_wformat fmt, const void *src, int64_t rows, int64_t cols, int64_t r0,
                        int64_t n, float *dst)
{
    if (rows < 0 || cols < 0 || r0 < 0 || n < 0 || r0 + n > rows)
        abort(); /* shapes come from a checked header; a caller bug */
    const unsigned char *s = src;
    switch (fmt) {
    case SL_WF_F32: memcpy(dst, s + (size_t)(r0 * cols) * 4, (size_t)(n * cols) * 4); return;
    case SL_WF_BF16: dq_bf16(s + (size_t)(r0 * cols) * 2, n * cols, dst); return;
    case SL_WF_FP8: dq_fp8(src, rows, cols, r0, n, dst); return;
    case SL_WF_Q8: dq_q8(src, rows, cols, r0, n, dst); return;
    case SL_WF_Q4: dq_q4(src, rows, cols, r0, n, dst); return;
    case SL_WF_COUNT: break;
    }
    abort(); /* not a sl_wformat: the caller broke an invariant */
}
