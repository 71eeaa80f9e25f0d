/* cli.h - shared pieces of the moe command-line tool: option parsing, errors, timing.
 * The CLI is the only part of the project that prints and exits. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;  /* long option without "--" */
    const char **str;  /* where a value goes (NULL for a flag) */
    int *flag;         /* set to 1 when a flag is present */
} cli_opt;

/* Parses argv[1..] against opts. "--help"/"-h" prints `usage` and exits 0; an unknown option
 * or a missing value prints what was wrong and exits 2. */
void cli_parse(int argc, char **argv, const cli_opt *opts, int nopts, const char *usage);

/* Prints "moe: error: <msg>" to stderr and exits with status 1 (cli_parse: 2 for usage errors).
 * In a job of several processes (cli_set_comm) it prints "moe: error (rank R): <msg>" and ends
 * every rank of the job (moe_comm_abort): the library never does that itself. */
void cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The job's processes: errors from here on name this rank and end the job (a comm of one
 * process, or NULL, changes nothing). The comm must stay valid until it is set to NULL. */
void cli_set_comm(moe_comm *comm);
/* Dies (as cli_die) with the library's words for a failed status; returns on MOE_OK. */
void cli_check(moe_status s, const char *what);

/* Strict number parsing of an option's value; dies with a clear message otherwise. */
int cli_int(const char *opt, const char *v, int lo, int hi);
double cli_double(const char *opt, const char *v, double lo, double hi);
uint64_t cli_u64(const char *opt, const char *v);

double cli_now(void); /* monotonic seconds */
/* "1h02m", "3m05s", "12s" ("--" for an unknown time) into b [n]. */
void cli_fmt_time(char *b, size_t n, double s);
/* mkdir -p; 0 or -1 with errno. */
int cli_mkdir_p(const char *dir);
int cli_isatty_stdout(void);

int cmd_layer(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bleu(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_seq2seq(int argc, char **argv);
int cmd_translate(int argc, char **argv);

#endif
