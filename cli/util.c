#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void sl_cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int sl_cli_parse_int(const char *opt, const char *val, int lo, int hi, int *out)
{
    char *end;
    if (!val) {
        sl_cli_error("%s needs a value", opt);
        return -1;
    }
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        sl_cli_error("%s: \"%s\" is not an integer in [%d, %d]", opt, val, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int sl_cli_parse_ids(const char *s, int **out, int *n)
{
    int cap = 16, cnt = 0;
    int *ids = malloc((size_t)cap * sizeof(int));
    if (!ids) {
        sl_cli_error("out of memory");
        return -1;
    }
    const char *p = s;
    for (int item = 1;; item++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT_MAX || (*end != ',' && *end != '\0')) {
            sl_cli_error("--tokens: item %d of \"%s\" is not a non-negative integer", item, s);
            free(ids);
            return -1;
        }
        if (cnt == cap) {
            int *grown = realloc(ids, (size_t)(cap *= 2) * sizeof(int));
            if (!grown) {
                free(ids);
                sl_cli_error("out of memory");
                return -1;
            }
            ids = grown;
        }
        ids[cnt++] = (int)v;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *out = ids;
    *n = cnt;
    return 0;
}
