/* comm.c - the few collectives expert parallelism needs (SPEC 1.7), over MPI when the build
 * has it (MOE_HAVE_MPI), and stubs that say MOE_ERR_UNSUPPORTED when it does not. The rest of
 * the library sees only comm.h, never mpi.h, so no struct changes layout with the build.
 *
 * No collective waits forever: each is started non-blocking and tested until it completes; past
 * the handle's timeout the waiting rank pings every other rank (on a communicator of their own)
 * and names those that do not answer. A rank answers pings whenever it waits in a collective. */
#define _POSIX_C_SOURCE 200809L
#include "parallel/comm.h"
#include "base/internal.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef MOE_HAVE_MPI
#include <mpi.h>

struct moe_comm {
    MPI_Comm comm; /* the collectives */
    MPI_Comm ping; /* the liveness check's messages, apart from the collectives */
    int rank, size;
    int we_initialised;
    double timeout; /* seconds a collective may wait (<= 0: forever) */
};

enum { TAG_PING = 1, TAG_PONG = 2 };
#define GRACE_S 5.0 /* at most this long for the answers to a ping */


int moe_have_mpi(void) { return 1; }

static moe_status mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return moe_fail(MOE_ERR_COMM, "%s failed: %.*s", what, len, msg);
}

moe_status moe_comm_world(moe_comm **out, int *argc, char ***argv) {
    if (!out) return moe_fail(MOE_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    moe_comm *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            free(c);
            return mpi_fail(rc, "MPI_Init_thread");
        }
        c->we_initialised = 1;
    }
    /* errors come back as codes, so the library can report them (the default aborts) */
    MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    MPI_Comm_dup(MPI_COMM_WORLD, &c->ping);
    MPI_Comm_set_errhandler(c->ping, MPI_ERRORS_RETURN);
    c->timeout = 300.0;
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    *out = c;
    return moe_ok();
}

void moe_comm_free(moe_comm *c) {
    if (!c) return;
    MPI_Comm_free(&c->comm);
    MPI_Comm_free(&c->ping);
    if (c->we_initialised) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
    free(c);
}

int moe_comm_rank(const moe_comm *c) { return c ? c->rank : 0; }
int moe_comm_size(const moe_comm *c) { return c ? c->size : 1; }

/* for applications: the library itself never ends the job (moe.h) */
void moe_comm_abort(moe_comm *c, int code) { MPI_Abort(c ? c->comm : MPI_COMM_WORLD, code); }

moe_status moe_comm_set_timeout(moe_comm *c, double seconds) {
    if (!c || seconds != seconds) return moe_fail(MOE_ERR_INVALID_ARG, "comm is NULL or the timeout is NaN");
    c->timeout = seconds;
    return moe_ok();
}

/* Answers the pings that have arrived (the ping's number goes back as the answer). */
static void answer_pings(moe_comm *c) {
    for (;;) {
        int flag = 0, v = 0;
        MPI_Status s;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, c->ping, &flag, &s) != MPI_SUCCESS || !flag) return;
        MPI_Recv(&v, 1, MPI_INT, s.MPI_SOURCE, TAG_PING, c->ping, MPI_STATUS_IGNORE);
        MPI_Request q;
        if (MPI_Isend(&v, 1, MPI_INT, s.MPI_SOURCE, TAG_PONG, c->ping, &q) == MPI_SUCCESS) MPI_Wait(&q, MPI_STATUS_IGNORE);
    }
}

/* The collective `what` has waited past the timeout: pings every other rank, collects answers
 * for a few seconds, and fails naming the ranks that stayed silent. */
static moe_status name_silent(moe_comm *c, const char *what, double waited) {
    const int P = c->size;
    char *heard = calloc((size_t)P, 1);
    MPI_Request *q = calloc((size_t)P, sizeof *q);
    int *out = calloc((size_t)P, sizeof *out);
    if (!heard || !q || !out) {
        free(heard), free(q), free(out);
        return moe_fail(MOE_ERR_COMM, "%s has waited %.0f s for the other ranks", what, waited);
    }
    heard[c->rank] = 1;
    for (int r = 0; r < P; r++) {
        q[r] = MPI_REQUEST_NULL;
        out[r] = c->rank;
        if (r != c->rank) MPI_Isend(&out[r], 1, MPI_INT, r, TAG_PING, c->ping, &q[r]);
    }
    int left = P - 1;
    const double t0 = moe_clock_s(), grace = c->timeout < GRACE_S ? c->timeout : GRACE_S;
    while (left > 0 && moe_clock_s() - t0 < grace) {
        answer_pings(c);
        int flag = 0, v = 0;
        MPI_Status s;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_PONG, c->ping, &flag, &s) == MPI_SUCCESS && flag) {
            MPI_Recv(&v, 1, MPI_INT, s.MPI_SOURCE, TAG_PONG, c->ping, MPI_STATUS_IGNORE);
            if (!heard[s.MPI_SOURCE]) heard[s.MPI_SOURCE] = 1, left--;
        } else {
            sched_yield();
        }
    }
    char list[256] = "";
    size_t n = 0;
    for (int r = 0; r < P && n + 16 < sizeof list; r++)
        if (!heard[r]) n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", r);
    /* the pings to silent ranks stay pending; the job is ending (their buffers are left) */
    for (int r = 0; r < P; r++)
        if (heard[r] && q[r] != MPI_REQUEST_NULL) MPI_Wait(&q[r], MPI_STATUS_IGNORE);
    free(heard);
    free(q);
    moe_status st = left > 0 ? moe_fail(MOE_ERR_COMM, "%s waited %.0f s (the timeout): rank%s %s did not answer (stopped, "
                                        "hung or dead), so this job cannot go on", what, waited, left > 1 ? "s" : "", list)
                             : moe_fail(MOE_ERR_COMM, "%s waited %.0f s (the timeout), though every rank answers: a rank "
                                        "is stuck outside the collectives, or the ranks run different collectives",
                                        what, waited);
    if (left == 0) free(out); /* else the pending sends still own it */
    return st;
}

/* Waits for a started collective, answering pings, until it completes or the timeout passes. */
static moe_status wait_for(moe_comm *c, MPI_Request *q, const char *what) {
    const double t0 = moe_clock_s();
    for (long spin = 0;; spin++) {
        int done = 0;
        const int rc = MPI_Test(q, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what);
        if (done) return MOE_OK;
        if ((spin & 63) == 63) { /* now and then: the clock and the pings cost more than a test */
            answer_pings(c);
            const double waited = moe_clock_s() - t0;
            if (c->timeout > 0 && waited > c->timeout) return name_silent(c, what, waited);
            sched_yield();
        }
    }
}

/* Starts a collective (rc and q from its MPI_I... call) and waits for it. */
static moe_status run_coll(moe_comm *c, int rc, MPI_Request *q, const char *what) {
    return rc == MPI_SUCCESS ? wait_for(c, q, what) : mpi_fail(rc, what);
}

/* Sums reduce to rank 0 and are broadcast from there, in chunks that fit an int count: every
 * rank gets the same bits. (MPI_Allreduce may round differently on different ranks, and the
 * replicated parameters would drift apart.) */
static moe_status sum_everywhere(moe_comm *c, void *buf, size_t count, MPI_Datatype t, size_t size) {
    const size_t chunk = (size_t)INT_MAX / 8;
    for (size_t o = 0; o < count; o += chunk) {
        int m = (int)(count - o < chunk ? count - o : chunk);
        char *p = (char *)buf + o * size;
        MPI_Request q;
        moe_status st = run_coll(c, MPI_Ireduce(c->rank == 0 ? MPI_IN_PLACE : p, p, m, t, MPI_SUM, 0, c->comm, &q), &q,
                                 "MPI_Reduce");
        if (!st) st = run_coll(c, MPI_Ibcast(p, m, t, 0, c->comm, &q), &q, "MPI_Bcast");
        if (st) return st;
    }
    return MOE_OK;
}

moe_status moe_comm_allreduce_sum(moe_comm *c, float *buf, size_t count) {
    if (!c || (!buf && count)) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument to allreduce");
    moe_status st = sum_everywhere(c, buf, count, MPI_FLOAT, sizeof(float));
    if (!st) moe_clear_error();
    return st;
}

moe_status comm_allreduce_sum_f64(moe_comm *c, double *buf, int count) {
    return sum_everywhere(c, buf, (size_t)count, MPI_DOUBLE, sizeof(double));
}

moe_status comm_allreduce_min_int(moe_comm *c, int *v) {
    MPI_Request q;
    return run_coll(c, MPI_Iallreduce(MPI_IN_PLACE, v, 1, MPI_INT, MPI_MIN, c->comm, &q), &q, "MPI_Allreduce");
}

moe_status comm_allgather_int(moe_comm *c, const int *send, int count, int *recv) {
    MPI_Request q;
    return run_coll(c, MPI_Iallgather(send, count, MPI_INT, recv, count, MPI_INT, c->comm, &q), &q, "MPI_Allgather");
}

moe_status comm_alltoallv_f32(moe_comm *c, const float *send, const int *scounts, const int *sdispls,
                              float *recv, const int *rcounts, const int *rdispls) {
    MPI_Request q;
    return run_coll(c, MPI_Ialltoallv(send, scounts, sdispls, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT, c->comm, &q),
                    &q, "MPI_Alltoallv");
}

moe_status comm_bcast(moe_comm *c, void *buf, size_t bytes, int root) {
    for (size_t o = 0; o < bytes; o += (size_t)INT_MAX / 2) {
        int m = (int)(bytes - o < (size_t)INT_MAX / 2 ? bytes - o : (size_t)INT_MAX / 2);
        MPI_Request q;
        moe_status st = run_coll(c, MPI_Ibcast((char *)buf + o, m, MPI_BYTE, root, c->comm, &q), &q, "MPI_Bcast");
        if (st) return st;
    }
    return MOE_OK;
}

moe_status comm_gatherv_f32(moe_comm *c, const float *send, int count, float *recv, const int *rcounts,
                            const int *rdispls, int root) {
    MPI_Request q;
    return run_coll(c, MPI_Igatherv(send, count, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT, root, c->comm, &q), &q,
                    "MPI_Gatherv");
}

moe_status comm_gatherv_u16(moe_comm *c, const uint16_t *send, int count, uint16_t *recv, const int *rcounts,
                            const int *rdispls, int root) {
    MPI_Request q;
    return run_coll(c, MPI_Igatherv(send, count, MPI_UINT16_T, recv, rcounts, rdispls, MPI_UINT16_T, root, c->comm, &q),
                    &q, "MPI_Gatherv");
}

#else /* no MPI in this build */

struct moe_comm {
    int unused;
};

int moe_have_mpi(void) { return 0; }

static moe_status no_mpi(void) {
    return moe_fail(MOE_ERR_UNSUPPORTED, "this build of moe has no MPI: install libopenmpi-dev and rebuild");
}

moe_status moe_comm_world(moe_comm **out, int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (out) *out = NULL;
    return no_mpi();
}
void moe_comm_free(moe_comm *c) { free(c); }
int moe_comm_rank(const moe_comm *c) { return 0; }
int moe_comm_size(const moe_comm *c) { return 1; }
void moe_comm_abort(moe_comm *c, int code) { (void)c, (void)code; }
moe_status moe_comm_set_timeout(moe_comm *c, double seconds) { return no_mpi(); }
moe_status moe_comm_allreduce_sum(moe_comm *c, float *buf, size_t count) { return no_mpi(); }
moe_status comm_allreduce_sum_f64(moe_comm *c, double *buf, int count) { return no_mpi(); }
moe_status comm_allreduce_min_int(moe_comm *c, int *v) { return no_mpi(); }
moe_status comm_allgather_int(moe_comm *c, const int *send, int count, int *recv) { return no_mpi(); }
moe_status comm_alltoallv_f32(moe_comm *c, const float *send, const int *scounts, const int *sdispls,
                              float *recv, const int *rcounts, const int *rdispls) {
    return no_mpi();
}
moe_status comm_bcast(moe_comm *c, void *buf, size_t bytes, int root) { return no_mpi(); }
moe_status comm_gatherv_f32(moe_comm *c, const float *send, int count, float *recv, const int *rcounts,
                            const int *rdispls, int root) {
    return no_mpi();
}
moe_status comm_gatherv_u16(moe_comm *c, const uint16_t *send, int count, uint16_t *recv, const int *rcounts,
                            const int *rdispls, int root) {
    return no_mpi();
}

#endif

moe_status moe_comm_check_same(moe_comm *c, int64_t value, const char *what) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "comm is NULL");
    const int P = moe_comm_size(c), me = moe_comm_rank(c);
    if (P == 1) {
        return moe_ok();
    }
    /* Nothing allocated, so every rank reaches every collective and gets the same verdict: rank
     * 0's value to all, the lowest rank with another value, and that rank's value to all. */
    int64_t v0 = value, vr = value;
    moe_status st = comm_bcast(c, &v0, sizeof v0, 0);
    int r = value == v0 ? P : me;
    if (!st) st = comm_allreduce_min_int(c, &r);
    if (!st && r < P && !(st = comm_bcast(c, &vr, sizeof vr, r)))
        st = moe_fail(MOE_ERR_COMM, "the ranks disagree on %s: rank 0 has %lld, rank %d has %lld", what, (long long)v0, r,
                      (long long)vr);
    if (!st) moe_clear_error();
    return st;
}

moe_status comm_ready(moe_comm *c, moe_status mine) {
    if (!c || moe_comm_size(c) == 1) return mine;
    double v[3] = {mine ? 1.0 : 0.0, mine ? (double)moe_comm_rank(c) : 0.0, mine ? (double)mine : 0.0};
    moe_status st = comm_allreduce_sum_f64(c, v, 3); /* no allocation: it cannot fail for memory */
    if (mine) return mine;
    if (st) return st;
    if (v[0] == 0.0) return MOE_OK;
    if (v[0] == 1.0)
        return moe_fail((moe_status)(int)v[2], "rank %d could not go on (%s; its message says more), so no rank does",
                        (int)v[1], moe_status_str((moe_status)(int)v[2]));
    return moe_fail(MOE_ERR_COMM, "%d ranks could not go on (their messages say why), so no rank does", (int)v[0]);
}
