/* layer_ops.h - the MoE layer's internal operations as forward/backward pairs on flat buffers.
 * The routers (router_flat.c, router_hier.c) are made of the gate's; the pipeline (pipeline.c)
 * strings the rest together, the placements (place_local.c, place_shard.c) run the experts':
 *
 *   x [B,d] --gate_forward--> H [B,n], top-k (idx, gk [B,k]) --dispatch_build--> counts, pos
 *           --dispatch_gather--> Xs [B*k,d] (rows grouped by expert)
 *           --experts_forward--> A [B*k,h], Ys [B*k,d] --dispatch_combine(gk)--> y [B,d]
 *
 * Backward runs the same chain in reverse; every backward accumulates (+=) into parameter
 * gradients. */
#ifndef MOE_LAYER_OPS_H
#define MOE_LAYER_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "base/gemm.h"
#include "moe/placement.h"

/* ---- gate.c ---- */

/* One gate's buffers for B rows choosing among n (the experts, the groups of a hierarchical
 * layer, or one group's experts); K1 = min(k+1, n) entries of each row's ranking are kept (the
 * (k+1)-th is the load estimator's threshold). */
typedef struct {
    float *clean, *raw, *sigma, *H; /* [B,n]; after forward raw holds sigmoid(x Wn) */
    float *P;                       /* [B,n] or NULL: the load estimator's Phi, when smooth */
    int *topi;                      /* [B,K1] indices of H by descending value, ties to the lower index */
    float *topv;                    /* [B,K1] their values */
    float *gk;                      /* [B,k] softmax of the k kept values */
    float *dclean, *draw;           /* [B,n] backward scratch */
    const float *eps;               /* [B,n] the noise draws (training) */
} gate_bufs;

/* Noisy top-k gating of x [B,d] with wg, wn [d,n]:
 *   train:  clean = x Wg, raw = x Wn, sigma = softplus(raw) + noise_eps, H = clean + eps*sigma
 *   eval:   H = clean (raw, sigma, eps unused)
 * then the ranking (topi, topv), gk, and, when gb->P is set (training with k < n), the load
 * estimator's P = Phi((clean - thr)/sigma) (SPEC 1.4). */
void gate_forward(const gate_bufs *gb, const float *x /* [B,d] */, const float *wg /* [d,n] */,
                  const float *wn /* [d,n] */, int train, float noise_eps, int B, int d, int n, int k);

/* Importance [n] = sum_b G[b,:]; Load [n] = sum_b P[b,:] (P from gate_forward) when `smooth`
 * (training with k < n), else token counts. Sums run in a fixed order (deterministic for any
 * thread count). */
void gate_importance_load(double *importance /* [n] */, double *load /* [n] */,
                          const float *P /* [B,n], used when smooth */, const int *topi,
                          const float *gk, int smooth, int B, int n, int k);

/* w * CV(v)^2 with CV^2 = var / (mean^2 + 1e-10), population variance; and, if dv != NULL,
 * its gradient dv [n] (overwritten). */
double cv2_loss(double *dv, const double *v, int n, double w);
/* Plain CV = std / mean (0 if mean == 0), for reporting. */
double cv_of(const double *v, int n);

/* Backward of the gate. dgk [B,k] = dL/d(gate value), dload [n] = dL/dLoad (used when smooth).
 * dW_g, dW_n += ; dx [B,d] += (may be NULL). Reads the buffers gate_forward filled; dclean and
 * draw are overwritten. */
void gate_backward(float *dx /* [B,d] += */, float *dwg /* [d,n] += */, float *dwn /* [d,n] += */,
                   const gate_bufs *gb, const float *dgk /* [B,k] */, const double *dload /* [n] */,
                   const float *x, const float *wg, const float *wn, int train, int smooth, int B, int d,
                   int n, int k);

/* ---- dispatch.c ---- */

/* Counting sort of the B*k (token, slot) pairs by expert, stable in token order.
 *   counts [n], offsets [n+1]; tok [B*k]: token of each sorted row; pos [B*k]: sorted row of
 *   pair (b, j) at b*k + j. topi has row stride K1. */
void dispatch_build(int *counts, int *offsets, int *tok, int *pos, const int *topi, int B, int n,
                    int k, int K1);
/* Xs [B*k,d] row r = x [tok[r]] */
void dispatch_gather(float *Xs, const float *x, const int *tok, int R, int d);
/* y [B,d] = sum_j gk[b,j] * Ys[pos[b,j]] (overwrites y) */
void dispatch_combine(float *y, const float *Ys, const float *gk, const int *pos, int B, int d,
                      int k);
/* Backward of combine: dgk [B,k] = <dy[b], Ys[pos]> (overwritten), dYs[pos] = gk * dy[b]. */
void dispatch_combine_backward(float *dgk, float *dYs, const float *dy, const float *Ys,
                               const float *gk, const int *pos, int B, int d, int k);
/* Backward of gather: dx [B,d] += sum_j dXs[pos[b,j]] */
void dispatch_gather_backward(float *dx, const float *dXs, const int *pos, int B, int d, int k);

/* ---- experts.c ---- */

/* How expert products use the cores: one BLAS call per product using all threads, experts
 * in turn; or experts spread over threads, single-threaded BLAS in each. */
enum { EXPERTS_PAR_AUTO = 0, EXPERTS_PAR_BLAS = 1, EXPERTS_PAR_EXPERTS = 2 };
int experts_pick_strategy(int strategy, int R, int n, int nthreads);

/* For each expert e (rows offsets[e]..offsets[e+1] of Xs):
 *   A_e = relu(Xs_e W1_e + b1_e)  [c,h];  Ys_e = A_e W2_e + b2_e  [c,d]
 * w's biases may be NULL (no biases); its W1, W2 float32 or bfloat16 (w->h1, w->h2). scratch
 * [experts_scratch_floats] is each thread's (experts_scratch_reserve). */
void experts_forward(float *A /* [R,h] */, float *Ys /* [R,d] */, const float *Xs /* [R,d] */,
                     const expert_weights *w, const int *offsets, int n, int d, int h, int strategy, float *scratch);
/* Backward: w's gradients += (or, with w->up, each expert's gradients made in `scratch` and
 * handed to w->up->apply; its first failure is returned); scratch also holds each thread's
 * transposed copies for the few-row products;
 * dXs [R,d] overwritten; dA [R,h] scratch. dYs may be the same buffer as dXs (each expert reads
 * its dYs rows before writing dXs). */
moe_status experts_backward(float *dXs, const expert_weights *w, float *dA, const float *dYs, const float *Xs,
                            const float *A, const int *offsets, int n, int d, int h, int strategy, float *scratch);
/* floats of the experts' scratch for nthreads threads (fused: with one expert's gradients per
 * thread; half: bfloat16 weights, with one matrix widened per thread) */
size_t experts_scratch_floats(int d, int h, int nthreads, int fused, int half);
/* *scratch holds experts_scratch_floats for the threads now and w's kind (grown when that is
 * more than *cap floats); a placement's, freed with moe_free_aligned */
moe_status experts_scratch_reserve(float **scratch, size_t *cap, int d, int h, const expert_weights *w);

#endif
