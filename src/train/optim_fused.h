/* optim_fused.h - an optimiser (optim.c) whose expert tensors are stepped one expert at a time,
 * as backward makes each expert's gradient (fused updates, train/fused.c), instead of all at once
 * from a gradient arena. Internal.
 *
 * A span [begin, end) of the arena is left out of moe_adam_step (its gradients need not exist);
 * inside it, tensors of `count` units of `unit` floats (an expert's matrix, or its bias) are
 * stepped by adam_step_unit, each at most once per step, as step number (steps so far + 1) with
 * that step's learning rate, before the moe_adam_step that ends the step. A unit not stepped in
 * a step has a zero gradient: with beta1 = 0 and no weight decay its parameters do not move and
 * only its second moment decays, which is applied when the unit is next stepped or its state is
 * read ("lazy", the same bits as stepping it); otherwise moe_adam_step steps it at once with a
 * zero gradient ("eager"). Declarations come before the first step or state access. */
#ifndef MOE_OPTIM_FUSED_H
#define MOE_OPTIM_FUSED_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

moe_status adam_set_fused_span(moe_adam *a, size_t begin, size_t end);
/* A tensor at [offset, offset + count * unit) inside the span, stepped a unit at a time */
moe_status adam_add_units(moe_adam *a, size_t offset, int64_t count, size_t unit);
/* The same for a tensor stored in bfloat16 at data [count * unit] (its coordinates only reserve
 * the optimiser's state); each step rounds it stochastically with bits drawn from key, the step
 * and the element's place in the whole tensor, whose unit 0 is this tensor's unit first_unit. */
moe_status adam_add_units_bf16(moe_adam *a, size_t offset, int64_t count, size_t unit, uint16_t *data, uint64_t key,
                               int64_t first_unit);
/* Steps the unit that starts at `offset` (a declared unit's first float) with its gradient g
 * [unit] (params: the arena). Thread-safe for distinct units. MOE_ERR_NONFINITE (nothing changed)
 * for a NaN or Inf in g, MOE_ERR_STATE for a unit stepped twice in one step. */
moe_status adam_step_unit(moe_adam *a, size_t offset, float *params, const float *g, float lr);
/* The same for a gradient the caller has checked (every element finite): one pass less */
moe_status adam_step_unit_finite(moe_adam *a, size_t offset, float *params, const float *g, float lr);
/* Makes the optimiser's layout (once; not thread-safe): before the first adam_step_unit */
moe_status adam_prepare(moe_adam *a);
/* 0: step units that were not touched at once (eager) even where lazy is exact; for tests */
void adam_set_lazy(moe_adam *a, int lazy);
/* 1 when untouched units are left for later (beta1 = 0, no weight decay, lazy not turned off) */
int adam_is_lazy(const moe_adam *a);

#endif
