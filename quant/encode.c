/* Scalar narrowing from fp32: IEEE half (for Q8/Q4 group scales) and fp8 e4m3fn (for FP8
 * weights). Both round to nearest even; the decoders live in convert.c and fp8.c. */
#include "quant/quant.h"

#include <math.h>
#include <string.h>

static inline uint32_t enc_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float enc_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* binary16: 1 sign, 5 exponent bits (bias 15), 10 mantissa bits; max finite 65504. */
uint16_t sl_f32_to_f16(float f)
{
    uint32_t u = enc_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) /* NaN: keep the top payload bits, force quiet so it stays NaN */
        return (uint16_t)(sign | 0x7e00u | ((u >> 13) & 0x3ffu));
    if (u >= 0x477ff000u) /* >= 65520 = midpoint of 65504 and 2^16: rounds to inf (inf too) */
        return (uint16_t)(sign | 0x7c00u);
    if (u >= 0x38800000u) { /* >= 2^-14: normal half */
        /* Round the 13 dropped bits to nearest even (carry may bump the exponent: correct), then
         * rebias the exponent from 127 to 15: subtract 112 << 23 before shifting. */
        u += 0xfffu + ((u >> 13) & 1u);
        return (uint16_t)(sign | ((u - 0x38000000u) >> 13));
    }
    /* Subnormal half: units of 2^-24. |f| * 2^24 is exact (power-of-two scaling) and below 1024;
     * rintf rounds half to even in the default mode. 1024 is 0x400, the smallest normal: right. */
    return (uint16_t)(sign | (uint16_t)rintf(enc_float(u) * 0x1p24f));
}

/* e4m3fn: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, subnormals m * 2^-9, max 448,
 * S.1111.111 NaN, no inf. Saturating: the DeepSeek-V3 quantizer clamps to +-448. */
uint8_t sl_f32_to_fp8e4m3(float f)
{
    uint32_t u = enc_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    if (u >= 0x43e00000u) /* >= 448 */
        return (uint8_t)(sign | 0x7eu);
    if (u >= 0x3c800000u) { /* >= 2^-6: normal e4m3 */
        /* Keep 3 of 23 mantissa bits, nearest even (a carry bumps the exponent, correctly; inputs
         * are < 448 so the result is at most 448); rebias 127 -> 7: subtract 120 << 23. */
        u += 0x7ffffu + ((u >> 20) & 1u);
        return (uint8_t)(sign | ((u - 0x3c000000u) >> 20));
    }
    /* Subnormal e4m3: units of 2^-9, |f| * 2^9 exact and below 8; 8 is code 0x08 = 2^-6. */
    return (uint8_t)(sign | (uint8_t)rintf(enc_float(u) * 0x1p9f));
}
