/* Prints, for each regex class the DeepSeek-V3 pre-tokenizer uses, the code point ranges that this
 * machine's PCRE2 (UTF + UCP) matches: lines "CLASS lo-hi lo-hi ..." in hex. Used by
 * gen-unicode.mjs; not part of the build. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>

static int utf8(unsigned c, unsigned char *o)
{
    if (c < 0x80) return o[0] = (unsigned char)c, 1;
    if (c < 0x800) return o[0] = 0xC0 | c >> 6, o[1] = 0x80 | (c & 63), 2;
    if (c < 0x10000) return o[0] = 0xE0 | c >> 12, o[1] = 0x80 | (c >> 6 & 63), o[2] = 0x80 | (c & 63), 3;
    o[0] = 0xF0 | c >> 18, o[1] = 0x80 | (c >> 12 & 63), o[2] = 0x80 | (c >> 6 & 63), o[3] = 0x80 | (c & 63);
    return 4;
}

int main(void)
{
    static const char *names[] = {"L", "M", "N", "P", "S", "s"};
    static const char *pats[] = {"^\\p{L}$", "^\\p{M}$", "^\\p{N}$", "^\\p{P}$", "^\\p{S}$", "^\\s$"};
    char ver[64];
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, ver);
    printf("# unicode %s\n", ver);
    for (int k = 0; k < 6; k++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pats[k], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        if (!re || !md) return 1;
        printf("%s", names[k]);
        long lo = -1, prev = -2;
        for (unsigned c = 0; c <= 0x10FFFF; c++) {
            if (c >= 0xD800 && c <= 0xDFFF) continue;
            unsigned char b[4];
            int n = utf8(c, b);
            if (pcre2_match(re, b, (PCRE2_SIZE)n, 0, 0, md, NULL) < 0) continue;
            if (lo < 0 || (long)c != prev + 1) {
                if (lo >= 0) printf(" %lx-%lx", lo, prev);
                lo = c;
            }
            prev = c;
        }
        if (lo >= 0) printf(" %lx-%lx", lo, prev);
        printf("\n");
        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }
    return 0;
}
