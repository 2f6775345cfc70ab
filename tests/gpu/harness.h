/* tests/gpu/: what every GPU suite shares — a printed random seed, random inputs, a CUDA backend
 * (the test skips without a device) beside the CPU backend that is the oracle, device buffers
 * filled from the host or with NaN (so a value the GPU failed to write shows), and the relative
 * L2 error the suites' tolerances are stated in. Header-only: each suite is its own program. */
#ifndef SL_TESTS_GPU_HARNESS_H
#define SL_TESTS_GPU_HARNESS_H

#include "cpu/cpu.h"
#include "cuda/cuda.h"
#include "model/model.h"
#include "quant/quant.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline void gh_seed(void)
{
    unsigned s = (unsigned)time(NULL) ^ ((unsigned)clock() << 16) ^ (unsigned)getpid();
    cr_log_info("seed %u", s);
    srand(s);
}

static inline float gh_randn(void)
{
    double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0);
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

/* n normal values times scale, malloc'ed */
static inline float *gh_randv(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert(p, "out of host memory");
    for (size_t i = 0; i < n; i++)
        p[i] = scale * gh_randn();
    return p;
}

/* A CUDA backend owning `budget` bytes on device 0; skips the test when there is no device. */
static inline sl_backend *gh_gpu(size_t budget)
{
    if (sl_cuda_device_count() == 0)
        cr_skip_test("no CUDA device");
    sl_backend *b = NULL;
    sl_error e = {0};
    cr_assert_eq(sl_cuda_backend_create(0, budget, &b, &e), 0, "%s", e.msg);
    return b;
}

static inline sl_backend *gh_cpu(void)
{
    sl_backend *b = NULL;
    sl_error e = {0};
    cr_assert_eq(sl_cpu_backend_create(0, &b, &e), 0, "%s", e.msg);
    return b;
}

/* bytes of h copied into new backend memory (bytes 0: a 4-byte allocation) */
static inline void *gh_put(sl_backend *g, const void *h, size_t bytes)
{
    void *d = NULL;
    cr_assert_eq(g->ops->alloc(g, bytes ? bytes : 4, &d), 0, "cuda alloc of %zu bytes", bytes);
    if (bytes)
        cr_assert_eq(g->ops->upload(g, d, h, bytes), 0, "upload: %s", sl_cuda_backend_error(g));
    return d;
}

/* n floats of backend memory, every one NaN */
static inline float *gh_poisoned(sl_backend *g, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    cr_assert(h);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    float *d = gh_put(g, h, n * sizeof(float));
    free(h);
    return d;
}

/* n floats of backend memory copied to a malloc'ed host buffer */
static inline float *gh_get(sl_backend *g, const void *d, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    cr_assert(h);
    cr_assert_eq(g->ops->download(g, h, d, n * sizeof(float)), 0, "download: %s",
                 sl_cuda_backend_error(g));
    return h;
}

/* ||got - want|| / ||want|| (the absolute norm when want is all zero) */
static inline double gh_rel_l2(const float *got, const float *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline void gh_all_finite(const float *p, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            cr_assert_fail("%s: element %zu is %f (not written by the GPU, or not finite)", what, i,
                           (double)p[i]);
}

static inline const char *gh_fmt_name(int fmt) { return sl_wformat_get(fmt)->name; }

#endif
