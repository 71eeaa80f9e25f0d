/* hier.c - the hierarchical MoE layer (SPEC 1.6, paper App. B): a groups of b = n/a experts. A
 * primary noisy top-k gate Gp over the groups picks kp of them; each picked group i runs its own
 * noisy top-k gate G_i over its b experts on the tokens routed to it, picking ks. Token x goes to
 * the kp*ks experts (i, j) with weight Gp(x)_i * G_i(x)_j:
 *
 *   y = sum_i sum_j Gp(x)_i G_i(x)_j E_ij(x)
 *   Importance_H(X)_ij = sum_x Gp(x)_i G_i(x)_j
 *   Load_H(X)_ij = Load_p(X)_i * Load_i(X^(i))_j / |X^(i)|,  X^(i) = tokens with Gp(x)_i > 0
 *
 * and the balancing losses are w * CV^2 of these over all n experts. Both levels reuse gate.c
 * (each gate's smooth load estimator included), and the experts reuse the flat layer's counting
 * sort and grouped products, so the cost is the flat layer's plus a second, b-wide gate. */
#include "base/internal.h"
#include "moe/layer_impl.h"
#include "moe/layer_ops.h"

#include <stdlib.h>
#include <string.h>

void hier_free(hier_ws *w) {
    float *fs[] = {w->clean,  w->raw,   w->sigma,   w->H,     w->eps,  w->P,    w->dclean, w->draw,   w->topv,
                   w->gk,     w->dgk,   w->Xg,      w->dXg,   w->clean2, w->raw2, w->sigma2, w->H2,   w->eps2,
                   w->P2,     w->dclean2, w->draw2, w->topv2, w->gk2,  w->dgk2, w->gkf,    w->dgkf,   w->Xs,
                   w->Ys,     w->dYs,   w->A,       w->dA};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) moe_free_aligned(fs[i]);
    int *is[] = {w->topi, w->gcnt, w->goff, w->gtok, w->gpos, w->topi2, w->topf, w->tok, w->pos};
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++) free(is[i]);
    double *ds[] = {w->load_p, w->dload_p, w->load_s, w->dload_s, w->scratch};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) free(ds[i]);
    memset(w, 0, sizeof *w);
}

static moe_status reserve(moe_layer *l, int B) {
    hier_ws *w = &l->hw;
    if (B <= w->capB) return MOE_OK;
    hier_free(w);
    const moe_layer_config *c = &l->cfg;
    const size_t a = (size_t)c->groups, n = (size_t)c->n, b = n / a, kp = (size_t)c->k_groups, ks = (size_t)c->k;
    const size_t K1p = kp < a ? kp + 1 : a, K1s = ks < b ? ks + 1 : b;
    const size_t Ba = (size_t)B * a, R1 = (size_t)B * kp, R = R1 * ks, d = (size_t)c->d, h = (size_t)c->h;
    float **fa[] = {&w->clean, &w->raw, &w->sigma, &w->H, &w->eps, &w->P, &w->dclean, &w->draw};
    float **fb[] = {&w->clean2, &w->raw2, &w->sigma2, &w->H2, &w->eps2, &w->P2, &w->dclean2, &w->draw2};
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        ok &= (*fa[i] = moe_alloc_floats(Ba)) != NULL;
        ok &= (*fb[i] = moe_alloc_floats(R1 * b)) != NULL;
    }
    ok &= (w->topi = malloc(sizeof(int) * (size_t)B * K1p)) != NULL;
    ok &= (w->topv = moe_alloc_floats((size_t)B * K1p)) != NULL;
    ok &= (w->gk = moe_alloc_floats(R1)) && (w->dgk = moe_alloc_floats(R1));
    ok &= (w->gcnt = malloc(sizeof(int) * a)) && (w->goff = malloc(sizeof(int) * (a + 1)));
    ok &= (w->gtok = malloc(sizeof(int) * R1)) && (w->gpos = malloc(sizeof(int) * R1));
    ok &= (w->Xg = moe_alloc_floats(R1 * d)) && (w->dXg = moe_alloc_floats(R1 * d));
    ok &= (w->topi2 = malloc(sizeof(int) * R1 * K1s)) && (w->topv2 = moe_alloc_floats(R1 * K1s));
    ok &= (w->gk2 = moe_alloc_floats(R)) && (w->dgk2 = moe_alloc_floats(R));
    ok &= (w->topf = malloc(sizeof(int) * R)) && (w->gkf = moe_alloc_floats(R)) && (w->dgkf = moe_alloc_floats(R));
    ok &= (w->tok = malloc(sizeof(int) * R)) && (w->pos = malloc(sizeof(int) * R));
    ok &= (w->Xs = moe_alloc_floats(R * d)) && (w->Ys = moe_alloc_floats(R * d)) && (w->dYs = moe_alloc_floats(R * d));
    ok &= (w->A = moe_alloc_floats(R * h)) && (w->dA = moe_alloc_floats(R * h));
    ok &= (w->load_p = calloc(a, sizeof(double))) && (w->dload_p = calloc(a, sizeof(double)));
    ok &= (w->load_s = calloc(n, sizeof(double))) && (w->dload_s = calloc(n, sizeof(double)));
    ok &= (w->scratch = calloc(n > a ? n : a, sizeof(double))) != NULL;
    if (!ok) {
        hier_free(w);
        return moe_fail(MOE_ERR_NOMEM, "cannot allocate the hierarchical layer's workspace for %d tokens", B);
    }
    w->capB = B;
    return MOE_OK;
}

moe_status hier_forward(moe_layer *l, float *y, const float *x, int B, int train, const float *noise) {
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, h = c->h, n = c->n, a = c->groups, b = n / a, kp = c->k_groups, ks = c->k;
    const int K1p = kp < a ? kp + 1 : a, K1s = ks < b ? ks + 1 : b, kk = kp * ks, nw = a + n;
    moe_status st = reserve(l, B);
    if (st) return st;
    hier_ws *w = &l->hw;
    const int sm_p = train && kp < a, sm_s = train && ks < b;

    /* primary gate over the groups; its noise is columns [0, a) of each token's draws */
    if (train)
        for (int t = 0; t < B; t++) {
            if (noise) memcpy(w->eps + (size_t)t * a, noise + (size_t)t * nw, sizeof(float) * (size_t)a);
            else moe_rng_normal_fill(w->eps + (size_t)t * a, (size_t)a, l->seed, l->counter + (uint64_t)t * nw);
        }
    gate_forward(w->clean, w->raw, w->sigma, w->H, sm_p ? w->P : NULL, w->topi, w->topv, w->gk, x, pdata(l, P_WG),
                 pdata(l, P_WN), w->eps, train, c->noise_eps, B, d, a, kp);
    gate_importance_load(w->scratch, w->load_p, w->P, w->topi, w->gk, sm_p, B, a, kp);

    /* tokens sorted by group: rows goff[i] .. goff[i+1] of Xg are X^(i) */
    dispatch_build(w->gcnt, w->goff, w->gtok, w->gpos, w->topi, B, a, kp, K1p);
    const int R1 = B * kp;
    dispatch_gather(w->Xg, x, w->gtok, R1, d);
    if (train) /* row r = (token t, group i) takes columns a + i*b .. of t's draws */
        for (int i = 0; i < a; i++)
            for (int r = w->goff[i]; r < w->goff[i + 1]; r++) {
                const size_t t = (size_t)w->gtok[r], col = (size_t)a + (size_t)i * b;
                if (noise) memcpy(w->eps2 + (size_t)r * b, noise + t * nw + col, sizeof(float) * (size_t)b);
                else moe_rng_normal_fill(w->eps2 + (size_t)r * b, (size_t)b, l->seed, l->counter + t * nw + col);
            }
    if (train && !noise) l->counter += (uint64_t)B * nw;

    /* each group's gate on its own tokens */
    for (int i = 0; i < a; i++) {
        const int r0 = w->goff[i], ci = w->goff[i + 1] - r0;
        double *ls = w->load_s + (size_t)i * b;
        if (ci == 0) {
            memset(ls, 0, sizeof(double) * (size_t)b);
            continue;
        }
        const size_t o = (size_t)r0 * b;
        gate_forward(w->clean2 + o, w->raw2 + o, w->sigma2 + o, w->H2 + o, sm_s ? w->P2 + o : NULL,
                     w->topi2 + (size_t)r0 * K1s, w->topv2 + (size_t)r0 * K1s, w->gk2 + (size_t)r0 * ks,
                     w->Xg + (size_t)r0 * d, pdata(l, P_WG2) + (size_t)i * d * b, pdata(l, P_WN2) + (size_t)i * d * b,
                     w->eps2 + o, train, c->noise_eps, ci, d, b, ks);
        gate_importance_load(w->scratch, ls, w->P2 + o, w->topi2 + (size_t)r0 * K1s, w->gk2 + (size_t)r0 * ks, sm_s,
                             ci, b, ks);
    }

    /* each token's kp*ks experts and combined gates; Importance_H and Load_H */
    memset(l->importance, 0, sizeof(double) * (size_t)n);
    for (int t = 0; t < B; t++)
        for (int p = 0; p < kp; p++) {
            const int i = w->topi[(size_t)t * K1p + p], r = w->gpos[(size_t)t * kp + p];
            const float gp = w->gk[(size_t)t * kp + p];
            for (int q = 0; q < ks; q++) {
                const size_t s = (size_t)t * kk + (size_t)p * ks + q;
                w->topf[s] = i * b + w->topi2[(size_t)r * K1s + q];
                w->gkf[s] = gp * w->gk2[(size_t)r * ks + q];
                l->importance[w->topf[s]] += w->gkf[s];
            }
        }
    for (int i = 0; i < a; i++) {
        const int ci = w->gcnt[i];
        for (int j = 0; j < b; j++)
            l->load[i * b + j] = ci ? w->load_p[i] * w->load_s[(size_t)i * b + j] / ci : 0.0;
    }
    double li = cv2_loss(l->dimp, l->importance, n, c->w_importance);
    double ll = cv2_loss(l->dload, l->load, n, c->w_load);
    if (!sm_p && !sm_s) memset(l->dload, 0, sizeof(double) * (size_t)n); /* counts: no gradient */

    /* the experts, as in the flat layer */
    dispatch_build(l->counts, l->offsets, w->tok, w->pos, w->topf, B, n, kk, kk);
    const int R = B * kk;
    const int strat = experts_pick_strategy(g_moe_strategy, R, n, moe_threads());
    dispatch_gather(w->Xs, x, w->tok, R, d);
    experts_forward(w->A, w->Ys, w->Xs, pdata(l, P_W1), pdata(l, P_B1), pdata(l, P_W2), pdata(l, P_B2), l->offsets, n,
                    d, h, strat);
    dispatch_combine(y, w->Ys, w->gkf, w->pos, B, d, kk);

    layer_finish_forward(l, l->counts, R, li, ll, x, B, train, sm_p || sm_s);
    return MOE_OK;
}

moe_status hier_backward(moe_layer *l, float *dx, const float *dy) {
    const moe_layer_config *c = &l->cfg;
    const int d = c->d, h = c->h, n = c->n, a = c->groups, b = n / a, kp = c->k_groups, ks = c->k;
    const int K1s = ks < b ? ks + 1 : b, kk = kp * ks;
    hier_ws *w = &l->hw;
    const int B = l->ws.B, train = l->ws.train, R = B * kk, R1 = B * kp;
    const int sm_p = train && kp < a, sm_s = train && ks < b;

    /* forward: y = sum_s gkf[s] Ys[pos[s]];  so dgkf = <dy, Ys>, dYs = gkf dy; plus
     * Importance_H[e] = sum gkf over e's slots: dgkf += dL_imp/dImportance_e */
    dispatch_combine_backward(w->dgkf, w->dYs, dy, w->Ys, w->gkf, w->pos, B, d, kk);
    for (int s = 0; s < R; s++) w->dgkf[s] += (float)l->dimp[w->topf[s]];
    const int strat = experts_pick_strategy(g_moe_strategy, R, n, moe_threads());
    experts_backward(w->dYs, pgrad(l, P_W1), pgrad(l, P_B1), pgrad(l, P_W2), pgrad(l, P_B2), w->dA, w->dYs, w->Xs, w->A,
                     pdata(l, P_W1), pdata(l, P_W2), l->offsets, n, d, h, strat);
    if (dx) dispatch_gather_backward(dx, w->dYs, w->pos, B, d, kk);

    /* forward: gkf = Gp * Gs;  so dGp = sum_q dgkf Gs, dGs = dgkf Gp */
    for (int t = 0; t < B; t++)
        for (int p = 0; p < kp; p++) {
            const int r = w->gpos[(size_t)t * kp + p];
            const float gp = w->gk[(size_t)t * kp + p];
            float acc = 0.0f;
            for (int q = 0; q < ks; q++) {
                const size_t s = (size_t)t * kk + (size_t)p * ks + q;
                acc += w->dgkf[s] * w->gk2[(size_t)r * ks + q];
                w->dgk2[(size_t)r * ks + q] = w->dgkf[s] * gp;
            }
            w->dgk[(size_t)t * kp + p] = acc;
        }
    /* forward: Load_H[i,j] = Load_p[i] Load_i[j] / c_i (c_i a count: no gradient) */
    for (int i = 0; i < a; i++) {
        const int ci = w->gcnt[i];
        double acc = 0.0;
        for (int j = 0; j < b; j++) {
            const size_t e = (size_t)i * b + j;
            acc += ci ? l->dload[e] * w->load_s[e] / ci : 0.0;
            w->dload_s[e] = ci ? l->dload[e] * w->load_p[i] / ci : 0.0;
        }
        w->dload_p[i] = acc;
    }

    /* each group's gate, its input gradient scattered back to the tokens */
    memset(w->dXg, 0, sizeof(float) * (size_t)R1 * d);
    for (int i = 0; i < a; i++) {
        const int r0 = w->goff[i], ci = w->goff[i + 1] - r0;
        if (ci == 0) continue;
        const size_t o = (size_t)r0 * b;
        gate_backward(w->dXg + (size_t)r0 * d, pgrad(l, P_WG2) + (size_t)i * d * b, pgrad(l, P_WN2) + (size_t)i * d * b,
                      w->dclean2 + o, w->draw2 + o, w->dgk2 + (size_t)r0 * ks, w->dload_s + (size_t)i * b,
                      w->Xg + (size_t)r0 * d, pdata(l, P_WG2) + (size_t)i * d * b, pdata(l, P_WN2) + (size_t)i * d * b,
                      w->H2 + o, w->clean2 + o, w->raw2 + o, w->sigma2 + o, w->eps2 + o, w->topi2 + (size_t)r0 * K1s,
                      w->topv2 + (size_t)r0 * K1s, w->gk2 + (size_t)r0 * ks, train, sm_s, ci, d, b, ks);
    }
    if (dx) dispatch_gather_backward(dx, w->dXg, w->gpos, B, d, kp);
    gate_backward(dx, pgrad(l, P_WG), pgrad(l, P_WN), w->dclean, w->draw, w->dgk, w->dload_p, l->ws.x, pdata(l, P_WG),
                  pdata(l, P_WN), w->H, w->clean, w->raw, w->sigma, w->eps, w->topi, w->topv, w->gk, train, sm_p, B, d,
                  a, kp);
    return MOE_OK;
}
