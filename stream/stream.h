/* stream/: the streaming engine. It runs a model whose routed experts do not fit the backend's
 * memory: the .sluice file's expert chunks are read on worker threads (demand misses ahead of
 * prefetches), checksummed and decoded into a host cache (tier 2), and copied into a pool of
 * backend-memory slots (tier 1) that the forward pass computes from, while other chunks load.
 *
 *   .sluice ──read+decode (workers)──► host cache (tier 2, LRU) ──upload──► slots (tier 1, LFU)
 *                                                                             │
 *                                      model/ forward pass ◄── experts_ready ─┘ (arrival order)
 *
 * Budgets: the backend budget holds the resident weights (embedding, head, every layer core)
 * plus the slot pool; the host budget holds the host cache. When the layer cores do not fit
 * (or stream_cores asks), they stream too: two backend core slots (one computing, one
 * uploading the next layer) fed from a host ring of core images (stream/cores.c). Both are carved once at open; no
 * allocation happens per token. stream/ knows chunks and bytes, not DeepSeek math: the model
 * drives it through model.h's sl_weight_provider. */
#ifndef SL_STREAM_H
#define SL_STREAM_H

#include "base/base.h"
#include "model/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which expert in a backend slot (tier 1) gives way: least recently used, or least frequently
 * requested (ties: the least recent). The host cache (tier 2) is always LRU, because prefetched
 * chunks have no requests yet and LFU evicts them first. bench/results/cache-policy-*.md has
 * the measurement behind the default (LFU). */
typedef enum { SL_CACHE_LRU = 0, SL_CACHE_LFU = 1 } sl_cache_policy;

typedef struct sl_stream_opts {
    size_t backend_budget; /* bytes of backend memory for everything: resident weights, run
                            * state, a KV cache of max_ctx, expert slots; 0: every expert gets a
                            * slot */
    size_t host_budget;    /* bytes of host cache; 0: 1/4 of MemAvailable */
    int workers;           /* read + decode threads; 0: one per core, at least 2 */
    bool prefetch;         /* hint the next layer's experts (model predicts them) */
    const char *trace_path; /* Chrome trace events JSON written at close; NULL: none */
    int max_tokens;        /* tokens per forward call */
    int max_ctx;           /* context the caller's KV cache will hold (budget accounting) */
    sl_cache_policy policy;
    bool sync_uploads;     /* copy into backend slots synchronously even where the backend can
                            * overlap copies with compute (for measuring what overlap gains) */
    bool stream_cores;     /* stream layer cores even when the budget holds them all */
} sl_stream_opts;

/* Counters, cumulative since open. */
typedef struct sl_stream_stats {
    uint64_t requests;          /* experts asked for */
    uint64_t tier1_hits;        /* already in a backend slot */
    uint64_t tier2_hits;        /* in the host cache (one upload) */
    uint64_t misses;            /* read from disk on demand (or waited for a prefetch in flight) */
    uint64_t tier1_evictions, tier2_evictions;
    uint64_t chunks_read, bytes_read;   /* from the file (stored bytes, padded) */
    uint64_t bytes_decoded;
    uint64_t bytes_needed;      /* decoded bytes of every requested expert: what tokens needed */
    uint64_t prefetch_issued, prefetch_used;     /* hints loaded / later requested */
    uint64_t predicted, predicted_right;         /* hinted experts / hinted that were requested */
    uint64_t distinct;          /* distinct (layer, expert) pairs ever requested */
    int moe_layers, experts;    /* for routing diversity: distinct / moe_layers of `experts` */
    double read_seconds;        /* summed over workers */
    double busy_seconds;        /* wall time with at least one read in flight */
    double wait_seconds;        /* compute thread blocked waiting for experts */
    int tier1_slots, tier2_slots;
    size_t resident_bytes;      /* embedding, head, layer cores as placed */
    size_t fixed_bytes;         /* resident + run state + KV cache: the budget before slots */
    size_t slot_bytes;          /* one slot */
    bool cores_streamed;        /* layer cores stream through 2 backend slots */
    int core_host_slots;        /* host images of layer cores */
    size_t core_slot_bytes;
    uint64_t core_reads, core_bytes_read, core_uploads;
    uint64_t core_misses;       /* layer_begin found its core not uploaded ahead */
    double core_wait_seconds;   /* compute thread blocked on a core image */
    bool overlap;               /* uploads queued on a copy stream, ordered by events */
    bool host_pinned;           /* the host cache is page-locked (DMA uploads) */
} sl_stream_stats;

typedef struct sl_stream sl_stream;

/* Open PATH (a .sluice file) on backend b: loads the resident weights into a model, carves the
 * slot pool and host cache from the budgets, starts the workers, and sets itself as the model's
 * weight provider. When the backend budget cannot hold the resident weights plus two slots the
 * error says what the minimum is. Out: *st and *model (close with sl_stream_close, which frees
 * the model too). */
int sl_stream_open(const char *path, sl_backend *b, const sl_stream_opts *o, sl_stream **st,
                   sl_model **model, sl_error *e);
void sl_stream_close(sl_stream *st);

void sl_stream_get_stats(const sl_stream *st, sl_stream_stats *out);

/* One line per figure of the end-of-run summary (hit rates, bytes, prediction accuracy, wait
 * fraction) into buf; wall_seconds is the run's duration. */
void sl_stream_summary(const sl_stream *st, double wall_seconds, char *buf, size_t n);

#endif
