/* Byte counts from the command line ("1M", "16MiB", "25MB", "4k", "2G"), GNU dd's units:
 * a bare letter or "<letter>iB" is binary, "<letter>B" is decimal. */
#include "io/io.h"

#include <ctype.h>
#include <strings.h>

static int unit_value(const char *u, uint64_t *mult)
{
    static const char letters[] = "KMGT";
    if (*u == '\0' || strcasecmp(u, "B") == 0) {
        *mult = 1;
        return 1;
    }
    for (int i = 0; letters[i]; i++) {
        if (toupper((unsigned char)u[0]) != letters[i])
            continue;
        uint64_t bin = 1, dec = 1;
        for (int k = 0; k <= i; k++) {
            bin *= 1024;
            dec *= 1000;
        }
        const char *rest = u + 1;
        if (*rest == '\0' || strcasecmp(rest, "iB") == 0) {
            *mult = bin;
            return 1;
        }
        if (strcasecmp(rest, "B") == 0) {
            *mult = dec;
            return 1;
        }
        return 0;
    }
    return 0;
}

int sl_parse_size(const char *s, uint64_t *out, sl_error *e)
{
    if (!s || !*s)
        return sl_errorf(e, SL_E_ARG, "empty size (want e.g. 4k, 1M, 16MiB, 25MB, 2G)");
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return sl_errorf(e, SL_E_ARG, "size '%s' does not start with a digit (want e.g. 4k, 1M, 25MB)", s);
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_C(1) << 63) / 10)
            return sl_errorf(e, SL_E_ARG, "size '%s' is too large", s);
        v = v * 10 + d;
    }
    if (v > (UINT64_C(1) << 63))
        return sl_errorf(e, SL_E_ARG, "size '%s' is too large (over 2^63 bytes)", s);
    if (*p == '.' || *p == ',')
        return sl_errorf(e, SL_E_ARG, "size '%s': fractions are not accepted (write 1536K, not 1.5M)", s);
    uint64_t mult;
    if (!unit_value(p, &mult))
        return sl_errorf(e, SL_E_ARG,
                         "size '%s': unknown unit '%s' (K M G T and KiB.. are binary, KB MB GB TB decimal)",
                         s, p);
    if (v != 0 && mult > (UINT64_C(1) << 63) / v)
        return sl_errorf(e, SL_E_ARG, "size '%s' is too large (over 2^63 bytes)", s);
    *out = v * mult;
    return SL_OK;
}
