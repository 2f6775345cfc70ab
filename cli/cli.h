/* cli/: the `sluice` command. Each subcommand is one function taking its own argv (argv[0] is
 * the subcommand's name) and returning the process exit code. Only cli/ prints. */
#ifndef SL_CLI_H
#define SL_CLI_H

int sl_cmd_logits(int argc, char **argv);
int sl_cmd_generate(int argc, char **argv);
int sl_cmd_run(int argc, char **argv);
int sl_cmd_tokenize(int argc, char **argv);
int sl_cmd_bench_io(int argc, char **argv);

/* "sluice: <msg>" on stderr, one line. */
void sl_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse "3,17,42" into ids (caller frees *out). Returns 0, or -1 after printing which item is bad. */
int sl_cli_parse_ids(const char *s, int **out, int *n);

/* Parse a non-negative integer option value; -1 after printing an error naming the option. */
int sl_cli_parse_int(const char *opt, const char *val, int lo, int hi, int *out);

#endif
