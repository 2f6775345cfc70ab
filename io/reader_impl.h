/* Private to io/: the reader's tables. Nothing here is part of the face (io/io.h). */
#ifndef SL_IO_READER_IMPL_H
#define SL_IO_READER_IMPL_H

#include "io/io.h"

#include <liburing.h>

#define SL_IO_NAME_MAX 256
#define SL_IO_NOTE_MAX 320
#define SL_IO_DEFAULT_ALIGN 4096u

typedef struct io_file {
    char name[SL_IO_NAME_MAX];
    char note[SL_IO_NOTE_MAX];
    int fd_direct;     /* O_DIRECT descriptor, -1 if none */
    int fd_buf;        /* page-cache descriptor, -1 if none (then every read is direct) */
    int slot_direct;   /* registered-file slots, -1 when files are not registered */
    int slot_buf;
    uint64_t size;     /* at open */
    unsigned align;    /* O_DIRECT alignment, bytes */
    int direct;        /* aligned pieces go to fd_direct */
} io_file;

typedef struct io_buf {
    char *p;
    size_t len;
} io_buf;

/* One read in the kernel or waiting to be resubmitted. */
typedef struct io_piece {
    uint64_t off;      /* file offset of the next byte */
    uint64_t len;      /* bytes still to read */
    char *dst;
    uint64_t t0;       /* ns, when first queued (latency) */
    uint64_t t_again;  /* ns, first EAGAIN of a streak, 0 if none */
    unsigned ext;      /* owning extent slot */
    unsigned buf;
    int file;
    int on_direct;     /* which descriptor */
} io_piece;

/* One extent with pieces outstanding. */
typedef struct io_ext {
    sl_io_extent x;
    uint64_t seq;
    uint64_t t0;
    unsigned pending;  /* pieces not yet complete */
    int queued_all;    /* every piece has been carved */
} io_ext;

struct sl_io {
    struct io_uring ring;
    int ring_ok;
    sl_io_opts o;

    io_file *files;
    unsigned nfiles;
    int files_registered; /* sparse table of 2 * max_files slots */

    io_buf *bufs;
    unsigned nbufs;
    int bufs_fixed;
    char bufs_note[SL_IO_NOTE_MAX];

    io_piece *pieces;      /* depth */
    unsigned *free_pieces; /* stack */
    unsigned nfree_pieces;
    unsigned *retry;       /* pieces to resubmit (FIFO ring of depth) */
    unsigned retry_head, nretry;
    io_ext *exts;          /* extents */
    unsigned *free_exts;
    unsigned nfree_exts;

    sl_io_stats st;
};

uint64_t sl_io_now_ns(void);
/* snprintf into a note buffer (via va_list, so long names truncate quietly). */
void sl_io_note_set(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
