/* The converter's metadata JSON: our keys, then the source's config.json and tokenizer.json
 * verbatim (from a Hugging Face directory, or from the metadata of a .sluice source). */
#include "format/format.h"
#include "format/sluice_internal.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The metadata JSON: our keys, then "config" (config.json verbatim) and "tokenizer" (verbatim,
 * last, so its span is easy to state in the header). */
static int build_metadata(const char *src, const char *cfg, size_t cfg_len, const char *tok,
                          size_t tok_len, const sl_convert_opts *o, char **out, size_t *out_len,
                          size_t *tok_off, sl_error *e)
{
    cJSON *m = cJSON_CreateObject(), *q = cJSON_CreateObject();
    const sl_wformat_info *dq = o->quant >= 0 ? sl_wformat_get(o->quant) : NULL;
    const sl_wformat_info *eq = o->expert_quant >= 0 ? sl_wformat_get(o->expert_quant) : dq;
    char *head = NULL;
    if (m && q) {
        cJSON_AddStringToObject(m, "format", "sluice");
        cJSON_AddNumberToObject(m, "version", SL_SLUICE_VERSION);
        cJSON_AddStringToObject(m, "converter", SL_SLUICE_CONVERTER);
        cJSON_AddStringToObject(m, "source", src);
        cJSON_AddStringToObject(q, "default", dq ? dq->name : "source");
        cJSON_AddStringToObject(q, "experts", eq ? eq->name : "source");
        cJSON_AddStringToObject(q, "keep", "norms, router weight and bias keep the source format");
        cJSON_AddNumberToObject(q, "zstd_level", o->zstd_level);
        cJSON_AddNumberToObject(q, "min_saving", o->min_saving);
        cJSON_AddItemToObject(m, "quant", q);
        q = NULL;
        head = cJSON_PrintUnformatted(m);
    }
    cJSON_Delete(m);
    cJSON_Delete(q);
    if (!head)
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for the metadata", src);
    size_t hl = strlen(head) - 1; /* without the closing brace */
    size_t cap = hl + cfg_len + tok_len + 64;
    char *s = malloc(cap);
    if (!s) {
        free(head);
        return sl_errorf(e, SL_E_NOMEM, "%s: no memory for the metadata", src);
    }
    size_t k = 0;
    memcpy(s, head, hl);
    k = hl;
    free(head);
    k += (size_t)sprintf(s + k, ",\"config\":");
    memcpy(s + k, cfg, cfg_len);
    k += cfg_len;
    *tok_off = 0;
    if (tok) {
        k += (size_t)sprintf(s + k, ",\"tokenizer\":");
        *tok_off = k;
        memcpy(s + k, tok, tok_len);
        k += tok_len;
    }
    s[k++] = '}';
    s[k] = 0;
    *out = s;
    *out_len = k;
    return 0;
}

/* config.json (verbatim) and tokenizer.json (verbatim or NULL) of SRC. */
static int source_texts(const char *src, bool is_dir, char **cfg, size_t *cfg_len, char **tok,
                        size_t *tok_len, sl_error *e)
{
    char path[4200];
    *tok = NULL;
    *tok_len = 0;
    if (!is_dir) { /* a .sluice file: its embedded texts */
        sl_sluice *f;
        int rc = sl_sluice_open(src, &f, e);
        if (rc)
            return rc;
        size_t ml;
        const char *meta = sl_sluice_metadata(f, &ml);
        cJSON *j = cJSON_ParseWithLength(meta, ml);
        *cfg = j ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, "config")) : NULL;
        cJSON_Delete(j);
        const char *t = sl_sluice_tokenizer(f, tok_len);
        if (t)
            *tok = strdup(t);
        sl_sluice_close(f);
        if (!*cfg || (t && !*tok)) {
            free(*cfg);
            free(*tok);
            *cfg = *tok = NULL;
            return sl_errorf(e, SL_E_NOMEM, "%s: no memory for its metadata", src);
        }
        *cfg_len = strlen(*cfg);
        return 0;
    }
    snprintf(path, sizeof path, "%s/config.json", src);
    int rc = sl_read_file(path, cfg, cfg_len, e);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/tokenizer.json", src);
    if (access(path, F_OK) == 0 && (rc = sl_read_file(path, tok, tok_len, e))) {
        free(*cfg);
        *cfg = NULL;
        *tok = NULL;
        return rc;
    }
    cJSON *j = *tok ? cJSON_ParseWithLength(*tok, *tok_len) : NULL;
    if (*tok && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        free(*cfg);
        free(*tok);
        *cfg = *tok = NULL;
        return sl_errorf(e, SL_E_FORMAT, "%s: not a JSON object", path);
    }
    cJSON_Delete(j);
    return 0;
}

int sl_convert_metadata(const char *src, bool is_dir, const sl_convert_opts *o, char **meta, size_t *meta_len,
                        size_t *tok_off, size_t *tok_len, sl_error *e)
{
    char *cfg = NULL, *tok = NULL;
    size_t cfg_len = 0, tl = 0;
    int rc = source_texts(src, is_dir, &cfg, &cfg_len, &tok, &tl, e);
    if (rc == 0)
        rc = build_metadata(src, cfg, cfg_len, tok, tl, o, meta, meta_len, tok_off, e);
    *tok_len = tok ? tl : 0;
    free(cfg);
    free(tok);
    return rc;
}
