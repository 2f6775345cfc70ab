/* `sluice run` end to end on a synthetic model with the real DeepSeek-V3 tokenizer, driven through
 * a pseudo-terminal like a person at a keyboard: streamed answers, Ctrl-C stopping an answer but
 * not the session, a multi-turn chat, and bad prompts giving clear errors. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define E2E_TOKENIZER "../shared/deepseek-v3/tokenizer.json"
static char e2e_model[128];

static void e2e_setup(void)
{
    if (access(E2E_TOKENIZER, R_OK) != 0)
        cr_skip_test("%s not found: the run tests need the real tokenizer beside the repo", E2E_TOKENIZER);
    snprintf(e2e_model, sizeof e2e_model, "build/tests/e2e-tiny.sluice");
    /* tests run in parallel processes: one makes the model, the others wait on the lock */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "flock build/tests/e2e.lock sh -c 'test %s -nt build/sluice || build/sluice synth --preset tiny --layers 3 "
             "--tokenizer " E2E_TOKENIZER " --seed 5 %s 2>/dev/null'",
             e2e_model, e2e_model);
    cr_assert_eq(system(cmd), 0, "synth failed");
}

typedef struct e2e_out {
    int status;
    char out[1 << 16], err[4096];
} e2e_out;

static void e2e_run(const char *args, const char *stdin_text, e2e_out *r)
{
    char cmd[2048], of[] = "/tmp/sl-e2e-o-XXXXXX", ef[] = "/tmp/sl-e2e-e-XXXXXX";
    close(mkstemp(of));
    close(mkstemp(ef));
    snprintf(cmd, sizeof cmd, "printf '%%s' '%s' | build/sluice run %s %s >%s 2>%s", stdin_text ? stdin_text : "",
             e2e_model, args, of, ef);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    FILE *f = fopen(of, "r");
    size_t n = fread(r->out, 1, sizeof r->out - 1, f);
    r->out[n] = 0;
    fclose(f);
    f = fopen(ef, "r");
    n = fread(r->err, 1, sizeof r->err - 1, f);
    r->err[n] = 0;
    fclose(f);
    unlink(of);
    unlink(ef);
}

Test(run_e2e, same_seed_same_text_and_stats_line, .init = e2e_setup)
{
    static e2e_out a, b, c;
    e2e_run("-p 'The quick brown fox' -n 12 --seed 7 --temp 0.8", NULL, &a);
    e2e_run("-p 'The quick brown fox' -n 12 --seed 7 --temp 0.8", NULL, &b);
    e2e_run("-p 'The quick brown fox' -n 12 --seed 8 --temp 0.8", NULL, &c);
    cr_assert_eq(a.status, 0, "%s", a.err);
    cr_assert_str_eq(a.out, b.out, "same seed must give the same text");
    cr_assert_str_neq(a.out, c.out, "another seed should give another text");
    cr_assert(strstr(a.err, "generated 12 tok"), "stats line: %s", a.err);
    cr_assert(strstr(a.err, "tok/s"), "stats line: %s", a.err);
}

Test(run_e2e, bad_prompts_are_clear_errors, .init = e2e_setup)
{
    static e2e_out r;
    e2e_run("-p '' -n 4", NULL, &r);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "empty"), "%s", r.err);

    e2e_run("-p \"$(printf 'ab\\377cd')\" -n 4", NULL, &r);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "UTF-8") || strstr(r.err, "utf-8"), "%s", r.err);

    e2e_run("--ctx 16 -p 'one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen' -n 4",
            NULL, &r);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "context"), "%s", r.err);
    int lines = 0;
    for (char *p = r.err; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 1, "one line: %s", r.err);
}

/* Read from fd until `needle` appears in the accumulated text or timeout; returns 1 if found. */
static int e2e_wait_for(int fd, char *acc, size_t cap, size_t *len, const char *needle, double timeout)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (strstr(acc, needle))
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double left = timeout - ((t.tv_sec - t0.tv_sec) + 1e-9 * (t.tv_nsec - t0.tv_nsec));
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        ssize_t n = read(fd, acc + *len, cap - 1 - *len);
        if (n <= 0)
            return strstr(acc, needle) != NULL;
        *len += (size_t)n;
        acc[*len] = 0;
    }
}

/* Interactive chat in a pty: an answer streams, Ctrl-C stops it, the session takes another turn
 * (the KV cache keeps the first), and EOF ends the program with exit 0 and the stats line. */
Test(run_e2e, chat_in_a_terminal_ctrl_c_and_two_turns, .init = e2e_setup, .timeout = 60)
{
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    cr_assert(pid >= 0, "forkpty: %s", strerror(errno));
    if (pid == 0) {
        execl("build/sluice", "sluice", "run", e2e_model, "--chat", "-n", "100000", "--seed", "3",
              "--ctx", "8192", (char *)NULL);
        _exit(127);
    }
    static char acc[1 << 20];
    size_t len = 0;
    acc[0] = 0;
    cr_assert(e2e_wait_for(master, acc, sizeof acc, &len, "> ", 30), "no prompt: %s", acc);
    cr_assert(write(master, "Hello there\n", 12) == 12);
    /* the answer streams: bytes arrive while the process is still generating */
    size_t before = len;
    for (int i = 0; i < 50 && len <= before + 20; i++) /* up to 5 s on a loaded machine */
        e2e_wait_for(master, acc, sizeof acc, &len, "\x01never", 0.1);
    cr_assert_gt(len, before + 20, "no streamed answer after the first turn");
    int status;
    cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "the program ended during the answer");
    cr_assert(write(master, "\x03", 1) == 1); /* Ctrl-C */
    size_t mark = len;
    cr_assert(e2e_wait_for(master, acc + mark, sizeof acc - mark, &(size_t){0}, "> ", 10) ||
                  strstr(acc + before, "> "),
              "Ctrl-C did not bring the prompt back");
    len = strlen(acc);
    cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "Ctrl-C ended the program");
    cr_assert(write(master, "And again\n", 10) == 10);
    usleep(500 * 1000);
    cr_assert(write(master, "\x03", 1) == 1);
    usleep(300 * 1000);
    cr_assert(write(master, "\x04", 1) == 1); /* EOF at the prompt ends the session */
    e2e_wait_for(master, acc, sizeof acc, &len, "context ", 15);
    for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; i++)
        usleep(100 * 1000);
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the session did not end at EOF:\n%s", acc);
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    cr_assert(strstr(acc, "generated"), "no stats line:\n%s", acc);
    close(master);
}

/* `sluice tokenize` reads the tokenizer a .sluice file embeds and gives the same ids as the
 * tokenizer.json it came from. */
Test(run_e2e, tokenize_accepts_a_sluice_file, .init = e2e_setup)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\":\"Hello, 世界! 12345 <｜User｜>\"}' '{\"text\":\"  code: x=1\\\\r\\\\n\"}' > /tmp/sl-tok-in.jsonl && "
             "build/sluice tokenize %s --jsonl /tmp/sl-tok-in.jsonl > /tmp/sl-tok-a && "
             "build/sluice tokenize " E2E_TOKENIZER " --jsonl /tmp/sl-tok-in.jsonl > /tmp/sl-tok-b && "
             "cmp -s /tmp/sl-tok-a /tmp/sl-tok-b && test $(wc -l < /tmp/sl-tok-a) -eq 2",
             e2e_model);
    cr_assert_eq(system(cmd), 0, "tokenize through the .sluice file differs or failed");
}
