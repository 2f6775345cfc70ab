/* Whole-file verification: every chunk read and checked against its checksum, on several
 * threads (zstd decodes at ~0.5-1 GB/s per core, so one thread cannot keep up with an NVMe drive),
 * with buffers bounded by a byte budget rather than by the thread count. */
#include "format/format.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct verify_job {
    const sl_sluice *f;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t next;              /* next chunk to claim */
    uint64_t budget, inflight;
    uint64_t done_bytes, total_bytes;
    int running;              /* workers not yet finished */
    size_t bad;               /* lowest failing chunk index, or SIZE_MAX */
    sl_error err;
} verify_job;

/* Buffers up to this size stay with their thread from chunk to chunk (no page faults per chunk). */
#define KEEP_BYTES ((uint64_t)256 << 20)

static void *verify_worker(void *arg)
{
    verify_job *j = arg;
    void *stage = NULL, *dst = NULL;
    uint64_t stage_cap = 0, dst_cap = 0;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->next >= sl_sluice_chunk_count(j->f) || j->next > j->bad)
            break;
        size_t i = j->next++;
        const sl_sluice_chunk *c = sl_sluice_chunk_at(j->f, i);
        uint64_t padded = c->stored_size ? sl_sluice_padded(c->stored_size) : 4096;
        uint64_t dn = c->decoded_size ? c->decoded_size : 1, need = padded + dn;
        /* A chunk bigger than the budget runs when nothing else is in flight. */
        while (j->inflight > 0 && j->inflight + need > j->budget)
            pthread_cond_wait(&j->cv, &j->mu);
        j->inflight += need;
        pthread_mutex_unlock(&j->mu);

        sl_error e = {0};
        int rc = 0;
        if (padded > stage_cap) {
            free(stage);
            stage_cap = posix_memalign(&stage, 4096, padded) == 0 ? padded : 0;
        }
        if (dn > dst_cap) {
            free(dst);
            dst_cap = (dst = malloc(dn)) ? dn : 0;
        }
        if (!stage_cap || !dst_cap) {
            char what[512];
            sl_sluice_chunk_label(j->f, i, what, sizeof what);
            rc = sl_errorf(&e, SL_E_NOMEM, "%s: no memory to verify it", what);
        } else {
            rc = sl_sluice_read_chunk(j->f, i, stage, dst, &e);
        }
        if (stage_cap > KEEP_BYTES || !stage_cap) {
            free(stage);
            stage = NULL, stage_cap = 0;
        }
        if (dst_cap > KEEP_BYTES || !dst_cap) {
            free(dst);
            dst = NULL, dst_cap = 0;
        }

        pthread_mutex_lock(&j->mu);
        j->inflight -= need;
        j->done_bytes += c->stored_size;
        if (rc && i < j->bad) {
            j->bad = i;
            j->err = e;
        }
        pthread_cond_broadcast(&j->cv);
    }
    j->running--;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(stage);
    free(dst);
    return NULL;
}

int sl_sluice_verify(const sl_sluice *f, int threads, size_t mem_budget,
                     void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
                     sl_error *e)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    verify_job j = {.f = f, .budget = mem_budget ? mem_budget : (size_t)2 << 30, .bad = SIZE_MAX};
    for (size_t i = 0; i < sl_sluice_chunk_count(f); i++)
        j.total_bytes += sl_sluice_chunk_at(f, i)->stored_size;
    pthread_mutex_init(&j.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!tid)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", sl_sluice_path(f));
    int started = 0;
    for (; started < threads; started++) {
        j.running++;
        if (pthread_create(&tid[started], NULL, verify_worker, &j) != 0) {
            j.running--;
            break;
        }
    }
    int rc = 0;
    if (started == 0) {
        rc = sl_errorf(e, SL_E_NOMEM, "%s: cannot start a verify thread", sl_sluice_path(f));
    } else {
        pthread_mutex_lock(&j.mu);
        while (j.running > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&j.cv, &j.mu, &ts);
            if (progress) {
                uint64_t done = j.done_bytes;
                pthread_mutex_unlock(&j.mu);
                progress(ctx, done, j.total_bytes);
                pthread_mutex_lock(&j.mu);
            }
        }
        pthread_mutex_unlock(&j.mu);
        if (progress)
            progress(ctx, j.done_bytes, j.total_bytes);
    }
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    free(tid);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    if (rc)
        return rc;
    if (j.bad != SIZE_MAX) {
        if (e)
            *e = j.err;
        return j.err.code;
    }
    return 0;
}
