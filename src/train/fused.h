/* fused.h - fused expert updates: the optimiser steps each expert as soon as backward has made
 * its gradient, so that no gradient tensor of the experts exists (issue 12; SPEC 1.7: with
 * thousands of experts the gradients would cost as much memory as the weights). Internal.
 *
 * Clipping: each expert's gradient (its w1, b1, w2, b2 together) is clipped to the threshold by
 * its own norm, before its update; the rest of the model (the router included) is clipped by
 * the norm of all of it, as the trainer does without fused updates. The reported norm is the
 * norm of the whole gradient before clipping, as without. Without clipping (or when no norm
 * reaches the threshold), a step gives the same bits as the unfused step. */
#ifndef MOE_FUSED_H
#define MOE_FUSED_H

#include "base/ptable.h"
#include "moe.h"
#include "train/optset.h"

typedef struct fused fused;

/* Binds the layer `l` (made by layer_create_opts with LAYER_FUSED), whose tensors are in `pt`, to its group's
 * optimiser in `os` (before that optimiser's first step or state access). clip: 0 for none. */
moe_status fused_create(fused **out, moe_layer *l, const ptable *pt, optset *os, float clip);
void fused_free(fused *f);
/* Before each backward: the learning rate of the step it belongs to */
moe_status fused_begin(fused *f, float lr);
/* After it: the sum of the experts' squared gradient norms (this process's experts, before
 * clipping), summed in expert order */
double fused_norm2(const fused *f);

#endif
