/* GPT-2's byte <-> unicode alphabet (openai/gpt-2 encoder.py, bytes_to_unicode): the printable
 * bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other 68 bytes, in increasing order,
 * are spelled U+0100, U+0101, ... so every byte is a visible character. */
#include "text/tokenizer_internal.h"

static bool printable(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t sl_byte_to_cp(uint8_t b)
{
    if (printable(b))
        return b;
    unsigned n = 0; /* how many non-printable bytes come before b */
    for (unsigned c = 0; c < b; c++)
        n += !printable(c);
    return 256 + n;
}

int sl_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68)
        return -1;
    unsigned n = cp - 256;
    for (unsigned c = 0; c < 256; c++)
        if (!printable(c) && n-- == 0)
            return (int)c;
    return -1;
}
