/* layer_table.c - the layer's tensors in a parameter table (layer_table.h). */
#include "moe/layer_table.h"
#include "base/internal.h"
#include "moe/layer_impl.h"

#include <string.h>

moe_status layer_ptable(ptable *pt, const char *name, moe_layer *l) {
    float *params;
    size_t count;
    moe_status st = moe_layer_arena(l, &params, NULL, &count);
    if (st) return st;
    int e0, ne;
    moe_layer_shard(l, &e0, &ne);
    const int n = moe_layer_get_config(l).n;
    const int g = ptable_group(pt, name, NULL, params, l->grads, count, ne < n);
    if (g < 0) return MOE_ERR_CONFIG;
    pt->g[g].gcount = l->grad_count; /* fused: the router's prefix only */
    for (int i = 0; i < moe_layer_num_params(l) && !st; i++) {
        moe_param p;
        if ((st = moe_layer_param(l, i, &p))) break;
        const int expert = strncmp(p.name, "experts.", 8) == 0;
        /* the experts' biases [n, h] are n vectors: each expert's state stays its own */
        const int matrix = p.ndim >= 2 && strncmp(p.name, "experts.b", 9) != 0;
        st = ptable_add(pt, g, p.name, p.ndim, p.shape, p.data, p.grad, matrix, expert ? e0 : 0, expert ? ne : 0, n);
    }
    return st;
}

int layer_is_fused(const moe_layer *l) { return l && l->fused; }

moe_comm *layer_comm(const moe_layer *l) { return l ? l->pl.comm : NULL; }
