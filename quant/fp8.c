/* fp8 e4m3fn (OCP, torch.float8_e4m3fn) decode and the official 128x128 block dequant.
 *
 * e4m3fn: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits. Exponent 0 is subnormal
 * (m/8 * 2^-6); there is no inf; S.1111.111 (0x7f, 0xff) is NaN, so the largest finite value is
 * S.1111.110 = 1.75 * 2^8 = 448. */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>

/* Value of code b, as a constant expression so the table is built by the compiler.
 *   exponent e = (b >> 3) & 15, mantissa m = b & 7
 *   e == 0: m * 2^-9                       (= m/8 * 2^-6)
 *   e >= 1: (8 + m) * 2^e * 2^-10          (= (1 + m/8) * 2^(e-7))
 * Every product is exact in fp32 (4 significant bits). */
#define FP8_E(b) (((b) >> 3) & 15)
#define FP8_M(b) ((b) & 7)
#define FP8_MAG(b)                                                                             \
    (FP8_E(b) == 0 ? FP8_M(b) * 0x1p-9f : (8 + FP8_M(b)) * (float)(1 << FP8_E(b)) * 0x1p-10f)
#define FP8_VAL(b)                                                                             \
    (((b) & 0x7f) == 0x7f ? (((b) & 0x80) ? -NAN : NAN)                                        \
                          : (((b) & 0x80) ? -FP8_MAG(b) : FP8_MAG(b)))
#define FP8_4(b) FP8_VAL(b), FP8_VAL((b) + 1), FP8_VAL((b) + 2), FP8_VAL((b) + 3)
#define FP8_16(b) FP8_4(b), FP8_4((b) + 4), FP8_4((b) + 8), FP8_4((b) + 12)
#define FP8_64(b) FP8_16(b), FP8_16((b) + 16), FP8_16((b) + 32), FP8_16((b) + 48)

static const float fp8e4m3_f32[256] = {FP8_64(0), FP8_64(64), FP8_64(128), FP8_64(192)};

float sl_fp8e4m3_to_f32(uint8_t b)
{
    return fp8e4m3_f32[b];
}

/* One fp32 multiply per element, the same operation as PyTorch's `q.float() * scale_expanded`,
 * so the result is bit-identical to it. Walks each output row once, one scale per column block.
 * Cost: rows * cols table lookups and multiplies; memory-bound (1 byte in, 4 bytes out). */
void sl_fp8_block_dequant(const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                          int br, int bc, float *out)
{
    if (br <= 0 || bc <= 0 || rows < 0 || cols < 0)
        abort(); /* shapes come from a checked config/header; this is a caller bug */
    int64_t nbc = (cols + bc - 1) / bc; /* scales per block row */
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *qr = q + r * cols;
        float *orow = out + r * cols;
        const float *srow = scale + (r / br) * nbc;
        for (int64_t j = 0; j < nbc; j++) {
            const float s = srow[j];
            int64_t c0 = j * bc;
            int64_t c1 = c0 + bc < cols ? c0 + bc : cols;
            for (int64_t c = c0; c < c1; c++)
                orow[c] = fp8e4m3_f32[qr[c]] * s;
        }
    }
}
