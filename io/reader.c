/* The reader's setup: ring, file table, destination buffers. The read loop is in io/run.c. */
#include "io/reader_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 32768u
#define MAX_BUFS 16384u
#define MAX_PIECE ((uint64_t)256 << 20)
#define MAX_FIXED_BUF ((size_t)1 << 30) /* io_uring refuses larger registered buffers */

uint64_t sl_io_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sl_io_note_set(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static unsigned pow2_at_least(unsigned v)
{
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static int ring_init(sl_io *io, sl_error *e)
{
    struct io_uring_params p;
    /* COOP_TASKRUN: completions are posted when we enter the kernel anyway, so skip the IPI. */
    unsigned flag_sets[2] = { IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN, IORING_SETUP_CQSIZE };
    int r = -EINVAL;
    for (int i = 0; i < 2; i++) {
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i];
        p.cq_entries = pow2_at_least(io->o.depth);
        r = io_uring_queue_init_params(io->o.sq_entries, &io->ring, &p);
        if (r != -EINVAL)
            break;
    }
    if (r < 0)
        return sl_errorf(e, r == -ENOMEM ? SL_E_NOMEM : SL_E_IO,
                         "io_uring_setup (%u entries, %u completions) failed: %s%s", io->o.sq_entries,
                         pow2_at_least(io->o.depth), strerror(-r),
                         r == -EPERM || r == -ENOSYS ? " (io_uring disabled? see /proc/sys/kernel/io_uring_disabled)" : "");
    io->ring_ok = 1;
    return SL_OK;
}

int sl_io_create(const sl_io_opts *opts, sl_io **out, sl_error *e)
{
    sl_io_opts o = opts ? *opts : (sl_io_opts){ 0 };
    if (o.depth == 0)
        o.depth = 32;
    if (o.depth > MAX_DEPTH)
        return sl_errorf(e, SL_E_ARG, "queue depth %u is over the io_uring limit of %u", o.depth, MAX_DEPTH);
    if (o.extents == 0)
        o.extents = o.depth;
    if (o.extents > MAX_DEPTH)
        return sl_errorf(e, SL_E_ARG, "extents in flight %u is over %u", o.extents, MAX_DEPTH);
    if (o.sq_entries == 0 || o.sq_entries > o.depth) /* more entries than reads in flight is waste */
        o.sq_entries = o.depth < 4096 ? o.depth : 4096;
    if (o.piece == 0)
        o.piece = (uint64_t)1 << 20;
    if (o.piece > MAX_PIECE)
        return sl_errorf(e, SL_E_ARG, "piece size %llu is over 256 MiB", (unsigned long long)o.piece);
    o.piece &= ~(uint64_t)(SL_IO_DEFAULT_ALIGN - 1);
    if (o.piece == 0)
        o.piece = SL_IO_DEFAULT_ALIGN;
    if (o.mode < SL_IO_AUTO || o.mode > SL_IO_BUFFERED)
        return sl_errorf(e, SL_E_ARG, "unknown read mode %d", o.mode);
    if (o.max_files == 0)
        o.max_files = 16;
    if (o.max_files > 4096)
        return sl_errorf(e, SL_E_ARG, "file table of %u is over 4096", o.max_files);

    sl_io *io = calloc(1, sizeof *io);
    if (!io)
        return sl_errorf(e, SL_E_NOMEM, "io reader: out of memory");
    io->o = o;
    io->files = calloc(o.max_files, sizeof *io->files);
    io->pieces = calloc(o.depth, sizeof *io->pieces);
    io->free_pieces = calloc(o.depth, sizeof *io->free_pieces);
    io->retry = calloc(o.depth, sizeof *io->retry);
    io->exts = calloc(o.extents, sizeof *io->exts);
    io->free_exts = calloc(o.extents, sizeof *io->free_exts);
    if (!io->files || !io->pieces || !io->free_pieces || !io->retry || !io->exts || !io->free_exts) {
        sl_io_destroy(io);
        return sl_errorf(e, SL_E_NOMEM, "io reader: out of memory for depth %u", o.depth);
    }
    for (unsigned i = 0; i < o.depth; i++)
        io->free_pieces[i] = o.depth - 1 - i;
    io->nfree_pieces = o.depth;
    for (unsigned i = 0; i < o.extents; i++)
        io->free_exts[i] = o.extents - 1 - i;
    io->nfree_exts = o.extents;

    int r = ring_init(io, e);
    if (r) {
        sl_io_destroy(io);
        return r;
    }
    /* Registered files save an fget/fput per read. Old kernels lack sparse tables: plain fds. */
    io->files_registered = io_uring_register_files_sparse(&io->ring, 2 * o.max_files) == 0;
    *out = io;
    return SL_OK;
}

void sl_io_destroy(sl_io *io)
{
    if (!io)
        return;
    if (io->ring_ok)
        io_uring_queue_exit(&io->ring); /* also drops registered files and buffers */
    for (unsigned i = 0; io->files && i < io->nfiles; i++) {
        if (io->files[i].fd_direct >= 0)
            close(io->files[i].fd_direct);
        if (io->files[i].fd_buf >= 0)
            close(io->files[i].fd_buf);
    }
    free(io->files);
    free(io->bufs);
    free(io->pieces);
    free(io->free_pieces);
    free(io->retry);
    free(io->exts);
    free(io->free_exts);
    free(io);
}

static void set_name(io_file *f, const char *name)
{
    snprintf(f->name, sizeof f->name, "%s", name ? name : "(unnamed)");
}

/* O_DIRECT alignment the filesystem asks for (statx, Linux 6.1+); 4096 when it does not say. */
static unsigned dio_align(int fd)
{
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
        sx.stx_dio_offset_align && sx.stx_dio_mem_align) {
        unsigned a = sx.stx_dio_offset_align > sx.stx_dio_mem_align ? sx.stx_dio_offset_align
                                                                    : sx.stx_dio_mem_align;
        if ((a & (a - 1)) == 0 && a <= SL_IO_DEFAULT_ALIGN)
            return a;
    }
#else
    (void)fd;
#endif
    return SL_IO_DEFAULT_ALIGN;
}

static int fd_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        uint64_t b = 0;
        if (ioctl(fd, BLKGETSIZE64, &b) != 0)
            return -errno;
        *size = b;
    } else {
        *size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    }
    return 0;
}

/* Put both descriptors of file `id` into the registered table. */
static int register_file(sl_io *io, int id, sl_error *e)
{
    io_file *f = &io->files[id];
    f->slot_direct = f->slot_buf = -1;
    if (!io->files_registered)
        return SL_OK;
    int fds[2] = { f->fd_direct, f->fd_buf };
    int r = io_uring_register_files_update(&io->ring, 2u * (unsigned)id, fds, 2);
    if (r < 0)
        return sl_errorf(e, SL_E_IO, "%s: registering with io_uring failed: %s", f->name, strerror(-r));
    if (f->fd_direct >= 0)
        f->slot_direct = 2 * id;
    if (f->fd_buf >= 0)
        f->slot_buf = 2 * id + 1;
    return SL_OK;
}

static int new_file(sl_io *io, const char *name, int *id, sl_error *e)
{
    if (io->nfiles >= io->o.max_files)
        return sl_errorf(e, SL_E_ARG, "%s: file table full (%u files; raise max_files)", name, io->o.max_files);
    *id = (int)io->nfiles;
    io_file *f = &io->files[*id];
    memset(f, 0, sizeof *f);
    f->fd_direct = f->fd_buf = f->slot_direct = f->slot_buf = -1;
    f->align = SL_IO_DEFAULT_ALIGN;
    set_name(f, name);
    return SL_OK;
}

static void drop_file(io_file *f)
{
    if (f->fd_direct >= 0)
        close(f->fd_direct);
    if (f->fd_buf >= 0)
        close(f->fd_buf);
    f->fd_direct = f->fd_buf = -1;
}

int sl_io_open_file(sl_io *io, const char *path, int *id, sl_error *e)
{
    if (!io || !path || !id)
        return sl_errorf(e, SL_E_ARG, "sl_io_open_file: NULL argument");
    int r = new_file(io, path, id, e);
    if (r)
        return r;
    io_file *f = &io->files[*id];
    f->fd_buf = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd_buf < 0)
        return sl_errorf(e, SL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(f->fd_buf, &st) != 0) {
        int err = errno;
        drop_file(f);
        return sl_errorf(e, SL_E_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        drop_file(f);
        return sl_errorf(e, SL_E_ARG, "%s: not a regular file or block device", path);
    }
    r = fd_size(f->fd_buf, &f->size);
    if (r) {
        drop_file(f);
        return sl_errorf(e, SL_E_IO, "%s: cannot read its size: %s", path, strerror(-r));
    }
    if (io->o.mode != SL_IO_BUFFERED) {
        f->fd_direct = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (f->fd_direct < 0) {
            int err = errno;
            if (io->o.mode == SL_IO_DIRECT || (err != EINVAL && err != EOPNOTSUPP)) {
                drop_file(f);
                return sl_errorf(e, err == EINVAL || err == EOPNOTSUPP ? SL_E_UNSUPPORTED : SL_E_IO,
                                 "%s: cannot open with O_DIRECT: %s", path, strerror(err));
            }
            sl_io_note_set(f->note, sizeof f->note,
                     "%s: the filesystem refused O_DIRECT (%s); reading through the page cache", path,
                     strerror(err));
        } else {
            f->direct = 1;
            f->align = dio_align(f->fd_direct);
        }
    }
    r = register_file(io, *id, e);
    if (r) {
        drop_file(f);
        return r;
    }
    io->nfiles++;
    return SL_OK;
}

int sl_io_adopt_fd(sl_io *io, int fd, const char *name, int *id, sl_error *e)
{
    if (!io || !id)
        return sl_errorf(e, SL_E_ARG, "sl_io_adopt_fd: NULL argument");
    char label[64];
    if (!name) {
        snprintf(label, sizeof label, "fd %d", fd);
        name = label;
    }
    int r = new_file(io, name, id, e);
    if (r)
        return r;
    io_file *f = &io->files[*id];
    int d = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return sl_errorf(e, SL_E_IO, "%s: file descriptor %d is closed or invalid: %s", f->name, fd,
                         strerror(fd < 0 ? EBADF : errno));
    int fl = fcntl(d, F_GETFL);
    if (fl < 0) {
        int err = errno;
        close(d);
        return sl_errorf(e, SL_E_IO, "%s: fcntl failed: %s", f->name, strerror(err));
    }
    if (fl & O_DIRECT) {
        f->fd_direct = d;
        f->direct = 1;
        f->align = dio_align(d);
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", d);
        f->fd_buf = open(proc, O_RDONLY | O_CLOEXEC); /* -1: unaligned reads are refused later */
    } else {
        f->fd_buf = d;
    }
    if (fd_size(d, &f->size) != 0)
        f->size = 0;
    r = register_file(io, *id, e);
    if (r) {
        drop_file(f);
        return r;
    }
    io->nfiles++;
    return SL_OK;
}

int sl_io_file_info_get(const sl_io *io, int id, sl_io_file_info *out)
{
    if (!io || !out || id < 0 || (unsigned)id >= io->nfiles)
        return SL_E_ARG;
    const io_file *f = &io->files[id];
    out->name = f->name;
    out->size = f->size;
    out->direct = f->direct;
    out->align = f->align;
    out->note = f->note[0] ? f->note : NULL;
    return SL_OK;
}

int sl_io_set_buffers(sl_io *io, void *const *bufs, const size_t *lens, unsigned n, sl_error *e)
{
    if (!io || !bufs || !lens || n == 0 || n > MAX_BUFS)
        return sl_errorf(e, SL_E_ARG, "buffer table: want 1..%u buffers, got %u", MAX_BUFS, n);
    for (unsigned i = 0; i < n; i++)
        if (!bufs[i] || lens[i] == 0)
            return sl_errorf(e, SL_E_ARG, "buffer %u is NULL or empty", i);
    io_buf *t = calloc(n, sizeof *t);
    struct iovec *iov = calloc(n, sizeof *iov);
    if (!t || !iov) {
        free(t);
        free(iov);
        return sl_errorf(e, SL_E_NOMEM, "buffer table of %u: out of memory", n);
    }
    if (io->bufs_fixed)
        io_uring_unregister_buffers(&io->ring);
    io->bufs_fixed = 0;
    io->bufs_note[0] = '\0';
    size_t largest = 0;
    for (unsigned i = 0; i < n; i++) {
        t[i].p = bufs[i];
        t[i].len = lens[i];
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = lens[i];
        if (lens[i] > largest)
            largest = lens[i];
    }
    if (largest > MAX_FIXED_BUF) {
        sl_io_note_set(io->bufs_note, sizeof io->bufs_note,
                 "buffers not registered: one is over 1 GiB, io_uring's limit; reads pin pages each time");
    } else {
        int r = io_uring_register_buffers(&io->ring, iov, n);
        if (r == 0)
            io->bufs_fixed = 1;
        else
            sl_io_note_set(io->bufs_note, sizeof io->bufs_note,
                     "buffers not registered (%s%s); reads pin pages each time", strerror(-r),
                     r == -ENOMEM || r == -EPERM ? ": locked-memory limit too low? see ulimit -l" : "");
    }
    free(iov);
    free(io->bufs);
    io->bufs = t;
    io->nbufs = n;
    return SL_OK;
}

int sl_io_buffers_fixed(const sl_io *io) { return io && io->bufs_fixed; }

const char *sl_io_buffers_note(const sl_io *io) { return io && io->bufs_note[0] ? io->bufs_note : NULL; }

const sl_io_stats *sl_io_stats_get(const sl_io *io) { return &io->st; }

void sl_io_stats_reset(sl_io *io) { memset(&io->st, 0, sizeof io->st); }
