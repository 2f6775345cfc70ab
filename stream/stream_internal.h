/* stream/ private: the engine's state. */
#ifndef SL_STREAM_INTERNAL_H
#define SL_STREAM_INTERNAL_H

#include "format/format.h"
#include "io/io.h"
#include "stream/stream.h"

#include <pthread.h>

enum { T2_EMPTY = 0, T2_LOADING = 1, T2_READY = 2 };

typedef struct t1_slot {      /* backend memory */
    int key;                  /* layer * E + expert, -1 when free */
    int refs;                 /* pinned while requested or computing */
    uint64_t tick;            /* LRU */
    void *mem;                /* slot_bytes */
    sl_expert_weights w;      /* views into mem */
    sl_event *ready, *freed;  /* overlap: upload done; last compute reading mem done */
    int src_t2;               /* overlap: tier-2 slot an upload in flight still reads, -1 */
} t1_slot;

typedef struct t2_slot {      /* host cache */
    int key;
    int state;                /* T2_* */
    int users;                /* uploads reading it */
    bool prefetched;          /* loaded by a hint and not yet requested */
    uint64_t tick;
    void *mem;
} t2_slot;

typedef struct core_slot {    /* backend memory for one layer core image (stream/cores.c) */
    int layer;                /* whose image it holds, -1 */
    void *mem;                /* core_bytes */
    sl_layer_weights lw;      /* views into mem */
    sl_event *ready, *freed;  /* overlap, as t1_slot */
    int src;                  /* host image an upload in flight still reads, -1 */
} core_slot;

typedef struct core_host {    /* host memory for one layer core image */
    int layer;                /* -1 when empty */
    int state;                /* T2_* */
    int users;                /* uploads reading it */
    uint64_t tick;
    void *mem;                /* core_bytes */
} core_host;

typedef struct sl_stream sl_stream;

typedef struct sl_stream_worker {
    sl_stream *st;
    int index;
    pthread_t thread;
    void *stage;              /* 4096-aligned, max padded chunk */
    size_t stage_len;
    sl_io *io;                /* this worker's io_uring reader (NULL: plain pread fallback) */
    int io_file;
} sl_stream_worker;

typedef struct sl_trace_event {
    const char *name;
    int key, tid;
    double t0, t1;
} sl_trace_event;

struct sl_stream {
    sl_weight_provider base;  /* first: the model calls through it */
    sl_weight_provider *core; /* the model's resident provider (layer cores) */
    sl_sluice *file;
    sl_backend *b;
    sl_model *model;
    int E, layers;
    bool prefetch;

    int *chunk_of;            /* (layers * E) expert chunk index, -1 for dense layers */
    int *t1_of, *t2_of;       /* (layers * E) slot holding the key, -1 */
    uint8_t *queued;          /* (layers * E) 0 no, 1 prefetch, 2 demand */
    uint8_t *hinted;          /* (layers * E) hinted and not yet requested */
    uint8_t *wanted;          /* (layers * E) requested and not yet handed out */
    uint32_t *freq;           /* (layers * E) times requested (LFU) */
    uint8_t *touched;         /* (layers * E) ever requested (routing diversity) */
    sl_cache_policy policy;
    t1_slot *t1;
    int n1;
    t2_slot *t2;
    int n2;
    size_t slot_bytes;
    void *t1_mem;             /* backend allocation holding every tier-1 slot */
    void *t2_mem;             /* host allocation holding every tier-2 slot */
    bool overlap;             /* uploads on the backend's copy stream, ordered by events */
    bool t2_pinned;           /* t2_mem is page-locked by the backend */
    bool c2_pinned;           /* c2_mem likewise */

    /* layer cores, when they stream (stream/cores.c) */
    bool stream_cores;
    int *core_chunk;          /* (layers) chunk index of each layer's core */
    size_t *core_size;        /* (layers) each layer's core image bytes */
    size_t core_bytes;        /* the largest core image: one slot */
    core_slot c1[2];
    void *c1_mem;             /* backend allocation holding both core slots */
    core_host *c2;            /* host ring of core images */
    int nc2;
    void *c2_mem;
    int *c2_of;               /* (layers) host image holding the layer, -1 */
    int core_need;            /* the layer compute is at: the core thread loads from here on */
    int core_cur, core_slot;  /* the layer computing and its backend slot */
    pthread_t core_thread;
    bool core_thread_started;
    void *core_stage, *core_decoded; /* the core thread's read and decode buffers */

    /* job queues: ring buffers of keys */
    int *dq, *pq;
    int q_cap;
    long dq_head, dq_tail, pq_head, pq_tail;

    /* the current request */
    int layer, n_want, n_given;
    int32_t *want;            /* (E) */
    uint8_t *given;           /* (E) */

    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    sl_stream_worker *workers;
    int n_workers;
    bool quit, failed;
    sl_error err;             /* the first worker error */
    uint64_t tick;
    int inflight;             /* reads in flight, for the disk-busy time */
    double busy_since;
    sl_stream_stats stats;

    /* trace */
    const char *trace_path;
    sl_trace_event *trace;
    size_t n_trace, trace_cap;
    double t_open;
    double t_layer, t_given;  /* compute-thread timestamps for trace events */
};

extern const sl_weight_provider sl_stream_provider_ops;
/* true when slot a (key ka, tick ta) should give way before slot b under the policy */
static inline bool sl_stream_evict_before(const sl_stream *st, int ka, uint64_t ta, int kb, uint64_t tb)
{
    if (st->policy == SL_CACHE_LFU && st->freq[ka] != st->freq[kb])
        return st->freq[ka] < st->freq[kb];
    return ta < tb;
}
void *sl_stream_worker_main(void *arg);
/* Overlap: hand back the tier-2 slots whose uploads finished (all of them, waiting, with
 * `block`). Under the lock. */
void sl_stream_reap_uploads(sl_stream *st, bool block);

/* stream/cores.c */
int sl_stream_core_image_bytes(sl_stream *st, int layer, size_t *bytes, sl_error *e);
int sl_stream_cores_start(sl_stream *st, sl_error *e);
int sl_stream_core_begin(sl_stream *st, int layer, const sl_layer_weights **lw, sl_error *e);
void sl_stream_core_end(sl_stream *st, int layer);
void sl_stream_core_ahead(sl_stream *st); /* upload the next layer's core if its image is in */
void sl_stream_cores_stop(sl_stream *st); /* after quit is broadcast: join, settle, free events */
/* Record one event (no allocation: drops events past the preallocated capacity). */
void sl_trace_add(sl_stream *st, const char *name, int key, int tid, double t0, double t1);

#endif
