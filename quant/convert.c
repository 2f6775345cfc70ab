/* Scalar conversions between fp32 and the 16-bit float formats a checkpoint carries, and the
 * bulk decode of any checkpoint dtype to fp32. */
#include "quant/quant.h"

#include "format/format.h"

#include <stdlib.h>
#include <string.h>

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bf16 is the top half of an fp32. */
float sl_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t sl_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        /* Truncating could drop every payload bit and turn the NaN into inf; set the quiet bit. */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* Round to nearest even: adding 0x7fff (+1 when the kept lsb is odd) carries into the kept
     * half exactly when the dropped half is above the midpoint (or at it, with an odd lsb).
     * A carry out of the mantissa bumps the exponent, which is the correct result (up to inf). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16: 1 sign, 5 exponent bits (bias 15), 10 mantissa bits. */
float sl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in fp32 (at most 10 significant bits). */
        float v = (float)man * 0x1p-24f;
        return bits_f32(f32_bits(v) | sign);
    }
    if (exp == 31) /* inf (man == 0) or NaN, payload kept */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + (127 - 15)) << 23) | (man << 13));
}

/* src may be unaligned (an mmapped checkpoint); element loads go through memcpy, which the
 * compiler turns into plain loads. */
void sl_decode_to_f32(int dt, const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    switch (dt) {
    case SL_DT_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case SL_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = sl_f16_to_f32(h);
        }
        return;
    case SL_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = sl_bf16_to_f32(h);
        }
        return;
    case SL_DT_F8_E4M3:
        for (size_t i = 0; i < n; i++)
            dst[i] = sl_fp8e4m3_to_f32(s[i]);
        return;
    }
    abort(); /* not a sl_dtype: the caller broke an invariant */
}
