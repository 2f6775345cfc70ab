/* quant/: weight formats and their CPU reference code (decode to fp32, and later encode).
 *
 * Today: the dtypes a Hugging Face checkpoint carries (f32, f16, bf16, fp8-e4m3) and the
 * official fp8 block scaling (one f32 `weight_scale_inv` per 128x128 block, dequant = q * s). */
#ifndef SL_QUANT_H
#define SL_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Scalar conversions, exact (every value of the narrow type is an fp32 value). */
float sl_bf16_to_f32(uint16_t h);
uint16_t sl_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float sl_f16_to_f32(uint16_t h);  /* IEEE half, subnormals and inf/nan included */
float sl_fp8e4m3_to_f32(uint8_t b); /* OCP e4m3fn: bias 7, no inf, 0x7f/0xff are NaN, max 448 */

/* Decode n elements of a buffer in dtype `dt` (values of format.h's sl_dtype, passed as int so
 * quant/ does not depend on format/) into fp32. */
void sl_decode_to_f32(int dt, const void *src, float *dst, size_t n);

/* Official fp8 block dequant: out[r][c] = fp8(q[r][c]) * scale[r / br][c / bc], with
 * ceil(rows/br) x ceil(cols/bc) scales row-major; edge blocks may be ragged. */
void sl_fp8_block_dequant(const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                          int br, int bc, float *out);

#endif
