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
/* Ctrl-C and SIGTERM from here on ask a training command to stop (after a checkpoint) instead of
 * killing it; cli_stop_asked() says whether one came. */
void cli_catch_stop(void);
int cli_stop_asked(void);
/* Under mpirun (more than one process): starts MPI, makes errors end every rank (cli_set_comm)
 * and silences stdout on every rank but 0; NULL in a plain process. The caller ends with
 * cli_set_comm(NULL) and moe_comm_free. */
moe_comm *cli_mpi_start(int *argc, char ***argv, const char *timeout);
/* The help line of --comm-timeout (cli_mpi_start's `timeout`: seconds, NULL: the default). */
#define CLI_COMM_TIMEOUT_HELP \
    "        --comm-timeout 300 (under mpirun: seconds a rank waits for the others before the job ends\n" \
    "        naming the ranks that do not answer)\n"
/* Dies (as cli_die) with the library's words for a failed status; returns on MOE_OK. */
void cli_check(moe_status s, const char *what);

/* Strict number parsing of an option's value; dies with a clear message otherwise. */
int cli_int(const char *opt, const char *v, int lo, int hi);
double cli_double(const char *opt, const char *v, double lo, double hi);
uint64_t cli_u64(const char *opt, const char *v);
/* The same without dying: 1 and *out set when v is a number in [lo, hi], else 0. */
int cli_try_int(const char *v, int lo, int hi, int *out);
int cli_try_double(const char *v, double lo, double hi, double *out);

/* ---- The MoE layer's settings (moe_opts.c) ----
 * One table gives each setting one option name, one range, one error message and one help line,
 * for every command that builds an MoE layer. A command says which settings it has, gives its
 * defaults, and parses its own options and those together:
 *
 *     cli_moe m;
 *     cli_moe_init(&m, CLI_MOE_FLAT | CLI_MOE_GROUPS, cli_moe_of_lm(&mc));
 *     cli_parse_moe(argc, argv, opts, nopts, &m, USAGE);  // --help: USAGE + the MoE lines
 *     if (mc.ffn == MOE_FFN_MOE) cli_moe_check(&m);       // k <= experts, groups divide, ...
 *     cli_moe_to_lm(&m, &mc);
 */
enum {
    CLI_MOE_D = 1u << 0,       /* --d */
    CLI_MOE_H = 1u << 1,       /* --h */
    CLI_MOE_EXPERTS = 1u << 2, /* --experts */
    CLI_MOE_K = 1u << 3,       /* --k */
    CLI_MOE_GROUPS = 1u << 4,  /* --groups, --k-groups (hierarchical, SPEC 1.6) */
    CLI_MOE_BALANCE = 1u << 5, /* --w-importance, --w-load */
    CLI_MOE_NOISE = 1u << 6,   /* --noise-eps */
    CLI_MOE_BIAS = 1u << 7,    /* --bias */
};
#define CLI_MOE_FLAT (CLI_MOE_D | CLI_MOE_H | CLI_MOE_EXPERTS | CLI_MOE_K | CLI_MOE_BALANCE | CLI_MOE_NOISE)
#define CLI_MOE_ALL (CLI_MOE_FLAT | CLI_MOE_GROUPS | CLI_MOE_BIAS)

typedef struct { /* the options' values as given (NULL / 0: absent) */
    const char *d, *h, *experts, *k, *groups, *k_groups, *w_importance, *w_load, *noise_eps;
    int bias;
} cli_moe_args;

typedef struct {
    unsigned has;         /* CLI_MOE_* bits: the settings this command takes */
    moe_layer_config cfg; /* the command's defaults; after cli_parse_moe, the settings */
    int given;            /* after cli_parse_moe: some MoE setting was on the command line */
    cli_moe_args arg;     /* what the command line said (a command may point an alias here) */
} cli_moe;

void cli_moe_init(cli_moe *m, unsigned has, moe_layer_config defaults);
/* cli_parse over the command's opts and its MoE settings; `usage` is followed by the MoE help
 * lines. Each given setting is checked against its range (dying with the table's message) and
 * stored in m->cfg; --groups without --k-groups takes 2 groups per token (1 with --groups 1). */
void cli_parse_moe(int argc, char **argv, const cli_opt *opts, int nopts, cli_moe *m, const char *usage);
/* The settings' relations, for a command whose model has the MoE layer: k <= experts, --k-groups
 * only with --groups, groups divide the experts, k-groups <= groups, k <= a group's experts. */
void cli_moe_check(const cli_moe *m);
/* The MoE settings of the models' configs, both ways. */
moe_layer_config cli_moe_of_lm(const moe_lm_config *c);
void cli_moe_to_lm(const cli_moe *m, moe_lm_config *c);
moe_layer_config cli_moe_of_s2s(const moe_s2s_config *c);
void cli_moe_to_s2s(const cli_moe *m, moe_s2s_config *c);
/* --ffn moe|dense|none of the language model (moe train, moe bench lm). */
moe_ffn_kind cli_ffn(const char *v);

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
