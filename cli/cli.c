/* cli.c - option parsing and error reporting shared by the subcommands. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static moe_comm *g_comm; /* set in a job of several processes: errors say which rank and end the job */

void cli_set_comm(moe_comm *comm) { g_comm = comm && moe_comm_size(comm) > 1 ? comm : NULL; }

static void error_prefix(void) {
    if (g_comm) fprintf(stderr, "moe: error (rank %d): ", moe_comm_rank(g_comm));
    else fputs("moe: error: ", stderr);
}

/* The end of every error path: one process exits; one rank of several ends the whole job (the
 * library returns its failure on this rank only, and the other ranks may be waiting for this one
 * in a collective). */
static void __attribute__((noreturn)) error_exit(void) {
    fflush(stderr);
    if (g_comm) moe_comm_abort(g_comm, 1);
    exit(1);
}

void cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_prefix();
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    error_exit();
}

void cli_check(moe_status s, const char *what) {
    if (s == MOE_OK) return;
    const char *detail = moe_last_error();
    error_prefix();
    fprintf(stderr, "%s: %s%s%s\n", what, moe_status_str(s), detail[0] ? ": " : "", detail);
    error_exit();
}

void cli_parse(int argc, char **argv, const cli_opt *opts, int nopts, const char *usage) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "moe: error: unexpected argument '%s'\n\n%s", a, usage);
            exit(2);
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int found = 0;
        for (int j = 0; j < nopts && !found; j++) {
            if (strlen(opts[j].name) != len || strncmp(opts[j].name, name, len) != 0) continue;
            found = 1;
            if (opts[j].flag) {
                if (eq) {
                    fprintf(stderr, "moe: error: --%s takes no value\n", opts[j].name);
                    exit(2);
                }
                *opts[j].flag = 1;
            } else if (eq) {
                *opts[j].str = eq + 1;
            } else if (i + 1 < argc) {
                *opts[j].str = argv[++i];
            } else {
                fprintf(stderr, "moe: error: --%s needs a value (see --help)\n", opts[j].name);
                exit(2);
            }
        }
        if (!found) {
            fprintf(stderr, "moe: error: unknown option '%s'\n\n%s", a, usage);
            exit(2);
        }
    }
}

int cli_try_int(const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) return 0;
    *out = (int)x;
    return 1;
}

int cli_try_double(const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi)) return 0;
    *out = x;
    return 1;
}

int cli_int(const char *opt, const char *v, int lo, int hi) {
    int x;
    if (!cli_try_int(v, lo, hi, &x)) cli_die("--%s expects an integer in [%d, %d], got '%s'", opt, lo, hi, v);
    return x;
}

double cli_double(const char *opt, const char *v, double lo, double hi) {
    double x;
    if (!cli_try_double(v, lo, hi, &x)) cli_die("--%s expects a number in [%g, %g], got '%s'", opt, lo, hi, v);
    return x;
}

uint64_t cli_u64(const char *opt, const char *v) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end || errno || v[0] == '-') cli_die("--%s expects a non-negative integer, got '%s'", opt, v);
    return (uint64_t)x;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_isatty_stdout(void) { return isatty(STDOUT_FILENO); }

void cli_fmt_time(char *b, size_t n, double s) {
    if (!(s < 1e8)) snprintf(b, n, "--");
    else if (s >= 3600) snprintf(b, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(b, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(b, n, "%.0fs", s);
}

int cli_mkdir_p(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return (mkdir(tmp, 0777) != 0 && errno != EEXIST) ? -1 : 0;
}

moe_comm *cli_mpi_start(int *argc, char ***argv, const char *timeout) {
    const char *np_env = getenv("OMPI_COMM_WORLD_SIZE");
    if (!np_env || atoi(np_env) <= 1) return NULL;
    if (!moe_have_mpi())
        cli_die("started by mpirun with %s processes, but this moe was built without MPI (apt-get install libopenmpi-dev, rebuild)",
                np_env);
    moe_comm *comm = NULL;
    cli_check(moe_comm_world(&comm, argc, argv), "starting MPI");
    cli_set_comm(comm);
    if (timeout) cli_check(moe_comm_set_timeout(comm, cli_double("comm-timeout", timeout, 0.0, 1e9)), "--comm-timeout");
    if (moe_comm_rank(comm) != 0 && !freopen("/dev/null", "w", stdout)) cli_die("cannot silence stdout");
    return comm;
}

static volatile sig_atomic_t g_stop = 0;
static void on_stop(int sig) {
    (void)sig;
    g_stop = 1;
}

void cli_catch_stop(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_stop_asked(void) { return g_stop; }
