/* Building a model from a weight source: every tensor the config implies, by its official
 * DeepSeek-V3 checkpoint name, shape-checked by the source and placed in backend memory in its
 * stored format (norm vectors and biases widened to fp32, they are tiny). */
#include "model/model_internal.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What a load places: everything; all but the routed experts; or the shell (embedding, head,
 * final norm and the routers) when layer cores stream too. */
enum { PARTS_ALL, PARTS_CORES, PARTS_SHELL };

typedef struct loader {
    int parts;
    sl_weight_source *src;
    const sl_config *c;
    sl_backend *b;
    sl_error *e;
    sl_layer_weights *lw; /* the layer being loaded, and its index */
    int layer;
} loader;

static int place(loader *L, const char *name, const void *host, size_t bytes, void **dev)
{
    int rc = L->b->ops->alloc(L->b, bytes, dev);
    if (rc == 0)
        rc = L->b->ops->upload(L->b, *dev, host, bytes);
    if (rc)
        return sl_errorf(L->e, rc, "%s: cannot place \"%s\" (%zu bytes) in %s memory", L->src->path,
                         name, bytes, L->b->ops->name);
    return 0;
}

static int load_vec(loader *L, const char *name, int64_t len, float **dev)
{
    void *buf;
    size_t nb;
    int fmt, rc = L->src->get(L->src, name, len, 0, &fmt, &buf, &nb, L->e);
    if (rc)
        return rc;
    float *h = malloc((size_t)len * sizeof(float));
    if (!h) {
        free(buf);
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for \"%s\"", L->src->path, name);
    }
    sl_dequantize_rows((sl_wformat)fmt, buf, len, 1, 0, len, h);
    free(buf);
    rc = place(L, name, h, (size_t)len * sizeof(float), (void **)dev);
    free(h);
    return rc;
}

/* widen_f32: place the matrix as plain f32 whatever its stored format (kv_b: the absorbed
 * attention form slices it per head). Otherwise only formats the backend cannot take are widened. */
static int load_mat_as(loader *L, const char *name, int rows, int cols, bool widen_f32, sl_weight *w)
{
    void *buf;
    size_t nb;
    int fmt, rc = L->src->get(L->src, name, rows, cols, &fmt, &buf, &nb, L->e);
    if (rc)
        return rc;
    if (fmt != SL_WF_F32 && (widen_f32 || !L->b->ops->supports(L->b, fmt))) {
        float *f = malloc((size_t)rows * cols * sizeof(float));
        if (!f) {
            free(buf);
            return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for \"%s\"", L->src->path, name);
        }
        sl_dequantize_rows((sl_wformat)fmt, buf, rows, cols, 0, rows, f);
        free(buf);
        buf = f;
        fmt = SL_WF_F32;
        nb = (size_t)rows * cols * sizeof(float);
    }
    w->rows = rows;
    w->cols = cols;
    w->fmt = fmt;
    rc = place(L, name, buf, nb, &w->data);
    free(buf);
    return rc;
}

static int load_mat(loader *L, const char *name, int rows, int cols, sl_weight *w)
{
    return load_mat_as(L, name, rows, cols, false, w);
}

/* one core tensor, placed as model/core.c lists it */
static int load_core_tensor(void *ctx, const char *name, sl_core_kind kind, int rows, int cols,
                            float **vec, sl_weight *mat)
{
    loader *L = ctx;
    if (vec ? *vec != NULL : mat->data != NULL)
        return 0; /* placed already (a shell's router) */
    if (kind == SL_CORE_VEC)
        return load_vec(L, name, rows, vec);
    return load_mat_as(L, name, rows, cols, kind == SL_CORE_MAT_F32, mat);
}

/* The shell keeps, of a layer's core, only what the next-layer expert guess needs resident: the
 * FFN norm and, in a MoE layer, the router and its bias. */
static int load_shell_tensor(void *ctx, const char *name, sl_core_kind kind, int rows, int cols,
                             float **vec, sl_weight *mat)
{
    loader *L = ctx;
    sl_layer_weights *lw = L->lw;
    if (vec != &lw->ffn_norm && vec != &lw->router_bias && mat != &lw->router)
        return 0;
    if (vec == &lw->ffn_norm && !sl_layer_is_moe(L->c, L->layer))
        return 0;
    return load_core_tensor(ctx, name, kind, rows, cols, vec, mat);
}

static int load_layer(loader *L, int i, sl_layer_weights *lw)
{
    const sl_config *c = L->c;
    L->lw = lw;
    L->layer = i;
    int rc = sl_core_tensors(c, i, lw, L->parts == PARTS_SHELL ? load_shell_tensor : load_core_tensor, L);
    if (L->parts == PARTS_SHELL)
        return rc;
    if (rc || !lw->moe || L->parts == PARTS_CORES)
        return rc;
    int E = c->n_routed_experts, H = c->hidden_size, W = c->moe_intermediate_size;
    lw->exp_gate = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_up = calloc((size_t)E, sizeof(sl_weight));
    lw->exp_down = calloc((size_t)E, sizeof(sl_weight));
    if (!lw->exp_gate || !lw->exp_up || !lw->exp_down)
        return sl_errorf(L->e, SL_E_NOMEM, "%s: no memory for layer %d experts", L->src->path, i);
    for (int x = 0; x < E; x++) {
        char n[256];
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.gate_proj.weight", i, x);
        if ((rc = load_mat(L, n, W, H, &lw->exp_gate[x])))
            return rc;
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.up_proj.weight", i, x);
        if ((rc = load_mat(L, n, W, H, &lw->exp_up[x])))
            return rc;
        snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.down_proj.weight", i, x);
        if ((rc = load_mat(L, n, H, W, &lw->exp_down[x])))
            return rc;
    }
    return 0;
}

/* What this engine adds to the parser's checks (format/config.c: positive sizes, even rope,
 * n_group divides the experts, topk_group <= n_group): its own table limits, and top-k within
 * the experts the kept groups offer. */
static int check_config(const sl_config *c, const char *path, sl_error *e)
{
    if (c->n_routed_experts > 0) {
        if (c->n_group > 64 || c->n_routed_experts > 1024)
            return sl_errorf(e, SL_E_UNSUPPORTED, "%s: n_routed_experts %d in %d groups not supported",
                             path, c->n_routed_experts, c->n_group);
        if (c->num_experts_per_tok > c->topk_group * (c->n_routed_experts / c->n_group))
            return sl_errorf(e, SL_E_FORMAT,
                             "%s: num_experts_per_tok %d cannot be picked from topk_group %d of %d groups",
                             path, c->num_experts_per_tok, c->topk_group, c->n_group);
    }
    if (c->tie_word_embeddings)
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tie_word_embeddings is not a DeepSeek-V3 layout", path);
    return 0;
}

static int load_model(sl_weight_source *src, sl_backend *b, int max_tokens, int parts,
                      sl_model **out, sl_error *e)
{
    sl_model *m = calloc(1, sizeof *m);
    if (!m)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", src->path);
    m->b = b;
    m->cfg = *src->config;
    const sl_config *c = &m->cfg;
    int rc = check_config(c, src->path, e);
    loader L = {parts, src, c, b, e, NULL, 0};
    if (rc == 0 && !(m->w.layers = calloc((size_t)c->num_hidden_layers, sizeof(sl_layer_weights))))
        rc = sl_errorf(e, SL_E_NOMEM, "%s: no memory", src->path);
    if (rc == 0)
        rc = load_mat(&L, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, &m->w.embed);
    for (int i = 0; rc == 0 && i < c->num_hidden_layers; i++)
        rc = load_layer(&L, i, &m->w.layers[i]);
    if (rc == 0)
        rc = load_vec(&L, "model.norm.weight", c->hidden_size, &m->w.final_norm);
    if (rc == 0)
        rc = load_mat(&L, "lm_head.weight", c->vocab_size, c->hidden_size, &m->w.lm_head);
    if (rc == 0)
        rc = sl_model_init_runtime(m, max_tokens, e);
    if (rc) {
        sl_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int sl_model_load(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    return load_model(src, b, max_tokens, PARTS_ALL, out, e);
}

int sl_model_load_core(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out,
                       sl_error *e)
{
    return load_model(src, b, max_tokens, PARTS_CORES, out, e);
}

int sl_model_load_shell(sl_weight_source *src, sl_backend *b, int max_tokens, sl_model **out,
                        sl_error *e)
{
    return load_model(src, b, max_tokens, PARTS_SHELL, out, e);
}

int sl_model_load_hf(const char *dir, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    sl_weight_source *src;
    int rc = sl_hf_source_open(dir, &src, e);
    if (rc)
        return rc;
    rc = sl_model_load(src, b, max_tokens, out, e);
    src->close(src);
    return rc;
}

int sl_model_load_path(const char *path, sl_backend *b, int max_tokens, sl_model **out, sl_error *e)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        sl_weight_source *src;
        int rc = sl_sluice_source_open(path, &src, e);
        if (rc)
            return rc;
        rc = sl_model_load(src, b, max_tokens, out, e);
        src->close(src);
        return rc;
    }
    return sl_model_load_hf(path, b, max_tokens, out, e);
}

int sl_model_load_cores(sl_model *m, sl_weight_source *src, sl_error *e)
{
    loader L = {PARTS_CORES, src, &m->cfg, m->b, e, NULL, 0};
    for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
        int rc = sl_core_tensors(&m->cfg, i, &m->w.layers[i], load_core_tensor, &L);
        if (rc)
            return rc;
    }
    return 0;
}
