/* Opening a model the way every running command does: a .sluice file through the streaming
 * engine (budgets, prefetch, trace), a Hugging Face directory loaded whole. */
#include "cli/cli.h"
#include "cpu/cpu.h"
#include "io/io.h"

#ifdef SL_HAVE_CUDA
#include "cuda/cuda.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int sl_cli_engine_option(sl_cli_engine_opts *o, int argc, char **argv, int *i)
{
    const char *opt = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    uint64_t bytes;
    sl_error e = {0};
    if (!strcmp(opt, "--vram") || !strcmp(opt, "--ram")) {
        if (!v) {
            sl_cli_error("%s needs a size (e.g. 24G)", opt);
            return -1;
        }
        if (sl_parse_size(v, &bytes, &e)) {
            sl_cli_error("%s: %s", opt, e.msg);
            return -1;
        }
        if (!strcmp(opt, "--vram"))
            o->vram = bytes;
        else
            o->ram = bytes;
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--trace")) {
        if (!v) {
            sl_cli_error("--trace needs a file name");
            return -1;
        }
        o->trace = v;
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--backend")) {
        if (!v || (strcmp(v, "cpu") && strcmp(v, "cuda"))) {
            sl_cli_error("--backend: expected cpu or cuda, got \"%s\"", v ? v : "");
            return -1;
        }
        o->backend = v;
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--device")) {
        if (sl_cli_parse_int(opt, v, 0, 64, &o->device))
            return -1;
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--cache")) {
        if (!v || (strcmp(v, "lru") && strcmp(v, "lfu"))) {
            sl_cli_error("--cache: expected lru or lfu, got \"%s\"", v ? v : "");
            return -1;
        }
        o->policy = 1 + (!strcmp(v, "lfu") ? SL_CACHE_LFU : SL_CACHE_LRU);
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--prefetch-width")) {
        if (sl_cli_parse_int(opt, v, 1, 1024, &o->prefetch_width))
            return -1;
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--act")) {
        if (!v || (strcmp(v, "f32") && strcmp(v, "bf16"))) {
            sl_cli_error("--act: expected f32 or bf16, got \"%s\"", v ? v : "");
            return -1;
        }
        o->act_bf16 = !strcmp(v, "bf16");
        (*i)++;
        return 1;
    }
    if (!strcmp(opt, "--stream-cores")) {
        o->stream_cores = true;
        return 1;
    }
    if (!strcmp(opt, "--sync-uploads")) {
        o->sync_uploads = true;
        return 1;
    }
    if (!strcmp(opt, "--no-prefetch")) {
        o->no_prefetch = true;
        return 1;
    }
    if (!strcmp(opt, "--threads")) {
        if (sl_cli_parse_int(opt, v, 0, 4096, &o->threads))
            return -1;
        (*i)++;
        return 1;
    }
    return 0;
}

const char sl_cli_engine_usage[] =
    "engine options (a .sluice MODEL streams its experts):\n"
    "  --backend cpu|cuda   where to compute (default: cuda when built with it and a GPU is there)\n"
    "  --device N           CUDA device (default 0)\n"
    "  --vram SIZE          backend memory for weights, activations and KV cache (default: GPU:\n"
    "                       free memory less 1 GiB; CPU: every expert gets a slot)\n"
    "  --ram SIZE           host expert cache (default: 1/4 of available memory)\n"
    "  --cache lfu|lru      which expert in a VRAM slot gives way (default lfu; host cache is LRU)\n"
    "  --no-prefetch        do not guess and preload the next layer's experts\n"
    "  --prefetch-width K   experts guessed per token for the next layer (default: as routed)\n"
    "  --act f32|bf16       activations the GPU's matrix products read (default f32: exact to\n"
    "                       ~1e-5; bf16: one tensor-core product instead of two, ~1e-3)\n"
    "  --stream-cores       stream layer cores too even when --vram holds them (they stream\n"
    "                       anyway when it does not)\n"
    "  --sync-uploads       copy experts to the GPU synchronously (default: pinned host cache,\n"
    "                       copies on their own stream overlapping compute)\n"
    "  --trace FILE.json    Chrome trace events (open in Perfetto)\n"
    "  --threads N          CPU threads (default: all cores)\n";

static int make_backend(const sl_cli_engine_opts *o, sl_backend **b, bool *gpu, sl_error *e)
{
    *gpu = false;
    bool want_cuda = o->backend && !strcmp(o->backend, "cuda");
#ifdef SL_HAVE_CUDA
    if (want_cuda || (!o->backend && sl_cuda_device_count() > 0)) {
        *gpu = true;
        int rc = sl_cuda_backend_create(o->device, o->vram, b, e);
        if (rc == 0 && o->act_bf16 && (rc = sl_cuda_set_activations(*b, SL_CUDA_ACT_BF16, e))) {
            (*b)->ops->destroy(*b);
            *b = NULL;
        }
        return rc;
    }
#else
    if (want_cuda)
        return sl_errorf(e, SL_E_UNSUPPORTED, "--backend cuda: this sluice was built without CUDA (nvcc absent)");
#endif
    if (o->act_bf16)
        return sl_errorf(e, SL_E_UNSUPPORTED, "--act bf16: the CPU backend computes in f32 only");
    return sl_cpu_backend_create(o->threads, b, e);
}

int sl_cli_engine_open(sl_cli_engine *en, const char *path, const sl_cli_engine_opts *o, int max_tokens,
                       int max_ctx)
{
    sl_error e = {0};
    *en = (sl_cli_engine){0};
    en->t0 = sl_now();
    bool gpu;
    int rc = make_backend(o, &en->b, &gpu, &e);
    struct stat sb;
    bool file = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    if (rc == 0 && file) {
        size_t budget = o->vram;
#ifdef SL_HAVE_CUDA
        if (gpu) { /* the arena is the budget; leave room for the arena's own bookkeeping */
            size_t cap, used, peak;
            sl_cuda_arena_stats(en->b, &cap, &used, &peak);
            budget = cap - cap / 64;
        }
#endif
        sl_stream_opts so = {.backend_budget = budget, .host_budget = o->ram, .workers = 0,
                             .prefetch = !o->no_prefetch, .trace_path = o->trace,
                             .max_tokens = max_tokens, .max_ctx = max_ctx,
                             .policy = o->policy ? (sl_cache_policy)(o->policy - 1) : SL_CACHE_LFU,
                             .sync_uploads = o->sync_uploads, .stream_cores = o->stream_cores};
        rc = sl_stream_open(path, en->b, &so, &en->st, &en->m, &e);
    } else if (rc == 0) {
        if (o->ram || o->trace)
            fprintf(stderr, "sluice: note: %s is loaded whole; --ram/--trace apply to .sluice files\n", path);
        rc = sl_model_load_hf(path, en->b, max_tokens, &en->m, &e);
    }
    if (rc == 0 && o->prefetch_width && sl_model_set_prefetch_width(en->m, o->prefetch_width)) {
        rc = sl_errorf(&e, SL_E_ARG, "--prefetch-width %d: between 1 and twice the experts per token",
                       o->prefetch_width);
    }
    if (rc) {
        sl_cli_error("%s", e.msg);
        sl_cli_engine_close(en, false);
    }
    return rc;
}

void sl_cli_engine_close(sl_cli_engine *en, bool summary)
{
    if (en->st) {
        if (summary && sl_log_level > 0) {
            char buf[2048];
            sl_stream_summary(en->st, sl_now() - en->t0, buf, sizeof buf);
            fputs(buf, stderr);
        }
        sl_stream_close(en->st); /* frees the model */
    } else {
        sl_model_free(en->m);
    }
    if (en->b)
        en->b->ops->destroy(en->b);
    *en = (sl_cli_engine){0};
}
