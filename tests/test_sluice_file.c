/* format/ .sluice container: random chunk layouts written by the writer read back exactly, laid
 * out as FORMAT.md says (checked by this file's own parser of the documented offsets); the
 * writer refuses chunks that break the layout rules; PATH appears only at finish; and truncated,
 * foreign, newer and damaged files give a clear error naming the file and the field or chunk. */
#include "format/format.h"
#include "quant/quant.h"
#include "tests/safetensors_write.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static char sf_dir[64];
static uint64_t sf_seed;

static void sf_setup(void)
{
    strcpy(sf_dir, "/tmp/sl_sf_XXXXXX");
    cr_assert_not_null(mkdtemp(sf_dir), "mkdtemp: %s", strerror(errno));
    sf_seed = stw_seed();
    cr_log_info("seed %llu (set SL_TEST_SEED to repeat)", (unsigned long long)sf_seed);
}

static void sf_teardown(void) { stw_rmtree(sf_dir); }

TestSuite(sluice_file, .init = sf_setup, .fini = sf_teardown);

/* ---- FORMAT.md's numbers, restated independently of format/sluice_internal.h ------------- */

#define SF_HDR 4096
#define SF_ENTRY 64

static uint64_t sf_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t sf_u32(const uint8_t *p) { return (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24); }

static void sf_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t *sf_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void sf_spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Recompute the index checksum after a test edits the index on purpose. */
static void sf_reseal(uint8_t *b)
{
    uint64_t isz = sf_u64(b + 24);
    sf_put64(b + 112, 0);
    sf_put64(b + 112, XXH3_64bits(b, isz));
}

/* ---- a random model-shaped layout ---------------------------------------------------------- */

typedef struct sf_chunk {
    sl_sluice_chunk c;
    sl_sluice_tensor t[4];
    char names[4][64];
    uint8_t *decoded, *stored;
} sf_chunk;

typedef struct sf_file {
    sf_chunk ch[64];
    int n;
    uint32_t n_tensors;
    size_t names_bytes;
    char *meta, *tok;
    size_t meta_len, tok_off, tok_len;
} sf_file;

static int sf_randint(uint64_t *s, int lo, int hi) { return lo + (int)(stw_rand(s) % (uint64_t)(hi - lo + 1)); }

/* Tensors of random formats and shapes at 64-aligned offsets, bytes that zstd can squeeze (runs)
 * or not (noise), so both codecs occur. */
static void sf_fill_chunk(sf_file *F, sf_chunk *k, uint64_t *s)
{
    int nt = sf_randint(s, 1, 4);
    uint64_t end = 0;
    for (int i = 0; i < nt; i++) {
        sl_sluice_tensor *t = &k->t[i];
        snprintf(k->names[i], sizeof k->names[i], "c%d.t%d.%llx", F->n, i, (unsigned long long)stw_rand(s));
        t->name = k->names[i];
        t->format = sf_randint(s, 0, SL_WF_COUNT - 1);
        t->rows = sf_randint(s, 1, 300);
        t->cols = (t->format <= SL_WF_BF16 && sf_randint(s, 0, 2) == 0) ? 0 : sf_randint(s, 1, 300);
        t->nbytes = sl_wformat_bytes(t->format, t->rows, t->cols ? t->cols : 1);
        t->offset = (end + 63) / 64 * 64 + 64 * (uint64_t)sf_randint(s, 0, 2);
        end = t->offset + t->nbytes;
        F->names_bytes += strlen(t->name) + 1;
    }
    k->c.decoded_size = end;
    k->c.n_tensors = (uint32_t)nt;
    k->decoded = calloc(1, end);
    bool runs = stw_rand(s) & 1;
    for (uint64_t i = 0; i < end; i++)
        k->decoded[i] = runs ? (uint8_t)(i / 512) : (uint8_t)stw_rand(s);
    k->c.checksum = sl_checksum(k->decoded, end);
    size_t cap = sl_codec_bound(end), n;
    k->stored = malloc(cap);
    sl_codec codec;
    cr_assert_eq(sl_codec_encode(k->decoded, end, 3, 0.02, k->stored, cap, &codec, &n), 0);
    k->c.codec = codec;
    k->c.stored_size = n;
    F->n_tensors += (uint32_t)nt;
}

static void sf_add(sf_file *F, int kind, int layer, int expert, uint64_t *s)
{
    cr_assert_lt(F->n, 64);
    sf_chunk *k = &F->ch[F->n];
    k->c = (sl_sluice_chunk){.kind = kind, .layer = layer, .expert = expert};
    sf_fill_chunk(F, k, s);
    F->n++;
}

/* Metadata around tiny-a-bf16's config.json, with a tokenizer value of random text. */
static void sf_make_meta(sf_file *F, uint64_t *s)
{
    size_t cl;
    char *cfg = (char *)sf_slurp("tests/fixtures/tiny-a-bf16/config.json", &cl);
    char tok[256];
    int tl = snprintf(tok, sizeof tok, "{\"model\": {\"type\": \"BPE\", \"seed\": \"%llx\"},\n \"\\u00e9\": [1, 2.50, 3e-7]}",
                      (unsigned long long)stw_rand(s));
    F->meta = malloc(cl + (size_t)tl + 128);
    int k = sprintf(F->meta, "{\"format\":\"sluice\",\"version\":1,\"config\":%s,\"tokenizer\":", cfg);
    F->tok_off = (size_t)k;
    F->tok_len = (size_t)tl;
    memcpy(F->meta + k, tok, (size_t)tl);
    k += tl;
    k += sprintf(F->meta + k, "}");
    F->meta_len = (size_t)k;
    F->tok = strdup(tok);
    free(cfg);
}

/* tiny-a's config: 3 layers, layer 0 dense, 8 experts. A random layout that obeys the rules. */
static void sf_random_file(sf_file *F, uint64_t *s)
{
    memset(F, 0, sizeof *F);
    sf_make_meta(F, s);
    int nres = sf_randint(s, 1, 2);
    for (int i = 0; i < nres; i++)
        sf_add(F, SL_CHUNK_RESIDENT, -1, -1, s);
    for (int l = 0; l < 3; l++) {
        if (sf_randint(s, 0, 3) == 0)
            continue; /* layers may be absent from a file; order is what matters */
        sf_add(F, SL_CHUNK_CORE, l, -1, s);
        int ne = l == 0 ? 0 : sf_randint(s, 0, 8);
        for (int x = 0; x < ne; x++)
            sf_add(F, SL_CHUNK_EXPERT, l, x, s);
    }
}

static void sf_free_file(sf_file *F)
{
    for (int i = 0; i < F->n; i++) {
        free(F->ch[i].decoded);
        free(F->ch[i].stored);
    }
    free(F->meta);
    free(F->tok);
}

static void sf_write(const sf_file *F, const char *path)
{
    sl_sluice_writer *w;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_writer_create(path, F->meta, F->meta_len, F->tok_off, F->tok_len, (uint32_t)F->n,
                                         F->n_tensors, F->names_bytes, &w, &e), 0, "%s", e.msg);
    for (int i = 0; i < F->n; i++)
        cr_assert_eq(sl_sluice_writer_add(w, &F->ch[i].c, F->ch[i].t, F->ch[i].c.n_tensors, F->ch[i].stored, &e),
                     0, "chunk %d: %s", i, e.msg);
    cr_assert_eq(sl_sluice_writer_finish(w, &e), 0, "%s", e.msg);
}

static void sf_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", sf_dir, name); }

Test(sluice_file, random_layouts_round_trip_aligned_in_order)
{
    uint64_t s = sf_seed;
    for (int round = 0; round < 6; round++) {
        sf_file F;
        sf_random_file(&F, &s);
        char path[128];
        sf_path(path, sizeof path, "rt.sluice");
        sf_write(&F, path);

        /* the bytes, by FORMAT.md */
        size_t len;
        uint8_t *b = sf_slurp(path, &len);
        cr_assert_eq(memcmp(b, "SLUICE\0\x1a", 8), 0);
        cr_assert_eq(sf_u32(b + 8), 1u);
        cr_assert_eq(sf_u64(b + 16), len);
        uint64_t isz = sf_u64(b + 24), ct = sf_u64(b + 64), td = sf_u64(b + 80), np = sf_u64(b + 96);
        cr_assert_eq(isz % 4096, 0);
        cr_assert_eq(len % 4096, 0, "the last chunk is padded too");
        cr_assert_eq(sf_u32(b + 72), (uint32_t)F.n);
        cr_assert_eq(sf_u32(b + 88), F.n_tensors);
        cr_assert_eq(memcmp(b + sf_u64(b + 32), F.meta, F.meta_len), 0);
        cr_assert_eq(b[sf_u64(b + 32) + F.meta_len], 0, "NUL after the metadata");
        cr_assert_eq(memcmp(b + sf_u64(b + 48), F.tok, F.tok_len), 0);
        uint64_t sum = sf_u64(b + 112);
        sf_put64(b + 112, 0);
        cr_assert_eq(XXH3_64bits(b, isz), sum, "index checksum as documented");
        uint64_t expect_off = isz;
        uint32_t tix = 0;
        for (int i = 0; i < F.n; i++) {
            const uint8_t *ce = b + ct + (size_t)i * SF_ENTRY;
            const sf_chunk *k = &F.ch[i];
            cr_assert_eq(ce[0], k->c.kind);
            cr_assert_eq(ce[1], k->c.codec);
            cr_assert_eq((int32_t)sf_u32(ce + 4), k->c.layer);
            cr_assert_eq((int32_t)sf_u32(ce + 8), k->c.expert);
            cr_assert_eq(sf_u32(ce + 12), tix);
            cr_assert_eq(sf_u32(ce + 16), k->c.n_tensors);
            cr_assert_eq(sf_u64(ce + 24), expect_off, "chunk %d follows the previous one, 4096-aligned", i);
            cr_assert_eq(sf_u64(ce + 32), k->c.stored_size);
            cr_assert_eq(sf_u64(ce + 40), k->c.decoded_size);
            cr_assert_eq(sf_u64(ce + 48), XXH3_64bits(k->decoded, k->c.decoded_size));
            cr_assert_eq(sf_u64(ce + 56), XXH3_64bits(k->stored, k->c.stored_size));
            cr_assert_eq(memcmp(b + expect_off, k->stored, k->c.stored_size), 0, "chunk %d stored bytes", i);
            uint64_t padded = (k->c.stored_size + 4095) / 4096 * 4096;
            for (uint64_t p = k->c.stored_size; p < padded; p++)
                cr_assert_eq(b[expect_off + p], 0, "chunk %d padding is zero", i);
            for (uint32_t t = 0; t < k->c.n_tensors; t++, tix++) {
                const uint8_t *te = b + td + (size_t)tix * SF_ENTRY;
                cr_assert_str_eq((const char *)b + np + sf_u32(te), k->t[t].name);
                cr_assert_eq(sf_u32(te + 4), strlen(k->t[t].name));
                cr_assert_eq(sf_u32(te + 8), (uint32_t)i);
                cr_assert_eq(te[12], k->t[t].format);
                cr_assert_eq(te[13], k->t[t].cols ? 2 : 1);
                cr_assert_eq(sf_u64(te + 16), k->t[t].offset);
                cr_assert_eq(sf_u64(te + 24), (uint64_t)k->t[t].rows);
                cr_assert_eq(sf_u64(te + 32), (uint64_t)k->t[t].cols);
                cr_assert_eq(sf_u64(te + 40), k->t[t].nbytes);
            }
            expect_off += padded;
        }
        cr_assert_eq(expect_off, len);
        free(b);

        /* the reader's view */
        sl_sluice *f;
        sl_error e = {0};
        cr_assert_eq(sl_sluice_open(path, &f, &e), 0, "%s", e.msg);
        cr_assert_eq(sl_sluice_chunk_count(f), (size_t)F.n);
        size_t ml, tl;
        cr_assert_eq(memcmp(sl_sluice_metadata(f, &ml), F.meta, F.meta_len), 0);
        cr_assert_eq(ml, F.meta_len);
        cr_assert_str_eq(sl_sluice_tokenizer(f, &tl), F.tok);
        cr_assert_eq(tl, F.tok_len);
        cr_assert_eq(sl_sluice_config(f)->num_hidden_layers, 3);
        for (int i = 0; i < F.n; i++) {
            const sf_chunk *k = &F.ch[i];
            const sl_sluice_chunk *c = sl_sluice_chunk_at(f, (size_t)i);
            cr_assert_eq(c->offset % 4096, 0);
            cr_assert_eq(c->kind, k->c.kind);
            cr_assert_eq(c->decoded_size, k->c.decoded_size);
            if (c->kind == SL_CHUNK_CORE)
                cr_assert_eq(sl_sluice_core_chunk(f, c->layer), i);
            if (c->kind == SL_CHUNK_EXPERT)
                cr_assert_eq(sl_sluice_expert_chunk(f, c->layer, c->expert), i);
            uint8_t *dst = malloc(c->decoded_size);
            cr_assert_eq(sl_sluice_read_chunk(f, (size_t)i, NULL, dst, &e), 0, "%s", e.msg);
            cr_assert_eq(memcmp(dst, k->decoded, c->decoded_size), 0, "chunk %d decodes to what was written", i);
            free(dst);
            for (uint32_t t = 0; t < k->c.n_tensors; t++) {
                const sl_sluice_tensor *st = sl_sluice_find(f, k->t[t].name);
                cr_assert_not_null(st, "%s", k->t[t].name);
                cr_assert_eq(st->chunk, (uint32_t)i);
                cr_assert_eq(st->offset, k->t[t].offset);
                cr_assert_eq(st->rows, k->t[t].rows);
                cr_assert_eq(st->cols, k->t[t].cols);
                cr_assert_eq(st->format, k->t[t].format);
            }
        }
        cr_assert_null(sl_sluice_find(f, "no.such.tensor"));
        cr_assert_eq(sl_sluice_verify(f, 2, 1 << 16, NULL, NULL, &e), 0, "%s", e.msg);
        sl_sluice_close(f);
        sf_free_file(&F);
    }
}

/* The writer enforces the layout rules and names the chunk. */
Test(sluice_file, writer_refuses_chunks_that_break_the_layout)
{
    uint64_t s = sf_seed;
    sf_file F = {0};
    sf_make_meta(&F, &s);
    sf_add(&F, SL_CHUNK_RESIDENT, -1, -1, &s); /* 0 */
    sf_add(&F, SL_CHUNK_CORE, 1, -1, &s);      /* 1 */
    sf_add(&F, SL_CHUNK_EXPERT, 1, 0, &s);     /* 2 */
    sf_add(&F, SL_CHUNK_EXPERT, 1, 2, &s);     /* 3: skips expert 1 */
    sf_add(&F, SL_CHUNK_RESIDENT, -1, -1, &s); /* 4: resident after a layer */
    sf_add(&F, SL_CHUNK_CORE, 0, -1, &s);      /* 5: layer goes back */
    sf_add(&F, SL_CHUNK_EXPERT, 2, 0, &s);     /* 6: expert before its core */
    char path[128];
    sf_path(path, sizeof path, "bad.sluice");
    const int bad[] = {3, 4, 5, 6};
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        sl_sluice_writer *w;
        sl_error e = {0};
        cr_assert_eq(sl_sluice_writer_create(path, F.meta, F.meta_len, F.tok_off, F.tok_len, 8, F.n_tensors,
                                             F.names_bytes, &w, &e), 0, "%s", e.msg);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(sl_sluice_writer_add(w, &F.ch[i].c, F.ch[i].t, F.ch[i].c.n_tensors, F.ch[i].stored, &e), 0,
                         "%s", e.msg);
        int i = bad[b];
        cr_assert_eq(sl_sluice_writer_add(w, &F.ch[i].c, F.ch[i].t, F.ch[i].c.n_tensors, F.ch[i].stored, &e),
                     SL_E_ARG, "case %d accepted", i);
        cr_assert(strstr(e.msg, "chunk 3 ("), "names the chunk: %s", e.msg);
        cr_assert_eq(sl_sluice_writer_finish(w, &e), SL_E_ARG, "3 of 8 chunks cannot finish");
        cr_assert_eq(access(path, F_OK), -1, "no file after a failed finish");
    }
    /* a misaligned tensor and a decoded size that is not where the tensors end */
    sl_sluice_writer *w;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_writer_create(path, F.meta, F.meta_len, F.tok_off, F.tok_len, 8, F.n_tensors,
                                         F.names_bytes, &w, &e), 0);
    sf_chunk k = F.ch[0];
    k.t[0].offset = 32;
    cr_assert_eq(sl_sluice_writer_add(w, &k.c, k.t, k.c.n_tensors, k.stored, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "multiple of 64"), "%s", e.msg);
    k = F.ch[0];
    k.c.decoded_size += 1;
    k.c.codec = SL_CODEC_ZSTD; /* the writer does not decode: only the tensors disagree */
    cr_assert_eq(sl_sluice_writer_add(w, &k.c, k.t, k.c.n_tensors, k.stored, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "decoded size"), "%s", e.msg);
    k = F.ch[0];
    k.c.codec = SL_CODEC_RAW; /* raw bytes must match the checksum they come with */
    k.c.stored_size = k.c.decoded_size;
    k.stored = k.decoded;
    k.c.checksum ^= 1;
    cr_assert_eq(sl_sluice_writer_add(w, &k.c, k.t, k.c.n_tensors, k.stored, &e), SL_E_ARG);
    cr_assert(strstr(e.msg, "does not match"), "%s", e.msg);
    sl_sluice_writer_abort(w);
    sf_free_file(&F);
}

Test(sluice_file, path_appears_only_when_finished)
{
    uint64_t s = sf_seed;
    sf_file F;
    sf_random_file(&F, &s);
    char path[128], tmp[140];
    sf_path(path, sizeof path, "atomic.sluice");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (int finish = 0; finish < 2; finish++) {
        sl_sluice_writer *w;
        sl_error e = {0};
        cr_assert_eq(sl_sluice_writer_create(path, F.meta, F.meta_len, F.tok_off, F.tok_len, (uint32_t)F.n,
                                             F.n_tensors, F.names_bytes, &w, &e), 0);
        for (int i = 0; i < F.n; i++) {
            cr_assert_eq(sl_sluice_writer_add(w, &F.ch[i].c, F.ch[i].t, F.ch[i].c.n_tensors, F.ch[i].stored, &e), 0);
            cr_assert_eq(access(path, F_OK), -1, "%s exists before finish", path);
            cr_assert_eq(access(tmp, F_OK), 0, "%s is where the bytes go", tmp);
        }
        if (finish) {
            cr_assert_eq(sl_sluice_writer_finish(w, &e), 0, "%s", e.msg);
            cr_assert_eq(access(path, F_OK), 0);
        } else {
            sl_sluice_writer_abort(w);
            cr_assert_eq(access(path, F_OK), -1);
        }
        cr_assert_eq(access(tmp, F_OK), -1, "no .tmp left behind");
    }
    sf_free_file(&F);
}

/* Places are given in file order, bytes may arrive in any order (parallel writers). */
Test(sluice_file, reserved_chunks_written_out_of_order_read_back)
{
    uint64_t s = sf_seed;
    sf_file F;
    sf_random_file(&F, &s);
    char path[128];
    sf_path(path, sizeof path, "ooo.sluice");
    sl_sluice_writer *w;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_writer_create(path, F.meta, F.meta_len, F.tok_off, F.tok_len, (uint32_t)F.n, F.n_tensors,
                                         F.names_bytes, &w, &e), 0);
    uint64_t off[64];
    for (int i = 0; i < F.n; i++) {
        sl_sluice_chunk c = F.ch[i].c;
        c.stored_checksum = sl_checksum(F.ch[i].stored, c.stored_size);
        cr_assert_eq(sl_sluice_writer_reserve(w, &c, F.ch[i].t, c.n_tensors, &off[i], &e), 0, "%s", e.msg);
        cr_assert_eq(off[i] % 4096, 0);
    }
    for (int i = F.n - 1; i >= 0; i--)
        cr_assert_eq(sl_sluice_writer_write(w, off[i], F.ch[i].stored, F.ch[i].c.stored_size, &e), 0, "%s", e.msg);
    cr_assert_eq(sl_sluice_writer_finish(w, &e), 0, "%s", e.msg);
    sl_sluice *f;
    cr_assert_eq(sl_sluice_open(path, &f, &e), 0, "%s", e.msg);
    for (int i = 0; i < F.n; i++) {
        uint8_t *dst = malloc(F.ch[i].c.decoded_size);
        cr_assert_eq(sl_sluice_read_chunk(f, (size_t)i, NULL, dst, &e), 0, "%s", e.msg);
        cr_assert_eq(memcmp(dst, F.ch[i].decoded, F.ch[i].c.decoded_size), 0);
        free(dst);
    }
    sl_sluice_close(f);
    sf_free_file(&F);
}

/* ---- damaged files ------------------------------------------------------------------------- */

static void sf_expect_open_error(const char *path, int code, const char *needle, const char *what)
{
    sl_sluice *f = NULL;
    sl_error e = {0};
    int rc = sl_sluice_open(path, &f, &e);
    cr_assert_neq(rc, 0, "%s: opened", what);
    if (code)
        cr_assert_eq(rc, code, "%s: code %d (%s): %s", what, rc, sl_strerror(rc), e.msg);
    cr_assert(strstr(e.msg, path), "%s: message names the file: %s", what, e.msg);
    cr_assert(strstr(e.msg, needle), "%s: message says \"%s\": %s", what, needle, e.msg);
    cr_assert_null(strchr(e.msg, '\n'), "one line");
}

Test(sluice_file, truncated_foreign_newer_and_damaged_files_fail_clearly)
{
    uint64_t s = sf_seed;
    sf_file F;
    sf_random_file(&F, &s);
    char good[128], bad[128];
    sf_path(good, sizeof good, "good.sluice");
    sf_path(bad, sizeof bad, "bad.sluice");
    sf_write(&F, good);
    size_t len;
    uint8_t *b = sf_slurp(good, &len);
    uint64_t isz = sf_u64(b + 24), ct = sf_u64(b + 64);

    /* truncated at several points: inside the header, the index, a chunk, the last byte */
    size_t cuts[] = {0, 5, 100, 4095, 4096 + (size_t)(stw_rand(&s) % (isz - 4096)), (size_t)isz,
                     (size_t)(isz + stw_rand(&s) % (len - isz)), len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        sf_spit(bad, b, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "cut at %zu of %zu", cuts[i], len);
        sf_expect_open_error(bad, SL_E_FORMAT, cuts[i] == 0 ? "not a .sluice file" : "truncated", what);
    }

    uint8_t *c = malloc(len);
    /* wrong magic */
    memcpy(c, b, len);
    c[stw_rand(&s) % 8] ^= 0x20;
    sf_spit(bad, c, len);
    sf_expect_open_error(bad, SL_E_FORMAT, "not a .sluice file", "wrong magic");
    /* a safetensors file is foreign too */
    sf_expect_open_error("tests/fixtures/tiny-b-bf16/model.safetensors", SL_E_FORMAT, "not a .sluice file",
                         "safetensors");
    /* newer version (the checksum does not matter: a newer version may change it) */
    memcpy(c, b, len);
    c[8] = 2;
    sf_spit(bad, c, len);
    sf_expect_open_error(bad, SL_E_UNSUPPORTED, "format version 2 is newer than this sluice (reads <= 1)",
                         "version + 1");
    /* trailing bytes */
    uint8_t *longer = calloc(1, len + 4096);
    memcpy(longer, b, len);
    sf_spit(bad, longer, len + 4096);
    sf_expect_open_error(bad, SL_E_FORMAT, "the header says", "trailing bytes");
    free(longer);
    /* the chunk table offset past the end of the file */
    memcpy(c, b, len);
    sf_put64(c + 64, len + 4096 * (1 + stw_rand(&s) % 100));
    sf_spit(bad, c, len);
    sf_expect_open_error(bad, SL_E_FORMAT, "chunk table", "table offset past the end");
    sf_expect_open_error(bad, SL_E_FORMAT, "past the end of the file", "table offset past the end");
    /* a chunk entry pointing past the end, index resealed so only the bounds check can catch it */
    memcpy(c, b, len);
    int victim = (int)(stw_rand(&s) % (uint64_t)F.n);
    sf_put64(c + ct + (size_t)victim * SF_ENTRY + 24, len);
    sf_reseal(c);
    sf_spit(bad, c, len);
    char label[64];
    snprintf(label, sizeof label, "chunk %d (", victim);
    sf_expect_open_error(bad, SL_E_FORMAT, label, "chunk past the end");
    sf_expect_open_error(bad, SL_E_FORMAT, "past the end of the file", "chunk past the end");
    /* a misaligned chunk */
    memcpy(c, b, len);
    sf_put64(c + ct + (size_t)victim * SF_ENTRY + 24, sf_u64(c + ct + (size_t)victim * SF_ENTRY + 24) + 512);
    sf_reseal(c);
    sf_spit(bad, c, len);
    sf_expect_open_error(bad, SL_E_FORMAT, "not a multiple of 4096", "misaligned chunk");
    /* an unknown codec */
    memcpy(c, b, len);
    c[ct + (size_t)victim * SF_ENTRY + 1] = 7;
    sf_reseal(c);
    sf_spit(bad, c, len);
    sf_expect_open_error(bad, SL_E_UNSUPPORTED, "codec 7", "unknown codec");
    /* any byte of the index flipped without resealing: the checksum catches it */
    for (int k = 0; k < 8; k++) {
        memcpy(c, b, len);
        size_t at = 4096 + (size_t)(stw_rand(&s) % (isz - 4096));
        c[at] ^= (uint8_t)(1 + stw_rand(&s) % 255);
        sf_spit(bad, c, len);
        char what[64];
        snprintf(what, sizeof what, "index byte %zu flipped", at);
        sf_expect_open_error(bad, SL_E_CHECKSUM, "index checksum", what);
    }
    /* not a file at all */
    sf_expect_open_error(sf_dir, SL_E_IO, "not a regular file", "directory");
    free(c);
    free(b);
    sf_free_file(&F);
}

/* A flipped byte inside a chunk's stored bytes is caught when that chunk is read, and the error
 * names the file and the chunk. */
Test(sluice_file, flipped_chunk_byte_names_the_chunk)
{
    uint64_t s = sf_seed;
    sf_file F;
    sf_random_file(&F, &s);
    char path[128];
    sf_path(path, sizeof path, "flip.sluice");
    sf_write(&F, path);
    sl_sluice *f;
    sl_error e = {0};
    cr_assert_eq(sl_sluice_open(path, &f, &e), 0, "%s", e.msg);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    for (size_t i = 0; i < sl_sluice_chunk_count(f); i++) {
        const sl_sluice_chunk *c = sl_sluice_chunk_at(f, i);
        uint64_t at = c->offset + stw_rand(&s) % c->stored_size;
        uint8_t orig, flip;
        cr_assert_eq(pread(fd, &orig, 1, (off_t)at), 1);
        flip = orig ^ (uint8_t)(1u << (stw_rand(&s) % 8));
        cr_assert_eq(pwrite(fd, &flip, 1, (off_t)at), 1);
        uint8_t *dst = malloc(c->decoded_size);
        int rc = sl_sluice_read_chunk(f, i, NULL, dst, &e);
        char label[64];
        snprintf(label, sizeof label, "chunk %zu (", i);
        cr_assert_neq(rc, 0, "chunk %zu (%s): flip at %llu not caught", i, c->codec ? "zstd" : "raw",
                      (unsigned long long)at);
        cr_assert(strstr(e.msg, label) && strstr(e.msg, path), "names the chunk: %s", e.msg);
        cr_assert(rc == SL_E_CHECKSUM && strstr(e.msg, "checksum"), "%s chunk: %d %s",
                  c->codec ? "zstd" : "raw", rc, e.msg);
        cr_assert_eq(sl_sluice_verify(f, 2, 0, NULL, NULL, &e), rc, "verify finds it too");
        cr_assert(strstr(e.msg, label), "verify names the chunk: %s", e.msg);
        cr_assert_eq(pwrite(fd, &orig, 1, (off_t)at), 1);
        cr_assert_eq(sl_sluice_read_chunk(f, i, NULL, dst, &e), 0, "restored: %s", e.msg);
        free(dst);
    }
    close(fd);
    sl_sluice_close(f);
    sf_free_file(&F);
}
