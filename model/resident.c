/* The weight provider of a model loaded whole: every layer and expert is already in backend
 * memory, so requests are answered at once, in the order asked. */
#include "model/model_internal.h"

static int res_layer_begin(sl_weight_provider *p, int layer, const sl_layer_weights **lw, sl_error *e)
{
    sl_resident_provider *r = (sl_resident_provider *)p;
    *lw = &r->m->w.layers[layer];
    return 0;
}

static int res_experts_request(sl_weight_provider *p, int layer, const int32_t *experts, int n,
                               sl_error *e)
{
    sl_resident_provider *r = (sl_resident_provider *)p;
    r->want = experts;
    r->n_want = n;
    r->next = 0;
    return 0;
}

static int res_expert_next(sl_weight_provider *p, int layer, int *expert,
                           const sl_expert_weights **w, sl_error *e)
{
    sl_resident_provider *r = (sl_resident_provider *)p;
    if (r->next >= r->n_want) {
        *expert = -1;
        return 0;
    }
    int x = r->want[r->next++];
    const sl_layer_weights *l = &r->m->w.layers[layer];
    r->cur = (sl_expert_weights){l->exp_gate[x], l->exp_up[x], l->exp_down[x]};
    *expert = x;
    *w = &r->cur;
    return 0;
}

/* All the remaining ones at once: resident weights are always ready. */
static int res_experts_ready(sl_weight_provider *p, int layer, int max, int *experts,
                             const sl_expert_weights **w, int *n, sl_error *e)
{
    sl_resident_provider *r = (sl_resident_provider *)p;
    const sl_layer_weights *l = &r->m->w.layers[layer];
    *n = 0;
    while (r->next < r->n_want && *n < max) {
        int x = r->want[r->next++];
        r->all[x] = (sl_expert_weights){l->exp_gate[x], l->exp_up[x], l->exp_down[x]};
        experts[*n] = x;
        w[(*n)++] = &r->all[x];
    }
    return 0;
}

static void res_expert_done(sl_weight_provider *p, int layer, int expert) {}
static void res_layer_end(sl_weight_provider *p, int layer) {}

void sl_resident_provider_init(sl_model *m, sl_expert_weights *all)
{
    m->resident = (sl_resident_provider){
        .base = {.layer_begin = res_layer_begin,
                 .experts_request = res_experts_request,
                 .expert_next = res_expert_next,
                 .expert_done = res_expert_done,
                 .layer_end = res_layer_end,
                 .experts_hint = NULL,
                 .experts_ready = res_experts_ready},
        .m = m,
        .all = all,
    };
    m->wp = &m->resident.base;
}

void sl_model_set_provider(sl_model *m, sl_weight_provider *p)
{
    m->wp = p ? p : &m->resident.base;
}

sl_weight_provider *sl_model_resident_provider(sl_model *m) { return &m->resident.base; }
