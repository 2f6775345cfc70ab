/* `sluice tokenize`: JSON lines {"text": ...} in, one {"ids": [...]} line out per input line. */
#include "cli/cli.h"
#include "text/text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_cmd_tokenize(int argc, char **argv);

static const char tokenize_usage[] =
    "usage: sluice tokenize TOKENIZER --jsonl IN.jsonl\n"
    "  Encode the \"text\" of every line of IN.jsonl (one JSON object per line; - for stdin) and\n"
    "  write one line {\"ids\": [...]} per input line to stdout, in order. No BOS/EOS is added;\n"
    "  special-token text such as <｜User｜> becomes its token.\n"
    "  TOKENIZER is a Hugging Face tokenizer.json (or a directory holding one; a\n"
    "  tokenizer_config.json beside it supplies bos/eos) or a .sluice file that embeds one.\n";

/* cJSON cuts strings at NUL, so a text with an escaped \u0000 would be silently shortened: find
 * one (an escape, i.e. after an even number of backslashes) and refuse the line instead. */
static bool has_escaped_nul(const char *s)
{
    for (const char *p = s; (p = strstr(p, "\\u")) != NULL; p += 2) {
        size_t slashes = 0;
        for (const char *q = p; q > s && q[-1] == '\\'; q--)
            slashes++;
        if (slashes % 2 == 0 && !strncmp(p + 2, "0000", 4))
            return true;
    }
    return false;
}

static int write_ids(FILE *out, const int32_t *ids, size_t n)
{
    if (fputs("{\"ids\":[", out) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (fprintf(out, i ? ",%d" : "%d", ids[i]) < 0)
            return -1;
    return fputs("]}\n", out) < 0 ? -1 : 0;
}

int sl_cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *in_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(tokenize_usage, stdout);
            return 0;
        } else if (!strcmp(o, "--jsonl")) {
            if (i + 1 >= argc) {
                sl_cli_error("--jsonl needs a value");
                return 2;
            }
            in_path = argv[++i];
        } else if (o[0] == '-' && o[1]) {
            sl_cli_error("tokenize: unknown option \"%s\"", o);
            fputs(tokenize_usage, stderr);
            return 2;
        } else if (!tok_path) {
            tok_path = o;
        } else {
            sl_cli_error("tokenize: unexpected argument \"%s\"", o);
            return 2;
        }
    }
    if (!tok_path || !in_path) {
        fputs(tokenize_usage, stderr);
        return 2;
    }

    sl_error err = {0};
    sl_tokenizer *tok;
    if (sl_cli_open_tokenizer(tok_path, &tok, &err)) {
        sl_cli_error("%s", err.msg);
        return 1;
    }
    FILE *in = strcmp(in_path, "-") ? fopen(in_path, "rb") : stdin;
    if (!in) {
        sl_cli_error("%s: cannot open: %s", in_path, strerror(errno));
        sl_tokenizer_free(tok);
        return 1;
    }
    char *line = NULL;
    size_t line_cap = 0, ids_cap = 0;
    int32_t *ids = NULL;
    int rc = 0;
    ssize_t got;
    for (size_t lineno = 1; (got = getline(&line, &line_cap, in)) >= 0; lineno++) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n')
            line[--len] = 0;
        if (len && line[len - 1] == '\r')
            line[--len] = 0;
        if (memchr(line, 0, len)) {
            sl_cli_error("%s: line %zu: contains a NUL byte", in_path, lineno);
            rc = 1;
            break;
        }
        cJSON *obj = cJSON_ParseWithLength(line, len);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(obj, "text");
        if (!cJSON_IsObject(obj) || !cJSON_IsString(text)) {
            sl_cli_error("%s: line %zu: %s", in_path, lineno,
                         !len                   ? "empty line (expected {\"text\": ...})"
                         : !obj                 ? "not valid JSON"
                         : !cJSON_IsObject(obj) ? "not a JSON object"
                                                : "no string \"text\"");
            cJSON_Delete(obj);
            rc = 1;
            break;
        }
        if (has_escaped_nul(line)) {
            sl_cli_error("%s: line %zu: text contains \\u0000, which is not supported", in_path, lineno);
            cJSON_Delete(obj);
            rc = 1;
            break;
        }
        size_t tlen = strlen(text->valuestring), n;
        if (tlen + 1 > ids_cap) { /* every id covers at least one byte */
            int32_t *g = realloc(ids, (tlen + 1) * sizeof *ids);
            if (!g) {
                sl_cli_error("%s: line %zu: out of memory", in_path, lineno);
                cJSON_Delete(obj);
                rc = 1;
                break;
            }
            ids = g, ids_cap = tlen + 1;
        }
        int e = sl_tokenizer_encode(tok, text->valuestring, tlen, ids, ids_cap, &n, &err);
        cJSON_Delete(obj);
        if (e) {
            sl_cli_error("%s: line %zu: %s", in_path, lineno, err.msg);
            rc = 1;
            break;
        }
        if (write_ids(stdout, ids, n)) {
            sl_cli_error("writing stdout: %s", strerror(errno));
            rc = 1;
            break;
        }
    }
    if (!rc && ferror(in)) {
        sl_cli_error("%s: read failed: %s", in_path, strerror(errno));
        rc = 1;
    }
    if (!rc && fflush(stdout) != 0) {
        sl_cli_error("writing stdout: %s", strerror(errno));
        rc = 1;
    }
    free(line);
    free(ids);
    if (in != stdin)
        fclose(in);
    sl_tokenizer_free(tok);
    return rc;
}
