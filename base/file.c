/* Reading a whole (small) file: config.json, tokenizer.json, prompts. */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whole file into a malloc'd buffer (+1 NUL). SL_E_IO names the file and errno. */
int sl_read_file(const char *path, char **out, size_t *len, sl_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_errorf(err, SL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sl_errorf(err, SL_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sl_errorf(err, SL_E_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *p = malloc(n + 1);
    if (!p) {
        close(fd);
        return sl_errorf(err, SL_E_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            free(p);
            close(fd);
            return r < 0 ? sl_errorf(err, SL_E_IO, "%s: read failed: %s", path, strerror(e))
                         : sl_errorf(err, SL_E_IO, "%s: file shrank while reading (%zu of %zu bytes)", path, got, n);
        }
        got += (size_t)r;
    }
    close(fd);
    p[n] = 0;
    *out = p, *len = n;
    return 0;
}
