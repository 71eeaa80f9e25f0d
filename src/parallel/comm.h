/* comm.h - internal collectives over a moe_comm (comm.c); every call is collective: all ranks
 * of the communicator make it, in the same order. */
#ifndef MOE_COMM_H
#define MOE_COMM_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

moe_status comm_allreduce_sum_f64(moe_comm *c, double *buf, int count);
/* *v = the smallest of the ranks' values */
moe_status comm_allreduce_min_int(moe_comm *c, int *v);
moe_status comm_allgather_int(moe_comm *c, const int *send, int count, int *recv /* [P*count] */);
/* counts and displacements in floats, one per rank */
moe_status comm_alltoallv_f32(moe_comm *c, const float *send, const int *scounts, const int *sdispls,
                              float *recv, const int *rcounts, const int *rdispls);
moe_status comm_bcast(moe_comm *c, void *buf, size_t bytes, int root);
moe_status comm_gatherv_f32(moe_comm *c, const float *send, int count, float *recv, const int *rcounts,
                            const int *rdispls, int root);
/* the same for 16-bit values (bfloat16 tensors) */
moe_status comm_gatherv_u16(moe_comm *c, const uint16_t *send, int count, uint16_t *recv, const int *rcounts,
                            const int *rdispls, int root);

/* Before a collective that a rank may be unready for (a buffer it could not get): `mine` is this
 * rank's status, and every rank learns whether any failed, so all return a failing status
 * together and none is left waiting (the failing rank keeps its own message, the others name
 * it). c NULL or one rank: `mine`. */
moe_status comm_ready(moe_comm *c, moe_status mine);

/* How a count (a layer's experts, a batch's streams) is split over P ranks: rank r holds
 * [comm_first(total, P, r), comm_first(total, P, r + 1)). The one rule every split uses, so that
 * a checkpoint's gather finds each expert where the layer put it. */
static inline int comm_first(int total, int P, int r) { return (int)((int64_t)total * r / P); }

#endif
