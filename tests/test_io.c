/* io/: size parsing, the latency histogram, the io_uring reader (bytes equal the file's bytes for
 * odd extents, O_DIRECT and its fallback, many files) and its faults (file shortened under the
 * reader, read errors, closed fds, full queues, EAGAIN and short reads), and the bench helpers.
 * Oracles: file contents the test wrote itself, sorted samples, direct formulas. */
#include "io/io.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- helpers (static: private to this file) ---- */

static uint64_t tio_rng_state;

static uint64_t tio_rand(void)
{
    uint64_t x = tio_rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tio_rng_state = x;
    return x * UINT64_C(2685821657736338717);
}

static uint64_t tio_below(uint64_t n) { return n ? tio_rand() % n : 0; }

static void tio_seed(const char *test)
{
    uint64_t s = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)test;
    if (getenv("SL_TEST_SEED"))
        s = strtoull(getenv("SL_TEST_SEED"), NULL, 0);
    tio_rng_state = s ? s : 1;
    fprintf(stderr, "[%s] seed %llu (rerun with SL_TEST_SEED)\n", test, (unsigned long long)s);
}

static char tio_dir[256];

static void tio_mkdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tio_dir, sizeof tio_dir, "%s/sluice-io-XXXXXX", base);
    cr_assert_not_null(mkdtemp(tio_dir), "mkdtemp: %s", strerror(errno));
}

static void tio_rmdir(void)
{
    DIR *d = opendir(tio_dir);
    if (!d)
        return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", tio_dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tio_dir);
}

/* Write `n` random bytes to dir/name; returns the bytes (caller frees) and the path. */
static unsigned char *tio_make_file(const char *name, size_t n, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", tio_dir, name);
    unsigned char *b = malloc(n ? n : 1);
    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)tio_rand();
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
    return b;
}

static int tio_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- sizes ---- */

Test(io_size, parses_dd_style_units_against_powers)
{
    tio_seed("io_size");
    const char *letters = "KMGT";
    for (int iter = 0; iter < 200; iter++) {
        uint64_t v = tio_below(5000);
        int k = (int)tio_below(4);
        int form = (int)tio_below(4); /* 0: "K", 1: "KiB", 2: "KB", 3: lower-case "k"/"kib" */
        char s[64];
        char L = letters[k];
        switch (form) {
        case 0: snprintf(s, sizeof s, "%llu%c", (unsigned long long)v, L); break;
        case 1: snprintf(s, sizeof s, "%llu%ciB", (unsigned long long)v, L); break;
        case 2: snprintf(s, sizeof s, "%llu%cB", (unsigned long long)v, L); break;
        default: snprintf(s, sizeof s, "%llu%cib", (unsigned long long)v, L + 32); break;
        }
        double want = (double)v * pow(form == 2 ? 1000.0 : 1024.0, k + 1);
        uint64_t got = 0;
        sl_error e = { 0 };
        cr_assert_eq(sl_parse_size(s, &got, &e), SL_OK, "%s: %s", s, e.msg);
        cr_assert_eq((double)got, want, "%s -> %llu, want %.0f", s, (unsigned long long)got, want);
    }
    uint64_t got;
    cr_assert_eq(sl_parse_size("4096", &got, NULL), SL_OK);
    cr_assert_eq(got, 4096);
    cr_assert_eq(sl_parse_size("7B", &got, NULL), SL_OK);
    cr_assert_eq(got, 7);
    cr_assert_eq(sl_parse_size("25MB", &got, NULL), SL_OK);
    cr_assert_eq(got, 25 * 1000 * 1000);
    cr_assert_eq(sl_parse_size("16MiB", &got, NULL), SL_OK);
    cr_assert_eq(got, 16 << 20);
}

Test(io_size, rejects_junk_with_the_text_in_the_message)
{
    const char *bad[] = { "", "M", "-1", "1.5M", "12Q", "3 M", "1KBB", "99999999999999999999", "10000000T", "1e6" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 12345;
        sl_error e = { 0 };
        cr_assert_eq(sl_parse_size(bad[i], &v, &e), SL_E_ARG, "'%s' accepted as %llu", bad[i],
                     (unsigned long long)v);
        cr_assert_eq(v, 12345, "output written on error");
        if (bad[i][0])
            cr_assert_not_null(strstr(e.msg, bad[i]), "message '%s' does not name '%s'", e.msg, bad[i]);
    }
}

/* ---- histogram ---- */

static int tio_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(io_hist, buckets_tile_the_range_without_gaps)
{
    uint64_t prev_hi = 0;
    for (unsigned i = 0; i < SL_IO_HIST_BUCKETS; i++) {
        uint64_t lo, hi;
        sl_io_hist_range(i, &lo, &hi);
        if (i)
            cr_assert_eq(lo, prev_hi + 1, "bucket %u starts at %llu, previous ended at %llu", i,
                         (unsigned long long)lo, (unsigned long long)prev_hi);
        cr_assert_eq(sl_io_hist_bucket(lo), i);
        cr_assert_eq(sl_io_hist_bucket(hi), i);
        cr_assert_leq((double)(hi - lo), (double)lo / 32.0, "bucket %u wider than 1/32", i);
        prev_hi = hi;
    }
    cr_assert_eq(sl_io_hist_bucket(UINT64_MAX), SL_IO_HIST_BUCKETS - 1);
}

Test(io_hist, quantiles_match_sorted_samples_within_a_bucket)
{
    tio_seed("io_hist");
    enum { N = 20000 };
    static uint64_t v[N];
    static sl_io_hist h, half1, half2;
    memset(&h, 0, sizeof h);
    memset(&half1, 0, sizeof half1);
    memset(&half2, 0, sizeof half2);
    for (int i = 0; i < N; i++) {
        /* log-uniform from 1 ns to ~1 s, like I/O latencies */
        double l = (double)tio_below(1u << 30) / (double)(1u << 30) * 30.0;
        v[i] = (uint64_t)exp2(l);
        sl_io_hist_add(&h, v[i]);
        sl_io_hist_add(i & 1 ? &half1 : &half2, v[i]);
    }
    sl_io_hist_merge(&half1, &half2);
    qsort(v, N, sizeof *v, tio_cmp_u64);
    const double qs[] = { 0.001, 0.5, 0.9, 0.99, 0.999, 1.0 };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        size_t rank = (size_t)ceil(qs[i] * N); /* 1-based rank of the exact quantile */
        double exact_us = (double)v[rank - 1] / 1000.0;
        double got = sl_io_hist_quantile_us(&h, qs[i]);
        cr_assert_leq(fabs(got - exact_us), exact_us / 32.0 + 0.001, "q=%g: hist %.4f us, exact %.4f us", qs[i],
                      got, exact_us);
        cr_assert_eq(got, sl_io_hist_quantile_us(&half1, qs[i]), "merge changed q=%g", qs[i]);
    }
    cr_assert_eq(h.count, N);
    cr_assert_eq(h.max_ns, v[N - 1]);
}

/* ---- reading: bytes equal the file's bytes ---- */

typedef struct tio_job {
    sl_io_extent *x;
    size_t n;
    void **bufs;
    size_t *lens;
    unsigned nbufs;
} tio_job;

/* Random extents over files[0..nf) into nbufs buffers; an extent never overlaps another in the same
 * buffer, so every expected byte is known. Buffer offsets are random: some congruent with the file
 * offset modulo 4096 (O_DIRECT middle), some not (page cache). */
static void tio_plan(tio_job *j, const size_t *fsize, int nf, const int *ids, size_t n, int odd)
{
    j->n = n;
    j->nbufs = (unsigned)n;
    j->x = calloc(n, sizeof *j->x);
    j->bufs = calloc(n, sizeof *j->bufs);
    j->lens = calloc(n, sizeof *j->lens);
    for (size_t i = 0; i < n; i++) {
        int f = (int)tio_below((uint64_t)nf);
        uint64_t off, len;
        if (odd) {
            off = tio_below(fsize[f]);
            len = 1 + tio_below(fsize[f] - off);
            if (len > 300000)
                len = 1 + tio_below(300000);
        } else { /* aligned, the engine's case */
            off = tio_below(fsize[f] / 4096) * 4096;
            len = 4096 * (1 + tio_below(64));
            if (off + len > fsize[f])
                len = fsize[f] - off; /* may end unaligned at EOF */
            if (len == 0) {
                off = 0;
                len = fsize[f] < 4096 ? fsize[f] : 4096;
            }
        }
        uint64_t boff = odd && tio_below(2) ? tio_below(8192) : (off & 4095);
        j->lens[i] = boff + len + tio_below(100);
        j->bufs[i] = sl_io_buffer_alloc(j->lens[i]);
        cr_assert_not_null(j->bufs[i]);
        j->x[i] = (sl_io_extent){ .file = ids[f], .buf = (unsigned)i, .offset = off, .len = len, .buf_off = boff };
    }
}

static void tio_check(const tio_job *j, unsigned char *const *content, const int *ids, int nf)
{
    for (size_t i = 0; i < j->n; i++) {
        const sl_io_extent *x = &j->x[i];
        int f = 0;
        while (f < nf && ids[f] != x->file)
            f++;
        const unsigned char *got = (const unsigned char *)j->bufs[i] + x->buf_off;
        const unsigned char *want = content[f] + x->offset;
        cr_assert_eq(XXH64(got, x->len, 0), XXH64(want, x->len, 0),
                     "extent %zu (file %d, offset %llu, %llu bytes, buf_off %llu): checksum differs", i, f,
                     (unsigned long long)x->offset, (unsigned long long)x->len, (unsigned long long)x->buf_off);
        cr_assert_eq(memcmp(got, want, x->len), 0);
        /* bytes around the extent stay untouched (buffers start zeroed) */
        for (uint64_t k = 0; k < x->buf_off; k++)
            cr_assert_eq(((unsigned char *)j->bufs[i])[k], 0, "byte before extent %zu written", i);
        for (uint64_t k = x->buf_off + x->len; k < j->lens[i]; k++)
            cr_assert_eq(((unsigned char *)j->bufs[i])[k], 0, "byte after extent %zu written", i);
    }
}

static void tio_free_job(tio_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        sl_io_buffer_free(j->bufs[i], j->lens[i]);
    free(j->x);
    free(j->bufs);
    free(j->lens);
}

static void tio_read_random(int mode, int nfiles, int odd, const char *label)
{
    tio_seed(label);
    tio_mkdir();
    int fds0 = tio_count_fds();
    sl_io_opts o = { .depth = 1 + (unsigned)tio_below(24), .piece = 4096u << tio_below(4), .mode = mode };
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&o, &io, &e), SL_OK, "%s", e.msg);
    size_t fsize[8];
    unsigned char *content[8];
    int ids[8];
    for (int f = 0; f < nfiles; f++) {
        char path[512], name[32];
        snprintf(name, sizeof name, "f%d.bin", f);
        fsize[f] = 1 + tio_below(3u << 20); /* odd sizes up to 3 MiB */
        if (!odd && f == 0)
            fsize[f] = (fsize[f] | 4095) + 1; /* one aligned size too */
        content[f] = tio_make_file(name, fsize[f], path, sizeof path);
        cr_assert_eq(sl_io_open_file(io, path, &ids[f], &e), SL_OK, "%s", e.msg);
        sl_io_file_info fi;
        cr_assert_eq(sl_io_file_info_get(io, ids[f], &fi), SL_OK);
        cr_assert_eq(fi.size, fsize[f]);
        if (mode == SL_IO_BUFFERED)
            cr_assert_eq(fi.direct, 0);
        else if (!fi.direct)
            fprintf(stderr, "[%s] %s: O_DIRECT refused here (%s); this run checks the page-cache fallback\n",
                    label, path, fi.note ? fi.note : "?");
        else
            cr_assert_null(fi.note);
    }
    tio_job j;
    tio_plan(&j, fsize, nfiles, ids, 40 + tio_below(80), odd);
    cr_assert_eq(sl_io_set_buffers(io, j.bufs, j.lens, j.nbufs, &e), SL_OK, "%s", e.msg);
    if (!sl_io_buffers_fixed(io))
        fprintf(stderr, "[%s] %s\n", label, sl_io_buffers_note(io));
    cr_assert_eq(sl_io_read_extents(io, j.x, j.n, &e), SL_OK, "%s", e.msg);
    tio_check(&j, content, ids, nfiles);
    uint64_t want_bytes = 0;
    for (size_t i = 0; i < j.n; i++)
        want_bytes += j.x[i].len;
    const sl_io_stats *st = sl_io_stats_get(io);
    cr_assert_eq(st->bytes, want_bytes);
    cr_assert_eq(st->extents, j.n);
    cr_assert_eq(st->extent_lat.count, j.n);
    cr_assert_geq(st->reads, j.n);
    cr_assert_gt(st->busy_s, 0.0);
    sl_io_destroy(io);
    tio_free_job(&j);
    for (int f = 0; f < nfiles; f++)
        free(content[f]);
    cr_assert_eq(tio_count_fds(), fds0, "file descriptors leaked");
    tio_rmdir();
}

Test(io_read, odd_extents_equal_file_bytes_auto_direct) { tio_read_random(SL_IO_AUTO, 1, 1, "odd_auto"); }
Test(io_read, aligned_extents_equal_file_bytes_auto_direct) { tio_read_random(SL_IO_AUTO, 1, 0, "aligned_auto"); }
Test(io_read, odd_extents_equal_file_bytes_buffered) { tio_read_random(SL_IO_BUFFERED, 1, 1, "odd_buffered"); }
Test(io_read, many_files_at_once_equal_their_bytes) { tio_read_random(SL_IO_AUTO, 8, 1, "many_files"); }

/* /proc refuses O_DIRECT at open on every Linux: the fallback path, checked for real. */
Test(io_read, filesystem_refusing_odirect_falls_back_with_one_note)
{
    int fd = open("/proc/version", O_RDONLY | O_DIRECT);
    if (fd >= 0) {
        close(fd);
        cr_skip_test("/proc/version accepts O_DIRECT on this kernel; no refusing filesystem to test with");
    }
    char want[4096];
    FILE *f = fopen("/proc/version", "r");
    cr_assert_not_null(f);
    size_t n = fread(want, 1, sizeof want, f);
    fclose(f);
    cr_assert_gt(n, 0);

    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 4 }, &io, &e), SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_open_file(io, "/proc/version", &id, &e), SL_OK, "%s", e.msg);
    sl_io_file_info fi;
    sl_io_file_info_get(io, id, &fi);
    cr_assert_eq(fi.direct, 0);
    cr_assert_not_null(fi.note);
    cr_assert_not_null(strstr(fi.note, "O_DIRECT"), "note: %s", fi.note);
    cr_assert_not_null(strstr(fi.note, "/proc/version"), "note: %s", fi.note);
    void *buf = sl_io_buffer_alloc(8192);
    size_t len = 8192;
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    sl_io_extent x = { .file = id, .buf = 0, .offset = 1, .len = n - 1, .buf_off = 3 };
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(memcmp((char *)buf + 3, want + 1, n - 1), 0);
    sl_io_buffer_free(buf, len);
    sl_io_destroy(io);

    /* the same filesystem with --direct semantics: a clear refusal */
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 4, .mode = SL_IO_DIRECT }, &io, &e), SL_OK);
    cr_assert_eq(sl_io_open_file(io, "/proc/version", &id, &e), SL_E_UNSUPPORTED);
    cr_assert_not_null(strstr(e.msg, "/proc/version"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "O_DIRECT"), "%s", e.msg);
    sl_io_destroy(io);
}

/* ---- faults ---- */

Test(io_fault, file_shortened_under_the_reader_names_file_and_offset)
{
    tio_seed("shortened");
    tio_mkdir();
    int fds0 = tio_count_fds();
    char path[512];
    size_t size = 1u << 20, cut = 4096 * (1 + tio_below(200)) + tio_below(4096);
    unsigned char *content = tio_make_file("short.bin", size, path, sizeof path);
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 8, .piece = 65536 }, &io, &e), SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_open_file(io, path, &id, &e), SL_OK, "%s", e.msg);
    void *buf = sl_io_buffer_alloc(size);
    cr_assert_eq(sl_io_set_buffers(io, &buf, &size, 1, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(truncate(path, (off_t)cut), 0); /* after open: the reader still believes 1 MiB */
    sl_io_extent x = { .file = id, .buf = 0, .offset = 0, .len = size };
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_E_IO, "shortened file read without error");
    cr_assert_not_null(strstr(e.msg, path), "message does not name the file: %s", e.msg);
    cr_assert_not_null(strstr(e.msg, "shortened"), "%s", e.msg);
    const char *at = strstr(e.msg, "ends at offset ");
    cr_assert_not_null(at, "%s", e.msg);
    unsigned long long where = strtoull(at + strlen("ends at offset "), NULL, 10);
    cr_assert(where >= cut && where < size, "reported end %llu, file cut at %zu", where, cut);
    /* the reader drained and is usable: the part that still exists reads back right */
    memset(buf, 0, size);
    x.len = cut;
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(memcmp(buf, content, cut), 0);
    sl_io_destroy(io);
    sl_io_buffer_free(buf, size);
    free(content);
    cr_assert_eq(tio_count_fds(), fds0, "file descriptors leaked");
    tio_rmdir();
}

Test(io_fault, directory_fd_gives_read_error_with_offset)
{
    tio_mkdir();
    int fds0 = tio_count_fds();
    int dfd = open(tio_dir, O_RDONLY | O_DIRECTORY);
    cr_assert_geq(dfd, 0);
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 4 }, &io, &e), SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_adopt_fd(io, dfd, "testdir", &id, &e), SL_OK, "%s", e.msg);
    close(dfd); /* the reader holds its own dup */
    void *buf = sl_io_buffer_alloc(65536);
    size_t len = 65536;
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    sl_io_extent x = { .file = id, .buf = 0, .offset = 8192, .len = 4096 };
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_E_IO);
    cr_assert_not_null(strstr(e.msg, "testdir"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "offset 8192"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, strerror(EISDIR)), "%s", e.msg);
    sl_io_destroy(io);
    sl_io_buffer_free(buf, len);
    cr_assert_eq(tio_count_fds(), fds0, "file descriptors leaked");
    tio_rmdir();
}

Test(io_fault, closed_fd_and_missing_file_are_refused_by_name)
{
    int fds0 = tio_count_fds();
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 2 }, &io, &e), SL_OK, "%s", e.msg);
    int p[2];
    cr_assert_eq(pipe(p), 0); /* after the ring, so the closed number is not reused by it */
    close(p[0]);
    close(p[1]);
    int id;
    cr_assert_eq(sl_io_adopt_fd(io, p[0], "gone", &id, &e), SL_E_IO);
    cr_assert_not_null(strstr(e.msg, "gone"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "closed"), "%s", e.msg);
    cr_assert_eq(sl_io_open_file(io, "/nonexistent/sluice/x.bin", &id, &e), SL_E_IO);
    cr_assert_not_null(strstr(e.msg, "/nonexistent/sluice/x.bin"), "%s", e.msg);
    cr_assert_eq(sl_io_open_file(io, "/proc", &id, &e), SL_E_ARG);
    sl_io_destroy(io);
    cr_assert_eq(tio_count_fds(), fds0, "file descriptors leaked");
}

Test(io_fault, bad_extents_are_refused_and_the_reader_stays_usable)
{
    tio_seed("bad_extents");
    tio_mkdir();
    char path[512];
    unsigned char *content = tio_make_file("b.bin", 100000, path, sizeof path);
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 4 }, &io, &e), SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_open_file(io, path, &id, &e), SL_OK, "%s", e.msg);
    size_t len = 8192;
    void *buf = sl_io_buffer_alloc(len);
    sl_io_extent x = { .file = id, .buf = 0, .offset = 0, .len = 100 };
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_E_ARG, "read with no buffers set");
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    sl_io_extent bad[] = {
        { .file = id + 1, .len = 10 },                          /* no such file */
        { .file = id, .buf = 1, .len = 10 },                    /* no such buffer */
        { .file = id, .buf = 0, .len = 8000, .buf_off = 500 },  /* overruns the buffer */
        { .file = id, .buf = 0, .offset = UINT64_MAX - 5, .len = 10 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sl_io_extent two[2] = { { .file = id, .buf = 0, .offset = 17, .len = 333, .buf_off = 1 }, bad[i] };
        cr_assert_eq(sl_io_read_extents(io, two, 2, &e), SL_E_ARG, "bad extent %zu accepted", i);
        cr_assert_eq(strchr(e.msg, '\n'), NULL);
    }
    x = (sl_io_extent){ .file = id, .buf = 0, .offset = 4095, .len = 8000, .buf_off = 7 };
    cr_assert_eq(sl_io_read_extents(io, &x, 1, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(memcmp((char *)buf + 7, content + 4095, 8000), 0);
    sl_io_destroy(io);
    sl_io_buffer_free(buf, len);
    free(content);
    tio_rmdir();
}

Test(io_fault, full_queue_more_requests_than_slots_all_land)
{
    tio_seed("full_queue");
    tio_mkdir();
    char path[512];
    size_t size = 2u << 20;
    unsigned char *content = tio_make_file("q.bin", size, path, sizeof path);
    /* 600 extents through 3 read slots, 2 extent slots and a 2-entry submission ring */
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 3, .extents = 2, .sq_entries = 2, .piece = 4096 }, &io, &e),
                 SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_open_file(io, path, &id, &e), SL_OK, "%s", e.msg);
    enum { N = 600, SLOT = 16384 };
    size_t len = (size_t)N * SLOT;
    void *buf = sl_io_buffer_alloc(len);
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    static sl_io_extent x[N];
    for (int i = 0; i < N; i++) {
        uint64_t n = 1 + tio_below(SLOT - 4096);
        x[i] = (sl_io_extent){ .file = id, .buf = 0, .offset = tio_below(size - n), .len = n,
                               .buf_off = (uint64_t)i * SLOT + tio_below(4096) };
    }
    cr_assert_eq(sl_io_read_extents(io, x, N, &e), SL_OK, "%s", e.msg);
    for (int i = 0; i < N; i++)
        cr_assert_eq(memcmp((char *)buf + x[i].buf_off, content + x[i].offset, x[i].len), 0, "extent %d", i);
    cr_assert_eq(sl_io_stats_get(io)->extents, N);
    sl_io_destroy(io);

    /* a queue deeper than io_uring allows is refused up front */
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 1u << 20 }, &io, &e), SL_E_ARG);
    cr_assert_not_null(strstr(e.msg, "1048576"), "%s", e.msg);
    sl_io_buffer_free(buf, len);
    free(content);
    tio_rmdir();
}

/* The writer is a child process, not a thread, so the test also runs under valgrind (which lets
 * one thread of a process run at a time and would stall a writer thread behind io_uring_enter). */
static int tio_write_slowly(int fd, const unsigned char *data, size_t n)
{
    struct timespec pause = { 0, 1000000 }; /* 1 ms */
    nanosleep(&(struct timespec){ 0, 20000000 }, NULL); /* the reader starts on an empty pipe */
    for (size_t done = 0; done < n;) {
        size_t k = 1 + (size_t)(done * 7919 % 3000);
        if (k > n - done)
            k = n - done;
        ssize_t r = write(fd, data + done, k);
        if (r < 0 && errno == EAGAIN) {
            nanosleep(&pause, NULL);
            continue;
        }
        if (r <= 0)
            return 1;
        done += (size_t)r;
        nanosleep(&pause, NULL);
    }
    return 0;
}

/* A pipe the writer trickles into: the kernel gives short counts, which must be resumed until
 * every byte has landed. */
Test(io_fault, short_reads_from_a_trickling_pipe_are_resumed)
{
    tio_seed("eagain");
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK), 0);
    size_t n = 50000 + tio_below(20000);
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)tio_rand();
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&(sl_io_opts){ .depth = 1 }, &io, &e), SL_OK, "%s", e.msg);
    int id;
    cr_assert_eq(sl_io_adopt_fd(io, p[0], "pipe", &id, &e), SL_OK, "%s", e.msg);
    size_t len = n;
    void *buf = sl_io_buffer_alloc(len);
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        int st = tio_write_slowly(p[1], data, n);
        free(data);
        sl_io_destroy(io);
        _exit(st);
    }
    close(p[1]); /* if the writer dies, the reader sees end of file instead of waiting forever */
    sl_io_extent x = { .file = id, .buf = 0, .offset = 0, .len = n };
    int r = sl_io_read_extents(io, &x, 1, &e);
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status), "writer crashed");
    cr_assert_eq(r, SL_OK, "%s", e.msg);
    cr_assert_eq(memcmp(buf, data, n), 0);
    const sl_io_stats *st = sl_io_stats_get(io);
    cr_assert_gt(st->short_reads, 0, "no short read was seen");
    cr_assert_eq(st->bytes, n);
    sl_io_destroy(io);
    sl_io_buffer_free(buf, len);
    free(data);
    close(p[0]);
}

/* Injected faults at the completion point: EAGAIN/EINTR streaks and short counts must be retried
 * to the right bytes; an EIO must come back naming the file and the failing offset. */
typedef struct tio_faults {
    uint64_t calls, again_left, eio_off;
    int eio_file;
} tio_faults;

static int tio_inject(void *ctx, int file, uint64_t off, unsigned len, int res)
{
    tio_faults *f = ctx;
    f->calls++;
    if (file == f->eio_file && off <= f->eio_off && f->eio_off < off + len)
        return -EIO;
    if (res <= 0)
        return res;
    if (f->again_left && tio_below(3) == 0) {
        f->again_left--;
        return tio_below(2) ? -EAGAIN : -EINTR;
    }
    if (res > 1 && tio_below(4) == 0)
        return 1 + (int)tio_below((uint64_t)res - 1); /* pretend fewer bytes arrived */
    return res;
}

Test(io_fault, injected_eagain_eintr_short_and_eio)
{
    tio_seed("inject");
    tio_mkdir();
    int fds0 = tio_count_fds();
    char path[2][512];
    size_t size = 1u << 20;
    unsigned char *content[2] = { tio_make_file("i0.bin", size, path[0], sizeof path[0]),
                                  tio_make_file("i1.bin", size, path[1], sizeof path[1]) };
    tio_faults fl = { .again_left = 200, .eio_file = -1 };
    sl_io_opts o = { .depth = 8, .piece = 16384, .fault = tio_inject, .fault_ctx = &fl };
    sl_io *io = NULL;
    sl_error e = { 0 };
    cr_assert_eq(sl_io_create(&o, &io, &e), SL_OK, "%s", e.msg);
    int id[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(sl_io_open_file(io, path[i], &id[i], &e), SL_OK, "%s", e.msg);
    size_t len = 2 * size;
    void *buf = sl_io_buffer_alloc(len);
    cr_assert_eq(sl_io_set_buffers(io, &buf, &len, 1, &e), SL_OK, "%s", e.msg);
    sl_io_extent x[2] = { { .file = id[0], .offset = 0, .len = size },
                          { .file = id[1], .offset = 0, .len = size, .buf_off = size } };
    cr_assert_eq(sl_io_read_extents(io, x, 2, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(memcmp(buf, content[0], size), 0);
    cr_assert_eq(memcmp((char *)buf + size, content[1], size), 0);
    const sl_io_stats *st = sl_io_stats_get(io);
    cr_assert_gt(st->retries, 0);
    cr_assert_gt(st->short_reads, 0);
    cr_assert_eq(st->extents, 2);
    fprintf(stderr, "[inject] %llu retries, %llu short reads, %llu completions\n",
            (unsigned long long)st->retries, (unsigned long long)st->short_reads, (unsigned long long)fl.calls);

    fl.again_left = 0;
    fl.eio_file = id[1];
    fl.eio_off = 4096 * (1 + tio_below(size / 4096 - 1));
    memset(buf, 0, len);
    cr_assert_eq(sl_io_read_extents(io, x, 2, &e), SL_E_IO);
    cr_assert_not_null(strstr(e.msg, path[1]), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, strerror(EIO)), "%s", e.msg);
    const char *at = strstr(e.msg, "at offset ");
    cr_assert_not_null(at, "%s", e.msg);
    unsigned long long where = strtoull(at + strlen("at offset "), NULL, 10);
    cr_assert(where <= fl.eio_off && fl.eio_off < where + 16384, "error at %llu, injected at %llu", where,
              (unsigned long long)fl.eio_off);
    sl_io_destroy(io);
    sl_io_buffer_free(buf, len);
    free(content[0]);
    free(content[1]);
    cr_assert_eq(tio_count_fds(), fds0, "file descriptors leaked");
    tio_rmdir();
}

/* ---- bench helpers ---- */

static size_t tio_file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    return (size_t)st.st_size;
}

Test(io_bench, test_file_is_created_regrown_when_ours_and_never_overwritten_otherwise)
{
    tio_mkdir();
    char path[512], foreign[512];
    snprintf(path, sizeof path, "%s/bench.dat", tio_dir);
    sl_error e = { 0 };
    int created = -1;
    cr_assert_eq(sl_io_bench_prepare_file(path, 0, &created, &e), SL_E_ARG, "missing file without a size");
    cr_assert_not_null(strstr(e.msg, "--size"), "%s", e.msg);
    cr_assert_eq(sl_io_bench_prepare_file(path, 100000, &created, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(created, 1);
    cr_assert_eq(tio_file_size(path), 100000);
    unsigned char *first = malloc(100000);
    FILE *f = fopen(path, "rb");
    cr_assert_eq(fread(first, 1, 100000, f), 100000);
    fclose(f);
    cr_assert_eq(memcmp(first, "sluice bench io", 15), 0, "no header");
    cr_assert_eq(sl_io_bench_prepare_file(path, 50000, &created, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(created, 0);
    cr_assert_eq(tio_file_size(path), 100000);
    cr_assert_eq(sl_io_bench_prepare_file(path, 300001, &created, &e), SL_OK, "%s", e.msg);
    cr_assert_eq(created, 1);
    cr_assert_eq(tio_file_size(path), 300001);
    unsigned char *again = malloc(100000);
    f = fopen(path, "rb");
    cr_assert_eq(fread(again, 1, 100000, f), 100000);
    fclose(f);
    cr_assert_eq(memcmp(first, again, 100000), 0, "growing rewrote existing bytes");

    snprintf(foreign, sizeof foreign, "%s/precious.dat", tio_dir);
    f = fopen(foreign, "wb");
    fputs("not sluice's", f);
    fclose(f);
    cr_assert_eq(sl_io_bench_prepare_file(foreign, 1 << 20, &created, &e), SL_E_ARG);
    cr_assert_not_null(strstr(e.msg, "refusing"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, foreign), "%s", e.msg);
    cr_assert_eq(tio_file_size(foreign), 12, "foreign file was touched");
    free(first);
    free(again);
    tio_rmdir();
}

Test(io_bench, points_report_rates_that_follow_from_bytes_and_time)
{
    tio_seed("bench_run");
    tio_mkdir();
    char path[512];
    snprintf(path, sizeof path, "%s/bench.dat", tio_dir);
    sl_error e = { 0 };
    int created;
    cr_assert_eq(sl_io_bench_prepare_file(path, 8u << 20, &created, &e), SL_OK, "%s", e.msg);
    for (int pat = SL_IO_BENCH_SEQ; pat <= SL_IO_BENCH_CHUNKS; pat++) {
        sl_io_bench_opts o = { .path = path, .pattern = pat, .bs = pat == SL_IO_BENCH_CHUNKS ? 12288 : 65536,
                               .qd = 1 + (unsigned)tio_below(8), .threads = 1 + (unsigned)tio_below(2),
                               .seconds = 0.05, .piece = 16384, .seed = tio_rand() };
        sl_io_bench_result r;
        cr_assert_eq(sl_io_bench_run(&o, &r, &e), SL_OK, "%s: %s", sl_io_bench_pattern_name(pat), e.msg);
        cr_assert_gt(r.requests, 0);
        cr_assert_eq(r.bytes, r.requests * o.bs, "%s: bytes are not whole requests", sl_io_bench_pattern_name(pat));
        cr_assert_geq(r.seconds, o.seconds);
        cr_assert_float_eq(r.gbps, (double)r.bytes / r.seconds / 1e9, 1e-12);
        cr_assert_float_eq(r.iops, (double)r.requests / r.seconds, 1e-9);
        cr_assert(r.lat_p50_us > 0 && r.lat_p50_us <= r.lat_p99_us && r.lat_p99_us <= r.lat_p999_us &&
                  r.lat_p999_us <= r.lat_max_us * 1.04, "latencies out of order");
        cr_assert(r.busy > 0 && r.busy <= 1.0 + 1e-9, "busy %f", r.busy);
    }
    sl_io_bench_opts big = { .path = path, .bs = 16u << 20, .qd = 1, .threads = 1, .seconds = 0.01 };
    sl_io_bench_result r;
    cr_assert_eq(sl_io_bench_run(&big, &r, &e), SL_E_ARG, "request larger than the file accepted");
    cr_assert_not_null(strstr(e.msg, path), "%s", e.msg);
    big.bs = 4096;
    big.gpu = 1;
    int rc = sl_io_bench_run(&big, &r, &e);
#ifdef SL_HAVE_CUDA
    cr_assert(rc == SL_OK || rc == SL_E_DEVICE, "--gpu: %d %s", rc, e.msg);
#else
    cr_assert_eq(rc, SL_E_UNSUPPORTED);
    cr_assert_not_null(strstr(e.msg, "without CUDA"), "%s", e.msg);
#endif
    tio_rmdir();
}

Test(io_bench, svg_draws_one_line_per_series)
{
    tio_mkdir();
    char path[512];
    snprintf(path, sizeof path, "%s/plot.svg", tio_dir);
    sl_io_bench_result r[6];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 6; i++) {
        r[i].o.path = "/x/<odd>&name";
        r[i].o.pattern = i < 3 ? SL_IO_BENCH_SEQ : SL_IO_BENCH_CHUNKS;
        r[i].o.bs = i < 3 ? 1u << 20 : 25001984;
        r[i].o.qd = 1u << (2 * (i % 3));
        r[i].o.threads = 1;
        r[i].gbps = 0.5 + i;
    }
    sl_error e = { 0 };
    cr_assert_eq(sl_io_bench_plot_svg(path, r, 6, &e), SL_OK, "%s", e.msg);
    FILE *f = fopen(path, "r");
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    fclose(f);
    cr_assert_gt(n, 0);
    int lines = 0, circles = 0;
    for (const char *p = s; (p = strstr(p, "<polyline")); p++)
        lines++;
    for (const char *p = s; (p = strstr(p, "<circle")); p++)
        circles++;
    cr_assert_eq(lines, 2);
    cr_assert_eq(circles, 6);
    cr_assert_not_null(strstr(s, "&lt;odd&gt;&amp;name"), "file name not escaped");
    cr_assert_not_null(strstr(s, "</svg>"));
    cr_assert_eq(sl_io_bench_plot_svg("/nonexistent-dir/p.svg", r, 6, &e), SL_E_IO);
    free(s);
    tio_rmdir();
}
