/* format/: files on disk -> typed views. Safetensors (single file or sharded through
 * model.safetensors.index.json) and DeepSeek-V3 config.json. Later: the .sluice container.
 *
 * Nothing here computes; tensors are returned as bounds-checked views into read-only mappings. */
#ifndef SL_FORMAT_H
#define SL_FORMAT_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- dtypes ------------------------------------------------------------------------------ */

typedef enum {
    SL_DT_F32,
    SL_DT_F16,
    SL_DT_BF16,
    SL_DT_F8_E4M3, /* safetensors "F8_E4M3" (torch.float8_e4m3fn) */
} sl_dtype;

size_t sl_dtype_size(sl_dtype dt);     /* bytes per element */
const char *sl_dtype_name(sl_dtype dt); /* the safetensors spelling: "BF16", ... */

/* Safetensors spelling -> sl_dtype. Returns 0 and sets *out; SL_E_UNSUPPORTED for a dtype the
 * safetensors spec defines but sluice does not read ("I64", "F64", "BOOL", ...); SL_E_FORMAT for
 * a string that is no safetensors dtype at all. Fills no message (the caller knows the file). */
int sl_dtype_parse(const char *s, sl_dtype *out);

/* ---- safetensors ------------------------------------------------------------------------- */

#define SL_MAX_DIMS 4

/* One tensor: a view into a read-only mapping owned by the sl_safetensors it came from. */
typedef struct sl_tensor_view {
    const char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    int64_t numel;
    const void *data;  /* numel * sl_dtype_size(dtype) bytes, inside the file's bounds */
    const char *file;  /* the shard it lives in (for messages) */
} sl_tensor_view;

typedef struct sl_safetensors sl_safetensors;

/* Open PATH: a directory holding model.safetensors.index.json (sharded) or model.safetensors,
 * or one .safetensors file. Every shard is mmapped read-only; every header is parsed and each
 * tensor's [begin, end) checked against the data section and its dtype * shape. Errors
 * (SL_E_IO, SL_E_FORMAT, SL_E_UNSUPPORTED, SL_E_MISSING) name the file and tensor.
 * On success *out must be closed with sl_safetensors_close. */
int sl_safetensors_open(const char *path, sl_safetensors **out, sl_error *e);
void sl_safetensors_close(sl_safetensors *st);

/* Lookup by exact name; NULL when absent. O(log n). */
const sl_tensor_view *sl_safetensors_find(const sl_safetensors *st, const char *name);
size_t sl_safetensors_count(const sl_safetensors *st);
const sl_tensor_view *sl_safetensors_at(const sl_safetensors *st, size_t i); /* sorted by name */

/* ---- DeepSeek-V3 config.json -------------------------------------------------------------- */

/* YaRN rope scaling, as the official config (rope_scaling, type "yarn") or transformers 5.x
 * (rope_parameters, rope_type "yarn") states it. kind == SL_ROPE_NONE means plain RoPE. */
typedef enum { SL_ROPE_NONE, SL_ROPE_YARN } sl_rope_kind;

typedef struct sl_config {
    int vocab_size;
    int hidden_size;             /* 7168 in V3 */
    int intermediate_size;       /* dense FFN width (first_k_dense_replace layers) */
    int moe_intermediate_size;   /* routed / shared expert width, 2048 in V3 */
    int num_hidden_layers;       /* 61 */
    int first_k_dense_replace;   /* layers [0, k) are dense, [k, n) MoE */
    int moe_layer_freq;          /* 1 in V3 (MoE on every layer >= k) */
    int n_routed_experts;        /* 256 */
    int n_shared_experts;        /* 1 */
    int num_experts_per_tok;     /* 8 */
    int n_group;                 /* 8 */
    int topk_group;              /* 4 */
    bool norm_topk_prob;
    float routed_scaling_factor; /* 2.5 */
    int num_attention_heads;     /* 128 */
    int q_lora_rank;             /* 1536; 0 means no low-rank q (q_proj) */
    int kv_lora_rank;            /* 512 */
    int qk_nope_head_dim;        /* 128 */
    int qk_rope_head_dim;        /* 64 */
    int v_head_dim;              /* 128 */
    float rms_norm_eps;
    int max_position_embeddings;
    int bos_token_id, eos_token_id; /* -1 when absent */
    bool tie_word_embeddings;
    /* rope */
    double rope_theta;
    sl_rope_kind rope_kind;
    double rope_factor;
    int rope_original_max_pos;
    double rope_beta_fast, rope_beta_slow; /* defaults 32, 1 */
    double rope_mscale, rope_mscale_all_dim; /* 0 when absent */
    double rope_attention_factor;          /* 0 when absent (then derived) */
    /* fp8 checkpoint: quantization_config.weight_block_size, 0 when the checkpoint is not fp8 */
    int fp8_block_rows, fp8_block_cols;
} sl_config;

/* Parse config.json at PATH. Accepts model_type "deepseek_v3" (and "deepseek_v2" layouts that
 * share the keys). Missing required keys, a wrong type, or an unknown model_type give an error
 * that names the key. */
int sl_config_load(const char *path, sl_config *out, sl_error *e);

/* Same from an in-memory JSON text; `origin` names it in messages. */
int sl_config_parse(const char *json, size_t len, const char *origin, sl_config *out, sl_error *e);

/* ---- weight sources --------------------------------------------------------------------- */

/* Where a model's named tensors come from (a Hugging Face directory, a .sluice file, later GGUF).
 * get() hands back tensor `name`, checked to be rows x cols (cols == 0: a vector of rows), in a
 * quant/ weight format (sl_wformat value) as one malloc'd buffer the caller frees. Sources never
 * re-round: bf16 stays bf16, official fp8 stays fp8 + its block scales. Errors name the tensor:
 * SL_E_MISSING (absent), SL_E_SHAPE (wrong shape), SL_E_UNSUPPORTED, SL_E_CHECKSUM, SL_E_IO. */
typedef struct sl_weight_source sl_weight_source;
struct sl_weight_source {
    const char *path;     /* for messages */
    const sl_config *config;
    int (*get)(sl_weight_source *src, const char *name, int64_t rows, int64_t cols, int *fmt,
               void **buf, size_t *nbytes, sl_error *e);
    void (*close)(sl_weight_source *src);
};

/* A Hugging Face directory (config.json + safetensors) as a weight source. F32/BF16 tensors come
 * back as SL_WF_F32/SL_WF_BF16, F16 as SL_WF_F32, F8_E4M3 with its `_scale_inv` as SL_WF_FP8
 * (whose layout is the official one: bytes then block scales). */
int sl_hf_source_open(const char *dir, sl_weight_source **out, sl_error *e);

/* ---- the .sluice container (format/FORMAT.md has the byte layout) ------------------------
 *
 * One file: a 4096-byte header (magic, version, where the rest lies, a checksum of the whole
 * index), the index (metadata JSON, chunk table, tensor directory, name pool), then chunks. The
 * chunk is the unit of I/O: it starts on a 4096-byte boundary, is padded to 4096 on disk, is
 * stored raw or zstd, and carries the XXH3-64 of its decoded bytes. Layout rules: resident
 * chunks (embedding; lm_head + final norm) come first, then per layer its core chunk (norms,
 * attention, router, shared expert or dense MLP) immediately followed by its routed experts
 * 0..E-1, one expert (gate, up, down with their scales) per chunk. Inside a decoded chunk every
 * tensor starts at a multiple of 64 bytes. */

#include <signal.h>

#define SL_SLUICE_VERSION 1
#define SL_SLUICE_ALIGN 4096       /* chunk offsets and padded stored lengths */
#define SL_SLUICE_TENSOR_ALIGN 64  /* tensor offsets inside a decoded chunk */
#define SL_SLUICE_CONVERTER "sluice 0.1.0"

typedef enum {
    SL_CHUNK_RESIDENT = 0, /* embedding; lm_head + final norm */
    SL_CHUNK_CORE = 1,     /* one layer's non-expert weights */
    SL_CHUNK_EXPERT = 2,   /* one routed expert */
    SL_CHUNK_KIND_COUNT
} sl_chunk_kind;

/* "resident", "layer core", "expert"; "?" outside the enum. */
const char *sl_chunk_kind_name(int kind);

/* One chunk table entry, as the reader hands it out and the writer takes it. */
typedef struct sl_sluice_chunk {
    int kind;                /* sl_chunk_kind */
    int codec;               /* quant/'s sl_codec: raw or zstd */
    int layer;               /* -1 for resident chunks */
    int expert;              /* -1 unless kind == SL_CHUNK_EXPERT */
    uint32_t first_tensor;   /* its tensors: directory entries [first_tensor, +n_tensors) */
    uint32_t n_tensors;
    uint64_t offset;         /* file offset, a multiple of 4096 */
    uint64_t stored_size;    /* bytes as stored, unpadded (the file holds it padded to 4096) */
    uint64_t decoded_size;   /* bytes after decoding: the tensors at their offsets */
    uint64_t checksum;       /* XXH3-64 of the decoded bytes */
    uint64_t stored_checksum; /* XXH3-64 of the stored bytes (= checksum for raw): catches flips a
                                 zstd decoder would not notice (e.g. in its window descriptor) */
} sl_sluice_chunk;

/* One tensor directory entry. */
typedef struct sl_sluice_tensor {
    const char *name;        /* the Hugging Face checkpoint name */
    uint32_t chunk;          /* index in the chunk table */
    int format;              /* quant/'s sl_wformat */
    int64_t rows, cols;      /* cols == 0: a vector of rows */
    uint64_t offset;         /* inside the decoded chunk, a multiple of 64 */
    uint64_t nbytes;         /* sl_wformat_bytes(format, rows, cols ? cols : 1) */
} sl_sluice_tensor;

typedef struct sl_sluice sl_sluice;

/* Open a .sluice file and check everything short of the chunk contents: magic, version (a newer
 * one is refused naming both), header fields against the file size (truncation), the index
 * checksum, every chunk's alignment and bounds, the layout order, every tensor's place in its
 * chunk, the metadata JSON and the embedded config. Reads the header and index only (a few MB
 * for 671B). Errors (SL_E_IO, SL_E_FORMAT, SL_E_UNSUPPORTED, SL_E_CHECKSUM) name the file and
 * the field or chunk. On success close *out with sl_sluice_close. */
int sl_sluice_open(const char *path, sl_sluice **out, sl_error *e);
void sl_sluice_close(sl_sluice *f);

const char *sl_sluice_path(const sl_sluice *f);
uint64_t sl_sluice_file_size(const sl_sluice *f);
const sl_config *sl_sluice_config(const sl_sluice *f);
/* The metadata JSON text (NUL-terminated, len bytes; see FORMAT.md for its keys). */
const char *sl_sluice_metadata(const sl_sluice *f, size_t *len);
/* The embedded tokenizer.json, byte for byte as the converter found it (NUL-terminated), or NULL
 * when the source had none. */
const char *sl_sluice_tokenizer(const sl_sluice *f, size_t *len);

size_t sl_sluice_chunk_count(const sl_sluice *f);
const sl_sluice_chunk *sl_sluice_chunk_at(const sl_sluice *f, size_t i); /* file order */
size_t sl_sluice_tensor_count(const sl_sluice *f);
const sl_sluice_tensor *sl_sluice_tensor_at(const sl_sluice *f, size_t i); /* file order */
/* Lookup by exact name; NULL when absent. O(log n). */
const sl_sluice_tensor *sl_sluice_find(const sl_sluice *f, const char *name);
/* Chunk index of layer's core chunk / of (layer, expert); -1 when the file has none. O(1). */
int64_t sl_sluice_core_chunk(const sl_sluice *f, int layer);
int64_t sl_sluice_expert_chunk(const sl_sluice *f, int layer, int expert);
/* "PATH: chunk 17 (layer 3 expert 5)": how every message names a chunk. */
void sl_sluice_chunk_label(const sl_sluice *f, size_t i, char *buf, size_t n);

/* Bytes chunk c occupies on disk: stored_size rounded up to 4096 (what read_chunk's stage holds). */
uint64_t sl_sluice_padded(uint64_t stored_size);

/* Read chunk i, decode it into dst (decoded_size bytes) and verify its checksum. `stage` holds
 * sl_sluice_padded(stored_size) bytes; when it is 4096-aligned the read bypasses the page cache
 * (O_DIRECT, where the filesystem allows); NULL: allocated for this call. Safe to call from
 * several threads at once with distinct buffers. Errors name the chunk: SL_E_IO (short read:
 * the file shrank), SL_E_FORMAT (corrupt zstd frame), SL_E_CHECKSUM. Cost: one pread of the
 * padded chunk, a zstd decode if compressed, one XXH3 pass. */
int sl_sluice_read_chunk(const sl_sluice *f, size_t i, void *stage, void *dst, sl_error *e);

/* The second half of read_chunk, for callers that read the stored bytes themselves (io_uring):
 * check stored (stored_size bytes) against stored_checksum, decode into dst (decoded_size bytes)
 * and check the decoded checksum. Errors name the chunk and say "checksum" (SL_E_CHECKSUM) or
 * what is wrong with the zstd frame (SL_E_FORMAT). Thread-safe. */
int sl_sluice_decode_chunk(const sl_sluice *f, size_t i, const void *stored, void *dst, sl_error *e);

/* Read and verify every chunk on `threads` threads (0: one per online core), holding at most
 * about `mem_budget` bytes of buffers (0: 2 GiB; a chunk bigger than that is read alone).
 * progress (may be NULL) is called from the calling thread with bytes of chunks verified so far
 * and the total (sum of stored sizes) a few times a second and at the end. Stops at the first
 * bad chunk, in file order, and returns its error. */
int sl_sluice_verify(const sl_sluice *f, int threads, size_t mem_budget,
                     void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
                     sl_error *e);

/* A .sluice file as a weight source: config from the embedded metadata; get() finds the tensor
 * in the directory, reads and verifies its chunk (keeping the last chunk read, so tensors of one
 * chunk cost one read) and returns a copy of its bytes in their stored format. get() is
 * serialised by a lock, so several threads may share the source. */
int sl_sluice_source_open(const char *path, sl_weight_source **out, sl_error *e);

/* ---- writing a .sluice file ---- */

typedef struct sl_sluice_writer sl_sluice_writer;

/* Start writing PATH: the bytes go to "PATH.tmp", which becomes PATH only in finish. The index
 * size is fixed here: the file will hold exactly n_chunks chunks and n_tensors tensors whose
 * names need at most names_bytes bytes (each name's length + 1). meta is the metadata JSON
 * (meta_len bytes); tok_off/tok_len locate the tokenizer.json value inside it (tok_len 0: none).
 * Errors: SL_E_IO (cannot create), SL_E_ARG. */
int sl_sluice_writer_create(const char *path, const char *meta, size_t meta_len, size_t tok_off,
                            size_t tok_len, uint32_t n_chunks, uint32_t n_tensors,
                            size_t names_bytes, sl_sluice_writer **out, sl_error *e);
/* Append the next chunk in file order. c gives kind, layer, expert, codec, stored_size,
 * decoded_size, checksum (offset, first_tensor, n_tensors, stored_checksum are filled in); t[0..n_t) its tensors
 * (name, format, rows, cols, offset, nbytes; chunk is filled in); data its stored bytes. The
 * layout rules are enforced: a chunk out of order, a misaligned or overlapping tensor, or more
 * chunks/tensors/name bytes than reserved, or a raw chunk whose bytes do not match checksum, is
 * SL_E_ARG naming the chunk. SL_E_IO on write failure. Cost: one XXH3 pass and one pwrite of the
 * padded chunk. */
int sl_sluice_writer_add(sl_sluice_writer *w, const sl_sluice_chunk *c, const sl_sluice_tensor *t,
                         uint32_t n_t, const void *data, sl_error *e);
/* sl_sluice_writer_add in two halves, so several threads can write chunks at once while their
 * places are still assigned in file order. reserve: the next chunk in file order, checked as add
 * checks it (c->stored_checksum must be the XXH3-64 of the stored bytes; for raw, = checksum);
 * records its table entry and returns its file offset. write: its stored bytes (padded with
 * zeros to 4096) at that offset; thread-safe. Every reserved chunk must be written before
 * finish. Cost: reserve O(tensors); write one pwrite. */
int sl_sluice_writer_reserve(sl_sluice_writer *w, const sl_sluice_chunk *c, const sl_sluice_tensor *t,
                             uint32_t n_t, uint64_t *offset, sl_error *e);
int sl_sluice_writer_write(sl_sluice_writer *w, uint64_t offset, const void *data, uint64_t stored_size,
                           sl_error *e);
/* Bytes placed so far (padded chunks reserved, the header region included). */
uint64_t sl_sluice_writer_bytes(const sl_sluice_writer *w);
/* Write the index and header, fsync, rename PATH.tmp to PATH, fsync the directory, free w.
 * Fewer chunks or tensors than reserved is SL_E_ARG. On any error PATH.tmp is removed. */
int sl_sluice_writer_finish(sl_sluice_writer *w, sl_error *e);
/* Remove PATH.tmp and free w (NULL is fine). PATH is never touched. */
void sl_sluice_writer_abort(sl_sluice_writer *w);

/* ---- the converter: Hugging Face directory (or .sluice file) -> .sluice ---- */

typedef struct sl_convert_progress {
    uint64_t params_done, params_total; /* weights converted: the fraction of the work done */
    uint64_t src_bytes;                 /* source tensor bytes read so far */
    uint64_t out_bytes;                 /* bytes of the file placed so far */
    uint32_t chunks_done, chunks_total;
    double seconds;                     /* since the start */
} sl_convert_progress;

typedef struct sl_convert_opts {
    int quant;           /* sl_wformat for non-expert matrices (attention, shared expert, dense
                            MLP, embedding, lm_head); -1: each tensor keeps its source format */
    int expert_quant;    /* sl_wformat for routed experts; -1: same as quant */
    int zstd_level;      /* 1..22; 0: every chunk stored raw */
    double min_saving;   /* keep a zstd chunk only when it saves at least this fraction */
    int threads;         /* workers; 0: one per online core */
    size_t mem_budget;   /* bytes of chunks in flight (about 2x each chunk); 0: 4 GiB */
    int64_t parallel_recode; /* a tensor of at least this many weights that needs recoding is split
                                over all threads (the embedding and lm_head, 926M each, would take
                                ~30 s on one core); 0: 64M */
    void (*progress)(void *ctx, const sl_convert_progress *p); /* may be NULL */
    void *progress_ctx;
    const volatile sig_atomic_t *cancel; /* non-zero stops the conversion (a signal handler's flag) */
    uint32_t fail_after_chunks;          /* test hook: fail after placing this many chunks (0: off) */
} sl_convert_opts;

/* quant -1, expert_quant -1, zstd 3, min_saving 0.02, threads 0, no progress, no cancel. */
void sl_convert_opts_default(sl_convert_opts *o);

/* What a conversion produced, per chunk kind. */
typedef struct sl_convert_stats {
    uint32_t chunks[SL_CHUNK_KIND_COUNT], zstd_chunks[SL_CHUNK_KIND_COUNT];
    uint64_t decoded[SL_CHUNK_KIND_COUNT], stored[SL_CHUNK_KIND_COUNT];
    uint64_t src_bytes, file_bytes, params;
    double seconds;
    /* where the time went, summed over workers (thread-seconds): fetching tensors from the source
     * (copy out of the mapping, page faults: the source read), recoding, checksumming, zstd,
     * writing; and the calling thread's seconds waiting for the next chunk in file order */
    double t_fetch, t_recode, t_checksum, t_compress, t_write, t_wait;
} sl_convert_stats;

/* Convert SRC (a Hugging Face DeepSeek-V3 directory, bf16 or the official fp8 release, or a
 * .sluice file) into OUT. Every tensor the config implies is read through a weight source,
 * recoded when its target format differs (norms, the router weight and its bias always keep
 * theirs; a tensor already in its target format is copied bit for bit), laid out by the layout
 * rules and compressed on `threads` workers, which also write them once the calling thread has
 * placed them in file order, so memory stays about 1.25 x mem_budget whatever the model size. config.json is embedded verbatim, and
 * tokenizer.json when SRC has one. Writes OUT.tmp and renames it to OUT only when complete: on
 * any error or cancel OUT.tmp is removed and OUT is untouched. progress is called from the
 * calling thread after each chunk and a few times a second. stats may be NULL. */
int sl_convert(const char *src, const char *out, const sl_convert_opts *o, sl_convert_stats *stats,
               sl_error *e);

/* ---- synthetic models (format/synth.c) ---- */

typedef struct sl_synth_opts {
    const char *preset;    /* "deepseek-v3" (the real shapes), "tiny" (real vocab, tiny body), or
                              a config.json path */
    int layers;            /* num_hidden_layers override; 0 keeps the preset's */
    int quant;             /* sl_wformat of non-expert matrices */
    int expert_quant;      /* sl_wformat of routed experts; -1: same as quant */
    const char *tokenizer; /* tokenizer.json to embed, or NULL */
    uint64_t seed;
    int threads;           /* 0: one per core */
    int zstd_level;        /* 0: raw chunks (random weights barely compress) */
    void (*progress)(void *ctx, uint64_t done, uint64_t total, double seconds);
    void *progress_ctx;
    const volatile sig_atomic_t *cancel;
} sl_synth_opts;

/* preset deepseek-v3, q4, seed 1, raw chunks. */
void sl_synth_opts_default(sl_synth_opts *o);

/* Write a model with the preset's shapes and random zero-mean weights to OUT (via OUT.tmp, renamed
 * when complete). Errors name the preset or the file. Cost: one pass at generation speed over
 * the output bytes, on `threads` cores. */
int sl_synth(const char *out, const sl_synth_opts *o, sl_error *e);

#endif
