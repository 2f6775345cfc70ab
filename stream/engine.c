/* Opening and closing the streaming engine: budgets, carving the tiers, workers, the trace and
 * the summary. */
#include "stream/stream_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static int fail(sl_stream *st, int rc)
{
    sl_stream_close(st);
    return rc;
}

int sl_stream_open(const char *path, sl_backend *b, const sl_stream_opts *o, sl_stream **out,
                   sl_model **model, sl_error *e)
{
    sl_stream *st = calloc(1, sizeof *st);
    if (!st)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", path);
    st->b = b;
    st->t_open = sl_now();
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->work_cv, NULL);
    pthread_cond_init(&st->done_cv, NULL);
    int rc = sl_sluice_open(path, &st->file, e);
    if (rc)
        return fail(st, rc);

    /* the shell first (embedding, head, routers): its run state sizes the budget */
    sl_weight_source *src;
    if ((rc = sl_sluice_source_open(path, &src, e)))
        return fail(st, rc);
    rc = sl_model_load_shell(src, b, o->max_tokens > 0 ? o->max_tokens : 256, &st->model, e);
    if (rc) {
        src->close(src);
        return fail(st, rc);
    }

    const sl_config *c = sl_model_config(st->model);
    st->E = c->n_routed_experts;
    st->layers = c->num_hidden_layers;
    size_t keys = (size_t)st->layers * (st->E > 0 ? st->E : 1);
    st->chunk_of = malloc(keys * sizeof(int));
    st->t1_of = malloc(keys * sizeof(int));
    st->t2_of = malloc(keys * sizeof(int));
    st->queued = calloc(keys, 1);
    st->hinted = calloc(keys, 1);
    st->wanted = calloc(keys, 1);
    st->freq = calloc(keys, sizeof(uint32_t));
    st->touched = calloc(keys, 1);
    st->policy = o->policy;
    st->want = calloc((size_t)st->E + 1, sizeof(int32_t));
    st->given = calloc((size_t)st->E + 1, 1);
    st->q_cap = (int)keys * 2 + 8;
    st->dq = malloc((size_t)st->q_cap * sizeof(int));
    st->pq = malloc((size_t)st->q_cap * sizeof(int));
    st->core_chunk = malloc((size_t)st->layers * sizeof(int));
    st->core_size = calloc((size_t)st->layers, sizeof(size_t));
    st->c2_of = malloc((size_t)st->layers * sizeof(int));
    if (!st->chunk_of || !st->t1_of || !st->t2_of || !st->queued || !st->hinted || !st->wanted ||
        !st->want || !st->given || !st->dq || !st->pq || !st->freq || !st->touched ||
        !st->core_chunk || !st->core_size || !st->c2_of) {
        src->close(src);
        return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: no memory for the expert index", path));
    }

    /* slot size: the largest expert chunk; resident bytes: everything else as the model places
     * it (matrices as stored, vectors and kv_b widened to fp32); shell: what stays when cores
     * stream (resident chunks and the routers) */
    size_t resident = 0, shell = 0, n_expert_chunks = 0, max_stage = 4096, max_core = 0;
    for (size_t i = 0; i < keys; i++)
        st->chunk_of[i] = -1, st->t1_of[i] = -1, st->t2_of[i] = -1;
    for (int L = 0; L < st->layers; L++)
        st->core_chunk[L] = -1, st->c2_of[L] = -1;
    for (size_t i = 0; i < sl_sluice_chunk_count(st->file); i++) {
        const sl_sluice_chunk *ch = sl_sluice_chunk_at(st->file, i);
        uint64_t padded = sl_sluice_padded(ch->stored_size);
        if (padded > max_stage)
            max_stage = padded;
        if (ch->kind != SL_CHUNK_EXPERT) {
            if (ch->kind == SL_CHUNK_CORE && ch->layer >= 0 && ch->layer < st->layers) {
                st->core_chunk[ch->layer] = (int)i;
                if (ch->decoded_size > max_core)
                    max_core = ch->decoded_size;
            }
            for (uint32_t t = 0; t < ch->n_tensors; t++) {
                const sl_sluice_tensor *tv = sl_sluice_tensor_at(st->file, ch->first_tensor + t);
                size_t l = strlen(tv->name);
                bool kv_b = l >= 16 && !strcmp(tv->name + l - 16, "kv_b_proj.weight");
                size_t placed = tv->cols == 0 ? (size_t)tv->rows * 4
                                : kv_b        ? (size_t)tv->rows * (size_t)tv->cols * 4
                                              : (size_t)tv->nbytes;
                resident += placed;
                bool router = (l >= 15 && !strcmp(tv->name + l - 15, "mlp.gate.weight")) ||
                              strstr(tv->name, "e_score_correction_bias") ||
                              strstr(tv->name, "post_attention_layernorm");
                if (ch->kind != SL_CHUNK_CORE || router)
                    shell += placed;
            }
            continue;
        }
        if (ch->layer < 0 || ch->layer >= st->layers || ch->expert < 0 || ch->expert >= st->E) {
            src->close(src);
            return fail(st, sl_errorf(e, SL_E_FORMAT, "%s: chunk %zu names layer %d expert %d",
                                      path, i, ch->layer, ch->expert));
        }
        if (ch->expert == 0)
            st->stats.moe_layers++;
        st->chunk_of[ch->layer * st->E + ch->expert] = (int)i;
        if (ch->decoded_size > st->slot_bytes)
            st->slot_bytes = ch->decoded_size;
        n_expert_chunks++;
    }
    st->slot_bytes = (st->slot_bytes + 255) & ~(size_t)255;
    st->stats.slot_bytes = st->slot_bytes;
    st->stats.experts = st->E;
    for (int L = 0; L < st->layers; L++)
        if (st->core_chunk[L] < 0) {
            src->close(src);
            return fail(st, sl_errorf(e, SL_E_FORMAT, "%s: no core chunk for layer %d", path, L));
        }

    /* layer cores: resident when the budget holds them with two expert slots, else streamed */
    size_t run = sl_model_runtime_bytes(st->model) +
                 sl_kv_cache_bytes(st->model, o->max_ctx > 0 ? o->max_ctx : 4096);
    size_t min_slots = n_expert_chunks > 0 ? 2 * st->slot_bytes : 0;
    st->stream_cores = o->stream_cores ||
                       (o->backend_budget && o->backend_budget < resident + run + min_slots);
    size_t fixed;
    if (!st->stream_cores) {
        rc = sl_model_load_cores(st->model, src, e);
        src->close(src);
        if (rc)
            return fail(st, rc);
        fixed = resident + run;
        st->stats.resident_bytes = resident;
    } else {
        src->close(src);
        for (int L = 0; L < st->layers; L++) {
            if ((rc = sl_stream_core_image_bytes(st, L, &st->core_size[L], e)))
                return fail(st, rc);
            if (st->core_size[L] > st->core_bytes)
                st->core_bytes = st->core_size[L];
        }
        fixed = shell + run + 2 * st->core_bytes;
        st->stats.resident_bytes = shell;
        st->stats.cores_streamed = true;
        st->stats.core_slot_bytes = st->core_bytes;
    }
    st->stats.fixed_bytes = fixed;
    if (o->backend_budget && o->backend_budget < fixed + min_slots)
        return fail(st, sl_errorf(e, SL_E_ARG,
                                  "%s: a backend budget of %.2f GB cannot hold this model: the minimum "
                                  "is %.2f GB (embedding, head and routers %.2f GB + activations and KV "
                                  "cache %.2f GB + 2 layer-core slots of %.1f MB + 2 expert slots of %.1f MB)",
                                  path, o->backend_budget / 1e9, (fixed + min_slots) / 1e9, shell / 1e9,
                                  run / 1e9, st->core_bytes / 1e6, st->slot_bytes / 1e6));

    /* host budget: core images first (every token needs every core), then the expert cache */
    size_t host = o->host_budget ? o->host_budget : mem_available() / 4;
    if (st->stream_cores) {
        size_t want = 2 * st->core_bytes + min_slots;
        if (host < want)
            return fail(st, sl_errorf(e, SL_E_ARG, "%s: a host cache of %.1f MB cannot hold 2 layer-core "
                                      "images of %.1f MB and 2 expert chunks of %.1f MB", path, host / 1e6,
                                      st->core_bytes / 1e6, st->slot_bytes / 1e6));
        size_t nc2 = (host - min_slots) / st->core_bytes;
        st->nc2 = (int)(nc2 > (size_t)st->layers ? (size_t)st->layers : nc2);
        host -= (size_t)st->nc2 * st->core_bytes;
        st->stats.core_host_slots = st->nc2;
        st->c2 = calloc((size_t)st->nc2, sizeof *st->c2);
        st->core_stage = NULL;
        if (!st->c2 || posix_memalign(&st->c2_mem, 4096, (size_t)st->nc2 * st->core_bytes) ||
            posix_memalign(&st->core_stage, 4096, max_stage) ||
            !(st->core_decoded = malloc(max_core ? max_core : 1)))
            return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: cannot allocate %.2f GB of host layer-core images",
                                      path, (double)st->nc2 * st->core_bytes / 1e9));
        for (int i = 0; i < st->nc2; i++)
            st->c2[i] = (core_host){.layer = -1, .mem = (char *)st->c2_mem + (size_t)i * st->core_bytes};
        if ((rc = b->ops->alloc(b, 2 * st->core_bytes, &st->c1_mem)))
            return fail(st, sl_errorf(e, rc, "%s: cannot allocate 2 layer-core slots (%.2f GB) on %s",
                                      path, 2 * st->core_bytes / 1e9, b->ops->name));
        for (int s = 0; s < 2; s++)
            st->c1[s] = (core_slot){.layer = -1, .src = -1,
                                    .mem = (char *)st->c1_mem + (size_t)s * st->core_bytes};
        st->core_cur = -1;
    }

    /* tier 1: what the backend budget leaves, at least 2 slots */
    if (n_expert_chunks > 0) {
        size_t n1 = n_expert_chunks;
        if (o->backend_budget) {
            n1 = (o->backend_budget - fixed) / st->slot_bytes;
            if (n1 > n_expert_chunks)
                n1 = n_expert_chunks;
        }
        size_t n2 = host / st->slot_bytes;
        if (n2 < 2)
            return fail(st, sl_errorf(e, SL_E_ARG, "%s: a host cache of %.1f MB holds fewer than 2 "
                                      "expert chunks of %.1f MB", path, host / 1e6, st->slot_bytes / 1e6));
        if (n2 > n_expert_chunks)
            n2 = n_expert_chunks;
        st->n1 = (int)n1;
        st->n2 = (int)n2;
        st->stats.tier1_slots = st->n1;
        st->stats.tier2_slots = st->n2;
        st->t1 = calloc(n1, sizeof *st->t1);
        st->t2 = calloc(n2, sizeof *st->t2);
        if (!st->t1 || !st->t2)
            return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: no memory for slot tables", path));
        if ((rc = b->ops->alloc(b, n1 * st->slot_bytes, &st->t1_mem)))
            return fail(st, sl_errorf(e, rc, "%s: cannot allocate %zu expert slots (%.2f GB) on %s",
                                      path, n1, n1 * st->slot_bytes / 1e9, b->ops->name));
        if (posix_memalign(&st->t2_mem, 4096, n2 * st->slot_bytes))
            return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: cannot allocate a host cache of %.2f GB",
                                      path, n2 * st->slot_bytes / 1e9));
        for (size_t i = 0; i < n1; i++)
            st->t1[i] = (t1_slot){.key = -1, .mem = (char *)st->t1_mem + i * st->slot_bytes,
                                  .src_t2 = -1};
        for (size_t i = 0; i < n2; i++)
            st->t2[i] = (t2_slot){.key = -1, .mem = (char *)st->t2_mem + i * st->slot_bytes};
    }

    /* overlap: page-locked host memory and two events per slot, where the backend has them */
    const sl_backend_ops *op = b->ops;
    if ((st->n1 > 0 || st->stream_cores) && !o->sync_uploads && op->pin_host && op->upload_async &&
        op->event_create) {
        sl_error pe = {0};
        if (st->n2 > 0 && (rc = op->pin_host(b, st->t2_mem, (size_t)st->n2 * st->slot_bytes, &pe)))
            return fail(st, sl_errorf(e, rc, "%s: host cache: %s (a smaller --ram, or --sync-uploads)",
                                      path, pe.msg));
        st->t2_pinned = st->n2 > 0;
        if (st->stream_cores &&
            (rc = op->pin_host(b, st->c2_mem, (size_t)st->nc2 * st->core_bytes, &pe)))
            return fail(st, sl_errorf(e, rc, "%s: layer-core images: %s (a smaller --ram, or "
                                      "--sync-uploads)", path, pe.msg));
        st->c2_pinned = st->stream_cores;
        for (int i = 0; i < st->n1; i++)
            if ((rc = op->event_create(b, &st->t1[i].ready, e)) ||
                (rc = op->event_create(b, &st->t1[i].freed, e)))
                return fail(st, rc);
        for (int s = 0; st->stream_cores && s < 2; s++)
            if ((rc = op->event_create(b, &st->c1[s].ready, e)) ||
                (rc = op->event_create(b, &st->c1[s].freed, e)))
                return fail(st, rc);
        st->overlap = true;
    }
    st->stats.overlap = st->overlap;
    st->stats.host_pinned = st->t2_pinned || st->c2_pinned;

    st->prefetch = o->prefetch;
    if (o->trace_path) {
        st->trace_path = o->trace_path;
        st->trace_cap = 1 << 20;
        st->trace = malloc(st->trace_cap * sizeof *st->trace);
        if (!st->trace)
            return fail(st, sl_errorf(e, SL_E_NOMEM, "trace: no memory"));
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    st->n_workers = o->workers > 0 ? o->workers : (cores > 2 ? (int)cores : 2);
    st->workers = calloc((size_t)st->n_workers, sizeof *st->workers);
    if (!st->workers)
        return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: no memory", path));
    for (int i = 0; i < st->n_workers; i++) {
        sl_stream_worker *w = &st->workers[i];
        w->st = st;
        w->index = i;
        if (posix_memalign(&w->stage, 4096, max_stage))
            return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: no memory for read staging", path));
        w->stage_len = max_stage;
        /* each worker reads through its own io_uring ring, a chunk as 2 MiB pieces 8 deep, into
         * its registered staging buffer; where io_uring is refused, plain pread is the fallback */
        sl_io_opts io = {.depth = 8, .piece = 2u << 20, .mode = SL_IO_AUTO, .max_files = 1};
        sl_error ie = {0};
        if (sl_io_create(&io, &w->io, &ie) == 0 &&
            (sl_io_open_file(w->io, path, &w->io_file, &ie) != 0 ||
             sl_io_set_buffers(w->io, &w->stage, &w->stage_len, 1, &ie) != 0)) {
            sl_io_destroy(w->io);
            w->io = NULL;
        }
        if (pthread_create(&w->thread, NULL, sl_stream_worker_main, w) != 0) {
            free(w->stage);
            w->stage = NULL;
            return fail(st, sl_errorf(e, SL_E_NOMEM, "%s: cannot start worker threads", path));
        }
    }

    if (st->stream_cores && (rc = sl_stream_cores_start(st, e)))
        return fail(st, rc);

    st->base = sl_stream_provider_ops;
    /* the model's own provider still answers for the resident layer cores */
    st->core = sl_model_resident_provider(st->model);
    sl_model_set_provider(st->model, &st->base);
    *out = st;
    *model = st->model;
    return 0;
}

static void write_trace(sl_stream *st)
{
    FILE *f = fopen(st->trace_path, "w");
    if (!f)
        return;
    size_t n = st->n_trace < st->trace_cap ? st->n_trace : st->trace_cap;
    fprintf(f, "{\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"compute\"}}");
    for (int i = 0; i < st->n_workers; i++)
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"worker %d\"}}",
                i + 1, i);
    if (st->stream_cores)
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"layer cores\"}}",
                st->n_workers + 1);
    for (size_t i = 0; i < n; i++) {
        const sl_trace_event *ev = &st->trace[i];
        fprintf(f, ",\n{\"name\":\"%s\",\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"ts\":%.1f,\"dur\":%.1f",
                ev->name, ev->tid, (ev->t0 - st->t_open) * 1e6, (ev->t1 - ev->t0) * 1e6);
        if (ev->key >= 0 && !strcmp(ev->name, "layer"))
            fprintf(f, ",\"args\":{\"layer\":%d}", ev->key / st->E);
        else if (ev->key >= 0)
            fprintf(f, ",\"args\":{\"layer\":%d,\"expert\":%d}", ev->key / st->E, ev->key % st->E);
        fputc('}', f);
    }
    fprintf(f, "\n]}\n");
    fclose(f);
}

void sl_trace_add(sl_stream *st, const char *name, int key, int tid, double t0, double t1)
{
    if (!st->trace)
        return;
    size_t i = atomic_fetch_add((_Atomic size_t *)&st->n_trace, 1);
    if (i < st->trace_cap)
        st->trace[i] = (sl_trace_event){name, key, tid, t0, t1};
}

void sl_stream_close(sl_stream *st)
{
    if (!st)
        return;
    if (st->workers) {
        pthread_mutex_lock(&st->mu);
        st->quit = true;
        pthread_cond_broadcast(&st->work_cv);
        pthread_cond_broadcast(&st->done_cv);
        pthread_mutex_unlock(&st->mu);
        for (int i = 0; i < st->n_workers; i++) {
            if (st->workers[i].stage && st->workers[i].thread)
                pthread_join(st->workers[i].thread, NULL);
            sl_io_destroy(st->workers[i].io);
            free(st->workers[i].stage);
        }
        free(st->workers);
    }
    if (st->stream_cores) {
        pthread_mutex_lock(&st->mu);
        st->quit = true;
        pthread_cond_broadcast(&st->work_cv);
        pthread_mutex_unlock(&st->mu);
        sl_stream_cores_stop(st);
    }
    if (st->trace_path && st->trace)
        write_trace(st);
    free(st->trace);
    if (st->overlap) { /* copies still reading the host cache finish before it goes */
        pthread_mutex_lock(&st->mu);
        sl_stream_reap_uploads(st, true);
        pthread_mutex_unlock(&st->mu);
    }
    for (int i = 0; st->t1 && i < st->n1; i++) {
        if (st->t1[i].ready)
            st->b->ops->event_destroy(st->b, st->t1[i].ready);
        if (st->t1[i].freed)
            st->b->ops->event_destroy(st->b, st->t1[i].freed);
    }
    if (st->t2_pinned)
        st->b->ops->unpin_host(st->b, st->t2_mem);
    if (st->c2_pinned)
        st->b->ops->unpin_host(st->b, st->c2_mem);
    if (st->c1_mem)
        st->b->ops->free(st->b, st->c1_mem);
    free(st->c2_mem);
    free(st->c2);
    free(st->core_stage);
    free(st->core_decoded);
    free(st->core_chunk);
    free(st->core_size);
    free(st->c2_of);
    if (st->t1_mem)
        st->b->ops->free(st->b, st->t1_mem);
    free(st->t2_mem);
    free(st->t1);
    free(st->t2);
    sl_model_free(st->model);
    sl_sluice_close(st->file);
    free(st->chunk_of);
    free(st->t1_of);
    free(st->t2_of);
    free(st->queued);
    free(st->hinted);
    free(st->wanted);
    free(st->freq);
    free(st->touched);
    free(st->want);
    free(st->given);
    free(st->dq);
    free(st->pq);
    pthread_cond_destroy(&st->work_cv);
    pthread_cond_destroy(&st->done_cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

void sl_stream_get_stats(const sl_stream *st, sl_stream_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&st->mu);
    *out = st->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&st->mu);
}

void sl_stream_summary(const sl_stream *st, double wall, char *buf, size_t n)
{
    sl_stream_stats s;
    sl_stream_get_stats(st, &s);
    double req = s.requests ? (double)s.requests : 1.0;
    int k = 0;
    if (s.cores_streamed) {
        k = snprintf(buf, n,
                     "layer cores: streamed through 2 backend slots of %.1f MB and %d host images; %llu "
                     "reads (%.3f GB), %llu uploads, %llu not uploaded ahead; compute waited %.2f s for "
                     "cores\n",
                     s.core_slot_bytes / 1e6, s.core_host_slots, (unsigned long long)s.core_reads,
                     s.core_bytes_read / 1e9, (unsigned long long)s.core_uploads,
                     (unsigned long long)s.core_misses, s.core_wait_seconds);
        if (k < 0 || (size_t)k >= n)
            return;
        buf += k;
        n -= (size_t)k;
    }
    snprintf(buf, n,
             "experts: %llu requested, tier-1 (backend, %d slots) hits %.1f%%, tier-2 (host, %d slots) "
             "hits %.1f%%, disk %.1f%%; evictions %llu / %llu\n"
             "disk: %llu chunks, %.3f GB read (%.3f GB needed by the tokens' experts), %.2f GB/s while "
             "reads were in flight (%.0f%% of the run), %.2f GB/s over the run\n"
             "prefetch: %llu guesses, %.1f%% right, covering %.1f%% of requests; %llu loads issued, %llu used; compute waited "
             "%.1f%% of %.2f s\n"
             "routing: %.1f distinct experts per MoE layer (of %d) over the run; cache policy %s\n"
             "backend: %.3f GB resident weights + run state + KV cache, %d slots of %.3f MB; uploads %s\n",
             (unsigned long long)s.requests, s.tier1_slots, 100.0 * s.tier1_hits / req, s.tier2_slots,
             100.0 * s.tier2_hits / req, 100.0 * s.misses / req,
             (unsigned long long)s.tier1_evictions, (unsigned long long)s.tier2_evictions,
             (unsigned long long)s.chunks_read, s.bytes_read / 1e9, s.bytes_needed / 1e9,
             s.busy_seconds > 0 ? s.bytes_read / 1e9 / s.busy_seconds : 0.0,
             wall > 0 ? 100.0 * s.busy_seconds / wall : 0.0, wall > 0 ? s.bytes_read / 1e9 / wall : 0.0, (unsigned long long)s.predicted,
             s.predicted ? 100.0 * s.predicted_right / s.predicted : 0.0, 100.0 * s.predicted_right / req,
             (unsigned long long)s.prefetch_issued, (unsigned long long)s.prefetch_used,
             wall > 0 ? 100.0 * s.wait_seconds / wall : 0.0, wall,
             s.moe_layers ? (double)s.distinct / s.moe_layers : 0.0, s.experts,
             st->policy == SL_CACHE_LFU ? "LFU" : "LRU", s.fixed_bytes / 1e9, s.tier1_slots,
             s.slot_bytes / 1e6,
             s.overlap ? "overlapped (pinned host cache, copy stream)" : "synchronous");
}
