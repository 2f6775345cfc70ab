/* A Hugging Face checkpoint directory as a weight source: config.json + safetensors shards.
 * Tensors come back in their stored precision (bf16 stays bf16; official fp8 stays its e4m3
 * bytes followed by its 128x128 block scales), so a converter or a backend decides about
 * precision, never this reader. */
#include "format/format.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hf_source {
    sl_weight_source base;
    sl_config cfg;
    sl_safetensors *st;
    char dir[4096];
} hf_source;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static void shape_str(const sl_tensor_view *t, char *buf, size_t n)
{
    buf[0] = 0;
    for (int i = 0; i < t->ndim; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
}

static int hf_get(sl_weight_source *src, const char *name, int64_t rows, int64_t cols, int *fmt,
                  void **buf, size_t *nbytes, sl_error *e)
{
    hf_source *h = (hf_source *)src;
    const sl_tensor_view *t = sl_safetensors_find(h->st, name);
    if (!t)
        return sl_errorf(e, SL_E_MISSING, "%s: missing tensor \"%s\"", h->dir, name);
    bool vec = cols == 0;
    if (vec ? !(t->ndim == 1 && t->shape[0] == rows)
            : !(t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)) {
        char got[96], want[64];
        shape_str(t, got, sizeof got);
        if (vec)
            snprintf(want, sizeof want, "[%lld]", (long long)rows);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        return sl_errorf(e, SL_E_SHAPE, "%s: tensor \"%s\" has shape [%s], config implies %s",
                         t->file, name, got, want);
    }
    int64_t c = vec ? 1 : cols;
    size_t n = (size_t)t->numel;
    void *out = NULL;
    switch (t->dtype) {
    case SL_DT_F32:
    case SL_DT_BF16:
        *fmt = t->dtype == SL_DT_F32 ? SL_WF_F32 : SL_WF_BF16;
        *nbytes = n * sl_dtype_size(t->dtype);
        if ((out = malloc(*nbytes ? *nbytes : 1)))
            memcpy(out, t->data, *nbytes);
        break;
    case SL_DT_F16:
        *fmt = SL_WF_F32;
        *nbytes = n * sizeof(float);
        if ((out = malloc(*nbytes ? *nbytes : 1)))
            sl_decode_to_f32((int)t->dtype, t->data, out, n);
        break;
    case SL_DT_F8_E4M3: {
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        const sl_tensor_view *s = sl_safetensors_find(h->st, sname);
        if (vec || !s)
            return sl_errorf(e, SL_E_MISSING, "%s: fp8 tensor \"%s\" has no \"%s\"", t->file, name, sname);
        int br = h->cfg.fp8_block_rows ? h->cfg.fp8_block_rows : 128;
        int bc = h->cfg.fp8_block_cols ? h->cfg.fp8_block_cols : 128;
        if (br != 128 || bc != 128)
            return sl_errorf(e, SL_E_UNSUPPORTED, "%s: fp8 weight_block_size [%d, %d] (sluice reads [128, 128])",
                             h->dir, br, bc);
        if (s->dtype != SL_DT_F32 || s->ndim != 2 || s->shape[0] != cdiv(rows, 128) ||
            s->shape[1] != cdiv(c, 128))
            return sl_errorf(e, SL_E_SHAPE, "%s: \"%s\" must be F32 [%lld, %lld] for 128x128 blocks of [%lld, %lld]",
                             s->file, sname, (long long)cdiv(rows, 128), (long long)cdiv(c, 128),
                             (long long)rows, (long long)c);
        *fmt = SL_WF_FP8;
        *nbytes = sl_wformat_bytes(SL_WF_FP8, rows, c);
        size_t qb = (size_t)rows * (size_t)c, sb = (size_t)s->numel * sizeof(float);
        if (qb + sb != *nbytes)
            abort(); /* quant/'s FP8 layout is bytes then scales; this must agree */
        if ((out = malloc(*nbytes))) {
            memcpy(out, t->data, qb);
            memcpy((char *)out + qb, s->data, sb);
        }
        break;
    }
    default:
        return sl_errorf(e, SL_E_UNSUPPORTED, "%s: tensor \"%s\" has dtype %s", t->file, name,
                         sl_dtype_name(t->dtype));
    }
    if (!out)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for tensor \"%s\"", t->file, name);
    *buf = out;
    return 0;
}

static void hf_close(sl_weight_source *src)
{
    hf_source *h = (hf_source *)src;
    if (!h)
        return;
    sl_safetensors_close(h->st);
    free(h);
}

int sl_hf_source_open(const char *dir, sl_weight_source **out, sl_error *e)
{
    hf_source *h = calloc(1, sizeof *h);
    if (!h)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory", dir);
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = sl_config_load(path, &h->cfg, e);
    if (rc == 0)
        rc = sl_safetensors_open(dir, &h->st, e);
    if (rc) {
        hf_close(&h->base);
        return rc;
    }
    h->base.path = h->dir;
    h->base.config = &h->cfg;
    h->base.get = hf_get;
    h->base.close = hf_close;
    *out = &h->base;
    return 0;
}
