/* The benchmark's test file: created on request, never overwritten unless sluice made it. */
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "sluice bench io test file v1\n" /* first bytes of every file sluice made */
#define BLOCK ((size_t)4 << 20)

static int is_ours(const char *path)
{
    char head[sizeof MAGIC - 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = pread(fd, head, sizeof head, 0);
    close(fd);
    return n == (ssize_t)sizeof head && memcmp(head, MAGIC, sizeof head) == 0;
}

/* Fill [from, size) with pseudo-random bytes (incompressible, so a compressing or deduplicating
 * filesystem cannot flatter the figure); the magic goes first. */
static int fill(int fd, const char *path, uint64_t from, uint64_t size, sl_error *e)
{
    unsigned char *b = malloc(BLOCK);
    if (!b)
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory for the write buffer", path);
    uint64_t s = 0x853c49e6748fea9bu ^ from;
    for (uint64_t off = from; off < size;) {
        size_t n = size - off < BLOCK ? (size_t)(size - off) : BLOCK;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            uint64_t v = s * UINT64_C(2685821657736338717);
            memcpy(b + i, &v, 8);
        }
        for (size_t i = n & ~(size_t)7; i < n; i++)
            b[i] = (unsigned char)(off + i);
        if (off == 0)
            memcpy(b, MAGIC, n < sizeof MAGIC - 1 ? n : sizeof MAGIC - 1);
        for (size_t done = 0; done < n;) {
            ssize_t w = pwrite(fd, b + done, n - done, (off_t)(off + done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int err = w < 0 ? errno : EIO;
                free(b);
                return sl_errorf(e, SL_E_IO, "%s: write at offset %llu failed: %s", path,
                                 (unsigned long long)(off + done), strerror(err));
            }
            done += (size_t)w;
        }
        off += n;
    }
    free(b);
    if (fsync(fd) != 0)
        return sl_errorf(e, SL_E_IO, "%s: fsync failed: %s", path, strerror(errno));
    /* start cold: a page-cache hit would measure RAM, not the drive */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return SL_OK;
}

int sl_io_bench_prepare_file(const char *path, uint64_t size, int *created, sl_error *e)
{
    *created = 0;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISBLK(st.st_mode))
            return SL_OK; /* a device is read as it is, never written */
        if (!S_ISREG(st.st_mode))
            return sl_errorf(e, SL_E_ARG, "%s: not a regular file or block device", path);
        if ((uint64_t)st.st_size >= size)
            return SL_OK;
        if (!is_ours(path))
            return sl_errorf(e, SL_E_ARG,
                             "%s: exists (%llu bytes, less than --size %llu) and was not created by sluice bench io; "
                             "refusing to overwrite it",
                             path, (unsigned long long)st.st_size, (unsigned long long)size);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return sl_errorf(e, SL_E_IO, "%s: cannot open to grow it: %s", path, strerror(errno));
        int r = fill(fd, path, (uint64_t)st.st_size, size, e);
        close(fd);
        *created = r == SL_OK;
        return r;
    }
    if (errno != ENOENT)
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(errno));
    if (size == 0)
        return sl_errorf(e, SL_E_ARG, "%s: does not exist; give --size to create a test file", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return sl_errorf(e, SL_E_IO, "%s: cannot create: %s", path, strerror(errno));
    int r = fill(fd, path, 0, size, e);
    close(fd);
    if (r) {
        unlink(path); /* ours and incomplete */
        return r;
    }
    *created = 1;
    return SL_OK;
}
