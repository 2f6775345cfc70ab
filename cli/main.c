/* sluice: run DeepSeek-V3 from NVMe on one GPU. Dispatches to the subcommands in cli/. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: sluice COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  logits MODEL --tokens 3,17,42 --out FILE   prefill logits, float32 LE, n_tokens x vocab\n"
    "  generate MODEL --tokens 3,17,42 -n 16 --greedy\n"
    "                                            greedy ids, comma-separated, last line of stdout\n"
    "\n"
    "MODEL is a Hugging Face DeepSeek-V3 directory (config.json + safetensors, bf16 or fp8).\n"
    "Run `sluice COMMAND --help` for a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "logits"))
        return sl_cmd_logits(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate"))
        return sl_cmd_generate(argc - 1, argv + 1);
    sl_cli_error("unknown command \"%s\" (see sluice --help)", cmd);
    return 2;
}
