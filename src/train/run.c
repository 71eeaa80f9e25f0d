/* run.c - the trainer core (run.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/run.h"
#include "parallel/comm.h"

#include <math.h>
#include <string.h>
#include <time.h>

double run_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void run_begin(run_core *r, moe_comm *comm, int64_t step, int64_t max_steps, double minutes, double elapsed0) {
    memset(r, 0, sizeof *r);
    r->comm = comm && moe_comm_size(comm) > 1 ? comm : NULL;
    r->rank = r->comm ? moe_comm_rank(comm) : 0;
    r->ranks = r->comm ? moe_comm_size(comm) : 1;
    r->step = r->first_step = step;
    r->max_steps = max_steps;
    r->minutes = minutes;
    r->elapsed0 = elapsed0;
    r->t_start = r->iv_t0 = run_now();
}

double run_elapsed(const run_core *r) { return r->elapsed0 + (run_now() - r->t_start); }

int run_same(const run_core *r, int v) {
    if (r->comm) comm_bcast(r->comm, &v, sizeof v, 0);
    return v;
}

int run_bound_reached(const run_core *r) {
    const int v = (r->max_steps > 0 && r->step >= r->max_steps) ||
                  (r->minutes > 0.0 && run_now() - r->t_start >= r->minutes * 60.0);
    return run_same(r, v);
}

double run_eta(const run_core *r) {
    const double t = run_now() - r->t_start;
    const int64_t done = r->step - r->first_step;
    const double per_step = done > 0 ? t / (double)done : 0.0;
    const double by_steps = r->max_steps > 0 ? (double)(r->max_steps - r->step) * per_step : INFINITY;
    const double by_time = r->minutes > 0 ? r->minutes * 60.0 - t : INFINITY;
    const double eta = fmin(by_steps, by_time);
    return isfinite(eta) ? fmax(0.0, eta) : 0.0;
}

double run_interval(run_core *r) {
    const double t = run_now(), dt = t - r->iv_t0;
    r->iv_t0 = t;
    return dt;
}

void run_restart_interval(run_core *r) { r->iv_t0 = run_now(); }

int run_due(const run_core *r, int every) { return every > 0 && r->step % every == 0; }

int run_verdict(run_core *r, int v) {
    if (run_same(r, v)) r->stop = 1;
    return r->stop;
}
