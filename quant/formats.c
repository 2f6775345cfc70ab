/* The weight format table: names, scale blocks, sizes. Layouts are spelled out in quant.h. */
#include "quant/quant.h"

#include <string.h>

/* bits_per_weight counts the scale planes: FP8 one f32 per 128x128 (32 / 16384 bits), Q8 and Q4
 * one f16 per 32 (16 / 32 bits). */
static const sl_wformat_info wformats[SL_WF_COUNT] = {
    [SL_WF_F32] = {"f32", 1, 1, 32.0},
    [SL_WF_BF16] = {"bf16", 1, 1, 16.0},
    [SL_WF_FP8] = {"fp8", 128, 128, 8.0 + 32.0 / (128.0 * 128.0)},
    [SL_WF_Q8] = {"q8", 1, 32, 8.0 + 16.0 / 32.0},
    [SL_WF_Q4] = {"q4", 1, 32, 4.0 + 16.0 / 32.0},
};

const sl_wformat_info *sl_wformat_get(int fmt)
{
    if (fmt < 0 || fmt >= SL_WF_COUNT)
        return NULL;
    return &wformats[fmt];
}

int sl_wformat_parse(const char *name, sl_wformat *out)
{
    if (!name)
        return SL_E_ARG;
    for (int f = 0; f < SL_WF_COUNT; f++) {
        if (strcmp(name, wformats[f].name) == 0) {
            *out = (sl_wformat)f;
            return 0;
        }
    }
    return SL_E_ARG;
}

static size_t div_up(int64_t a, int64_t b) { return (size_t)((a + b - 1) / b); }

size_t sl_wformat_bytes(sl_wformat fmt, int64_t rows, int64_t cols)
{
    if (rows < 0 || cols < 0)
        return 0;
    size_t r = (size_t)rows, c = (size_t)cols;
    switch (fmt) {
    case SL_WF_F32: return r * c * 4;
    case SL_WF_BF16: return r * c * 2;
    case SL_WF_FP8: return r * c + div_up(rows, 128) * div_up(cols, 128) * 4;
    case SL_WF_Q8: return r * c + r * div_up(cols, 32) * 2;
    case SL_WF_Q4: return r * div_up(cols, 2) + r * div_up(cols, 32) * 2;
    case SL_WF_COUNT: break;
    }
    return 0;
}
