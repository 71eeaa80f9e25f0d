/* dispatch.c - dropless sparse dispatch: tokens grouped by expert with a counting sort, so each
 * expert's rows are contiguous and run through one matrix product per weight.
 *
 *   topi [B,K1]         counts/offsets [n+1]       tok [B*k]       Xs [B*k, d]
 *   b0: e2 e0           e0: 2 rows  @0             0: b0           row0 = x[b0]  \ expert 0
 *   b1: e0 e1    --->   e1: 1 row   @2      --->   1: b1    --->   row1 = x[b1]  /
 *   b2: e2 e1           e2: 2 rows  @3             2: b1           row2 = x[b1]  - expert 1 ...
 *                                                  pos[b*k+j] = row of pair (b, j)
 * No [B, n, ...] dense tensor is ever formed and a zero gate costs nothing. */
#include "moe/layer_ops.h"

#include <string.h>

void dispatch_build(int *counts, int *offsets, int *tok, int *pos, const int *topi, int B, int n,
                    int k, int K1) {
    memset(counts, 0, sizeof(int) * (size_t)n);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++) counts[topi[(size_t)b * K1 + j]]++;
    offsets[0] = 0;
    for (int e = 0; e < n; e++) offsets[e + 1] = offsets[e] + counts[e];
    /* stable fill, counts reused as cursors: rows follow token order within an expert */
    memset(counts, 0, sizeof(int) * (size_t)n);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < k; j++) {
            int e = topi[(size_t)b * K1 + j];
            int r = offsets[e] + counts[e]++;
            tok[r] = b;
            pos[(size_t)b * k + j] = r;
        }
    }
}

void dispatch_gather(float *Xs, const float *x, const int *tok, int R, int d) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++)
        memcpy(Xs + (size_t)r * d, x + (size_t)tok[r] * d, sizeof(float) * (size_t)d);
}

void dispatch_combine(float *y, const float *Ys, const float *gk, const int *pos, int B, int d,
                      int k) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *yb = y + (size_t)b * d;
        const float *g = gk + (size_t)b * k;
        const int *p = pos + (size_t)b * k;
        const float *y0 = Ys + (size_t)p[0] * d;
        for (int c = 0; c < d; c++) yb[c] = g[0] * y0[c];
        for (int j = 1; j < k; j++) {
            const float *yj = Ys + (size_t)p[j] * d;
            for (int c = 0; c < d; c++) yb[c] += g[j] * yj[c];
        }
    }
}

void dispatch_combine_backward(float *dgk, float *dYs, const float *dy, const float *Ys,
                               const float *gk, const int *pos, int B, int d, int k) {
    /* forward: y[b] = sum_j g_j Ys[p_j];  so dg_j = <dy[b], Ys[p_j]>, dYs[p_j] = g_j dy[b] */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * d;
        for (int j = 0; j < k; j++) {
            int r = pos[(size_t)b * k + j];
            const float *yr = Ys + (size_t)r * d;
            float *dr = dYs + (size_t)r * d;
            float g = gk[(size_t)b * k + j], dot = 0.0f;
            for (int c = 0; c < d; c++) {
                dot += dyb[c] * yr[c];
                dr[c] = g * dyb[c];
            }
            dgk[(size_t)b * k + j] = dot;
        }
    }
}

void dispatch_gather_backward(float *dx, const float *dXs, const int *pos, int B, int d, int k) {
    /* forward: Xs[p_j] = x[b];  so dx[b] += sum_j dXs[p_j] */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *dxb = dx + (size_t)b * d;
        for (int j = 0; j < k; j++) {
            const float *dr = dXs + (size_t)pos[(size_t)b * k + j] * d;
            for (int c = 0; c < d; c++) dxb[c] += dr[c];
        }
    }
}
