/* Test helper: write synthetic safetensors files byte by byte, independently of format/'s
 * reader, plus a scratch directory per test. Header-only; every function is static. */
#ifndef SL_TESTS_SAFETENSORS_WRITE_H
#define SL_TESTS_SAFETENSORS_WRITE_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STW_FN static __attribute__((unused))

typedef struct {
    const char *name;  /* written as is: no quotes or backslashes */
    const char *dtype; /* any string: the writer does not judge */
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes; /* data_offsets span this many bytes, back to back in array order */
} stw_tensor;

/* xorshift-multiply generator (splitmix64): fresh per test, seeded from the printed seed. */
STW_FN uint64_t stw_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* SL_TEST_SEED from the environment reproduces a run. */
STW_FN uint64_t stw_seed(void)
{
    const char *s = getenv("SL_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    uint64_t x = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() << 20 ^ (uint64_t)(uintptr_t)&x;
    return stw_rand(&x);
}

/* The file exactly as the arguments say: u64 LE header_len (may lie), then the header bytes,
 * then the data bytes. 0 or -1. */
STW_FN int stw_write_raw(const char *path, uint64_t header_len, const char *header, size_t hlen,
                         const void *data, size_t dlen)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(header_len >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen &&
             (dlen == 0 || fwrite(data, 1, dlen, f) == dlen);
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* JSON header for tensors laid back to back in array order, padded with spaces to a multiple of
 * 8 bytes (as the Python writer pads). Caller frees. */
STW_FN char *stw_header(const stw_tensor *t, int n, size_t *hlen)
{
    size_t cap = 256, k = 0;
    for (int i = 0; i < n; i++)
        cap += strlen(t[i].name) + strlen(t[i].dtype) + 96 + 24 * (size_t)t[i].ndim;
    char *h = malloc(cap + 8);
    if (!h)
        return NULL;
    k += (size_t)snprintf(h + k, cap - k, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            k += (size_t)snprintf(h + k, cap - k, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        k += (size_t)snprintf(h + k, cap - k, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    k += (size_t)snprintf(h + k, cap - k, "}");
    while (k % 8)
        h[k++] = ' ';
    h[k] = 0;
    *hlen = k;
    return h;
}

/* A whole well-formed file (as far as the writer knows) from `t`. 0 or -1. */
STW_FN int stw_write(const char *path, const stw_tensor *t, int n)
{
    size_t hlen, dlen = 0;
    char *h = stw_header(t, n, &hlen);
    if (!h)
        return -1;
    for (int i = 0; i < n; i++)
        dlen += t[i].nbytes;
    uint8_t *d = malloc(dlen ? dlen : 1);
    if (!d) {
        free(h);
        return -1;
    }
    for (size_t i = 0, off = 0; i < (size_t)n; off += t[i].nbytes, i++)
        if (t[i].nbytes)
            memcpy(d + off, t[i].data, t[i].nbytes);
    int rc = stw_write_raw(path, hlen, h, hlen, d, dlen);
    free(h);
    free(d);
    return rc;
}

STW_FN int stw_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int stw_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* rm -r of a scratch directory this test made. */
STW_FN int stw_rmtree(const char *dir)
{
    return nftw(dir, stw_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
