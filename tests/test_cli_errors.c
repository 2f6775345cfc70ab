/* Bad input through the real `sluice` binary: each case is one line on stderr that names what is
 * wrong, a non-zero exit, and no output file left behind. Models are broken copies of the
 * tiny-b-bf16 fixture (single-file safetensors) made in a temp dir. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLI_BIN "build/sluice"
#define CLI_SRC "tests/fixtures/tiny-b-bf16"

typedef struct cli_result {
    int status;
    char err[4096];
    char out[4096];
} cli_result;

static void cli_run(const char *args, cli_result *r)
{
    char cmd[8192], errf[] = "/tmp/sluice-cli-err-XXXXXX", outf[] = "/tmp/sluice-cli-out-XXXXXX";
    int fe = mkstemp(errf), fo = mkstemp(outf);
    cr_assert(fe >= 0 && fo >= 0);
    close(fe);
    close(fo);
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", CLI_BIN, args, outf, errf);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    FILE *f = fopen(errf, "r");
    size_t n = fread(r->err, 1, sizeof r->err - 1, f);
    r->err[n] = 0;
    fclose(f);
    f = fopen(outf, "r");
    n = fread(r->out, 1, sizeof r->out - 1, f);
    r->out[n] = 0;
    fclose(f);
    unlink(errf);
    unlink(outf);
}

/* Exit non-zero, exactly one line on stderr, containing every needle. */
static void cli_expect_error(const char *args, const char *n1, const char *n2)
{
    cli_result r;
    cli_run(args, &r);
    cr_assert_neq(r.status, 0, "`sluice %s` exited 0; stderr: %s", args, r.err);
    cr_assert_neq(r.status, 128, "`sluice %s` crashed", args);
    int lines = 0;
    for (char *p = r.err; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 1, "`sluice %s` printed %d lines on stderr:\n%s", args, lines, r.err);
    cr_assert(strstr(r.err, n1), "`sluice %s`: message lacks \"%s\": %s", args, n1, r.err);
    cr_assert(!n2 || strstr(r.err, n2), "`sluice %s`: message lacks \"%s\": %s", args, n2, r.err);
}

static char *cli_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len + 1);
    cr_assert(fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

static void cli_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* A copy of the fixture in a fresh temp dir whose safetensors header went through `edit`. */
static void cli_broken_copy(char *dir, void (*edit)(cJSON *hdr), size_t truncate_to)
{
    strcpy(dir, "/tmp/sluice-bad-XXXXXX");
    cr_assert(mkdtemp(dir));
    char p[512];
    size_t len;
    char *cfg = cli_read(CLI_SRC "/config.json", &len);
    snprintf(p, sizeof p, "%s/config.json", dir);
    cli_write(p, cfg, len);
    free(cfg);
    char *st = cli_read(CLI_SRC "/model.safetensors", &len);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (truncate_to) {
        cli_write(p, st, truncate_to);
        free(st);
        return;
    }
    uint64_t hl;
    memcpy(&hl, st, 8);
    char *hjson = strndup(st + 8, hl);
    cJSON *hdr = cJSON_Parse(hjson);
    cr_assert(hdr);
    edit(hdr);
    char *nh = cJSON_PrintUnformatted(hdr);
    size_t nl = strlen(nh), padded = (nl + 7) / 8 * 8;
    size_t data = len - 8 - hl, total = 8 + padded + data;
    char *out = malloc(total);
    uint64_t pl = padded;
    memcpy(out, &pl, 8);
    memset(out + 8, ' ', padded);
    memcpy(out + 8, nh, nl);
    memcpy(out + 8 + padded, st + 8 + hl, data);
    cli_write(p, out, total);
    free(out);
    free(nh);
    free(hjson);
    cJSON_Delete(hdr);
    free(st);
}

static void cli_rm(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void edit_drop_o_proj(cJSON *h) { cJSON_DeleteItemFromObject(h, "model.layers.1.self_attn.o_proj.weight"); }

static void edit_swap_kv_b_shape(cJSON *h)
{
    cJSON *shape = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "model.layers.0.self_attn.kv_b_proj.weight"), "shape");
    int a = cJSON_GetArrayItem(shape, 0)->valueint, b = cJSON_GetArrayItem(shape, 1)->valueint;
    cJSON_ReplaceItemInArray(shape, 0, cJSON_CreateNumber(b));
    cJSON_ReplaceItemInArray(shape, 1, cJSON_CreateNumber(a));
}

static void edit_offsets_past_end(cJSON *h)
{
    cJSON *off = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "model.norm.weight"), "data_offsets");
    int end = cJSON_GetArrayItem(off, 1)->valueint;
    cJSON_ReplaceItemInArray(off, 1, cJSON_CreateNumber(end + 100000000));
}

static void edit_dtype_i16(cJSON *h)
{
    cJSON *t = cJSON_GetObjectItem(h, "model.norm.weight");
    cJSON_ReplaceItemInObject(t, "dtype", cJSON_CreateString("I16"));
}

static const char *ARGS = "--tokens 3,17,42 -n 2 --greedy";

Test(cli_errors, missing_tensor_is_named)
{
    char dir[64], args[256];
    cli_broken_copy(dir, edit_drop_o_proj, 0);
    snprintf(args, sizeof args, "generate %s %s", dir, ARGS);
    cli_expect_error(args, "model.layers.1.self_attn.o_proj.weight", "missing");
    cli_rm(dir);
}

Test(cli_errors, wrong_shape_is_named)
{
    char dir[64], args[256];
    cli_broken_copy(dir, edit_swap_kv_b_shape, 0);
    snprintf(args, sizeof args, "generate %s %s", dir, ARGS);
    cli_expect_error(args, "model.layers.0.self_attn.kv_b_proj.weight", "shape");
    cli_rm(dir);
}

Test(cli_errors, header_lying_about_offsets)
{
    char dir[64], args[256];
    cli_broken_copy(dir, edit_offsets_past_end, 0);
    snprintf(args, sizeof args, "generate %s %s", dir, ARGS);
    cli_expect_error(args, "model.norm.weight", "model.safetensors");
    cli_rm(dir);
}

Test(cli_errors, unsupported_dtype)
{
    char dir[64], args[256];
    cli_broken_copy(dir, edit_dtype_i16, 0);
    snprintf(args, sizeof args, "generate %s %s", dir, ARGS);
    cli_expect_error(args, "model.norm.weight", "I16");
    cli_rm(dir);
}

Test(cli_errors, truncated_safetensors)
{
    size_t cuts[] = {5, 200, 1000000};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char dir[64], args[256];
        cli_broken_copy(dir, NULL, cuts[i]);
        snprintf(args, sizeof args, "generate %s %s", dir, ARGS);
        cli_expect_error(args, "model.safetensors", NULL);
        cli_rm(dir);
    }
}

Test(cli_errors, token_outside_vocab)
{
    cli_expect_error("generate " CLI_SRC " --tokens 3,700,5 -n 2 --greedy", "700", "vocabulary");
}

Test(cli_errors, malformed_token_list)
{
    cli_expect_error("generate " CLI_SRC " --tokens 3,x,5 -n 2", "item 2", NULL);
}

Test(cli_errors, missing_model_directory)
{
    cli_expect_error("generate /nonexistent/model --tokens 1 -n 1", "/nonexistent/model", NULL);
}

Test(cli_errors, logits_leaves_no_file_on_error)
{
    char out[] = "/tmp/sluice-logits-XXXXXX";
    cr_assert(mkdtemp(out));
    char args[1024], file[600], tmp[700];
    snprintf(file, sizeof file, "%s/l.f32", out);
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    snprintf(args, sizeof args, "logits " CLI_SRC " --tokens 1,2,9999 --out %s", file);
    cli_expect_error(args, "9999", NULL);
    struct stat sb;
    cr_assert(stat(file, &sb) != 0 && stat(tmp, &sb) != 0, "an output file was left behind");
    cli_rm(out);
}

Test(cli_errors, logits_file_has_tokens_times_vocab_floats)
{
    char out[] = "/tmp/sluice-logits-XXXXXX";
    cr_assert(mkdtemp(out));
    char args[1024], file[600];
    snprintf(file, sizeof file, "%s/l.f32", out);
    snprintf(args, sizeof args, "logits " CLI_SRC " --tokens 1,2,3,4 --out %s", file);
    cli_result r;
    cli_run(args, &r);
    cr_assert_eq(r.status, 0, "%s", r.err);
    struct stat sb;
    cr_assert_eq(stat(file, &sb), 0);
    cr_assert_eq(sb.st_size, 4 * 700 * 4, "file is %lld bytes", (long long)sb.st_size);
    cli_rm(out);
}
