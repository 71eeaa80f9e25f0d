/* run.c - the trainer core (run.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/run.h"
#include "base/internal.h"
#include "parallel/comm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

double run_now(void) { return moe_clock_s(); }

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

void run_watch_begin(run_watch *w, int classes) {
    w->uniform = log(classes > 1 ? (double)classes : 2.0);
    w->best = INFINITY;
    w->last_save = -1;
}

moe_status run_watch_fail(const run_watch *w, const char *what, double loss, int64_t step, const char *path) {
    char kept[512];
    if (path && w->last_save >= 0)
        snprintf(kept, sizeof kept, "the checkpoint of step %lld, %s, is the last good one: resume from it with a lower "
                 "learning rate", (long long)w->last_save, path);
    else if (path)
        snprintf(kept, sizeof kept, "%s was not overwritten: resume from it with a lower learning rate", path);
    else
        snprintf(kept, sizeof kept, "nothing was saved");
    return moe_fail(MOE_ERR_DIVERGED, "training diverged at step %lld: %s %g %s; stopped, %s", (long long)step, what,
                    loss, isfinite(loss) ? "is far above its level" : "", kept);
}

moe_status run_watch_step(const run_watch *w, double loss, int64_t step, const char *path) {
    const double limit = 3.0 * fmax(w->uniform, isfinite(w->best) ? w->best : 0.0);
    if (!isfinite(loss) || loss > limit) {
        char what[96];
        snprintf(what, sizeof what, "the step's loss (limit %.3g = 3 max(ln V, best interval mean))", limit);
        return run_watch_fail(w, what, loss, step, path);
    }
    return MOE_OK;
}

moe_status run_watch_mean(run_watch *w, double mean, int64_t step, const char *path, int record) {
    const double limit = isfinite(w->best) ? fmax(w->uniform + 1.0, 2.0 * w->best) : w->uniform + 1.0;
    if (!isfinite(mean) || mean > limit) {
        char what[112];
        snprintf(what, sizeof what, "the mean loss since the last report (limit %.3g = max(ln V + 1, 2 best))", limit);
        return run_watch_fail(w, what, mean, step, path);
    }
    if (record && mean < w->best) w->best = mean;
    return MOE_OK;
}
