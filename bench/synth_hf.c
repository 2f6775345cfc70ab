/* bench/synth_hf: a synthetic Hugging Face DeepSeek-V3 checkpoint with the real shapes (hidden
 * 7168, vocab 129280, MLA dims, 256 experts of width 2048) and few layers, laid out as the
 * official release is (safetensors shards + model.safetensors.index.json + config.json): fp8
 * e4m3 matrices with F32 128x128 `weight_scale_inv`, bf16 embedding/lm_head/norms/router, f32
 * e_score_correction_bias; or everything bf16 with --bf16. The input of bench/convert.sh.
 *
 * Build: gcc -O2 -std=c11 -D_GNU_SOURCE -pthread bench/synth_hf.c -lm -o build/bench/synth_hf
 * Usage: synth_hf OUT_DIR [--layers 2] [--dense 1] [--experts 256] [--bf16] [--shard-mb 1024]
 *                 [--threads N] [--vocab 129280]
 *
 * Values are zero-mean Gaussian (drawn through a 65536-entry quantile table, so generation runs
 * at memory speed): fp8 codes spread like a block quantized with amax/448 (sigma = 448/4), times
 * a scale giving each matrix std 1/sqrt(cols); bf16 weights N(0, 1/cols); norms 1 + N(0, 0.1^2).
 * Real checkpoints have heavier tails, so zstd ratios can differ by a few percent. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int V = 129280; /* --vocab: smaller only to look at expert throughput alone */
enum { H = 7168, INTER = 18432, MOE = 2048, QL = 1536, KVL = 512, NH = 128, NOPE = 128,
       ROPE = 64, VD = 128 };

typedef struct tensor {
    char name[96];
    const char *dtype; /* "F8_E4M3", "F32", "BF16" */
    int64_t rows, cols;  /* cols 0: vector */
    int kind;          /* 0 weight, 1 scale_inv, 2 norm, 3 bias */
    int64_t wcols;     /* for scale_inv: the weight's cols (sets the scale) */
    int shard;
    uint64_t off, bytes;
} tensor;

static tensor *T;
static int nT, capT;
static int bf16_mode;
static uint8_t e4m3_of[65536];
static float normal_of[65536];

static void __attribute__((format(printf, 5, 6)))
add(const char *dtype, int64_t rows, int64_t cols, int kind, const char *fmt, ...)
{
    if (nT == capT && !(T = realloc(T, (size_t)(capT = capT ? 2 * capT : 1024) * sizeof *T)))
        exit(1);
    tensor *t = &T[nT++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->dtype = dtype;
    t->rows = rows;
    t->cols = cols;
    t->kind = kind;
    int64_t n = rows * (cols ? cols : 1);
    t->bytes = (uint64_t)n * (!strcmp(dtype, "F32") ? 4 : !strcmp(dtype, "BF16") ? 2 : 1);
}

static void matrix(const char *name, int64_t rows, int64_t cols)
{
    if (bf16_mode) {
        add("BF16", rows, cols, 0, "%s", name);
        return;
    }
    add("F8_E4M3", rows, cols, 0, "%s", name);
    add("F32", (rows + 127) / 128, (cols + 127) / 128, 1, "%s_scale_inv", name);
    T[nT - 1].wcols = cols;
}

static void mlp(const char *p, int64_t width)
{
    char n[128];
    snprintf(n, sizeof n, "%sgate_proj.weight", p), matrix(n, width, H);
    snprintf(n, sizeof n, "%sup_proj.weight", p), matrix(n, width, H);
    snprintf(n, sizeof n, "%sdown_proj.weight", p), matrix(n, H, width);
}

static void plan(int layers, int dense, int experts)
{
    char p[64], n[160];
    add("BF16", V, H, 0, "model.embed_tokens.weight");
    for (int l = 0; l < layers; l++) {
        snprintf(p, sizeof p, "model.layers.%d.", l);
        add("BF16", H, 0, 2, "%sinput_layernorm.weight", p);
        snprintf(n, sizeof n, "%sself_attn.q_a_proj.weight", p), matrix(n, QL, H);
        add("BF16", QL, 0, 2, "%sself_attn.q_a_layernorm.weight", p);
        snprintf(n, sizeof n, "%sself_attn.q_b_proj.weight", p), matrix(n, NH * (NOPE + ROPE), QL);
        snprintf(n, sizeof n, "%sself_attn.kv_a_proj_with_mqa.weight", p), matrix(n, KVL + ROPE, H);
        add("BF16", KVL, 0, 2, "%sself_attn.kv_a_layernorm.weight", p);
        snprintf(n, sizeof n, "%sself_attn.kv_b_proj.weight", p), matrix(n, NH * (NOPE + VD), KVL);
        snprintf(n, sizeof n, "%sself_attn.o_proj.weight", p), matrix(n, H, NH * VD);
        add("BF16", H, 0, 2, "%spost_attention_layernorm.weight", p);
        if (l < dense) {
            snprintf(n, sizeof n, "%smlp.", p), mlp(n, INTER);
            continue;
        }
        add("BF16", experts, H, 0, "%smlp.gate.weight", p);
        add("F32", experts, 0, 3, "%smlp.gate.e_score_correction_bias", p);
        snprintf(n, sizeof n, "%smlp.shared_experts.", p), mlp(n, MOE);
        for (int x = 0; x < experts; x++)
            snprintf(n, sizeof n, "%smlp.experts.%d.", p, x), mlp(n, MOE);
    }
    add("BF16", H, 0, 2, "model.norm.weight");
    add("BF16", V, H, 0, "lm_head.weight");
}

static float e4m3_value(int b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 | m), e - 10);
    return s ? -v : v;
}

/* Inverse normal CDF by bisection on erfc: run once per table entry. */
static double probit(double u)
{
    double lo = -10, hi = 10;
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < u)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void tables(void)
{
    for (int i = 0; i < 65536; i++) {
        double z = probit((i + 0.5) / 65536.0);
        normal_of[i] = (float)z;
        double v = z * 448.0 / 4.0, best = 1e30;
        v = v > 448 ? 448 : v < -448 ? -448 : v;
        for (int b = 0; b < 256; b++) {
            float f = e4m3_value(b);
            if (!isnan(f) && fabs(f - v) < best)
                best = fabs(f - v), e4m3_of[i] = (uint8_t)b;
        }
    }
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* n bytes of tensor t starting at element e0 into buf. */
static void fill(const tensor *t, uint8_t *buf, uint64_t e0, uint64_t n_el, uint64_t *s)
{
    if (!strcmp(t->dtype, "F8_E4M3")) {
        for (uint64_t i = 0; i < n_el; i += 4) {
            uint64_t r = rnd(s);
            for (int k = 0; k < 4 && i + k < n_el; k++)
                buf[i + k] = e4m3_of[(r >> (16 * k)) & 0xffff];
        }
        return;
    }
    float sigma = t->kind == 0 ? (float)(1.0 / sqrt((double)(t->cols ? t->cols : H))) : 0.1f;
    for (uint64_t i = 0; i < n_el; i++) {
        float z = normal_of[rnd(s) & 0xffff];
        float v = t->kind == 1   ? (float)(4.0 / 448.0 / sqrt((double)t->wcols)) * (1 + 0.05f * z)
                  : t->kind == 2 ? 1 + sigma * z
                  : t->kind == 3 ? 0.01f * z
                                 : sigma * z;
        if (!strcmp(t->dtype, "F32"))
            memcpy(buf + 4 * i, &v, 4);
        else {
            uint16_t h = bf16(v);
            memcpy(buf + 2 * i, &h, 2);
        }
    }
    (void)e0;
}

typedef struct job {
    const char *dir;
    int shard, n_shards;
} job;

static void *write_shard(void *arg)
{
    job *j = arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", j->dir, j->shard + 1, j->n_shards);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        exit(1);
    }
    /* header */
    size_t cap = 1 << 20, k = 0;
    char *h = malloc(cap);
    k += (size_t)snprintf(h + k, cap - k, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < nT; i++) {
        if (T[i].shard != j->shard)
            continue;
        if (cap - k < 512)
            h = realloc(h, cap *= 2);
        if (T[i].cols)
            k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                  T[i].name, T[i].dtype, (long long)T[i].rows, (long long)T[i].cols,
                                  (unsigned long long)T[i].off, (unsigned long long)(T[i].off + T[i].bytes));
        else
            k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                  T[i].name, T[i].dtype, (long long)T[i].rows, (unsigned long long)T[i].off,
                                  (unsigned long long)(T[i].off + T[i].bytes));
    }
    k += (size_t)snprintf(h + k, cap - k, "}");
    while (k % 8)
        h[k++] = ' ';
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)k >> (8 * i));
    if (fwrite(le, 1, 8, f) != 8 || fwrite(h, 1, k, f) != k)
        exit(1);
    free(h);
    enum { BUF = 64 << 20 };
    uint8_t *buf = malloc(BUF);
    uint64_t s = 0x5eed0000ull + (uint64_t)j->shard;
    for (int i = 0; i < nT; i++) {
        if (T[i].shard != j->shard)
            continue;
        uint64_t esz = T[i].bytes / (uint64_t)(T[i].rows * (T[i].cols ? T[i].cols : 1));
        uint64_t total = T[i].bytes / esz, per = BUF / esz;
        for (uint64_t e0 = 0; e0 < total; e0 += per) {
            uint64_t n = total - e0 < per ? total - e0 : per;
            fill(&T[i], buf, e0, n, &s);
            if (fwrite(buf, esz, n, f) != n) {
                fprintf(stderr, "%s: write: %s\n", path, strerror(errno));
                exit(1);
            }
        }
    }
    free(buf);
    if (fclose(f) != 0)
        exit(1);
    return NULL;
}

static void write_config(const char *dir, int layers, int dense, int experts)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        exit(1);
    int groups = experts % 8 == 0 ? 8 : 1;
    fprintf(f,
            "{\n  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n  \"model_type\": \"deepseek_v3\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"moe_intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"first_k_dense_replace\": %d,\n"
            "  \"moe_layer_freq\": 1,\n  \"n_routed_experts\": %d,\n  \"n_shared_experts\": 1,\n"
            "  \"num_experts_per_tok\": %d,\n  \"n_group\": %d,\n  \"topk_group\": %d,\n  \"norm_topk_prob\": true,\n"
            "  \"routed_scaling_factor\": 2.5,\n  \"scoring_func\": \"sigmoid\",\n  \"topk_method\": \"noaux_tc\",\n"
            "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"q_lora_rank\": %d,\n"
            "  \"kv_lora_rank\": %d,\n  \"qk_nope_head_dim\": %d,\n  \"qk_rope_head_dim\": %d,\n  \"v_head_dim\": %d,\n"
            "  \"rms_norm_eps\": 1e-06,\n  \"max_position_embeddings\": 163840,\n  \"bos_token_id\": 0,\n"
            "  \"eos_token_id\": 1,\n  \"tie_word_embeddings\": false,\n  \"rope_theta\": 10000,\n"
            "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,\n"
            "    \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"},\n"
            "  \"torch_dtype\": \"bfloat16\"%s\n}\n",
            V, H, INTER, MOE, layers, dense, experts, experts < 8 ? experts : 8, groups, groups < 4 ? groups : 4,
            NH, NH, QL, KVL, NOPE, ROPE, VD,
            bf16_mode ? ""
                      : ",\n  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                        "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}");
    if (fclose(f) != 0)
        exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: synth_hf OUT_DIR [--layers 2] [--dense 1] [--experts 256] [--bf16] "
                        "[--shard-mb 1024] [--threads N] [--vocab 129280]\n");
        return 2;
    }
    const char *dir = argv[1];
    int layers = 2, dense = 1, experts = 256, shard_mb = 1024, threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(argv[i], "--layers")) layers = atoi(v), i++;
        else if (!strcmp(argv[i], "--dense")) dense = atoi(v), i++;
        else if (!strcmp(argv[i], "--experts")) experts = atoi(v), i++;
        else if (!strcmp(argv[i], "--shard-mb")) shard_mb = atoi(v), i++;
        else if (!strcmp(argv[i], "--threads")) threads = atoi(v), i++;
        else if (!strcmp(argv[i], "--vocab")) V = atoi(v), i++;
        else if (!strcmp(argv[i], "--bf16")) bf16_mode = 1;
        else { fprintf(stderr, "synth_hf: unknown option %s\n", argv[i]); return 2; }
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }
    tables();
    plan(layers, dense, experts);
    int shard = 0;
    uint64_t in_shard = 0, total = 0;
    for (int i = 0; i < nT; i++) {
        if (in_shard > 0 && in_shard + T[i].bytes > (uint64_t)shard_mb << 20 && T[i].kind != 1)
            shard++, in_shard = 0; /* a scale_inv stays with its weight */
        T[i].shard = shard;
        T[i].off = in_shard;
        in_shard += T[i].bytes;
        total += T[i].bytes;
    }
    int n_shards = shard + 1;
    write_config(dir, layers, dense, experts);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {", (unsigned long long)total);
    for (int i = 0; i < nT; i++)
        fprintf(f, "%s\n\"%s\": \"model-%05d-of-%05d.safetensors\"", i ? "," : "", T[i].name, T[i].shard + 1, n_shards);
    fprintf(f, "}}\n");
    fclose(f);
    job *jobs = calloc((size_t)n_shards, sizeof *jobs);
    pthread_t *tid = calloc((size_t)n_shards, sizeof *tid);
    for (int base = 0; base < n_shards; base += threads) {
        for (int s = base; s < n_shards && s < base + threads; s++) {
            jobs[s] = (job){dir, s, n_shards};
            pthread_create(&tid[s], NULL, write_shard, &jobs[s]);
        }
        for (int s = base; s < n_shards && s < base + threads; s++)
            pthread_join(tid[s], NULL);
    }
    printf("%s: %d tensors, %d shards, %.2f GB (%s)\n", dir, nT, n_shards, total / 1e9, bf16_mode ? "bf16" : "fp8");
    return 0;
}
