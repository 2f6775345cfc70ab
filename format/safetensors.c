/* Safetensors reader: mmap every shard read-only, parse and check its JSON header, and keep one
 * name-sorted table of views over all shards. One file is
 *
 *   u64 little-endian N | N bytes of JSON header | data section
 *
 * and each tensor's data_offsets [begin, end) count from the start of the data section (8 + N).
 * A sharded checkpoint adds model.safetensors.index.json whose "weight_map" names, for each
 * tensor, the shard file (in the same directory) that holds it. */
#include "format/format.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull      /* the safetensors crate's MAX_HEADER_SIZE */
#define ST_MAX_INDEX (1ull << 30)        /* DeepSeek-V3's index is ~9 MB */
#define ST_MAX_INT (1ull << 53)          /* JSON numbers are doubles: exact below 2^53 */
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

typedef struct {
    char *path; /* as opened; sl_tensor_view.file points here */
    const uint8_t *map;
    size_t size;
} st_shard;

struct sl_safetensors {
    st_shard *shards;
    size_t nshards;
    sl_tensor_view *tensors; /* sorted by name once open succeeds; names owned here */
    size_t ntensors, cap;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    char *p = NULL;
    if (asprintf(&p, "%s%s%s", dir, (n && dir[n - 1] == '/') ? "" : "/", name) < 0)
        return NULL;
    return p;
}

/* Integral JSON number in [0, ST_MAX_INT]. */
static bool json_u64(const cJSON *it, uint64_t *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double d = it->valuedouble;
    if (!(d >= 0.0 && d <= (double)ST_MAX_INT) || d != (double)(uint64_t)d)
        return false;
    *out = (uint64_t)d;
    return true;
}

/* "[a, b, c]" of a parsed shape, for messages. */
static void shape_str(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

static int push_tensor(sl_safetensors *st, const sl_tensor_view *v, sl_error *e)
{
    if (st->ntensors == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 256;
        sl_tensor_view *t = realloc(st->tensors, cap * sizeof *t);
        if (!t)
            return sl_errorf(e, SL_E_NOMEM, "%s: out of memory for %zu tensor views", v->file, cap);
        st->tensors = t;
        st->cap = cap;
    }
    st->tensors[st->ntensors++] = *v;
    return SL_OK;
}

/* ---- one shard ---------------------------------------------------------------------------- */

static int map_shard(st_shard *sh, sl_error *e)
{
    int fd = open(sh->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_errorf(e, SL_E_IO, "%s: %s", sh->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int err = errno;
        close(fd);
        return sl_errorf(e, SL_E_IO, "%s: fstat: %s", sh->path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sl_errorf(e, SL_E_IO, "%s: not a regular file", sh->path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return sl_errorf(e, SL_E_FORMAT, "%s: file is %lld bytes, shorter than the 8-byte header length",
                         sh->path, (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (m == MAP_FAILED)
        return sl_errorf(e, SL_E_IO, "%s: mmap: %s", sh->path, strerror(err));
    sh->map = m;
    sh->size = (size_t)sb.st_size;
    return SL_OK;
}

/* Check one header entry against the data section and append its view. */
static int parse_entry(sl_safetensors *st, const st_shard *sh, const char *name, const cJSON *it,
                       const uint8_t *data, uint64_t data_len, sl_error *e)
{
    const char *f = sh->path;
    if (!cJSON_IsObject(it))
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": header entry is not an object", f, name);

    sl_tensor_view v = {.file = f};
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    if (!cJSON_IsString(jd))
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": no \"dtype\" string", f, name);
    int rc = sl_dtype_parse(jd->valuestring, &v.dtype);
    if (rc == SL_E_UNSUPPORTED)
        return sl_errorf(e, rc, "%s: tensor \"%s\": dtype %s not supported (sluice reads F32, F16, BF16, F8_E4M3)",
                         f, name, jd->valuestring);
    if (rc)
        return sl_errorf(e, rc, "%s: tensor \"%s\": unknown dtype \"%s\"", f, name, jd->valuestring);

    const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
    if (!cJSON_IsArray(js))
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": no \"shape\" array", f, name);
    int nd = cJSON_GetArraySize(js);
    if (nd > SL_MAX_DIMS)
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tensor \"%s\": %d dims, sluice reads at most %d",
                         f, name, nd, SL_MAX_DIMS);
    v.ndim = nd;
    v.numel = 1;
    const cJSON *d;
    int i = 0;
    cJSON_ArrayForEach(d, js) {
        uint64_t x;
        if (!json_u64(d, &x))
            return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": shape[%d] is not a non-negative integer",
                             f, name, i);
        v.shape[i++] = (int64_t)x;
        if (__builtin_mul_overflow(v.numel, (int64_t)x, &v.numel))
            return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": shape overflows 64 bits", f, name);
    }

    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_u64(cJSON_GetArrayItem(jo, 0), &begin) ||
        !json_u64(cJSON_GetArrayItem(jo, 1), &end))
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": \"data_offsets\" is not [begin, end] integers",
                         f, name);
    if (end < begin)
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] end before begin", f,
                         name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] end past data section (%llu bytes)",
                         f, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)data_len);
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)v.numel, (uint64_t)sl_dtype_size(v.dtype), &need) || end - begin != need) {
        char sh_s[128];
        shape_str(sh_s, sizeof sh_s, v.shape, v.ndim);
        return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, %s %s needs %llu",
                         f, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(end - begin), sl_dtype_name(v.dtype), sh_s,
                         (unsigned long long)need);
    }
    v.data = data + begin;
    char *nm = strdup(name);
    if (!nm)
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory", f);
    v.name = nm;
    rc = push_tensor(st, &v, e);
    if (rc)
        free(nm);
    return rc;
}

static int parse_shard(sl_safetensors *st, const st_shard *sh, sl_error *e)
{
    const char *f = sh->path;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | sh->map[i];
    if (n > sh->size - 8)
        return sl_errorf(e, SL_E_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                         f, (unsigned long long)n, sh->size);
    if (n > ST_MAX_HEADER)
        return sl_errorf(e, SL_E_FORMAT, "%s: header length %llu is over the %llu-byte limit", f,
                         (unsigned long long)n, ST_MAX_HEADER);

    /* A private NUL-terminated copy: cJSON then never reads past the header, whatever it holds. */
    char *buf = malloc(n + 1);
    if (!buf)
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory for a %llu-byte header", f, (unsigned long long)n);
    memcpy(buf, sh->map + 8, n);
    buf[n] = 0;
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &stop, 0);
    int rc = SL_OK;
    if (!root) {
        rc = sl_errorf(e, SL_E_FORMAT, "%s: header is not valid JSON (at byte %lld of %llu)", f,
                       stop ? (long long)(stop - buf) : -1LL, (unsigned long long)n);
        goto out;
    }
    /* Writers may pad the header with spaces up to an alignment; anything else is garbage. */
    for (const char *p = stop; p < buf + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = sl_errorf(e, SL_E_FORMAT, "%s: header has bytes after its JSON (at byte %lld of %llu)", f,
                           (long long)(p - buf), (unsigned long long)n);
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        rc = sl_errorf(e, SL_E_FORMAT, "%s: header is not a JSON object", f);
        goto out;
    }
    const uint8_t *data = sh->map + 8 + n;
    uint64_t data_len = sh->size - 8 - n;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        rc = parse_entry(st, sh, it->string, it, data, data_len, e);
        if (rc)
            break;
    }
out:
    cJSON_Delete(root);
    free(buf);
    return rc;
}

static int add_shard(sl_safetensors *st, char *path, sl_error *e)
{
    /* st->shards is sized by the caller; path ownership moves here even on error. */
    st_shard *sh = &st->shards[st->nshards++];
    sh->path = path;
    int rc = map_shard(sh, e);
    return rc ? rc : parse_shard(st, sh, e);
}

/* ---- the table ---------------------------------------------------------------------------- */

static int cmp_view(const void *a, const void *b)
{
    return strcmp(((const sl_tensor_view *)a)->name, ((const sl_tensor_view *)b)->name);
}

static int cmp_key_view(const void *key, const void *b)
{
    return strcmp((const char *)key, ((const sl_tensor_view *)b)->name);
}

static int sort_and_check_unique(sl_safetensors *st, sl_error *e)
{
    if (st->ntensors)
        qsort(st->tensors, st->ntensors, sizeof *st->tensors, cmp_view);
    for (size_t i = 1; i < st->ntensors; i++) {
        const sl_tensor_view *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name) == 0)
            return sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\" appears twice (again in %s)", a->file,
                             a->name, b->file);
    }
    return SL_OK;
}

const sl_tensor_view *sl_safetensors_find(const sl_safetensors *st, const char *name)
{
    if (!st || !name || !st->ntensors)
        return NULL;
    return bsearch(name, st->tensors, st->ntensors, sizeof *st->tensors, cmp_key_view);
}

size_t sl_safetensors_count(const sl_safetensors *st)
{
    return st ? st->ntensors : 0;
}

const sl_tensor_view *sl_safetensors_at(const sl_safetensors *st, size_t i)
{
    return st && i < st->ntensors ? &st->tensors[i] : NULL;
}

void sl_safetensors_close(sl_safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->ntensors; i++)
        free((char *)st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->nshards; i++) {
        if (st->shards[i].map)
            munmap((void *)st->shards[i].map, st->shards[i].size);
        free(st->shards[i].path);
    }
    free(st->shards);
    free(st);
}

/* ---- opening ------------------------------------------------------------------------------ */

static int open_single(sl_safetensors *st, char *path, sl_error *e)
{
    st->shards = calloc(1, sizeof *st->shards);
    if (!st->shards) {
        int rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
        free(path);
        return rc;
    }
    int rc = add_shard(st, path, e);
    return rc ? rc : sort_and_check_unique(st, e);
}

static int read_small_file(const char *path, uint64_t max, char **out, size_t *len, sl_error *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    int rc = SL_OK;
    if (fstat(fd, &sb) < 0)
        rc = sl_errorf(e, SL_E_IO, "%s: fstat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = sl_errorf(e, SL_E_IO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > max)
        rc = sl_errorf(e, SL_E_FORMAT, "%s: %lld bytes, over the %llu-byte limit", path,
                       (long long)sb.st_size, (unsigned long long)max);
    if (rc) {
        close(fd);
        return rc;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        close(fd);
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int err = r < 0 ? errno : 0;
            close(fd);
            free(buf);
            return sl_errorf(e, SL_E_IO, "%s: read: %s", path, err ? strerror(err) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *out = buf;
    *len = got;
    return SL_OK;
}

typedef struct {
    const char *tensor, *shard; /* into the parsed index */
    size_t shard_idx;
} st_map_entry;

static int cmp_entry_shard(const void *a, const void *b)
{
    return strcmp(((const st_map_entry *)a)->shard, ((const st_map_entry *)b)->shard);
}

/* Open each distinct shard of the weight_map once, then check every mapped tensor is in the
 * shard the index names. */
static int open_index(sl_safetensors *st, const char *dir, const char *index, sl_error *e)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_small_file(index, ST_MAX_INDEX, &text, &len, e);
    if (rc)
        return rc;
    st_map_entry *ents = NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        rc = sl_errorf(e, SL_E_FORMAT, "%s: not valid JSON", index);
        goto out;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = sl_errorf(e, SL_E_FORMAT, "%s: no \"weight_map\" object", index);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(wm), k = 0;
    ents = calloc(n ? n : 1, sizeof *ents);
    if (!ents) {
        rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", index);
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        if (!cJSON_IsString(it) || !it->valuestring[0] || it->valuestring[0] == '/') {
            rc = sl_errorf(e, SL_E_FORMAT, "%s: tensor \"%s\": shard is not a relative file name", index,
                           it->string);
            goto out;
        }
        ents[k++] = (st_map_entry){.tensor = it->string, .shard = it->valuestring};
    }
    qsort(ents, n, sizeof *ents, cmp_entry_shard);
    size_t nshards = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(ents[i].shard, ents[i - 1].shard) != 0)
            nshards++;
        ents[i].shard_idx = nshards - 1;
    }
    st->shards = calloc(nshards ? nshards : 1, sizeof *st->shards);
    if (!st->shards) {
        rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", index);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (i && ents[i].shard_idx == ents[i - 1].shard_idx)
            continue;
        char *path = join_path(dir, ents[i].shard);
        if (!path) {
            rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", index);
            goto out;
        }
        rc = add_shard(st, path, e);
        if (rc) {
            /* Say which index entry sent us to a shard that is not there. */
            if (rc == SL_E_IO && e) {
                size_t m = strlen(e->msg);
                snprintf(e->msg + m, sizeof e->msg - m, " (shard of tensor \"%s\" in %s)", ents[i].tensor,
                         index);
            }
            goto out;
        }
    }
    rc = sort_and_check_unique(st, e);
    if (rc)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const st_shard *sh = &st->shards[ents[i].shard_idx];
        const sl_tensor_view *v = sl_safetensors_find(st, ents[i].tensor);
        if (!v) {
            rc = sl_errorf(e, SL_E_MISSING, "%s: tensor \"%s\" (mapped there by %s) is not in the shard",
                           sh->path, ents[i].tensor, ST_INDEX_NAME);
            goto out;
        }
        if (v->file != sh->path) {
            rc = sl_errorf(e, SL_E_MISSING, "%s: tensor \"%s\" (mapped there by %s) is not in the shard but in %s",
                           sh->path, ents[i].tensor, ST_INDEX_NAME, v->file);
            goto out;
        }
    }
out:
    free(ents);
    cJSON_Delete(root);
    free(text);
    return rc;
}

int sl_safetensors_open(const char *path, sl_safetensors **out, sl_error *e)
{
    if (!out || !path)
        return sl_errorf(e, SL_E_ARG, "sl_safetensors_open: NULL %s", path ? "out" : "path");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) < 0)
        return sl_errorf(e, SL_E_IO, "%s: %s", path, strerror(errno));
    sl_safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);

    int rc;
    if (S_ISDIR(sb.st_mode)) {
        char *index = join_path(path, ST_INDEX_NAME);
        struct stat ib;
        if (!index) {
            rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
        } else if (stat(index, &ib) == 0) {
            rc = open_index(st, path, index, e);
        } else if (errno != ENOENT) {
            rc = sl_errorf(e, SL_E_IO, "%s: %s", index, strerror(errno));
        } else {
            char *single = join_path(path, ST_SINGLE_NAME);
            if (!single) {
                rc = sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
            } else if (stat(single, &ib) < 0 && errno == ENOENT) {
                rc = sl_errorf(e, SL_E_IO, "%s: %s (and no %s beside it)", single, strerror(ENOENT),
                               ST_INDEX_NAME);
                free(single);
            } else {
                rc = open_single(st, single, e);
            }
        }
        free(index);
    } else {
        char *p = strdup(path);
        rc = p ? open_single(st, p, e) : sl_errorf(e, SL_E_NOMEM, "%s: out of memory", path);
    }
    if (rc) {
        sl_safetensors_close(st);
        return rc;
    }
    *out = st;
    return SL_OK;
}
