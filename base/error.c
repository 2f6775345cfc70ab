#include "base/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

int sl_log_level = 1;

int sl_errorf(sl_error *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *sl_strerror(int code)
{
    switch (code) {
    case SL_OK: return "ok";
    case SL_E_IO: return "i/o error";
    case SL_E_FORMAT: return "format error";
    case SL_E_NOMEM: return "out of memory";
    case SL_E_ARG: return "invalid argument";
    case SL_E_UNSUPPORTED: return "unsupported";
    case SL_E_CHECKSUM: return "checksum mismatch";
    case SL_E_MISSING: return "missing";
    case SL_E_SHAPE: return "wrong shape";
    case SL_E_DEVICE: return "device error";
    default: return "unknown error";
    }
}

double sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
