/* Writing a .sluice file: chunks are appended in file order at 4096-aligned offsets while the
 * index (metadata, chunk table, tensor directory, names) is kept in memory at a size fixed up
 * front; finish writes it and the header into the space reserved at the start, then renames
 * PATH.tmp to PATH, so a reader never sees a half-written PATH. */
#include "format/format.h"
#include "format/sluice_internal.h"
#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sl_sluice_writer {
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    int fd;
    uint8_t *index;          /* bytes [0, index_size): header, metadata, table, directory, names */
    uint64_t index_size;
    uint64_t chunk_off, tensor_off, names_off, names_cap, names_used;
    uint32_t n_chunks, n_tensors, chunks_done, tensors_done;
    uint64_t pos;            /* where the next chunk goes */
    int last_layer, next_expert; /* layout state: -1 while resident chunks may still come */
};

static const uint8_t zero_page[SL_SLUICE_ALIGN];

uint64_t sl_sluice_padded(uint64_t stored_size) { return sl_align_up(stored_size, SL_SLUICE_ALIGN); }

const char *sl_chunk_kind_name(int kind)
{
    switch (kind) {
    case SL_CHUNK_RESIDENT: return "resident";
    case SL_CHUNK_CORE: return "layer core";
    case SL_CHUNK_EXPERT: return "expert";
    }
    return "?";
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : -ENOSPC;
        p += k, n -= (size_t)k, off += (uint64_t)k;
    }
    return 0;
}

int sl_sluice_writer_create(const char *path, const char *meta, size_t meta_len, size_t tok_off,
                            size_t tok_len, uint32_t n_chunks, uint32_t n_tensors,
                            size_t names_bytes, sl_sluice_writer **out, sl_error *e)
{
    if (strlen(path) >= PATH_MAX)
        return sl_errorf(e, SL_E_ARG, "%.64s...: path too long", path);
    if (tok_len && (tok_off > meta_len || tok_len > meta_len - tok_off))
        return sl_errorf(e, SL_E_ARG, "%s: tokenizer span [%zu, +%zu) outside the %zu-byte metadata",
                         path, tok_off, tok_len, meta_len);
    if (names_bytes > UINT32_MAX)
        return sl_errorf(e, SL_E_ARG, "%s: %zu bytes of tensor names (at most 4 GiB)", path, names_bytes);
    sl_sluice_writer *w = calloc(1, sizeof *w);
    if (!w)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->fd = -1;
    w->n_chunks = n_chunks;
    w->n_tensors = n_tensors;
    w->last_layer = -1;

    uint64_t meta_off = SLH_HEADER_SIZE;
    w->chunk_off = sl_align_up(meta_off + meta_len + 1, SLH_ENTRY_SIZE); /* +1: the NUL after JSON */
    w->tensor_off = w->chunk_off + (uint64_t)n_chunks * SLH_ENTRY_SIZE;
    w->names_off = w->tensor_off + (uint64_t)n_tensors * SLH_ENTRY_SIZE;
    w->names_cap = names_bytes;
    w->index_size = sl_align_up(w->names_off + names_bytes, SL_SLUICE_ALIGN);
    w->pos = w->index_size;
    if (!(w->index = calloc(1, w->index_size))) {
        unsigned long long n = w->index_size;
        free(w);
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for a %llu-byte index", path, n);
    }
    uint8_t *h = w->index;
    memcpy(h + SLH_MAGIC, sl_sluice_magic, 8);
    sl_put_u32(h + SLH_VERSION, SL_SLUICE_VERSION);
    sl_put_u32(h + SLH_HSIZE, SLH_HEADER_SIZE);
    sl_put_u64(h + SLH_INDEX_SIZE, w->index_size);
    sl_put_u64(h + SLH_META_OFF, meta_off);
    sl_put_u64(h + SLH_META_LEN, meta_len);
    sl_put_u64(h + SLH_TOK_OFF, tok_len ? meta_off + tok_off : 0);
    sl_put_u64(h + SLH_TOK_LEN, tok_len);
    sl_put_u64(h + SLH_CHUNK_OFF, w->chunk_off);
    sl_put_u32(h + SLH_CHUNK_COUNT, n_chunks);
    sl_put_u32(h + SLH_CHUNK_ESIZE, SLH_ENTRY_SIZE);
    sl_put_u64(h + SLH_TENSOR_OFF, w->tensor_off);
    sl_put_u32(h + SLH_TENSOR_COUNT, n_tensors);
    sl_put_u32(h + SLH_TENSOR_ESIZE, SLH_ENTRY_SIZE);
    sl_put_u64(h + SLH_NAMES_OFF, w->names_off);
    sl_put_u64(h + SLH_NAMES_LEN, names_bytes);
    memcpy(h + meta_off, meta, meta_len);

    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = sl_errorf(e, SL_E_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->index);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static void label(const sl_sluice_writer *w, const sl_sluice_chunk *c, char *buf, size_t n)
{
    if (c->kind == SL_CHUNK_EXPERT)
        snprintf(buf, n, "%s: chunk %u (layer %d expert %d)", w->tmp, w->chunks_done, c->layer, c->expert);
    else if (c->kind == SL_CHUNK_CORE)
        snprintf(buf, n, "%s: chunk %u (layer %d core)", w->tmp, w->chunks_done, c->layer);
    else
        snprintf(buf, n, "%s: chunk %u (resident)", w->tmp, w->chunks_done);
}

/* The layout rules: resident chunks first; then per layer (ascending) its core chunk, then its
 * experts 0, 1, 2, ... with none skipped. */
static int check_order(sl_sluice_writer *w, const sl_sluice_chunk *c, const char *what, sl_error *e)
{
    switch (c->kind) {
    case SL_CHUNK_RESIDENT:
        if (w->last_layer >= 0 || c->layer != -1 || c->expert != -1)
            return sl_errorf(e, SL_E_ARG, "%s: resident chunks come before every layer chunk and have "
                             "layer = expert = -1", what);
        return 0;
    case SL_CHUNK_CORE:
        if (c->layer <= w->last_layer || c->expert != -1)
            return sl_errorf(e, SL_E_ARG, "%s: layer %d core after layer %d (layers ascend, one core each)",
                             what, c->layer, w->last_layer);
        w->last_layer = c->layer;
        w->next_expert = 0;
        return 0;
    case SL_CHUNK_EXPERT:
        if (c->layer != w->last_layer || c->layer < 0 || c->expert != w->next_expert)
            return sl_errorf(e, SL_E_ARG, "%s: expected layer %d expert %d here (experts follow their "
                             "layer core in expert order)", what, w->last_layer, w->next_expert);
        w->next_expert++;
        return 0;
    }
    return sl_errorf(e, SL_E_ARG, "%s: unknown chunk kind %d", what, c->kind);
}

static int check_tensors(sl_sluice_writer *w, const sl_sluice_chunk *c, const sl_sluice_tensor *t,
                         uint32_t n_t, const char *what, sl_error *e)
{
    if (n_t == 0)
        return sl_errorf(e, SL_E_ARG, "%s: a chunk holds at least one tensor", what);
    if (n_t > w->n_tensors - w->tensors_done)
        return sl_errorf(e, SL_E_ARG, "%s: more tensors than the %u reserved", what, w->n_tensors);
    uint64_t end = 0, names = 0;
    for (uint32_t i = 0; i < n_t; i++) {
        size_t len = strlen(t[i].name);
        if (len == 0)
            return sl_errorf(e, SL_E_ARG, "%s: tensor %u has an empty name", what, i);
        names += len + 1;
        if (!sl_wformat_get(t[i].format))
            return sl_errorf(e, SL_E_ARG, "%s: tensor \"%s\" has unknown format %d", what, t[i].name,
                             t[i].format);
        if (t[i].rows <= 0 || t[i].cols < 0 ||
            t[i].nbytes != sl_wformat_bytes(t[i].format, t[i].rows, t[i].cols ? t[i].cols : 1))
            return sl_errorf(e, SL_E_ARG, "%s: tensor \"%s\": %llu bytes do not fit %s [%lld, %lld]",
                             what, t[i].name, (unsigned long long)t[i].nbytes,
                             sl_wformat_get(t[i].format)->name, (long long)t[i].rows, (long long)t[i].cols);
        if (t[i].offset % SL_SLUICE_TENSOR_ALIGN || t[i].offset < end)
            return sl_errorf(e, SL_E_ARG, "%s: tensor \"%s\" at offset %llu (must be a multiple of %d "
                             "past the previous tensor's end %llu)", what, t[i].name,
                             (unsigned long long)t[i].offset, SL_SLUICE_TENSOR_ALIGN, (unsigned long long)end);
        end = t[i].offset + t[i].nbytes;
    }
    if (end != c->decoded_size)
        return sl_errorf(e, SL_E_ARG, "%s: decoded size %llu, its tensors end at %llu", what,
                         (unsigned long long)c->decoded_size, (unsigned long long)end);
    if (names > w->names_cap - w->names_used)
        return sl_errorf(e, SL_E_ARG, "%s: tensor names exceed the %llu bytes reserved", what,
                         (unsigned long long)w->names_cap);
    return 0;
}

int sl_sluice_writer_reserve(sl_sluice_writer *w, const sl_sluice_chunk *c, const sl_sluice_tensor *t,
                             uint32_t n_t, uint64_t *offset, sl_error *e)
{
    char what[PATH_MAX + 96];
    label(w, c, what, sizeof what);
    if (w->chunks_done == w->n_chunks)
        return sl_errorf(e, SL_E_ARG, "%s: more chunks than the %u reserved", what, w->n_chunks);
    if (c->codec != SL_CODEC_RAW && c->codec != SL_CODEC_ZSTD)
        return sl_errorf(e, SL_E_ARG, "%s: unknown codec %d", what, c->codec);
    if (c->codec == SL_CODEC_RAW && c->stored_size != c->decoded_size)
        return sl_errorf(e, SL_E_ARG, "%s: raw chunk stores %llu bytes, decodes to %llu", what,
                         (unsigned long long)c->stored_size, (unsigned long long)c->decoded_size);
    if (c->codec == SL_CODEC_RAW && c->stored_checksum != c->checksum)
        return sl_errorf(e, SL_E_ARG, "%s: checksum %016llx does not match its raw bytes (%016llx)", what,
                         (unsigned long long)c->checksum, (unsigned long long)c->stored_checksum);
    int rc = check_tensors(w, c, t, n_t, what, e);
    if (rc == 0)
        rc = check_order(w, c, what, e);
    if (rc)
        return rc;

    uint8_t *ce = w->index + w->chunk_off + (uint64_t)w->chunks_done * SLH_ENTRY_SIZE;
    ce[SLC_KIND] = (uint8_t)c->kind;
    ce[SLC_CODEC] = (uint8_t)c->codec;
    sl_put_u32(ce + SLC_LAYER, (uint32_t)c->layer);
    sl_put_u32(ce + SLC_EXPERT, (uint32_t)c->expert);
    sl_put_u32(ce + SLC_FIRST, w->tensors_done);
    sl_put_u32(ce + SLC_NTENSORS, n_t);
    sl_put_u64(ce + SLC_OFFSET, w->pos);
    sl_put_u64(ce + SLC_STORED, c->stored_size);
    sl_put_u64(ce + SLC_DECODED, c->decoded_size);
    sl_put_u64(ce + SLC_CHECKSUM, c->checksum);
    sl_put_u64(ce + SLC_STORED_SUM, c->stored_checksum);
    for (uint32_t i = 0; i < n_t; i++) {
        uint8_t *te = w->index + w->tensor_off + (uint64_t)(w->tensors_done + i) * SLH_ENTRY_SIZE;
        size_t len = strlen(t[i].name);
        memcpy(w->index + w->names_off + w->names_used, t[i].name, len + 1);
        sl_put_u32(te + SLT_NAME_OFF, (uint32_t)w->names_used);
        sl_put_u32(te + SLT_NAME_LEN, (uint32_t)len);
        sl_put_u32(te + SLT_CHUNK, w->chunks_done);
        te[SLT_FORMAT] = (uint8_t)t[i].format;
        te[SLT_NDIM] = t[i].cols ? 2 : 1;
        sl_put_u64(te + SLT_OFFSET, t[i].offset);
        sl_put_u64(te + SLT_ROWS, (uint64_t)t[i].rows);
        sl_put_u64(te + SLT_COLS, (uint64_t)t[i].cols);
        sl_put_u64(te + SLT_NBYTES, t[i].nbytes);
        w->names_used += len + 1;
    }
    w->tensors_done += n_t;
    w->chunks_done++;
    *offset = w->pos;
    w->pos += sl_sluice_padded(c->stored_size);
    return 0;
}

int sl_sluice_writer_write(sl_sluice_writer *w, uint64_t offset, const void *data, uint64_t stored_size,
                           sl_error *e)
{
    uint64_t pad = sl_sluice_padded(stored_size) - stored_size;
    int err = pwrite_all(w->fd, data, stored_size, offset);
    if (err == 0 && pad)
        err = pwrite_all(w->fd, zero_page, pad, offset + stored_size);
    if (err)
        return sl_errorf(e, SL_E_IO, "%s: write of %llu bytes at offset %llu failed: %s", w->tmp,
                         (unsigned long long)stored_size, (unsigned long long)offset, strerror(-err));
    return 0;
}

int sl_sluice_writer_add(sl_sluice_writer *w, const sl_sluice_chunk *c, const sl_sluice_tensor *t,
                         uint32_t n_t, const void *data, sl_error *e)
{
    sl_sluice_chunk cc = *c;
    cc.stored_checksum = sl_checksum(data, c->stored_size);
    uint64_t off;
    int rc = sl_sluice_writer_reserve(w, &cc, t, n_t, &off, e);
    return rc ? rc : sl_sluice_writer_write(w, off, data, c->stored_size, e);
}

uint64_t sl_sluice_writer_bytes(const sl_sluice_writer *w) { return w->pos; }

static void writer_free(sl_sluice_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->index);
    free(w);
}

void sl_sluice_writer_abort(sl_sluice_writer *w)
{
    if (!w)
        return;
    unlink(w->tmp);
    writer_free(w);
}

/* After rename, the directory entry itself must reach the disk for the file to survive a crash. */
static int fsync_dir_of(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 && errno != EINVAL ? -errno : 0;
    close(fd);
    return rc;
}

int sl_sluice_writer_finish(sl_sluice_writer *w, sl_error *e)
{
    int rc = 0, err;
    if (w->chunks_done != w->n_chunks || w->tensors_done != w->n_tensors) {
        rc = sl_errorf(e, SL_E_ARG, "%s: %u of %u chunks and %u of %u tensors written", w->tmp,
                       w->chunks_done, w->n_chunks, w->tensors_done, w->n_tensors);
        goto fail;
    }
    sl_put_u64(w->index + SLH_FILE_SIZE, w->pos);
    sl_put_u64(w->index + SLH_CHECKSUM, 0);
    sl_put_u64(w->index + SLH_CHECKSUM, sl_checksum(w->index, w->index_size));
    if ((err = pwrite_all(w->fd, w->index, w->index_size, 0))) {
        rc = sl_errorf(e, SL_E_IO, "%s: writing the index failed: %s", w->tmp, strerror(-err));
        goto fail;
    }
    if (fsync(w->fd) < 0) {
        rc = sl_errorf(e, SL_E_IO, "%s: fsync: %s", w->tmp, strerror(errno));
        goto fail;
    }
    if (rename(w->tmp, w->path) < 0) {
        rc = sl_errorf(e, SL_E_IO, "%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
        goto fail;
    }
    if ((err = fsync_dir_of(w->path))) {
        /* The file is complete and in place; only its durability across a crash is in doubt. */
        rc = sl_errorf(e, SL_E_IO, "%s: fsync of its directory: %s", w->path, strerror(-err));
        writer_free(w);
        return rc;
    }
    writer_free(w);
    return 0;
fail:
    sl_sluice_writer_abort(w);
    return rc;
}
