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

#endif
