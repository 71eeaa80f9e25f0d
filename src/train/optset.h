/* optset.h - the optimiser, gradient clipping and the gradient norm over a parameter table
 * (base/ptable.h), written once for every model: one Adam per group of the table (its matrices
 * declared from the table for the factored variant), the norm over all groups with each expert
 * tensor split over ranks counted once. Internal. */
#ifndef MOE_OPTSET_H
#define MOE_OPTSET_H

#include "base/ptable.h"
#include "moe.h"

#include <stdint.h>

typedef struct {
    moe_adam *a[PT_MAX_GROUPS]; /* NULL for groups left out */
    int factored;
} optset;

/* Groups are chosen by the bits of `mask` (bit g: group g). */
#define OPT_ALL 0xffffffffu

moe_status optset_create(optset *o, const ptable *pt, const moe_adam_config *cfg, uint32_t mask);
void optset_free(optset *o);
/* One step of the groups in `mask` (that have an optimiser). */
moe_status optset_step(optset *o, const ptable *pt, float lr, uint32_t mask);
/* Floats of optimiser state (both moments), for reports. */
int64_t optset_floats(const optset *o);

/* The squared norm of the gradients of the groups in `mask`, over all ranks of comm (NULL: one
 * process): a sharded group's expert tensors are each on one rank and summed; the rest are the
 * same on every rank and counted once; tensors without gradients (fused updates) are left out.
 * Collective when comm has several ranks. */
moe_status ptable_grad_norm2(const ptable *pt, moe_comm *comm, uint32_t mask, double *out);
/* grads of the groups in `mask` *= a */
void ptable_scale_grads(const ptable *pt, uint32_t mask, float a);

#endif
