/* io/: the io_uring reader — every weight byte enters sluice through here.
 *
 * An sl_io is one io_uring ring plus the files and destination buffers registered with it. The
 * caller hands it extents (file, offset, length → buffer, offset); it splits them into aligned
 * pieces, keeps up to `depth` pieces in flight, reaps completions in batches (one io_uring_enter
 * per batch, not per read), resubmits short reads, retries EAGAIN, and reports the first hard
 * error with the file and offset. Files are opened with O_DIRECT where the filesystem allows it
 * and read through the page cache where it does not; the fallback is recorded once per file as a
 * note the CLI prints. Nothing is allocated per read: every table is sized at sl_io_create.
 *
 * Threads: an sl_io is used by one thread at a time. For parallel readers make one per thread.
 * Statistics: bytes, extents, pieces, busy time and latency histograms (sl_io_stats).
 *
 * Also here: size parsing for the CLI (sl_parse_size) and the `sluice bench io` workloads. */
#ifndef SL_IO_H
#define SL_IO_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------------
 * Sizes
 * ------------------------------------------------------------------------------------------- */

/* Parse a byte count: digits, optionally followed by a unit. Units follow GNU dd:
 *   K M G T (any case, alone or with "iB": K, k, KiB, kib) are binary: 1K = 1024, 1M = 1048576;
 *   KB MB GB TB (with "B", any case except that the "B" alone means bytes) are decimal:
 *   1MB = 1000000, 25MB = 25000000;  "B" or no unit: bytes.
 * Errors: SL_E_ARG with a message naming the text for an empty string, junk, a fraction, a
 * negative number or a value over 2^63. Cost: O(length). */
int sl_parse_size(const char *s, uint64_t *out, sl_error *e);

/* ---------------------------------------------------------------------------------------------
 * Latency histogram: log-linear buckets over nanoseconds, relative error under 1/32 (~3%).
 * Exact below 64 ns, 32 sub-buckets per power of two up to 2^40 ns (~18 minutes), clamped above.
 * ------------------------------------------------------------------------------------------- */

#define SL_IO_HIST_BUCKETS 1184

typedef struct sl_io_hist {
    uint64_t count;                  /* samples */
    uint64_t max_ns;                 /* largest sample */
    uint64_t sum_ns;                 /* for the mean */
    uint64_t b[SL_IO_HIST_BUCKETS];  /* counts per bucket */
} sl_io_hist;

/* Add one sample (ns). O(1). */
void sl_io_hist_add(sl_io_hist *h, uint64_t ns);
/* into += h. O(buckets). */
void sl_io_hist_merge(sl_io_hist *into, const sl_io_hist *h);
/* The q-quantile (0 < q <= 1) in microseconds: the middle of the bucket holding the smallest
 * sample x with count(samples <= x) >= q * count. 0 for an empty histogram. O(buckets). */
double sl_io_hist_quantile_us(const sl_io_hist *h, double q);
/* Bucket index of a value and the value range [lo, hi] a bucket holds (for tests and plots). */
unsigned sl_io_hist_bucket(uint64_t ns);
void sl_io_hist_range(unsigned bucket, uint64_t *lo, uint64_t *hi);

/* ---------------------------------------------------------------------------------------------
 * The reader
 * ------------------------------------------------------------------------------------------- */

enum {
    SL_IO_AUTO = 0,     /* O_DIRECT where the filesystem allows it, page cache where not */
    SL_IO_DIRECT = 1,   /* O_DIRECT or fail (SL_E_UNSUPPORTED) */
    SL_IO_BUFFERED = 2, /* always through the page cache */
};

typedef struct sl_io_opts {
    unsigned depth;      /* reads (pieces) in flight at most, 1..32768; 0 means 32 */
    unsigned extents;    /* extents in flight at most; 0 means `depth` */
    unsigned sq_entries; /* submission ring entries; 0 (or more than depth) means min(depth, 4096).
                          * Smaller than depth only makes batches smaller (a full ring is flushed
                          * and refilled) */
    uint64_t piece;      /* largest single read, bytes; 0 means 1 MiB; rounded down to a multiple
                          * of 4096, at least 4096, at most 256 MiB */
    int mode;            /* SL_IO_AUTO / SL_IO_DIRECT / SL_IO_BUFFERED */
    unsigned max_files;  /* file table size; 0 means 16 */
    /* Fault injection (tests): sees each completion's result (bytes or -errno) for a read of `len`
     * bytes at `offset` of file `file` and returns the result to act on. It may shorten a count or
     * turn it into an error; a longer count than the kernel gave is ignored. NULL normally. */
    int (*fault)(void *ctx, int file, uint64_t offset, unsigned len, int res);
    void *fault_ctx;
} sl_io_opts;

typedef struct sl_io sl_io;

/* Create a reader: one io_uring ring with a completion queue that holds `depth` completions and
 * all per-read tables. *out must be freed with sl_io_destroy. Errors: SL_E_ARG for depth or piece
 * out of range; SL_E_IO when the kernel refuses io_uring (message has errno text, e.g. io_uring
 * disabled by sysctl); SL_E_NOMEM. Cost: one io_uring_setup, O(depth) memory. */
int sl_io_create(const sl_io_opts *o, sl_io **out, sl_error *e);

/* Close the files sluice opened, unregister buffers and files, free everything. NULL is fine.
 * Buffers handed to sl_io_set_buffers stay the caller's. */
void sl_io_destroy(sl_io *io);

/* Open `path` read-only and register it; *id receives the file id for extents. Accepts regular
 * files and block devices. In SL_IO_AUTO mode a filesystem that refuses O_DIRECT (EINVAL at open,
 * e.g. some overlay and FUSE filesystems, /proc) gets buffered reads and a note (sl_io_file_info).
 * Errors: SL_E_IO (open/stat failed, errno text), SL_E_ARG (not a file or block device, table
 * full), SL_E_UNSUPPORTED (SL_IO_DIRECT and the filesystem refuses O_DIRECT). Cost: 2 opens,
 * 1 statx, 1 io_uring_register. */
int sl_io_open_file(sl_io *io, const char *path, int *id, sl_error *e);

/* Register an fd the caller opened (the caller keeps it; sl_io works on a dup). `name` labels
 * errors. No type check: a pipe, socket or directory fd is accepted and its errors surface at read
 * time with the offset. If the fd has O_DIRECT, unaligned pieces go through a buffered reopen of
 * /proc/self/fd/N. Errors: SL_E_IO (bad fd: "closed or invalid"), SL_E_ARG (table full). */
int sl_io_adopt_fd(sl_io *io, int fd, const char *name, int *id, sl_error *e);

typedef struct sl_io_file_info {
    const char *name;  /* path or name given at open */
    uint64_t size;     /* bytes at open time (0 for pipes) */
    int direct;        /* 1 while aligned pieces use O_DIRECT */
    unsigned align;    /* O_DIRECT alignment of offset, length and memory (bytes) */
    const char *note;  /* one line on a fallback ("... refused O_DIRECT ...") or NULL */
} sl_io_file_info;

/* Describe file `id`. Strings live as long as the reader. SL_E_ARG for a bad id. */
int sl_io_file_info_get(const sl_io *io, int id, sl_io_file_info *out);

/* Page-aligned (2 MiB-aligned when len >= 2 MiB, with a transparent-huge-page hint) zeroed memory
 * for destination buffers. NULL on failure. Free with sl_io_buffer_free(p, len). */
void *sl_io_buffer_alloc(size_t len);
void sl_io_buffer_free(void *p, size_t len);

/* Make buffers[0..n) the destination table (replacing any earlier one) and register them with the
 * kernel as fixed buffers so reads skip the per-read page pinning. If the kernel refuses to pin
 * them (RLIMIT_MEMLOCK, a buffer over 1 GiB) reads still work, unregistered, and
 * sl_io_buffers_note() says why. Buffers must stay valid until replaced or the reader is
 * destroyed. Memory for O_DIRECT should be aligned to 4096 (sl_io_buffer_alloc is); misaligned
 * pieces go through the page cache. Errors: SL_E_ARG (n == 0, over 16384, NULL buffer, zero
 * length), SL_E_NOMEM. Never call while sl_io_run is running. Cost: pins the pages (O(bytes)). */
int sl_io_set_buffers(sl_io *io, void *const *bufs, const size_t *lens, unsigned n, sl_error *e);
/* 1 if the current buffers are registered with the kernel, else 0. */
int sl_io_buffers_fixed(const sl_io *io);
/* Why buffers are not registered, or NULL. */
const char *sl_io_buffers_note(const sl_io *io);

/* One read order: `len` bytes of file `file` from `offset` into buffer `buf` at `buf_off`. */
typedef struct sl_io_extent {
    int file;         /* id from sl_io_open_file / sl_io_adopt_fd */
    unsigned buf;     /* index into the sl_io_set_buffers table */
    uint64_t offset;  /* byte offset in the file */
    uint64_t len;     /* bytes; may be odd; 0 completes at once */
    uint64_t buf_off; /* byte offset in the buffer; buf_off + len <= that buffer's length */
} sl_io_extent;

/* A stream of extents. next() is called when a slot is free, before the extent's first read is
 * queued, so it may wait for its buffer to become free (e.g. for a GPU copy out of it). done()
 * runs when the last byte of an extent has landed; extents complete out of order. */
typedef struct sl_io_source {
    void *ctx;
    /* Fill *x: return 1, 0 when there are no more, or a negative SL_E* code to abort. */
    int (*next)(void *ctx, sl_io_extent *x);
    /* `seq`: 0-based position of x in the order next() produced it. Return 0, or a negative
     * SL_E* code to abort. May be NULL. */
    int (*done)(void *ctx, uint64_t seq, const sl_io_extent *x);
} sl_io_source;

/* Read every extent the source produces, up to `extents` of them and `depth` pieces in flight.
 * Returns when all are read, or on the first error after every read already in flight has
 * completed (so no buffer is written after return; the reader stays usable).
 * Errors: SL_E_IO with file, offset and errno text for a failed read ("...: read of N bytes at
 * offset X failed: Input/output error") or for a file that ends early ("... ends at offset X,
 * N bytes short of extent [A, B); shortened while being read?"); SL_E_ARG for a bad extent (file
 * id, buffer index, buffer bounds); SL_E_UNSUPPORTED for SL_IO_DIRECT reads the filesystem
 * refuses; whatever next()/done() returned. Retries: EAGAIN/EINTR are resubmitted (with backoff
 * when nothing else is in flight, for up to 10 s); short reads resume where they stopped.
 * Cost: one io_uring_enter per batch of completions; no allocation. */
int sl_io_run(sl_io *io, const sl_io_source *src, sl_error *e);

/* sl_io_run over an array. Same errors. */
int sl_io_read_extents(sl_io *io, const sl_io_extent *x, size_t n, sl_error *e);

typedef struct sl_io_stats {
    uint64_t bytes;          /* bytes landed */
    uint64_t extents;        /* extents completed */
    uint64_t reads;          /* pieces completed */
    uint64_t short_reads;    /* partial completions resumed */
    uint64_t retries;        /* EAGAIN/EINTR resubmissions */
    uint64_t buffered_reads; /* pieces through the page cache on an O_DIRECT file (unaligned edges) */
    uint64_t enters;         /* io_uring_enter calls (submit and/or wait) */
    double busy_s;           /* seconds with at least one read queued */
    sl_io_hist extent_lat;   /* per extent: first piece queued -> last byte landed */
    sl_io_hist read_lat;     /* per piece: queued -> completion reaped */
} sl_io_stats;

/* Statistics since creation or the last reset. */
const sl_io_stats *sl_io_stats_get(const sl_io *io);
void sl_io_stats_reset(sl_io *io);

/* ---------------------------------------------------------------------------------------------
 * `sluice bench io` workloads
 * ------------------------------------------------------------------------------------------- */

enum {
    SL_IO_BENCH_SEQ = 0,    /* sequential `bs` reads, each thread over its own slice, wrapping */
    SL_IO_BENCH_RAND = 1,   /* `bs` reads at random bs-aligned offsets */
    SL_IO_BENCH_CHUNKS = 2, /* expert-sized reads at random 4096-aligned offsets (the engine's
                             * pattern until the .sluice chunk table can be replayed) */
};

typedef struct sl_io_bench_opts {
    const char *path;
    int pattern;      /* SL_IO_BENCH_* */
    uint64_t bs;      /* bytes per request (an extent, split into pieces) */
    unsigned qd;      /* requests in flight per thread (like fio's iodepth) */
    unsigned threads; /* readers, one ring each */
    uint64_t region;  /* bytes of the file used from offset 0; 0 = whole file */
    int mode;         /* SL_IO_AUTO / SL_IO_DIRECT / SL_IO_BUFFERED */
    double seconds;   /* run time per point */
    uint64_t piece;   /* largest single read (sl_io_opts.piece) */
    uint64_t seed;    /* random offsets */
    int gpu;          /* copy each request to VRAM (CUDA builds) */
} sl_io_bench_opts;

typedef struct sl_io_bench_result {
    sl_io_bench_opts o;
    uint64_t bytes, requests;
    double seconds, gbps, iops, busy;  /* busy: mean fraction of the run with reads in flight */
    double lat_p50_us, lat_p99_us, lat_p999_us, lat_mean_us, lat_max_us;
    uint64_t short_reads, retries, buffered_reads;
    int direct, fixed_bufs; /* what was in use (thread 0) */
    char note[512];         /* fallbacks worth one line, or "" */
    /* --gpu: disk alone is the fields above; pcie: pinned host -> VRAM copies alone; e2e: read
     * into pinned buffers and copied to VRAM, overlapped. 0 when not measured. */
    double pcie_gbps, e2e_gbps;
} sl_io_bench_result;

/* Run one measured point. Errors: those of sl_io_* plus SL_E_ARG (file smaller than bs, bad
 * option), SL_E_UNSUPPORTED (gpu in a build without CUDA), SL_E_DEVICE (CUDA errors).
 * Cost: opts->seconds of reading per measurement, ~qd * bs bytes of buffers per thread. */
int sl_io_bench_run(const sl_io_bench_opts *o, sl_io_bench_result *r, sl_error *e);

/* Make sure `path` holds at least `size` bytes for benchmarking. A missing file is created with
 * pseudo-random bytes and a "sluice bench io" header, synced and dropped from the page cache;
 * *created = 1. An existing file at least `size` long is used as is; *created = 0. An existing
 * shorter file is regrown only if it carries that header (sluice made it); otherwise SL_E_ARG
 * ("... was not created by sluice bench io; refusing to overwrite it"). Errors: SL_E_IO. */
int sl_io_bench_prepare_file(const char *path, uint64_t size, int *created, sl_error *e);

/* Write an SVG chart of GB/s against queue depth, one line per (pattern, bs) series.
 * Errors: SL_E_IO (cannot write), SL_E_ARG (n == 0). */
int sl_io_bench_plot_svg(const char *path, const sl_io_bench_result *r, size_t n, sl_error *e);

/* "seq" / "rand" / "chunks". */
const char *sl_io_bench_pattern_name(int pattern);

#endif
