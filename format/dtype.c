/* The four element types sluice reads from checkpoints, in safetensors spelling. */
#include "format/format.h"

#include <string.h>

size_t sl_dtype_size(sl_dtype dt)
{
    switch (dt) {
    case SL_DT_F32: return 4;
    case SL_DT_F16: return 2;
    case SL_DT_BF16: return 2;
    case SL_DT_F8_E4M3: return 1;
    }
    return 0;
}

const char *sl_dtype_name(sl_dtype dt)
{
    switch (dt) {
    case SL_DT_F32: return "F32";
    case SL_DT_F16: return "F16";
    case SL_DT_BF16: return "BF16";
    case SL_DT_F8_E4M3: return "F8_E4M3";
    }
    return "?";
}

/* Every other dtype the safetensors spec (and its Rust crate, as of 0.5) defines: well-formed
 * files may carry them, sluice just does not read them. */
static const char *const other_safetensors_dtypes[] = {
    "BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F64",
    "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

int sl_dtype_parse(const char *s, sl_dtype *out)
{
    static const sl_dtype ours[] = {SL_DT_F32, SL_DT_F16, SL_DT_BF16, SL_DT_F8_E4M3};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strcmp(s, sl_dtype_name(ours[i])) == 0) {
            *out = ours[i];
            return SL_OK;
        }
    for (size_t i = 0; i < sizeof other_safetensors_dtypes / sizeof other_safetensors_dtypes[0]; i++)
        if (strcmp(s, other_safetensors_dtypes[i]) == 0)
            return SL_E_UNSUPPORTED;
    return SL_E_FORMAT;
}
