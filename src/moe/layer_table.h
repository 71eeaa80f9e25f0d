/* layer_table.h - a layer's tensors as one group of a parameter table. Internal. */
#ifndef MOE_LAYER_TABLE_H
#define MOE_LAYER_TABLE_H

#include "base/ptable.h"
#include "moe.h"
#include "moe/placement.h"

/* The layer's arena as group `name` (tensors "<name>.gate.w_gate", ...): the expert tensors
 * (experts.*) marked with the experts this process holds, every weight matrix (or stack of
 * them) marked for the factored optimiser; the experts' biases are vectors. */
moe_status layer_ptable(ptable *pt, const char *name, moe_layer *l);
/* The communicator a layer's experts are split over (borrowed), NULL for a layer held whole:
 * what the gradient norm of a table holding the layer sums over. l may be NULL. */
moe_comm *layer_comm(const moe_layer *l);

/* The floats of a layer's arena with nloc of its experts here, without making one (memory
 * plans); *factored (may be NULL) those of the factored optimiser's second moment, *router (may
 * be NULL) those of the router's weights (the gradients a layer of fused updates keeps). */
size_t layer_param_floats(const moe_layer_config *cfg, int nloc, size_t *factored, size_t *router);

/* Without making a layer: the i-th tensor (from 0, moe_layer_param's order) of a layer of these
 * settings held whole: its name ("gate.w_gate", ...), rank and shape. 0 past the last. */
int layer_config_tensor(const moe_layer_config *cfg, int i, const char **name, int *ndim, int64_t shape[3]);

/* A layer (comm NULL: all experts here; else split over comm's ranks) with flags:
 * LAYER_FUSED, for fused updates: its experts have no gradient tensors (their moe_param.grad and
 * the arena's grads are NULL); each backward hands every expert's gradients to the updater set
 * by layer_set_updater.
 * LAYER_BF16 (with LAYER_FUSED): the experts' W1 and W2 stored in bfloat16 (moe_param.data NULL,
 * data_bf16 set; outside the float arena), widened to float32 for the products; the updater
 * writes them back rounded stochastically. */
enum { LAYER_FUSED = 1, LAYER_BF16 = 2 };
moe_status layer_create_opts(moe_layer **out, const moe_layer_config *cfg, uint64_t seed, moe_comm *comm, int flags);
moe_status layer_set_updater(moe_layer *l, const expert_updater *up);
/* 1 for a layer of fused updates */
int layer_is_fused(const moe_layer *l);
/* 1 for a layer whose experts' weights are bfloat16 */
int layer_is_bf16(const moe_layer *l);

/* A model's flat MoE settings as a layer's, the layer's defaults for the rest (bias, groups). */
moe_layer_config layer_config_of(int d, int n, int k, int h, float w_importance, float w_load, float noise_eps);

#endif
