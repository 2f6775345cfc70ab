/* `sluice bench io`: how fast this box reads weights. Parses options, runs io/'s workloads point by
 * point and prints a table like fio's summary, JSON lines (--json) or an SVG chart (--plot). */
#include "io/io.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sl_cmd_bench_io(int argc, char **argv);

#define MAX_POINTS 64
#define EXPERT_BYTES UINT64_C(25000000) /* one 4-bit routed expert of DeepSeek-V3, ~24.8 MB (DESIGN.md) */

static const char usage[] =
    "usage: sluice bench io PATH [options]\n"
    "\n"
    "Reads PATH through sluice's io_uring reader and reports GB/s, IOPS and latency, like fio.\n"
    "PATH is a file, a block device or a .sluice model. If PATH does not exist and --size is given,\n"
    "a test file of that size is created (and kept for the next run); a file sluice did not create\n"
    "is never written.\n"
    "\n"
    "options:\n"
    "  --mode seq|rand|chunks  seq: sequential reads; rand: reads at random bs-aligned offsets;\n"
    "                          chunks: expert-sized reads at random 4096-aligned offsets, the\n"
    "                          engine's pattern (default seq). Replaying a .sluice file's real chunk\n"
    "                          table arrives with the container; until then .sluice files are read\n"
    "                          like any file.\n"
    "  --bs SIZE[,SIZE..]      bytes per request (default 1M; chunks: 25MB, one 4-bit expert,\n"
    "                          rounded up to 4096). A list runs each size.\n"
    "  --qd N[,N..]            requests in flight per thread, like fio's iodepth (default 32).\n"
    "                          A list (1,4,16,64) sweeps queue depths.\n"
    "  --threads N             reader threads, one io_uring ring each (default 1)\n"
    "  --size SIZE             use the first SIZE bytes of PATH; create PATH this large if missing\n"
    "  --direct | --buffered   force O_DIRECT (fail if refused) or the page cache; default O_DIRECT\n"
    "                          where the filesystem allows it, else the page cache (said once)\n"
    "  --time SECONDS          run time per point (default 3)\n"
    "  --piece SIZE            largest single read; bigger requests are split (default 1M)\n"
    "  --seed N                random offsets (default fixed, so runs repeat)\n"
    "  --json                  one JSON object per point on stdout, nothing else\n"
    "  --plot FILE.svg         chart of GB/s against queue depth\n"
    "  --gpu                   read into pinned buffers and copy each request to VRAM on a copy\n"
    "                          stream; reports disk, PCIe and end-to-end GB/s (CUDA builds)\n"
    "\n"
    "SIZE: digits with an optional unit, as in dd: K M G T (or KiB MiB GiB TiB) are powers of 1024,\n"
    "KB MB GB TB are powers of 1000, B or no unit is bytes. 4k = 4096, 1M = 1MiB = 1048576,\n"
    "25MB = 25000000, 2G = 2147483648.\n"
    "GB/s is 10^9 bytes per second. Latency is per request, from its first read queued to its last\n"
    "byte landed.\n";

typedef struct args {
    const char *path, *plot;
    int pattern, mode, json, gpu;
    uint64_t bs[MAX_POINTS], size, piece, seed;
    unsigned nbs, qd[MAX_POINTS], nqd, threads;
    double seconds;
} args;

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice: bench io: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* "1,4,16" into out[]; each item through sl_parse_size. */
static int parse_list(const char *opt, const char *v, uint64_t *out, unsigned *n, uint64_t lo, uint64_t hi)
{
    char buf[512];
    if (strlen(v) >= sizeof buf)
        return bad("%s: list too long: %s", opt, v);
    strcpy(buf, v);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        sl_error e = { 0 };
        uint64_t x;
        if (sl_parse_size(tok, &x, &e))
            return bad("%s: %s", opt, e.msg);
        if (x < lo || x > hi) {
            return bad("%s: '%s' is outside [%llu, %llu]", opt, tok, (unsigned long long)lo, (unsigned long long)hi);
        }
        if (*n == MAX_POINTS)
            return bad("%s: more than 64 values in %s", opt, v);
        out[(*n)++] = x;
    }
    if (*n == 0)
        return bad("%s: empty list '%s'", opt, v);
    return 0;
}

static int parse_args(int argc, char **argv, args *a)
{
    *a = (args){ .pattern = SL_IO_BENCH_SEQ, .mode = SL_IO_AUTO, .threads = 1, .seconds = 3.0 };
    int have_bs = 0;
    uint64_t tmp[MAX_POINTS];
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            fputs(usage, stdout);
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (a->path)
                return bad("unexpected argument '%s' (PATH is already '%s')", arg, a->path);
            a->path = arg;
            continue;
        }
        /* flags without a value */
        if (!strcmp(arg, "--direct") || !strcmp(arg, "--buffered")) {
            int m = arg[2] == 'd' ? SL_IO_DIRECT : SL_IO_BUFFERED;
            if (a->mode != SL_IO_AUTO && a->mode != m)
                return bad("--direct and --buffered exclude each other");
            a->mode = m;
            continue;
        }
        if (!strcmp(arg, "--json")) {
            a->json = 1;
            continue;
        }
        if (!strcmp(arg, "--gpu")) {
            a->gpu = 1;
            continue;
        }
        /* options with a value: --opt V or --opt=V */
        char name[32];
        const char *v = strchr(arg, '=');
        size_t nl = v ? (size_t)(v - arg) : strlen(arg);
        if (nl >= sizeof name)
            return bad("unknown option '%s'", arg);
        memcpy(name, arg, nl);
        name[nl] = '\0';
        if (v)
            v++;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return bad("%s needs a value", name);
        sl_error e = { 0 };
        if (!strcmp(name, "--mode")) {
            if (!strcmp(v, "seq"))
                a->pattern = SL_IO_BENCH_SEQ;
            else if (!strcmp(v, "rand"))
                a->pattern = SL_IO_BENCH_RAND;
            else if (!strcmp(v, "chunks"))
                a->pattern = SL_IO_BENCH_CHUNKS;
            else
                return bad("--mode: '%s' is not seq, rand or chunks", v);
        } else if (!strcmp(name, "--bs")) {
            if (parse_list("--bs", v, a->bs, &a->nbs, 1, (uint64_t)1 << 30))
                return 2;
            have_bs = 1;
        } else if (!strcmp(name, "--qd")) {
            if (parse_list("--qd", v, tmp, &a->nqd, 1, 4096))
                return 2;
            for (unsigned k = 0; k < a->nqd; k++)
                a->qd[k] = (unsigned)tmp[k];
        } else if (!strcmp(name, "--threads")) {
            unsigned n;
            if (parse_list("--threads", v, tmp, &n, 1, 256))
                return 2;
            if (n != 1)
                return bad("--threads: one number, got '%s'", v);
            a->threads = (unsigned)tmp[0];
        } else if (!strcmp(name, "--size")) {
            if (sl_parse_size(v, &a->size, &e))
                return bad("--size: %s", e.msg);
            if (a->size == 0)
                return bad("--size: must be positive");
        } else if (!strcmp(name, "--piece")) {
            if (sl_parse_size(v, &a->piece, &e))
                return bad("--piece: %s", e.msg);
            if (a->piece < 4096 || a->piece > ((uint64_t)256 << 20))
                return bad("--piece: '%s' is outside [4K, 256M]", v);
        } else if (!strcmp(name, "--seed")) {
            if (sl_parse_size(v, &a->seed, &e))
                return bad("--seed: %s", e.msg);
        } else if (!strcmp(name, "--time")) {
            char *end;
            a->seconds = strtod(v, &end);
            if (end == v || *end || !(a->seconds > 0) || a->seconds > 3600)
                return bad("--time: '%s' is not a number of seconds in (0, 3600]", v);
        } else if (!strcmp(name, "--plot")) {
            a->plot = v;
        } else {
            return bad("unknown option '%s' (see sluice bench io --help)", name);
        }
    }
    if (!a->path)
        return bad("missing PATH (see sluice bench io --help)");
    if (!have_bs) {
        a->nbs = 1;
        a->bs[0] = a->pattern == SL_IO_BENCH_CHUNKS ? EXPERT_BYTES : (uint64_t)1 << 20;
    }
    if (a->pattern == SL_IO_BENCH_CHUNKS) /* stored chunks are padded to 4096 (DESIGN.md) */
        for (unsigned k = 0; k < a->nbs; k++)
            a->bs[k] = (a->bs[k] + 4095) / 4096 * 4096;
    if (a->nqd == 0) {
        a->nqd = 1;
        a->qd[0] = 32;
    }
    if ((uint64_t)a->nbs * a->nqd > MAX_POINTS)
        return bad("too many points (--bs x --qd over 64)");
    return 0;
}

static void human(uint64_t b, char *s, size_t n)
{
    if (b >= ((uint64_t)1 << 30) && b % ((uint64_t)1 << 30) == 0)
        snprintf(s, n, "%lluGiB", (unsigned long long)(b >> 30));
    else if (b >= ((uint64_t)1 << 20) && b % ((uint64_t)1 << 20) == 0)
        snprintf(s, n, "%lluMiB", (unsigned long long)(b >> 20));
    else if (b >= 1024 && b % 1024 == 0 && b < ((uint64_t)1 << 20))
        snprintf(s, n, "%lluKiB", (unsigned long long)(b >> 10));
    else if (b >= 1000000)
        snprintf(s, n, "%.2fMB", (double)b / 1e6);
    else
        snprintf(s, n, "%lluB", (unsigned long long)b);
}

static void print_json(const sl_io_bench_result *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    cJSON_AddStringToObject(o, "mode", sl_io_bench_pattern_name(r->o.pattern));
    cJSON_AddNumberToObject(o, "bs", (double)r->o.bs);
    cJSON_AddNumberToObject(o, "qd", r->o.qd);
    cJSON_AddNumberToObject(o, "threads", r->o.threads);
    cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
    cJSON_AddNumberToObject(o, "requests", (double)r->requests);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "gbps", r->gbps);
    cJSON_AddNumberToObject(o, "iops", r->iops);
    cJSON_AddNumberToObject(o, "lat_p50_us", r->lat_p50_us);
    cJSON_AddNumberToObject(o, "lat_p99_us", r->lat_p99_us);
    cJSON_AddNumberToObject(o, "lat_p999_us", r->lat_p999_us);
    cJSON_AddNumberToObject(o, "lat_mean_us", r->lat_mean_us);
    cJSON_AddNumberToObject(o, "lat_max_us", r->lat_max_us);
    cJSON_AddNumberToObject(o, "busy", r->busy);
    cJSON_AddBoolToObject(o, "direct", r->direct);
    cJSON_AddBoolToObject(o, "fixed_buffers", r->fixed_bufs);
    cJSON_AddNumberToObject(o, "short_reads", (double)r->short_reads);
    cJSON_AddNumberToObject(o, "retries", (double)r->retries);
    if (r->o.gpu) {
        cJSON_AddNumberToObject(o, "disk_gbps", r->gbps);
        cJSON_AddNumberToObject(o, "pcie_gbps", r->pcie_gbps);
        cJSON_AddNumberToObject(o, "e2e_gbps", r->e2e_gbps);
    }
    cJSON_AddStringToObject(o, "path", r->o.path);
    char *s = cJSON_PrintUnformatted(o);
    if (s) {
        puts(s);
        fflush(stdout);
        cJSON_free(s);
    }
    cJSON_Delete(o);
}

static void print_row(const sl_io_bench_result *r)
{
    char bs[32];
    human(r->o.bs, bs, sizeof bs);
    printf("%-7s %9s %5u %3u %8.3f %10.1f %9.1f %9.1f %9.1f %4.0f%%", sl_io_bench_pattern_name(r->o.pattern), bs,
           r->o.qd, r->o.threads, r->gbps, r->iops, r->lat_p50_us, r->lat_p99_us, r->lat_p999_us, 100 * r->busy);
    if (r->o.gpu)
        printf(" %9.3f %9.3f", r->pcie_gbps, r->e2e_gbps);
    putchar('\n');
    fflush(stdout);
}

int sl_cmd_bench_io(int argc, char **argv)
{
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
#ifndef SL_HAVE_CUDA
    if (a.gpu) {
        fputs("sluice: bench io: --gpu: this sluice was built without CUDA (rebuild where nvcc is found)\n", stderr);
        return 2;
    }
#endif
    sl_error e = { 0 };
    int created = 0;
    if (sl_io_bench_prepare_file(a.path, a.size, &created, &e)) {
        fprintf(stderr, "sluice: bench io: %s\n", e.msg);
        return 1;
    }
    FILE *info = a.json ? stderr : stdout;
    if (created)
        fprintf(stderr, "sluice: created test file %s (%llu bytes); it is kept for later runs\n", a.path,
                (unsigned long long)a.size);
    size_t plen = strlen(a.path);
    if (plen > 7 && !strcasecmp(a.path + plen - 7, ".sluice") && a.pattern == SL_IO_BENCH_CHUNKS)
        fprintf(stderr, "sluice: note: chunk-table replay arrives with the .sluice container; reading "
                        "expert-sized chunks at random aligned offsets of %s instead\n", a.path);
    if (a.mode == SL_IO_BUFFERED)
        fprintf(stderr, "sluice: note: --buffered reads may be served from the page cache (RAM), not the drive\n");

    sl_io_bench_result *res = calloc(MAX_POINTS, sizeof *res);
    if (!res) {
        fputs("sluice: bench io: out of memory\n", stderr);
        return 1;
    }
    size_t n = 0;
    int noted = 0;
    for (unsigned b = 0; b < a.nbs && !rc; b++)
        for (unsigned q = 0; q < a.nqd && !rc; q++) {
            sl_io_bench_opts o = { .path = a.path, .pattern = a.pattern, .bs = a.bs[b], .qd = a.qd[q],
                                   .threads = a.threads, .region = a.size, .mode = a.mode, .seconds = a.seconds,
                                   .piece = a.piece, .seed = a.seed, .gpu = a.gpu };
            sl_io_bench_result *r = &res[n];
            if (sl_io_bench_run(&o, r, &e)) {
                fprintf(stderr, "sluice: bench io: %s\n", e.msg);
                rc = 1;
                break;
            }
            n++;
            if (!noted) { /* once: what the reads went through */
                noted = 1;
                if (r->note[0])
                    fprintf(stderr, "sluice: note: %s\n", r->note);
                if (!a.json) {
                    char piece[32];
                    human(a.piece ? a.piece : (uint64_t)1 << 20, piece, sizeof piece);
                    fprintf(info, "sluice bench io: %s, %s, %s buffers, pieces of at most %s, %.1f s a point\n",
                            a.path, r->direct ? "O_DIRECT" : "page cache", r->fixed_bufs ? "registered" : "plain",
                            piece, a.seconds);
                    printf("%-7s %9s %5s %3s %8s %10s %9s %9s %9s %5s", "mode", "bs", "qd", "thr", "GB/s", "IOPS",
                           "p50 us", "p99 us", "p99.9 us", "busy");
                    if (a.gpu)
                        printf(" %9s %9s", "PCIe GB/s", "e2e GB/s");
                    putchar('\n');
                }
            }
            if (a.json)
                print_json(r);
            else
                print_row(r);
        }
    if (n && a.plot) {
        if (sl_io_bench_plot_svg(a.plot, res, n, &e)) {
            fprintf(stderr, "sluice: bench io: %s\n", e.msg);
            rc = 1;
        } else {
            fprintf(info, "wrote %s\n", a.plot);
        }
    }
    if (n && !a.json) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (res[i].gbps > res[best].gbps)
                best = i;
        char bs[32];
        human(res[best].o.bs, bs, sizeof bs);
        printf("best: %.3f GB/s disk (%s %s qd %u x%u)", res[best].gbps, sl_io_bench_pattern_name(res[best].o.pattern),
               bs, res[best].o.qd, res[best].o.threads);
        if (a.gpu)
            printf(", %.3f GB/s to VRAM", res[best].e2e_gbps);
        putchar('\n');
    }
    free(res);
    return rc;
}
