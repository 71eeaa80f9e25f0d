/* mpi_shard.c - experts split over MPI ranks (run under mpirun with 1, 2 and 4 ranks): every rank
 * also builds the plain layer on the whole batch and checks that the sharded layer gives the
 * same outputs, balancing losses, input gradients and parameter gradients (to 1e-5 relative),
 * and the same parameters after several Adam steps; uneven batches and uneven expert counts;
 * and that settings which differ across ranks are refused on every rank.
 * With --die, rank 1 exits in the middle of a step: mpirun must end the job, not hang. */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static moe_comm *comm;
static int P, me;

/* tokens of rank r when Btot are split unevenly */
static int first_tok(int Btot, int r) { return (int)((int64_t)Btot * r * (r + 3) / (P * (P + 3))); }

/* groups > 0: a hierarchical layer (its experts split evenly, so a group may straddle ranks) */
static void run_case(int n, int k, int bias, int Btot, int groups, int k_groups, const char *name) {
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = 8;
    cfg.h = 6;
    cfg.n = n;
    cfg.k = k;
    cfg.bias = bias;
    cfg.groups = groups;
    cfg.k_groups = k_groups;
    cfg.w_importance = 0.5f;
    cfg.w_load = 0.5f;
    moe_layer *ref = NULL, *sh = NULL;
    CHECK(moe_layer_create(&ref, &cfg, 42) == MOE_OK, "%s: plain layer", name);
    CHECK(moe_layer_create_sharded(&sh, &cfg, 42, comm) == MOE_OK, "%s: sharded layer: %s", name, moe_last_error());
    if (!ref || !sh) return;
    int e0, ne;
    moe_layer_shard(sh, &e0, &ne);
    CHECK(ne >= 1 && e0 == n * me / P && e0 + ne == n * (me + 1) / P, "%s: rank %d holds experts [%d, %d)", name, me,
          e0, e0 + ne);
    const int d = cfg.d, b0 = first_tok(Btot, me), B = first_tok(Btot, me + 1) - b0;
    /* gate weights are zero at the start; give them values so that routing is not all ties
     * (a hierarchical layer's gate.* are [d, groups], its gate2.* [groups, d, n/groups]) */
    const char *gates[] = {"gate.w_gate", "gate.w_noise", "gate2.w_gate", "gate2.w_noise"};
    float *g = malloc(sizeof(float) * (size_t)d * n);
    for (int i = 0; i < (groups ? 4 : 2); i++) {
        const size_t m = (size_t)d * (groups && i < 2 ? groups : n);
        t_fill_uniform(g, m, 0.8f, 100 + (uint64_t)i);
        CHECK(moe_layer_set_param(ref, gates[i], g, m) == MOE_OK && moe_layer_set_param(sh, gates[i], g, m) == MOE_OK,
              "%s: set %s: %s", name, gates[i], moe_last_error());
    }
    free(g);
    moe_adam_config ac = moe_adam_config_default();
    moe_adam *oref = NULL, *osh = NULL;
    float *pr, *gr, *ps, *gs;
    size_t nr, ns;
    moe_layer_arena(ref, &pr, &gr, &nr);
    moe_layer_arena(sh, &ps, &gs, &ns);
    moe_adam_create(&oref, nr, &ac);
    moe_adam_create(&osh, ns, &ac);
    float *x = malloc(sizeof(float) * (size_t)Btot * d), *dy = malloc(sizeof(float) * (size_t)Btot * d);
    float *yr = malloc(sizeof(float) * (size_t)Btot * d), *dxr = calloc((size_t)Btot * d, sizeof(float));
    /* (a rank may have no tokens: B = 0, and still takes part) */
    float *ys = malloc(sizeof(float) * (size_t)(B + 1) * d), *dxs = calloc((size_t)(B + 1) * d, sizeof(float));
    int *cr = malloc(sizeof(int) * (size_t)n), *cs = malloc(sizeof(int) * (size_t)n);
    double worst_y = 0, worst_dx = 0, worst_g = 0;
    for (int step = 0; step < 4; step++) {
        t_fill_normal(x, (size_t)Btot * d, 1000 + (uint64_t)step);
        t_fill_normal(dy, (size_t)Btot * d, 2000 + (uint64_t)step);
        moe_layer_stats sr, ss;
        moe_mode mode = step == 3 ? MOE_EVAL : MOE_TRAIN;
        CHECK(moe_layer_forward(ref, yr, x, Btot, mode, NULL, &sr) == MOE_OK, "ref forward");
        CHECK(moe_layer_forward(sh, ys, x + (size_t)b0 * d, B, mode, NULL, &ss) == MOE_OK, "%s: sharded forward: %s",
              name, moe_last_error());
        worst_y = fmax(worst_y, t_rel_err(ys, yr + (size_t)b0 * d, (size_t)B * d));
        CHECK(fabs(ss.loss_importance - sr.loss_importance) <= 1e-5 * fabs(sr.loss_importance) + 1e-7 &&
                  fabs(ss.loss_load - sr.loss_load) <= 1e-5 * fabs(sr.loss_load) + 1e-7,
              "%s step %d: balancing losses over the whole batch (%g %g vs %g %g)", name, step, ss.loss_importance,
              ss.loss_load, sr.loss_importance, sr.loss_load);
        moe_layer_counts(ref, cr);
        moe_layer_counts(sh, cs);
        CHECK(memcmp(cr, cs, sizeof(int) * (size_t)n) == 0, "%s step %d: per-expert counts over all ranks", name, step);
        if (mode == MOE_EVAL) break;
        moe_layer_zero_grad(ref);
        moe_layer_zero_grad(sh);
        memset(dxr, 0, sizeof(float) * (size_t)Btot * d);
        memset(dxs, 0, sizeof(float) * (size_t)B * d);
        CHECK(moe_layer_backward(ref, dxr, dy) == MOE_OK, "ref backward");
        CHECK(moe_layer_backward(sh, dxs, dy + (size_t)b0 * d) == MOE_OK, "%s: sharded backward: %s", name,
              moe_last_error());
        worst_dx = fmax(worst_dx, t_rel_err(dxs, dxr + (size_t)b0 * d, (size_t)B * d));
        for (int i = 0; i < moe_layer_num_params(sh); i++) {
            moe_param a, b;
            moe_layer_param(sh, i, &a);
            moe_layer_find_param(ref, a.name, &b);
            /* an expert tensor holds this rank's slice of the stack */
            size_t per = b.numel / (b.name[0] == 'e' ? (size_t)n : 1), o = b.name[0] == 'e' ? per * (size_t)e0 : 0;
            CHECK(a.numel == (b.name[0] == 'e' ? per * (size_t)ne : b.numel), "%s: %s has the slice's size", name, a.name);
            worst_g = fmax(worst_g, t_rel_err(a.grad, b.grad + o, a.numel));
        }
        moe_adam_step(oref, pr, gr, 0.05f);
        moe_adam_step(osh, ps, gs, 0.05f);
    }
    CHECK(worst_y < 1e-5, "%s: y matches the plain layer (rel err %.2e)", name, worst_y);
    CHECK(worst_dx < 1e-5, "%s: dx matches (rel err %.2e)", name, worst_dx);
    CHECK(worst_g < 1e-5, "%s: every parameter gradient matches (rel err %.2e)", name, worst_g);
    double worst_p = 0;
    for (int i = 0; i < moe_layer_num_params(sh); i++) {
        moe_param a, b;
        moe_layer_param(sh, i, &a);
        moe_layer_find_param(ref, a.name, &b);
        size_t o = b.name[0] == 'e' ? b.numel / (size_t)n * (size_t)e0 : 0;
        worst_p = fmax(worst_p, t_rel_err(a.data, b.data + o, a.numel));
    }
    CHECK(worst_p < 1e-5, "%s: parameters after 3 Adam steps match (rel err %.2e)", name, worst_p);
    moe_adam_free(oref);
    moe_adam_free(osh);
    moe_layer_free(ref);
    moe_layer_free(sh);
    free(x);
    free(dy);
    free(yr);
    free(dxr);
    free(ys);
    free(dxs);
    free(cr);
    free(cs);
}

int main(int argc, char **argv) {
    if (moe_comm_world(&comm, &argc, &argv) != MOE_OK) {
        printf("mpi_shard: %s\n", moe_last_error());
        return 1;
    }
    P = moe_comm_size(comm);
    me = moe_comm_rank(comm);
    moe_set_threads(1);
    if (argc > 1 && strcmp(argv[1], "--die") == 0) {
        moe_layer_config cfg = moe_layer_config_default();
        cfg.d = 8, cfg.h = 8, cfg.n = 4, cfg.k = 2;
        moe_layer *l = NULL;
        moe_layer_create_sharded(&l, &cfg, 1, comm);
        float x[8 * 4] = {0}, y[8 * 4];
        if (me == 1) {
            fprintf(stderr, "mpi_shard: rank 1 exits on purpose\n");
            exit(3); /* the others are about to wait for it in the exchange */
        }
        moe_layer_forward(l, y, x, 4, MOE_TRAIN, NULL, NULL);
        moe_layer_free(l);
        moe_comm_free(comm);
        return 0;
    }
    run_case(8, 2, 1, 37, 0, 0, "n=8 k=2 bias");
    run_case(P == 4 ? 6 : 5, 3, 0, 23, 0, 0, "uneven experts k=3");
    run_case(8, 1, 0, 16, 0, 0, "k=1");
    run_case(8, 2, 1, 29, 2, 1, "hierarchical 2 groups of 4, 1 x 2");
    run_case(12, 2, 0, 31, 3, 2, "hierarchical 3 groups of 4 over uneven ranks, 2 x 2");
    run_case(16, 1, 0, 19, 4, 4, "hierarchical 4 groups of 4, every group, k=1");
    run_case(8, 2, 1, 3, 0, 0, "3 tokens: on 4 ranks one has none");
    run_case(8, 2, 0, 1, 2, 1, "1 token: hierarchical, every rank but one has none");
    /* settings that differ across ranks are refused everywhere */
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = 8, cfg.n = 8, cfg.k = 2;
    cfg.h = P > 1 && me == P - 1 ? 7 : 6;
    moe_layer *l = NULL;
    moe_status st = moe_layer_create_sharded(&l, &cfg, 1, comm);
    CHECK(P == 1 ? st == MOE_OK : st == MOE_ERR_COMM, "a rank with another h: %s", moe_last_error());
    moe_layer_free(l);
    cfg.h = 6;
    cfg.n = P - 1 > 0 ? P - 1 : 1;
    cfg.k = 1;
    st = moe_layer_create_sharded(&l, &cfg, 1, comm);
    CHECK(P == 1 ? st == MOE_OK : st == MOE_ERR_CONFIG, "more ranks than experts refused: %s", moe_last_error());
    moe_layer_free(l);
    /* every rank's verdict, then rank 0 reports the total */
    float v[2] = {(float)t_pass, (float)t_fail};
    moe_comm_allreduce_sum(comm, v, 2);
    int ok = t_fail == 0;
    if (me == 0) {
        t_pass = (int)v[0];
        t_fail = (int)v[1];
        ok = test_finish(P == 1 ? "mpi_shard (1 rank)" : P == 2 ? "mpi_shard (2 ranks)" : "mpi_shard (4 ranks)") == 0;
    }
    moe_comm_free(comm);
    return ok ? 0 : 1;
}
