/* The read loop: carve extents into aligned pieces, keep `depth` of them in the kernel, reap
 * completions in batches, resubmit short reads and EAGAIN, report the first error after draining.
 *
 * One iteration: (1) queue retries, then new pieces, into the submission ring; (2) one
 * io_uring_submit_and_wait(1) submits the batch and sleeps until something completes; (3) every
 * completion already posted is handled without another syscall. */
#include "io/reader_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define AGAIN_GIVE_UP_NS (UINT64_C(10) * 1000000000u) /* EAGAIN streak on one read */
#define BACKOFF_MIN_NS 20000u
#define BACKOFF_MAX_NS 5000000u

typedef struct run_state {
    const sl_io_source *src;
    sl_error *e;
    int failed;          /* first error code, 0 if none */
    int src_done;
    int have_cur;        /* an extent is being carved */
    unsigned cur_ext;
    uint64_t cur_off, cur_left;
    char *cur_dst;
    uint64_t seq;        /* extents taken from the source */
    unsigned inflight;   /* pieces in the submission ring or the kernel */
    uint64_t busy_t0;
    int again;           /* an EAGAIN was reaped since the last successful read */
    uint64_t backoff_ns;
} run_state;

static void fail(run_state *rs, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(run_state *rs, int code, const char *fmt, ...)
{
    if (rs->failed)
        return;
    rs->failed = code;
    if (rs->e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rs->e->msg, sizeof rs->e->msg, fmt, ap);
        va_end(ap);
        rs->e->code = code;
    }
}

static void retry_push(sl_io *io, unsigned pi)
{
    io->retry[(io->retry_head + io->nretry) % io->o.depth] = pi;
    io->nretry++;
}

static unsigned retry_pop(sl_io *io)
{
    unsigned pi = io->retry[io->retry_head];
    io->retry_head = (io->retry_head + 1) % io->o.depth;
    io->nretry--;
    return pi;
}

static int aligned(const io_piece *p, unsigned a)
{
    return ((p->off | p->len | (uint64_t)(uintptr_t)p->dst) & (a - 1)) == 0;
}

/* Queue piece `pi` into the submission ring. -EBUSY: the ring is full and the kernel takes no
 * more right now; wait for completions and try again. */
static int queue_piece(sl_io *io, run_state *rs, unsigned pi, uint64_t now)
{
    io_piece *p = &io->pieces[pi];
    const io_file *f = &io->files[p->file];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    if (!sqe) { /* ring smaller than depth and full: hand this batch to the kernel */
        int r = io_uring_submit(&io->ring);
        io->st.enters++;
        if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR)
            return r;
        sqe = io_uring_get_sqe(&io->ring);
        if (!sqe)
            return -EBUSY;
    }
    int slot = p->on_direct ? f->slot_direct : f->slot_buf;
    int fd = slot >= 0 ? slot : (p->on_direct ? f->fd_direct : f->fd_buf);
    if (io->bufs_fixed)
        io_uring_prep_read_fixed(sqe, fd, p->dst, (unsigned)p->len, p->off, (int)p->buf);
    else
        io_uring_prep_read(sqe, fd, p->dst, (unsigned)p->len, p->off);
    if (slot >= 0)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, pi);
    if (rs->inflight++ == 0)
        rs->busy_t0 = now;
    return 0;
}

/* Cut the next piece off the current extent into slot `pi`. O_DIRECT takes the aligned middle;
 * an unaligned head or tail, or memory not congruent with the file offset, goes through the page
 * cache (no bounce buffer, no copy). */
static int carve(sl_io *io, run_state *rs, unsigned pi, uint64_t now)
{
    io_ext *x = &io->exts[rs->cur_ext];
    const io_file *f = &io->files[x->x.file];
    io_piece *p = &io->pieces[pi];
    uint64_t left = rs->cur_left, n = left < io->o.piece ? left : io->o.piece;
    int direct = 0;
    if (f->direct) {
        uint64_t a = f->align;
        if ((((uint64_t)(uintptr_t)rs->cur_dst - rs->cur_off) & (a - 1)) == 0) {
            uint64_t head = (a - (rs->cur_off & (a - 1))) & (a - 1);
            if (head) {
                n = head < left ? head : left;
            } else if (left >= a) {
                uint64_t body = left & ~(a - 1);
                n = body < io->o.piece ? body : io->o.piece;
                direct = 1;
            } else {
                n = left;
            }
        }
        if (!direct && f->fd_buf < 0)
            return sl_errorf(rs->e, SL_E_ARG,
                             "%s: extent at offset %llu (%llu bytes) is not aligned to %u bytes and the file has "
                             "only an O_DIRECT descriptor",
                             f->name, (unsigned long long)x->x.offset, (unsigned long long)x->x.len, f->align);
        if (!direct)
            io->st.buffered_reads++;
    }
    p->off = rs->cur_off;
    p->len = n;
    p->dst = rs->cur_dst;
    p->t0 = now;
    p->t_again = 0;
    p->ext = rs->cur_ext;
    p->buf = x->x.buf;
    p->file = x->x.file;
    p->on_direct = direct;
    x->pending++;
    rs->cur_off += n;
    rs->cur_dst += n;
    rs->cur_left -= n;
    if (rs->cur_left == 0) {
        x->queued_all = 1;
        rs->have_cur = 0;
    }
    return SL_OK;
}

static int check_extent(sl_io *io, run_state *rs, const sl_io_extent *x)
{
    unsigned long long off = x->offset, len = x->len;
    if (x->file < 0 || (unsigned)x->file >= io->nfiles)
        return sl_errorf(rs->e, SL_E_ARG, "extent %llu: file id %d is not open (%u files)",
                         (unsigned long long)rs->seq, x->file, io->nfiles);
    const char *name = io->files[x->file].name;
    if (x->buf >= io->nbufs)
        return sl_errorf(rs->e, SL_E_ARG, "%s: extent at offset %llu: buffer %u does not exist (%u buffers set)",
                         name, off, x->buf, io->nbufs);
    const io_buf *b = &io->bufs[x->buf];
    if (x->len > b->len || x->buf_off > b->len - x->len)
        return sl_errorf(rs->e, SL_E_ARG,
                         "%s: extent at offset %llu: %llu bytes at %llu overrun buffer %u of %zu bytes", name, off,
                         len, (unsigned long long)x->buf_off, x->buf, b->len);
    if (x->offset > (uint64_t)INT64_MAX - x->len)
        return sl_errorf(rs->e, SL_E_ARG, "%s: extent offset %llu + %llu is past the largest file offset", name,
                         off, len);
    return SL_OK;
}

static void ext_finish(sl_io *io, run_state *rs, unsigned xi, uint64_t now)
{
    io_ext *x = &io->exts[xi];
    if (!rs->failed) {
        io->st.extents++;
        sl_io_hist_add(&io->st.extent_lat, now - x->t0);
        if (rs->src->done) {
            int r = rs->src->done(rs->src->ctx, x->seq, &x->x);
            if (r < 0)
                fail(rs, r, "extent %llu: completion callback failed: %s", (unsigned long long)x->seq,
                     sl_strerror(r));
        }
    }
    io->free_exts[io->nfree_exts++] = xi;
}

/* Take the next extent from the source into an extent slot; 0 when none was taken. */
static int take_extent(sl_io *io, run_state *rs, uint64_t now)
{
    while (!rs->src_done && io->nfree_exts > 0 && !rs->failed) {
        sl_io_extent x;
        int r = rs->src->next(rs->src->ctx, &x);
        if (r == 0) {
            rs->src_done = 1;
            return 0;
        }
        if (r < 0) {
            fail(rs, r, "extent %llu: the extent source aborted: %s", (unsigned long long)rs->seq, sl_strerror(r));
            return 0;
        }
        r = check_extent(io, rs, &x);
        if (r) {
            rs->failed = r;
            return 0;
        }
        unsigned xi = io->free_exts[--io->nfree_exts];
        io_ext *ext = &io->exts[xi];
        ext->x = x;
        ext->seq = rs->seq++;
        ext->t0 = now;
        ext->pending = 0;
        ext->queued_all = 0;
        if (x.len == 0) {
            ext->queued_all = 1;
            ext_finish(io, rs, xi, now);
            continue;
        }
        rs->have_cur = 1;
        rs->cur_ext = xi;
        rs->cur_off = x.offset;
        rs->cur_left = x.len;
        rs->cur_dst = io->bufs[x.buf].p + x.buf_off;
        return 1;
    }
    return 0;
}

static void piece_done(sl_io *io, run_state *rs, unsigned pi, uint64_t now)
{
    unsigned xi = io->pieces[pi].ext;
    io->free_pieces[io->nfree_pieces++] = pi;
    io_ext *x = &io->exts[xi];
    x->pending--;
    if (x->pending == 0 && x->queued_all)
        ext_finish(io, rs, xi, now);
}

static void complete(sl_io *io, run_state *rs, unsigned pi, int res, uint64_t now)
{
    io_piece *p = &io->pieces[pi];
    io_file *f = &io->files[p->file];
    const io_ext *x = &io->exts[p->ext];
    if (res == -EAGAIN || res == -EINTR) {
        if (!p->t_again)
            p->t_again = now;
        if (!rs->failed && now - p->t_again < AGAIN_GIVE_UP_NS) {
            io->st.retries++;
            rs->again = 1;
            retry_push(io, pi);
            return;
        }
        fail(rs, SL_E_IO, "%s: read of %llu bytes at offset %llu still failing with %s after %.0f s", f->name,
             (unsigned long long)p->len, (unsigned long long)p->off, strerror(-res), 1e-9 * AGAIN_GIVE_UP_NS);
    } else if (res == -EINVAL && p->on_direct && f->fd_buf >= 0 && io->o.mode == SL_IO_AUTO && !rs->failed) {
        /* open() took O_DIRECT but the reads are refused: fall back once for the whole file */
        f->direct = 0;
        sl_io_note_set(f->note, sizeof f->note,
                 "%s: the filesystem refused O_DIRECT reads (%s); reading through the page cache", f->name,
                 strerror(-res));
        p->on_direct = 0;
        retry_push(io, pi);
        return;
    } else if (res < 0) {
        fail(rs, SL_E_IO, "%s: read of %llu bytes at offset %llu failed: %s", f->name, (unsigned long long)p->len,
             (unsigned long long)p->off, strerror(-res));
    } else if (res == 0) {
        fail(rs, SL_E_IO, "%s: file ends at offset %llu, %llu bytes short of extent [%llu, %llu); shortened while "
             "being read?", f->name, (unsigned long long)p->off,
             (unsigned long long)(x->x.offset + x->x.len - p->off), (unsigned long long)x->x.offset,
             (unsigned long long)(x->x.offset + x->x.len));
    } else {
        p->t_again = 0;
        rs->again = 0;
        rs->backoff_ns = 0;
        io->st.bytes += (uint64_t)res;
        if ((uint64_t)res < p->len) { /* resume where it stopped */
            p->off += (uint64_t)res;
            p->dst += res;
            p->len -= (uint64_t)res;
            io->st.short_reads++;
            if (p->on_direct && !aligned(p, f->align)) {
                if (f->fd_buf < 0)
                    fail(rs, SL_E_IO, "%s: short O_DIRECT read left an unaligned remainder at offset %llu",
                         f->name, (unsigned long long)p->off);
                p->on_direct = 0;
            }
            if (!rs->failed) {
                retry_push(io, pi);
                return;
            }
        } else {
            io->st.reads++;
            sl_io_hist_add(&io->st.read_lat, now - p->t0);
        }
    }
    piece_done(io, rs, pi, now);
}

static void reap(sl_io *io, run_state *rs, uint64_t now)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&io->ring, head, cqe)
    {
        n++;
        rs->inflight--;
        unsigned pi = (unsigned)cqe->user_data;
        int res = cqe->res;
        if (io->o.fault) {
            const io_piece *p = &io->pieces[pi];
            int f = io->o.fault(io->o.fault_ctx, p->file, p->off, (unsigned)p->len, res);
            res = res >= 0 && f > res ? res : f;
        }
        complete(io, rs, pi, res, now);
    }
    io_uring_cq_advance(&io->ring, n);
    if (n && rs->inflight == 0)
        io->st.busy_s += 1e-9 * (double)(now - rs->busy_t0);
}

static void backoff(run_state *rs)
{
    rs->backoff_ns = rs->backoff_ns ? rs->backoff_ns * 2 : BACKOFF_MIN_NS;
    if (rs->backoff_ns > BACKOFF_MAX_NS)
        rs->backoff_ns = BACKOFF_MAX_NS;
    struct timespec ts = { 0, (long)rs->backoff_ns };
    nanosleep(&ts, NULL);
}

/* Put every table back to "all free" (after a failure some slots were abandoned mid-extent). */
static void reset_tables(sl_io *io)
{
    for (unsigned i = 0; i < io->o.depth; i++)
        io->free_pieces[i] = io->o.depth - 1 - i;
    io->nfree_pieces = io->o.depth;
    for (unsigned i = 0; i < io->o.extents; i++)
        io->free_exts[i] = io->o.extents - 1 - i;
    io->nfree_exts = io->o.extents;
    io->nretry = io->retry_head = 0;
}

int sl_io_run(sl_io *io, const sl_io_source *src, sl_error *e)
{
    if (!io || !src || !src->next)
        return sl_errorf(e, SL_E_ARG, "sl_io_run: NULL reader or source");
    if (!io->ring_ok)
        return sl_errorf(e, SL_E_IO, "io reader: the ring failed earlier; create a new reader");
    run_state rs = { .src = src, .e = e };
    for (;;) {
        uint64_t now = sl_io_now_ns();
        if (!rs.failed && io->nretry && rs.inflight == 0 && rs.again)
            backoff(&rs); /* only EAGAIN retries left and nothing else to wait for */
        while (!rs.failed && io->nretry) {
            unsigned pi = retry_pop(io);
            int r = queue_piece(io, &rs, pi, now);
            if (r == -EBUSY) {
                retry_push(io, pi);
                break;
            }
            if (r < 0) {
                retry_push(io, pi);
                fail(&rs, SL_E_IO, "io_uring submit failed: %s", strerror(-r));
            }
        }
        while (!rs.failed && io->nfree_pieces > 0 && (rs.have_cur || take_extent(io, &rs, now))) {
            unsigned pi = io->free_pieces[--io->nfree_pieces];
            int r = carve(io, &rs, pi, now);
            if (r) {
                io->free_pieces[io->nfree_pieces++] = pi;
                rs.failed = r;
                break;
            }
            r = queue_piece(io, &rs, pi, now);
            if (r == -EBUSY) {
                retry_push(io, pi);
                break;
            }
            if (r < 0) {
                retry_push(io, pi);
                fail(&rs, SL_E_IO, "io_uring submit failed: %s", strerror(-r));
            }
        }
        if (rs.inflight == 0) {
            if (rs.failed || (io->nretry == 0 && !rs.have_cur && rs.src_done))
                break;
            if (io->nretry == 0 && !rs.have_cur && io->nfree_exts == 0) { /* a broken invariant */
                fail(&rs, SL_E_IO, "io reader: stalled with no read in flight and no free extent slot");
                break;
            }
            continue; /* the kernel refused a submission (EBUSY): try again */
        }
        int r = io_uring_submit_and_wait(&io->ring, 1);
        io->st.enters++;
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
            /* The ring itself failed; what is in flight cannot be tracked. Tear it down here so
             * the kernel cancels the reads before any buffer is reused. */
            fail(&rs, SL_E_IO, "io_uring_enter failed: %s", strerror(-r));
            io_uring_queue_exit(&io->ring);
            io->ring_ok = 0;
            rs.inflight = 0;
            break;
        }
        reap(io, &rs, sl_io_now_ns());
    }
    reset_tables(io);
    return rs.failed;
}

typedef struct array_src {
    const sl_io_extent *x;
    size_t n, i;
} array_src;

static int array_next(void *ctx, sl_io_extent *x)
{
    array_src *a = ctx;
    if (a->i >= a->n)
        return 0;
    *x = a->x[a->i++];
    return 1;
}

int sl_io_read_extents(sl_io *io, const sl_io_extent *x, size_t n, sl_error *e)
{
    if (n && !x)
        return sl_errorf(e, SL_E_ARG, "sl_io_read_extents: NULL extent array");
    array_src a = { x, n, 0 };
    sl_io_source src = { &a, array_next, NULL };
    return sl_io_run(io, &src, e);
}
