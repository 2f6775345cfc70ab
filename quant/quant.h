/* quant/: weight formats and their CPU reference code, and the chunk codec.
 *
 * The dtypes a Hugging Face checkpoint carries (f32, f16, bf16, fp8-e4m3) and the official fp8
 * block scaling (one f32 `weight_scale_inv` per 128x128 block, dequant = q * s); sluice's stored
 * weight formats (f32, bf16, fp8, q8, q4: quantize and dequantize); the per-chunk codec (zstd or
 * raw) with its XXH3-64 checksum. */
#ifndef SL_QUANT_H
#define SL_QUANT_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

/* Scalar conversions, exact (every value of the narrow type is an fp32 value). */
float sl_bf16_to_f32(uint16_t h);
uint16_t sl_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float sl_f16_to_f32(uint16_t h);  /* IEEE half, subnormals and inf/nan included */
float sl_fp8e4m3_to_f32(uint8_t b); /* OCP e4m3fn: bias 7, no inf, 0x7f/0xff are NaN, max 448 */
/* Narrowing, round to nearest even (quant/encode.c). f16: overflow goes to inf, NaN stays NaN.
 * e4m3: saturating, |f| > 448 (inf included) gives +-448, never a NaN code except for a NaN f. */
uint16_t sl_f32_to_f16(float f);
uint8_t sl_f32_to_fp8e4m3(float f);

/* Decode n elements of a buffer in dtype `dt` (values of format.h's sl_dtype, passed as int so
 * quant/ does not depend on format/) into fp32. */
void sl_decode_to_f32(int dt, const void *src, float *dst, size_t n);

/* Official fp8 block dequant: out[r][c] = fp8(q[r][c]) * scale[r / br][c / bc], with
 * ceil(rows/br) x ceil(cols/bc) scales row-major; edge blocks may be ragged. */
void sl_fp8_block_dequant(const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                          int br, int bc, float *out);

/* ---- weight formats ---------------------------------------------------------------------
 * A 2-D weight (rows = output features, cols = input features) is stored in one of these formats.
 * Every encoding is planar so a GPU kernel reads each plane coalesced:
 *   F32   rows*cols f32
 *   BF16  rows*cols u16 (bf16 bits)
 *   FP8   rows*cols e4m3 bytes, then ceil(rows/128)*ceil(cols/128) f32 block scales, row-major:
 *         the official DeepSeek-V3 layout (weight, weight_scale_inv), value = fp8 * scale
 *   Q8    rows*cols int8, then rows*ceil(cols/32) f16 scales: value = q * scale, symmetric,
 *         |q| <= 127, one scale per group of 32 consecutive columns of a row (8.5 bits/weight)
 *   Q4    rows*ceil(cols/2) bytes (column 2i in the low nibble, 2i+1 in the high), then
 *         rows*ceil(cols/32) f16 scales: value = (nibble - 8) * scale (4.5 bits/weight). The
 *         scale may be negative: its sign puts a group's largest magnitude on code -8. With
 *         odd cols the last high nibble of each row is 8 (value 0).
 * Planes start right after each other, so a scale plane may be unaligned (read it bytewise).
 * Room is left for 2- and 3-bit formats (enum values are stable, stored in files). */
typedef enum {
    SL_WF_F32 = 0,
    SL_WF_BF16 = 1,
    SL_WF_FP8 = 2,
    SL_WF_Q8 = 3,
    SL_WF_Q4 = 4,
    SL_WF_COUNT
} sl_wformat;

typedef struct sl_wformat_info {
    const char *name;     /* "f32", "bf16", "fp8", "q8", "q4" */
    int block_rows;       /* scale block: rows x cols it covers (1 x 1 when unscaled) */
    int block_cols;
    double bits_per_weight; /* including scales, for large matrices */
} sl_wformat_info;

/* The table row of a format; NULL for a value outside the enum. */
const sl_wformat_info *sl_wformat_get(int fmt);
/* "q4" -> SL_WF_Q4; returns 0 or SL_E_ARG (unknown name). */
int sl_wformat_parse(const char *name, sl_wformat *out);
/* Bytes of an encoded rows x cols matrix in fmt (the layout above); 0 for an unknown fmt or a
 * negative dimension. */
size_t sl_wformat_bytes(sl_wformat fmt, int64_t rows, int64_t cols);

/* Encode fp32 rows x cols into fmt (dst has sl_wformat_bytes bytes). src must be finite.
 *   FP8: per-block scale amax/448 as the official release does (1 for an all-zero block), codes
 *        round to nearest even and saturate at +-448.
 *   Q8:  scale = amax/127 per group, rounded up to an f16, so |value - src| <= scale/2.
 *   Q4:  of two sign-aware scales, each keeping |value - src| <= |scale|/2, the one with the
 *        lower squared error of the group (quant/quantize.c gives the measurement).
 * Cost: one pass (Q4: four short passes per group of 32); allocates nothing; converter only. */
void sl_quantize(sl_wformat fmt, const float *src, int64_t rows, int64_t cols, void *dst);
/* FP8 with given block scales (ceil(rows/128) x ceil(cols/128) f32, copied into dst): re-encodes
 * the dequantized values of an official fp8 tensor to the very same bytes, which recomputing
 * amax/448 does not guarantee (fl(fl(448 s) / 448) != s for about 1 scale in 10). */
void sl_quantize_fp8_scaled(const float *src, int64_t rows, int64_t cols, const float *scale,
                            void *dst);
/* Decode rows [r0, r0+n) of an encoded matrix into fp32 (n x cols); 0 <= r0, r0 + n <= rows.
 * FP8 values are fp8 * scale in fp32, bit-identical to sl_fp8_block_dequant.
 * Cost: one pass over n*cols weights (shift or int->float convert, one multiply each; ~0.2-0.3
 * ns per weight on one core); allocates nothing, so it can sit inside a matmul's row loop. */
void sl_dequantize_rows(sl_wformat fmt, const void *src, int64_t rows, int64_t cols, int64_t r0,
                        int64_t n, float *dst);

/* ---- chunk codec ------------------------------------------------------------------------
 * A chunk is stored raw or as one zstd frame (which states its decoded size). Both directions
 * make their zstd context per call and share nothing: any number of threads may call at once.
 * FP8 byte planes (sign+exponent | mantissa) before zstd were measured and not adopted: they
 * compress worse (quant/codec.c, bench/results/codec-*.md). */
typedef enum { SL_CODEC_RAW = 0, SL_CODEC_ZSTD = 1 } sl_codec;

/* XXH3-64 of the decoded bytes: the checksum every chunk carries. Cost: ~20 GB/s per core. */
uint64_t sl_checksum(const void *p, size_t n);

/* Upper bound of the encoded size of n bytes (for sizing dst). */
size_t sl_codec_bound(size_t n);
/* Encode src with zstd at `level`; if that saves less than min_saving (e.g. 0.02) of n, copy raw
 * (a zstd chunk is never larger than n). *codec_out says which was stored, *out_n its size.
 * Returns 0, SL_E_NOMEM, or SL_E_ARG when cap is too small for what must be stored (cap >=
 * sl_codec_bound(n) always suffices). Cost: zstd's speed at that level (on weights, one core:
 * ~650 MB/s at levels 1-3, 30-140 at 9); a chunk that falls back to raw costs the attempt too. */
int sl_codec_encode(const void *src, size_t n, int level, double min_saving, void *dst,
                    size_t cap, sl_codec *codec_out, size_t *out_n);
/* Decode exactly `n` bytes into dst; a wrong size or a corrupt stream is SL_E_FORMAT, a
 * checksum mismatch SL_E_CHECKSUM, an unknown codec SL_E_FORMAT. `what` names the chunk in the
 * message (e.g. "chunk 1234 (layer 7 expert 200)"; NULL gives "chunk"). For RAW, src == dst is
 * allowed and only verifies. Cost: zstd decode plus XXH3, ~1.3 GB/s of decoded weights per
 * core on the EPYC of bench/results/codec-*.md (raw chunks: XXH3 alone, ~20 GB/s). */
int sl_codec_decode(sl_codec codec, const void *src, size_t src_n, void *dst, size_t n,
                    uint64_t checksum, const char *what, sl_error *e);

#endif
