/* ptable.h - the parameter table: one description of every tensor a model trains (the MoE
 * layer, the language model, the translation model, the classifier), so that the optimiser,
 * gradient clipping, checkpoints (with the rank-0 gather of sharded experts) and `moe info` are
 * each written once, over the table.
 *
 * Tensors live in groups: a group is a contiguous range of one parameter arena (and the parallel
 * gradient arena) that one optimiser steps. A tensor's name carries its group's prefix
 * ("lm.embedding.weight", "moe.experts.w1"); an expert tensor's dim 0 indexes experts, of
 * which this process holds [e0, e0 + ne) of n (all of them unless they are split over ranks). */
#ifndef MOE_PTABLE_H
#define MOE_PTABLE_H

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

enum { PT_NAME = 64, PT_MAX_GROUPS = 8 };

typedef struct {
    char name[PT_NAME]; /* "<group prefix>.<tensor>" */
    int ndim;
    int64_t shape[3]; /* this process's shape: an expert tensor's dim 0 is ne */
    size_t numel;
    float *data, *grad;
    uint16_t *bf16; /* bfloat16 storage instead of data (data and grad NULL): experts' weights
                       under LAYER_BF16; offset is then only the optimiser's coordinate */
    int group;     /* index into the table's groups */
    size_t offset; /* floats from the group's start */
    int expert;    /* 1: dim 0 indexes experts [e0, e0 + ne) of n */
    int e0, ne, n;
    int matrix; /* 1: a weight matrix (or a stack of them, [count, rows, cols]): the factored
                   optimiser keeps its second moment as row and column means */
} ptensor;

typedef struct {
    char name[24];   /* "lm", "moe", "s2s", "moe0", "baseline": its optimiser state's keys */
    char prefix[24]; /* its tensors' names start "<prefix>." (usually the name) */
    float *params;  /* the group's first float in its arena */
    float *grads;
    size_t count;   /* floats, padding included: the optimiser's coordinates [0, count); its
                       bfloat16 tensors (ptensor.bf16) lie past the end of params */
    size_t gcount;  /* floats of grads: count, or fewer when the last tensors have no
                       gradients (a layer's experts under fused updates: their grad NULL) */
    int sharded;    /* its expert tensors are split over ranks */
} pgroup;

typedef struct {
    ptensor *t;
    int count, cap;
    pgroup g[PT_MAX_GROUPS];
    int ngroups;
} ptable;

/* Adds a group; returns its index, or -1 (moe_last_error set) when there are too many. prefix
 * NULL: the name. */
int ptable_group(ptable *pt, const char *name, const char *prefix, float *params, float *grads, size_t count,
                 int sharded);
/* Adds a tensor of group g: name is the tensor's own ("embedding.weight"); data must lie in
 * the group's range. e0/ne/n describe an expert tensor (ne = 0: not one). */
moe_status ptable_add(ptable *pt, int g, const char *name, int ndim, const int64_t *shape, float *data, float *grad,
                      int matrix, int e0, int ne, int n);
/* A tensor of group g stored in bfloat16 at data, at coordinate `offset` of the group */
moe_status ptable_add_bf16(ptable *pt, int g, const char *name, int ndim, const int64_t *shape, uint16_t *data,
                           size_t offset, int matrix, int e0, int ne, int n);
const ptensor *ptable_find(const ptable *pt, const char *name);
/* The index of the group called name, or -1 */
int ptable_group_index(const ptable *pt, const char *name);
/* Parameters (floats of the tensors, padding not counted) */
int64_t ptable_numel(const ptable *pt);
void ptable_free(ptable *pt); /* frees the tensor list; the arenas are the model's */
/* Tensor i as the public description (name and buffers stay the table's and the model's). */
moe_status ptable_param(const ptable *pt, int i, moe_param *p);

/* Full shape (dim 0 of an expert tensor: n) */
static inline void ptensor_full_shape(const ptensor *t, int64_t *shape) {
    for (int i = 0; i < 3; i++) shape[i] = t->shape[i];
    if (t->expert) shape[0] = t->n;
}

#endif
