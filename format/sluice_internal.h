/* format/ private: the .sluice byte layout shared by the writer and the reader. FORMAT.md is the
 * prose version of these numbers; a change here is a change there. All integers little-endian. */
#ifndef SL_SLUICE_INTERNAL_H
#define SL_SLUICE_INTERNAL_H

#include <stdint.h>
#include <string.h>

/* "SLUICE", NUL, then 0x1a (^Z: `type` on DOS-like consoles stops there). */
static const uint8_t sl_sluice_magic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 0x00, 0x1a};

enum {
    SLH_HEADER_SIZE = 4096,
    SLH_ENTRY_SIZE = 64, /* chunk table and tensor directory entries */
    /* header field offsets */
    SLH_MAGIC = 0,        /* u8[8] */
    SLH_VERSION = 8,      /* u32 */
    SLH_HSIZE = 12,       /* u32 header size (4096) */
    SLH_FILE_SIZE = 16,   /* u64 */
    SLH_INDEX_SIZE = 24,  /* u64: bytes [0, index_size) are header + index; = first chunk offset */
    SLH_META_OFF = 32,    /* u64 */
    SLH_META_LEN = 40,    /* u64 */
    SLH_TOK_OFF = 48,     /* u64: tokenizer.json value inside the metadata (absolute), 0 if none */
    SLH_TOK_LEN = 56,     /* u64 */
    SLH_CHUNK_OFF = 64,   /* u64 */
    SLH_CHUNK_COUNT = 72, /* u32 */
    SLH_CHUNK_ESIZE = 76, /* u32 (64) */
    SLH_TENSOR_OFF = 80,  /* u64 */
    SLH_TENSOR_COUNT = 88, /* u32 */
    SLH_TENSOR_ESIZE = 92, /* u32 (64) */
    SLH_NAMES_OFF = 96,   /* u64 */
    SLH_NAMES_LEN = 104,  /* u64 */
    SLH_CHECKSUM = 112,   /* u64: XXH3-64 of bytes [0, index_size) with these 8 bytes as zero */
    /* chunk entry */
    SLC_KIND = 0,         /* u8 */
    SLC_CODEC = 1,        /* u8 */
    SLC_LAYER = 4,        /* i32, -1 for resident */
    SLC_EXPERT = 8,       /* i32, -1 unless expert */
    SLC_FIRST = 12,       /* u32 */
    SLC_NTENSORS = 16,    /* u32 */
    SLC_OFFSET = 24,      /* u64 */
    SLC_STORED = 32,      /* u64 */
    SLC_DECODED = 40,     /* u64 */
    SLC_CHECKSUM = 48,    /* u64: XXH3-64 of the decoded bytes */
    SLC_STORED_SUM = 56,  /* u64: XXH3-64 of the stored bytes */
    /* tensor entry */
    SLT_NAME_OFF = 0,     /* u32, into the name pool */
    SLT_NAME_LEN = 4,     /* u32, without the NUL that follows it */
    SLT_CHUNK = 8,        /* u32 */
    SLT_FORMAT = 12,      /* u8 */
    SLT_NDIM = 13,        /* u8: 1 or 2 */
    SLT_OFFSET = 16,      /* u64 */
    SLT_ROWS = 24,        /* u64 */
    SLT_COLS = 32,        /* u64, 0 for vectors */
    SLT_NBYTES = 40,      /* u64 */
};

static inline void sl_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void sl_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t sl_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline uint64_t sl_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline uint64_t sl_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* ---- the converter's plan: every tensor the config implies, grouped into chunks in file order */

#include "format/format.h"

typedef enum {
    SL_ROLE_KEEP,   /* norms, router weight and bias: always the source's format */
    SL_ROLE_MATRIX, /* non-expert matrices: opts->quant */
    SL_ROLE_EXPERT, /* routed experts: opts->expert_quant */
} sl_tensor_role;

typedef struct sl_plan_tensor {
    char name[112];  /* "model.layers.60.mlp.experts.255.gate_proj.weight" is 49 */
    int64_t rows, cols; /* cols == 0: a vector */
    int role;
} sl_plan_tensor;

typedef struct sl_plan_chunk {
    int kind, layer, expert;
    uint32_t first, n;  /* tensors [first, first+n) of the plan */
    uint64_t params;    /* weights it holds */
} sl_plan_chunk;

typedef struct sl_plan {
    sl_plan_chunk *chunks;
    sl_plan_tensor *tensors;
    uint32_t n_chunks, n_tensors, max_chunk_tensors;
    size_t names_bytes;  /* sum of strlen + 1 */
    uint64_t params;
} sl_plan;

/* The chunks and tensors of a DeepSeek-V3 config in file order (format/convert_plan.c).
 * Multi-token-prediction layers (num_nextn_predict_layers) are not part of it. SL_E_NOMEM or
 * SL_E_ARG (a config too large to plan). Free with sl_plan_free. */
int sl_plan_build(const sl_config *c, sl_plan *p, sl_error *e);
void sl_plan_free(sl_plan *p);

/* ---- a pool of malloc'd buffers (format/buf_pool.c) ------------------------------------------
 * Converting streams thousands of same-sized chunks; handing freed buffers to the next chunk
 * instead of back to the kernel saves the page faults (zeroing) of fresh memory each time. */
typedef struct sl_buf_pool sl_buf_pool;
/* Keep at most keep_bytes in at most 64 buffers, none bigger than max_buf. NULL on no memory. */
sl_buf_pool *sl_buf_pool_create(size_t keep_bytes, size_t max_buf);
/* A buffer of at least need bytes (*cap says how many): the smallest pooled one that fits, else
 * malloc(need). NULL on no memory. Thread-safe. */
void *sl_buf_pool_get(sl_buf_pool *p, size_t need, size_t *cap);
/* Give back a malloc'd buffer of cap bytes (NULL is fine); freed when the pool is full. */
void sl_buf_pool_put(sl_buf_pool *p, void *buf, size_t cap);
void sl_buf_pool_destroy(sl_buf_pool *p);

/* The metadata JSON for converting SRC (in format/convert_meta.c): FORMAT.md's keys, config.json and
 * tokenizer.json (when there is one) verbatim; *tok_off and *tok_len locate the tokenizer value in
 * it (*tok_len 0: none). *meta is malloc'd. Errors name the file: SL_E_IO, SL_E_FORMAT. */
int sl_convert_metadata(const char *src, bool is_dir, const sl_convert_opts *o, char **meta, size_t *meta_len,
                        size_t *tok_off, size_t *tok_len, sl_error *e);

#endif
