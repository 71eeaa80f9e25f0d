/* comm.c - the few collectives expert parallelism needs (SPEC 1.7), over MPI when the build
 * has it (MOE_HAVE_MPI), and stubs that say MOE_ERR_UNSUPPORTED when it does not. The rest of
 * the library sees only comm.h, never mpi.h, so no struct changes layout with the build. */
#include "parallel/comm.h"
#include "base/internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOE_HAVE_MPI
#include <mpi.h>

struct moe_comm {
    MPI_Comm comm;
    int rank, size;
    int we_initialised;
};

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
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    *out = c;
    return moe_ok();
}

void moe_comm_free(moe_comm *c) {
    if (!c) return;
    MPI_Comm_free(&c->comm);
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

/* Sums reduce to rank 0 and are broadcast from there, in chunks that fit an int count: every
 * rank gets the same bits. (MPI_Allreduce may round differently on different ranks, and the
 * replicated parameters would drift apart.) */
static moe_status sum_everywhere(moe_comm *c, void *buf, size_t count, MPI_Datatype t, size_t size) {
    const size_t chunk = (size_t)INT_MAX / 8;
    for (size_t o = 0; o < count; o += chunk) {
        int m = (int)(count - o < chunk ? count - o : chunk);
        char *p = (char *)buf + o * size;
        int rc = MPI_Reduce(c->rank == 0 ? MPI_IN_PLACE : p, p, m, t, MPI_SUM, 0, c->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Reduce");
        rc = MPI_Bcast(p, m, t, 0, c->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Bcast");
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
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT, MPI_MIN, c->comm);
    return rc == MPI_SUCCESS ? MOE_OK : mpi_fail(rc, "MPI_Allreduce");
}

moe_status comm_allgather_int(moe_comm *c, const int *send, int count, int *recv) {
    int rc = MPI_Allgather(send, count, MPI_INT, recv, count, MPI_INT, c->comm);
    return rc == MPI_SUCCESS ? MOE_OK : mpi_fail(rc, "MPI_Allgather");
}

moe_status comm_alltoallv_f32(moe_comm *c, const float *send, const int *scounts, const int *sdispls,
                              float *recv, const int *rcounts, const int *rdispls) {
    int rc = MPI_Alltoallv(send, scounts, sdispls, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT, c->comm);
    return rc == MPI_SUCCESS ? MOE_OK : mpi_fail(rc, "MPI_Alltoallv");
}

moe_status comm_bcast(moe_comm *c, void *buf, size_t bytes, int root) {
    for (size_t o = 0; o < bytes; o += (size_t)INT_MAX / 2) {
        int m = (int)(bytes - o < (size_t)INT_MAX / 2 ? bytes - o : (size_t)INT_MAX / 2);
        int rc = MPI_Bcast((char *)buf + o, m, MPI_BYTE, root, c->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Bcast");
    }
    return MOE_OK;
}

moe_status comm_gatherv_f32(moe_comm *c, const float *send, int count, float *recv, const int *rcounts,
                            const int *rdispls, int root) {
    int rc = MPI_Gatherv(send, count, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT, root, c->comm);
    return rc == MPI_SUCCESS ? MOE_OK : mpi_fail(rc, "MPI_Gatherv");
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
