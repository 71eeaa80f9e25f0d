/* layer_table.c - the layer's tensors in a parameter table (layer_table.h). */
#include "moe/layer_table.h"
#include "base/internal.h"
#include "moe/layer_impl.h"

#include <string.h>

/* the optimiser coordinate of the bfloat16 tensor stored at h */
static size_t half_coord(const moe_layer *l, const uint16_t *h) {
    for (int q = 0; q < P_COUNT; q++)
        if (phalf(l, q) == h) return l->slots[q].offset;
    return 0;
}

moe_status layer_ptable(ptable *pt, const char *name, moe_layer *l) {
    float *params;
    moe_status st = moe_layer_arena(l, &params, NULL, NULL);
    if (st) return st;
    int e0, ne;
    moe_layer_shard(l, &e0, &ne);
    const int n = moe_layer_get_config(l).n;
    /* the group spans the coordinates of every tensor, bfloat16 ones included */
    const int g = ptable_group(pt, name, NULL, params, l->grads, l->arena_count, ne < n);
    if (g < 0) return MOE_ERR_CONFIG;
    pt->g[g].gcount = l->grad_count; /* fused: the router's prefix only */
    for (int i = 0; i < moe_layer_num_params(l) && !st; i++) {
        moe_param p;
        if ((st = moe_layer_param(l, i, &p))) break;
        const int expert = strncmp(p.name, "experts.", 8) == 0;
        /* the experts' biases [n, h] are n vectors: each expert's state stays its own */
        const int matrix = p.ndim >= 2 && strncmp(p.name, "experts.b", 9) != 0;
        if (p.data_bf16) /* its place in the optimiser's coordinates, past the float arena */
            st = ptable_add_bf16(pt, g, p.name, p.ndim, p.shape, p.data_bf16, half_coord(l, p.data_bf16),
                                 matrix, expert ? e0 : 0, expert ? ne : 0, n);
        else
            st = ptable_add(pt, g, p.name, p.ndim, p.shape, p.data, p.grad, matrix, expert ? e0 : 0, expert ? ne : 0, n);
    }
    return st;
}

int layer_is_fused(const moe_layer *l) { return l && l->fused; }
int layer_is_bf16(const moe_layer *l) { return l && l->half; }

moe_comm *layer_comm(const moe_layer *l) { return l ? l->pl.comm : NULL; }
