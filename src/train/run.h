/* run.h - the trainer core the language model's and the translation model's trainers share: the
 * run's clock and bounds (--steps, --minutes), the cadence of reports, validation and
 * checkpoints, the report interval's timer, a stop asked for by the callback (Ctrl-C) and the
 * same decisions on every rank. Each trainer supplies its step, its evaluation and its own
 * progress fields. Internal. */
#ifndef MOE_RUN_H
#define MOE_RUN_H

#include "moe.h"

#include <stdint.h>

typedef struct {
    moe_comm *comm;     /* NULL: one process */
    int rank, ranks;
    int64_t step;       /* steps taken, earlier runs included */
    int64_t first_step; /* the step this run started at */
    int64_t max_steps;  /* 0: no bound */
    double minutes;     /* 0: no bound */
    double elapsed0;    /* seconds of the runs before this one (resume) */
    double t_start;     /* this run's start (monotonic seconds) */
    double iv_t0;       /* the report interval's start */
    int stop;           /* the callback asked to stop: the same on every rank */
} run_core;

double run_now(void);
/* A run at `step` (from a checkpoint, or 0) on the ranks of comm (NULL or one rank: alone). */
void run_begin(run_core *r, moe_comm *comm, int64_t step, int64_t max_steps, double minutes, double elapsed0);
/* Seconds of the whole training, earlier runs included. */
double run_elapsed(const run_core *r);
/* Whether the step or time bound is reached; rank 0's clock decides for every rank. */
int run_bound_reached(const run_core *r);
/* Seconds left to the nearer bound, estimated from this run's pace (0 when reached). */
double run_eta(const run_core *r);
/* Seconds since the report interval began; starts the next one. */
double run_interval(run_core *r);
/* Restarts the interval (after work that is not training: validation, a checkpoint). */
void run_restart_interval(run_core *r);
/* 1 when `every` > 0 and the step is a multiple of it */
int run_due(const run_core *r, int every);
/* Rank 0's value of v on every rank (a decision made from a clock or a callback). */
int run_same(const run_core *r, int v);
/* Records a callback's verdict (non-zero: stop), rank 0's for every rank; returns r->stop. */
int run_verdict(run_core *r, int v);

/* Divergence as an event. With L0 = ln V, the cross-entropy of guessing uniformly over the V
 * classes (about where an untrained model starts), and `best` the lowest report-interval mean
 * of this run so far, training has diverged when
 *   - one step's loss is not finite or exceeds 3 max(L0, best): confident and wrong, far
 *     beyond anything a model that is learning produces, or
 *   - the mean since the last report exceeds L0 + 1 (worse than guessing) and, once there is a
 *     best, twice the best; checked at each report and before each checkpoint.
 * Both trainers then stop with MOE_ERR_DIVERGED without writing: the last checkpoint is the last
 * good one. The losses must be the same on every rank (reduced). */
typedef struct {
    double uniform; /* ln V */
    double best;    /* lowest interval mean (INFINITY before the first) */
    int64_t last_save; /* the step of the last checkpoint written (-1: none in this run) */
} run_watch;

void run_watch_begin(run_watch *w, int classes);
/* MOE_ERR_DIVERGED (with the message) when a step's loss shows divergence; `what` names it. */
moe_status run_watch_step(const run_watch *w, double loss, int64_t step, const char *path);
/* MOE_ERR_DIVERGED: "training diverged at step <step>: <what> <value> ...", naming the checkpoint
 * that is kept (path; the step of its last save). */
moe_status run_watch_fail(const run_watch *w, const char *what, double value, int64_t step, const char *path);
/* The same for the mean since the last report; with `record` (a report) it may become the best. */
moe_status run_watch_mean(run_watch *w, double mean, int64_t step, const char *path, int record);

#endif
