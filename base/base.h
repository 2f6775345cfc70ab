/* base/: what every folder shares: error codes, the error message carrier, logging level.
 *
 * Functions across sluice return 0 or a negative SL_E* code and, when given an sl_error, fill it
 * with one line that names the file, tensor, chunk or line and what is wrong. Only cli/ prints. */
#ifndef SL_BASE_H
#define SL_BASE_H

#include <stddef.h>
#include <stdint.h>

enum {
    SL_OK = 0,
    SL_E_IO = -1,          /* open/read/write/mmap failed (errno text in the message) */
    SL_E_FORMAT = -2,      /* a file's bytes do not follow its format (truncated, bad header, ...) */
    SL_E_NOMEM = -3,       /* allocation failed */
    SL_E_ARG = -4,         /* a caller-supplied value is out of range (token id >= vocab, ...) */
    SL_E_UNSUPPORTED = -5, /* well-formed but not something sluice handles (dtype, model_type) */
    SL_E_CHECKSUM = -6,    /* stored checksum does not match the decoded bytes */
    SL_E_MISSING = -7,     /* a required tensor or key is absent */
    SL_E_SHAPE = -8,       /* a tensor has the wrong shape for the config */
    SL_E_DEVICE = -9,      /* the GPU runtime reported an error */
};

/* The message carrier: code plus one human line. A NULL sl_error* is allowed everywhere. */
typedef struct sl_error {
    int code;
    char msg[512];
} sl_error;

/* Fill `e` (if not NULL) with code and printf-style message; returns `code` so callers can
 * `return sl_errorf(e, SL_E_FORMAT, "%s: ...", path);`. */
int sl_errorf(sl_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Name of an SL_E* code ("format error", ...). Never NULL. */
const char *sl_strerror(int code);

/* Logging level for cli/ output: 0 quiet, 1 normal, 2 verbose. The only global mutable state. */
extern int sl_log_level;

/* Read regular file PATH whole into a malloc'd buffer with a NUL after its *len bytes (the
 * caller frees *out). SL_E_IO names the file and the errno text; SL_E_NOMEM. */
int sl_read_file(const char *path, char **out, size_t *len, sl_error *e);

/* Wall-clock seconds from a monotonic clock. */
double sl_now(void);

#endif
