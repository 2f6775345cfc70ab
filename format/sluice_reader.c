/* Reading a .sluice file: the header and index are read and checked once at open (bounds before
 * checksum, so a truncated or foreign file gets the specific message); chunks are read on demand
 * with pread into 4096-aligned buffers (O_DIRECT where the filesystem allows) and verified by
 * quant/'s codec against their XXH3-64. */
#include "format/format.h"
#include "format/sluice_internal.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sl_sluice {
    char *path;
    int fd, dfd;              /* buffered; O_DIRECT or -1 */
    uint64_t file_size, index_size;
    uint8_t *index;           /* bytes [0, index_size) */
    char *meta, *tok;         /* NUL-terminated copies */
    size_t meta_len, tok_len;
    sl_config cfg;
    sl_sluice_chunk *chunks;
    sl_sluice_tensor *tensors;
    uint32_t n_chunks, n_tensors;
    uint32_t *by_name;        /* tensor indices sorted by name */
    int n_layers;
    int64_t *core;            /* [n_layers] chunk index or -1 */
    int64_t *exp_first;       /* [n_layers] chunk index of expert 0 or -1 */
    int *exp_count;           /* [n_layers] */
};

const char *sl_sluice_path(const sl_sluice *f) { return f->path; }
uint64_t sl_sluice_file_size(const sl_sluice *f) { return f->file_size; }
const sl_config *sl_sluice_config(const sl_sluice *f) { return &f->cfg; }
size_t sl_sluice_chunk_count(const sl_sluice *f) { return f->n_chunks; }
size_t sl_sluice_tensor_count(const sl_sluice *f) { return f->n_tensors; }

const char *sl_sluice_metadata(const sl_sluice *f, size_t *len)
{
    if (len)
        *len = f->meta_len;
    return f->meta;
}

const char *sl_sluice_tokenizer(const sl_sluice *f, size_t *len)
{
    if (len)
        *len = f->tok_len;
    return f->tok;
}

const sl_sluice_chunk *sl_sluice_chunk_at(const sl_sluice *f, size_t i)
{
    return i < f->n_chunks ? &f->chunks[i] : NULL;
}

const sl_sluice_tensor *sl_sluice_tensor_at(const sl_sluice *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const sl_sluice_tensor *sl_sluice_find(const sl_sluice *f, const char *name)
{
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[f->by_name[mid]].name, name);
        if (c == 0)
            return &f->tensors[f->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int64_t sl_sluice_core_chunk(const sl_sluice *f, int layer)
{
    return layer >= 0 && layer < f->n_layers ? f->core[layer] : -1;
}

int64_t sl_sluice_expert_chunk(const sl_sluice *f, int layer, int expert)
{
    if (layer < 0 || layer >= f->n_layers || expert < 0 || expert >= f->exp_count[layer])
        return -1;
    return f->exp_first[layer] + expert;
}

void sl_sluice_chunk_label(const sl_sluice *f, size_t i, char *buf, size_t n)
{
    const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
    if (c && c->kind == SL_CHUNK_EXPERT)
        snprintf(buf, n, "%s: chunk %zu (layer %d expert %d)", f->path, i, c->layer, c->expert);
    else if (c && c->kind == SL_CHUNK_CORE)
        snprintf(buf, n, "%s: chunk %zu (layer %d core)", f->path, i, c->layer);
    else
        snprintf(buf, n, "%s: chunk %zu (resident)", f->path, i);
}

void sl_sluice_close(sl_sluice *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    if (f->dfd >= 0)
        close(f->dfd);
    free(f->path);
    free(f->index);
    free(f->meta);
    free(f->tok);
    free(f->chunks);
    free(f->tensors);
    free(f->by_name);
    free(f->core);
    free(f->exp_first);
    free(f->exp_count);
    free(f);
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(fd, p + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            *got = done;
            return -errno;
        }
        if (k == 0)
            break;
        done += (size_t)k;
    }
    *got = done;
    return 0;
}

/* [off, off+len) must lie inside the index, after the header. */
static int check_region(const sl_sluice *f, const char *what, uint64_t off, uint64_t len, sl_error *e)
{
    if (off > f->file_size || len > f->file_size - off)
        return sl_errorf(e, SL_E_FORMAT, "%s: %s [%llu, +%llu) runs past the end of the file (%llu bytes)",
                         f->path, what, (unsigned long long)off, (unsigned long long)len,
                         (unsigned long long)f->file_size);
    if (off < SLH_HEADER_SIZE || off > f->index_size || len > f->index_size - off)
        return sl_errorf(e, SL_E_FORMAT, "%s: %s [%llu, +%llu) lies outside the index [%d, %llu)",
                         f->path, what, (unsigned long long)off, (unsigned long long)len,
                         SLH_HEADER_SIZE, (unsigned long long)f->index_size);
    return 0;
}

static int read_header(sl_sluice *f, sl_error *e)
{
    uint8_t h[SLH_HEADER_SIZE];
    size_t got;
    int err = pread_all(f->fd, h, sizeof h, 0, &got);
    if (err)
        return sl_errorf(e, SL_E_IO, "%s: read: %s", f->path, strerror(-err));
    if (got == 0)
        return sl_errorf(e, SL_E_FORMAT, "%s: empty file, not a .sluice file", f->path);
    if (memcmp(h, sl_sluice_magic, got < 8 ? got : 8) != 0)
        return sl_errorf(e, SL_E_FORMAT, "%s: not a .sluice file (bad magic)", f->path);
    if (got < SLH_HEADER_SIZE)
        return sl_errorf(e, SL_E_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header",
                         f->path, got, SLH_HEADER_SIZE);
    uint32_t version = sl_get_u32(h + SLH_VERSION);
    if (version > SL_SLUICE_VERSION)
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: format version %u is newer than this sluice (reads <= %d)",
                         f->path, version, SL_SLUICE_VERSION);
    if (version == 0)
        return sl_errorf(e, SL_E_FORMAT, "%s: format version 0 is not a version", f->path);
    if (sl_get_u32(h + SLH_HSIZE) != SLH_HEADER_SIZE || sl_get_u32(h + SLH_CHUNK_ESIZE) != SLH_ENTRY_SIZE ||
        sl_get_u32(h + SLH_TENSOR_ESIZE) != SLH_ENTRY_SIZE)
        return sl_errorf(e, SL_E_FORMAT, "%s: header says header/entry sizes %u/%u/%u, version 1 has %d/%d/%d",
                         f->path, sl_get_u32(h + SLH_HSIZE), sl_get_u32(h + SLH_CHUNK_ESIZE),
                         sl_get_u32(h + SLH_TENSOR_ESIZE), SLH_HEADER_SIZE, SLH_ENTRY_SIZE, SLH_ENTRY_SIZE);
    uint64_t want = sl_get_u64(h + SLH_FILE_SIZE);
    if (f->file_size < want)
        return sl_errorf(e, SL_E_FORMAT, "%s: truncated: %llu bytes, the header says %llu", f->path,
                         (unsigned long long)f->file_size, (unsigned long long)want);
    if (f->file_size > want)
        return sl_errorf(e, SL_E_FORMAT, "%s: %llu bytes, the header says %llu (trailing bytes or a "
                         "damaged header)", f->path, (unsigned long long)f->file_size, (unsigned long long)want);
    f->index_size = sl_get_u64(h + SLH_INDEX_SIZE);
    if (f->index_size < SLH_HEADER_SIZE || f->index_size % SL_SLUICE_ALIGN || f->index_size > f->file_size)
        return sl_errorf(e, SL_E_FORMAT, "%s: index size %llu is not a multiple of %d inside the %llu-byte file",
                         f->path, (unsigned long long)f->index_size, SL_SLUICE_ALIGN,
                         (unsigned long long)f->file_size);
    uint32_t nc = sl_get_u32(h + SLH_CHUNK_COUNT), nt = sl_get_u32(h + SLH_TENSOR_COUNT);
    int rc;
    if ((rc = check_region(f, "metadata", sl_get_u64(h + SLH_META_OFF), sl_get_u64(h + SLH_META_LEN), e)) ||
        (rc = check_region(f, "chunk table", sl_get_u64(h + SLH_CHUNK_OFF), (uint64_t)nc * SLH_ENTRY_SIZE, e)) ||
        (rc = check_region(f, "tensor directory", sl_get_u64(h + SLH_TENSOR_OFF), (uint64_t)nt * SLH_ENTRY_SIZE, e)) ||
        (rc = check_region(f, "name pool", sl_get_u64(h + SLH_NAMES_OFF), sl_get_u64(h + SLH_NAMES_LEN), e)))
        return rc;
    if (!(f->index = malloc(f->index_size)))
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for a %llu-byte index", f->path,
                         (unsigned long long)f->index_size);
    if ((err = pread_all(f->fd, f->index, f->index_size, 0, &got)))
        return sl_errorf(e, SL_E_IO, "%s: read: %s", f->path, strerror(-err));
    if (got != f->index_size)
        return sl_errorf(e, SL_E_IO, "%s: short read of the index (%zu of %llu bytes)", f->path, got,
                         (unsigned long long)f->index_size);
    uint64_t stored = sl_get_u64(f->index + SLH_CHECKSUM);
    sl_put_u64(f->index + SLH_CHECKSUM, 0);
    uint64_t sum = sl_checksum(f->index, f->index_size);
    sl_put_u64(f->index + SLH_CHECKSUM, stored);
    if (sum != stored)
        return sl_errorf(e, SL_E_CHECKSUM, "%s: index checksum mismatch (stored %016llx, computed %016llx): "
                         "header or index is corrupt", f->path, (unsigned long long)stored,
                         (unsigned long long)sum);
    f->n_chunks = nc;
    f->n_tensors = nt;
    return 0;
}

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* The metadata JSON with the tokenizer value replaced by null (it can be megabytes and is not
 * needed to open the file), checked and its config parsed. */
static int read_metadata(sl_sluice *f, sl_error *e)
{
    const uint8_t *h = f->index;
    uint64_t moff = sl_get_u64(h + SLH_META_OFF), mlen = sl_get_u64(h + SLH_META_LEN);
    uint64_t toff = sl_get_u64(h + SLH_TOK_OFF), tlen = sl_get_u64(h + SLH_TOK_LEN);
    f->meta_len = mlen;
    if (!(f->meta = dup_bytes(h + moff, mlen)))
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
    uint64_t trel = 0;
    if (tlen) {
        if (toff < moff || toff - moff > mlen || tlen > mlen - (toff - moff))
            return sl_errorf(e, SL_E_FORMAT, "%s: tokenizer [%llu, +%llu) is not inside the metadata",
                             f->path, (unsigned long long)toff, (unsigned long long)tlen);
        trel = toff - moff;
        f->tok_len = tlen;
        if (!(f->tok = dup_bytes(h + toff, tlen)))
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
    }
    char *lean = malloc(mlen - tlen + 5);
    if (!lean)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
    size_t k = 0;
    memcpy(lean, f->meta, trel);
    k = trel;
    if (tlen) {
        memcpy(lean + k, "null", 4);
        k += 4;
    }
    memcpy(lean + k, f->meta + trel + tlen, mlen - trel - tlen);
    k += mlen - trel - tlen;
    cJSON *j = cJSON_ParseWithLength(lean, k);
    free(lean);
    if (!j)
        return sl_errorf(e, SL_E_FORMAT, "%s: metadata is not valid JSON", f->path);
    int rc = 0;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(j, "config");
    if (tlen && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "tokenizer")))
        rc = sl_errorf(e, SL_E_FORMAT, "%s: the header's tokenizer span is not the metadata's \"tokenizer\" value",
                       f->path);
    else if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "sluice") != 0)
        rc = sl_errorf(e, SL_E_FORMAT, "%s: metadata \"format\" is not \"sluice\"", f->path);
    else if (!cJSON_IsObject(cfg))
        rc = sl_errorf(e, SL_E_FORMAT, "%s: metadata has no \"config\" object", f->path);
    else {
        char *text = cJSON_PrintUnformatted(cfg);
        char origin[4200];
        snprintf(origin, sizeof origin, "%s: embedded config.json", f->path);
        rc = text ? sl_config_parse(text, strlen(text), origin, &f->cfg, e)
                  : sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
        free(text);
    }
    cJSON_Delete(j);
    return rc;
}

static int read_chunks(sl_sluice *f, sl_error *e)
{
    const sl_config *c = &f->cfg;
    f->n_layers = c->num_hidden_layers;
    if (!(f->chunks = calloc(f->n_chunks ? f->n_chunks : 1, sizeof *f->chunks)) ||
        !(f->core = malloc(((size_t)f->n_layers + 1) * sizeof *f->core)) ||
        !(f->exp_first = malloc(((size_t)f->n_layers + 1) * sizeof *f->exp_first)) ||
        !(f->exp_count = calloc((size_t)f->n_layers + 1, sizeof *f->exp_count)))
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
    for (int l = 0; l < f->n_layers; l++)
        f->core[l] = f->exp_first[l] = -1;
    const uint8_t *tab = f->index + sl_get_u64(f->index + SLH_CHUNK_OFF);
    uint64_t end = f->index_size; /* chunks ascend from the end of the index */
    int last_layer = -1;
    for (uint32_t i = 0; i < f->n_chunks; i++) {
        const uint8_t *p = tab + (size_t)i * SLH_ENTRY_SIZE;
        sl_sluice_chunk *ch = &f->chunks[i];
        ch->kind = p[SLC_KIND];
        ch->codec = p[SLC_CODEC];
        ch->layer = (int32_t)sl_get_u32(p + SLC_LAYER);
        ch->expert = (int32_t)sl_get_u32(p + SLC_EXPERT);
        ch->first_tensor = sl_get_u32(p + SLC_FIRST);
        ch->n_tensors = sl_get_u32(p + SLC_NTENSORS);
        ch->offset = sl_get_u64(p + SLC_OFFSET);
        ch->stored_size = sl_get_u64(p + SLC_STORED);
        ch->decoded_size = sl_get_u64(p + SLC_DECODED);
        ch->checksum = sl_get_u64(p + SLC_CHECKSUM);
        ch->stored_checksum = sl_get_u64(p + SLC_STORED_SUM);
        char what[4200];
        sl_sluice_chunk_label(f, i, what, sizeof what);
        if (ch->codec != SL_CODEC_RAW && ch->codec != SL_CODEC_ZSTD)
            return sl_errorf(e, SL_E_UNSUPPORTED, "%s: codec %d is unknown to this sluice", what, ch->codec);
        if (ch->offset % SL_SLUICE_ALIGN)
            return sl_errorf(e, SL_E_FORMAT, "%s: offset %llu is not a multiple of %d", what,
                             (unsigned long long)ch->offset, SL_SLUICE_ALIGN);
        if (ch->offset > f->file_size || sl_sluice_padded(ch->stored_size) > f->file_size - ch->offset)
            return sl_errorf(e, SL_E_FORMAT, "%s: [%llu, +%llu) runs past the end of the file (%llu bytes)",
                             what, (unsigned long long)ch->offset,
                             (unsigned long long)sl_sluice_padded(ch->stored_size),
                             (unsigned long long)f->file_size);
        if (ch->offset < end)
            return sl_errorf(e, SL_E_FORMAT, "%s: offset %llu overlaps the index or the previous chunk "
                             "(which ends at %llu)", what, (unsigned long long)ch->offset, (unsigned long long)end);
        end = ch->offset + sl_sluice_padded(ch->stored_size);
        if (ch->codec == SL_CODEC_RAW &&
            (ch->stored_size != ch->decoded_size || ch->stored_checksum != ch->checksum))
            return sl_errorf(e, SL_E_FORMAT, "%s: raw chunk stores %llu bytes but decodes to %llu, or its "
                             "two checksums differ", what, (unsigned long long)ch->stored_size,
                             (unsigned long long)ch->decoded_size);
        if (ch->n_tensors == 0 || ch->first_tensor > f->n_tensors || ch->n_tensors > f->n_tensors - ch->first_tensor ||
            (i > 0 && ch->first_tensor != f->chunks[i - 1].first_tensor + f->chunks[i - 1].n_tensors) ||
            (i == 0 && ch->first_tensor != 0))
            return sl_errorf(e, SL_E_FORMAT, "%s: tensors [%u, +%u) do not follow the previous chunk's in "
                             "the %u-entry directory", what, ch->first_tensor, ch->n_tensors, f->n_tensors);
        /* layout rules (see the writer) */
        bool ok;
        switch (ch->kind) {
        case SL_CHUNK_RESIDENT:
            ok = last_layer < 0 && ch->layer == -1 && ch->expert == -1;
            break;
        case SL_CHUNK_CORE:
            ok = ch->layer > last_layer && ch->layer < f->n_layers && ch->expert == -1;
            if (ok)
                f->core[ch->layer] = i, last_layer = ch->layer;
            break;
        case SL_CHUNK_EXPERT:
            ok = ch->layer == last_layer && ch->layer >= 0 && ch->expert == f->exp_count[ch->layer] &&
                 ch->expert < c->n_routed_experts;
            if (ok) {
                if (ch->expert == 0)
                    f->exp_first[ch->layer] = i;
                f->exp_count[ch->layer]++;
            }
            break;
        default:
            return sl_errorf(e, SL_E_FORMAT, "%s: unknown chunk kind %d", what, ch->kind);
        }
        if (!ok)
            return sl_errorf(e, SL_E_FORMAT, "%s: %s chunk of layer %d expert %d breaks the layout order "
                             "(resident, then per layer its core and experts 0..E-1)", what,
                             sl_chunk_kind_name(ch->kind), ch->layer, ch->expert);
    }
    if (f->n_chunks && end != f->file_size)
        return sl_errorf(e, SL_E_FORMAT, "%s: the last chunk ends at %llu, the file at %llu", f->path,
                         (unsigned long long)end, (unsigned long long)f->file_size);
    return 0;
}

static int by_name_cmp(const void *a, const void *b, void *ctx)
{
    const sl_sluice_tensor *t = ctx;
    return strcmp(t[*(const uint32_t *)a].name, t[*(const uint32_t *)b].name);
}

static int read_tensors(sl_sluice *f, sl_error *e)
{
    const uint8_t *dir = f->index + sl_get_u64(f->index + SLH_TENSOR_OFF);
    const char *pool = (const char *)f->index + sl_get_u64(f->index + SLH_NAMES_OFF);
    uint64_t pool_len = sl_get_u64(f->index + SLH_NAMES_LEN);
    if (!(f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors)) ||
        !(f->by_name = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *f->by_name)))
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", f->path);
    for (uint32_t ci = 0; ci < f->n_chunks; ci++) {
        const sl_sluice_chunk *ch = &f->chunks[ci];
        char what[4200];
        sl_sluice_chunk_label(f, ci, what, sizeof what);
        uint64_t end = 0;
        for (uint32_t i = ch->first_tensor; i < ch->first_tensor + ch->n_tensors; i++) {
            const uint8_t *p = dir + (size_t)i * SLH_ENTRY_SIZE;
            sl_sluice_tensor *t = &f->tensors[i];
            uint32_t noff = sl_get_u32(p + SLT_NAME_OFF), nlen = sl_get_u32(p + SLT_NAME_LEN);
            if ((uint64_t)noff + nlen >= pool_len || pool[noff + nlen] != 0 || strlen(pool + noff) != nlen ||
                nlen == 0)
                return sl_errorf(e, SL_E_FORMAT, "%s: tensor %u's name [%u, +%u) is not a string of the "
                                 "%llu-byte name pool", what, i, noff, nlen, (unsigned long long)pool_len);
            t->name = pool + noff;
            t->chunk = sl_get_u32(p + SLT_CHUNK);
            t->format = p[SLT_FORMAT];
            int ndim = p[SLT_NDIM];
            t->offset = sl_get_u64(p + SLT_OFFSET);
            t->rows = (int64_t)sl_get_u64(p + SLT_ROWS);
            t->cols = (int64_t)sl_get_u64(p + SLT_COLS);
            t->nbytes = sl_get_u64(p + SLT_NBYTES);
            if (t->chunk != ci)
                return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\" says chunk %u", what, t->name, t->chunk);
            if (!sl_wformat_get(t->format))
                return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tensor \"%s\" has weight format %d, unknown to "
                                 "this sluice", what, t->name, t->format);
            /* 2^40 elements bounds every shape so the size arithmetic below cannot overflow */
            if (t->rows <= 0 || t->cols < 0 || t->rows > (1ll << 40) || t->cols > (1ll << 40) ||
                (ndim == 1) != (t->cols == 0) || (ndim != 1 && ndim != 2) ||
                (t->cols && t->rows > (1ll << 40) / t->cols) ||
                t->nbytes != sl_wformat_bytes(t->format, t->rows, t->cols ? t->cols : 1))
                return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": %llu bytes of %s do not fit shape "
                                 "[%lld, %lld]", what, t->name, (unsigned long long)t->nbytes,
                                 sl_wformat_get(t->format)->name, (long long)t->rows, (long long)t->cols);
            if (t->offset % SL_SLUICE_TENSOR_ALIGN || t->offset < end || t->offset > ch->decoded_size ||
                t->nbytes > ch->decoded_size - t->offset)
                return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\" at [%llu, +%llu) is misaligned, overlaps "
                                 "or leaves the %llu decoded bytes", what, t->name,
                                 (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                                 (unsigned long long)ch->decoded_size);
            end = t->offset + t->nbytes;
            f->by_name[i] = i;
        }
        if (end != ch->decoded_size)
            return sl_errorf(e, SL_E_FORMAT, "%s: decodes to %llu bytes but its tensors end at %llu", what,
                             (unsigned long long)ch->decoded_size, (unsigned long long)end);
    }
    qsort_r(f->by_name, f->n_tensors, sizeof *f->by_name, by_name_cmp, f->tensors);
    for (uint32_t i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[f->by_name[i]].name, f->tensors[f->by_name[i - 1]].name))
            return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\" appears twice", f->path,
                             f->tensors[f->by_name[i]].name);
    return 0;
}

int sl_sluice_open(const char *path, sl_sluice **out, sl_error *e)
{
    sl_sluice *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", path);
    }
    f->dfd = -1;
    int rc = 0;
    struct stat sb;
    if ((f->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        rc = sl_errorf(e, SL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (fstat(f->fd, &sb) < 0)
        rc = sl_errorf(e, SL_E_IO, "%s: stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = sl_errorf(e, SL_E_IO, "%s: not a regular file", path);
    if (rc == 0) {
        f->file_size = (uint64_t)sb.st_size;
        if ((rc = read_header(f, e)) == 0 && (rc = read_metadata(f, e)) == 0 &&
            (rc = read_chunks(f, e)) == 0)
            rc = read_tensors(f, e);
    }
    if (rc) {
        sl_sluice_close(f);
        return rc;
    }
    /* Chunk reads bypass the page cache where the filesystem allows (tmpfs does not). */
    f->dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    *out = f;
    return 0;
}

int sl_sluice_read_chunk(const sl_sluice *f, size_t i, void *stage, void *dst, sl_error *e)
{
    char what[4200];
    sl_sluice_chunk_label(f, i, what, sizeof what);
    const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
    if (!c)
        return sl_errorf(e, SL_E_ARG, "%s: no such chunk (the file has %u)", what, f->n_chunks);
    uint64_t padded = sl_sluice_padded(c->stored_size);
    void *buf = stage;
    if (!buf && posix_memalign(&buf, SL_SLUICE_ALIGN, padded ? padded : SL_SLUICE_ALIGN) != 0)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for %llu bytes", what, (unsigned long long)padded);
    bool direct = f->dfd >= 0 && (uintptr_t)buf % SL_SLUICE_ALIGN == 0;
    size_t got;
    int err = pread_all(direct ? f->dfd : f->fd, buf, padded, c->offset, &got);
    if (err == -EINVAL && direct) /* O_DIRECT refused after all: read through the cache */
        err = pread_all(f->fd, buf, padded, c->offset, &got);
    int rc;
    if (err)
        rc = sl_errorf(e, SL_E_IO, "%s: read at offset %llu: %s", what, (unsigned long long)c->offset,
                       strerror(-err));
    else if (got < c->stored_size)
        rc = sl_errorf(e, SL_E_IO, "%s: short read (%zu of %llu bytes at offset %llu): the file shrank",
                       what, got, (unsigned long long)c->stored_size, (unsigned long long)c->offset);
    else
        rc = sl_sluice_decode_chunk(f, i, buf, dst, e);
    if (!stage)
        free(buf);
    return rc;
}

int sl_sluice_decode_chunk(const sl_sluice *f, size_t i, const void *stored, void *dst, sl_error *e)
{
    char what[4200];
    sl_sluice_chunk_label(f, i, what, sizeof what);
    const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
    if (!c)
        return sl_errorf(e, SL_E_ARG, "%s: no such chunk (the file has %u)", what, f->n_chunks);
    /* A raw chunk's stored checksum is its checksum: the decode below checks it once. */
    if (c->codec != SL_CODEC_RAW) {
        uint64_t sum = sl_checksum(stored, c->stored_size);
        if (sum != c->stored_checksum)
            return sl_errorf(e, SL_E_CHECKSUM, "%s: checksum mismatch in its %llu stored bytes (stored "
                             "%016llx, computed %016llx)", what, (unsigned long long)c->stored_size,
                             (unsigned long long)c->stored_checksum, (unsigned long long)sum);
    }
    return sl_codec_decode((sl_codec)c->codec, stored, c->stored_size, dst, c->decoded_size, c->checksum,
                           what, e);
}
