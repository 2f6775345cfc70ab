/* sluice: run DeepSeek-V3 from NVMe on one GPU. Dispatches to the subcommands in cli/. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#ifdef SL_HAVE_CUDA
#include "cuda/cuda.h"
#endif

#define SLUICE_VERSION "0.1.0"

/* `sluice version`: the build and the backends it can use on this machine. */
static int cmd_version(void)
{
    printf("sluice %s\nbackends: cpu", SLUICE_VERSION);
#ifdef SL_HAVE_CUDA
    int n = sl_cuda_device_count();
    printf(", cuda (%d device%s)\n", n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        char d[256];
        sl_cuda_describe(i, d, sizeof d);
        printf("  cuda:%d %s\n", i, d);
    }
#else
    printf(" (built without CUDA)\n");
#endif
    return 0;
}

static const char usage[] =
    "usage: sluice COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  logits MODEL --tokens 3,17,42 --out FILE   prefill logits, float32 LE, n_tokens x vocab\n"
    "  generate MODEL --tokens 3,17,42 -n 16 --greedy\n"
    "                                            greedy ids, comma-separated, last line of stdout\n"
    "  run MODEL [-p PROMPT | -f FILE] [--chat] [--system TEXT] [-n N] [sampling options]\n"
    "                                            streamed text generation; interactive chat\n"
    "  tokenize TOKENIZER --jsonl IN.jsonl       {\"text\": ...} lines in, {\"ids\": [...]} lines out\n"
    "  bench io PATH [--mode seq|rand|chunks] [--bs SIZE] [--qd N[,N..]] ...\n"
    "                                            io_uring read throughput, fio-style summary\n"
    "  convert SRC OUT.sluice [--quant fp8|q8|q4|bf16] [--expert-quant FMT] [--zstd LEVEL|--no-zstd]\n"
    "                                            Hugging Face checkpoint -> .sluice (streams, all cores)\n"
    "  inspect FILE.sluice [--verify]            config, formats, sizes, compression; check checksums\n"
    "  synth [--preset deepseek-v3|tiny] [--layers N] [--quant FMT] OUT.sluice\n"
    "                                            random-weight model with the real shapes\n"
    "  version                                   build and available backends\n"
    "\n"
    "MODEL is a .sluice file (streamed: experts load on demand within --vram/--ram) or a Hugging\n"
    "Face DeepSeek-V3 directory (config.json + safetensors, bf16 or fp8; loaded whole).\n"
    "Run `sluice COMMAND --help` for a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version"))
        return cmd_version();
    if (!strcmp(cmd, "logits"))
        return sl_cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate"))
        return sl_cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert"))
        return sl_cmd_convert(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect"))
        return sl_cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth"))
        return sl_cmd_synth(argc - 1, argv + 1);
    if (!strcmp(cmd, "run"))
        return sl_cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return sl_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) {
        if (argc >= 3 && !strcmp(argv[2], "io"))
            return sl_cmd_bench_io(argc - 2, argv + 2);
        sl_cli_error("bench: expected a benchmark name: io");
        return 2;
    }
    sl_cli_error("unknown command \"%s\" (see sluice --help)", cmd);
    return 2;
}
