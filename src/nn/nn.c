/* nn.c - the dense building blocks declared in nn.h: linear (two BLAS products forward, up to
 * three backward), ReLU, softmax cross-entropy and accuracy. Shared by the classifier demo and,
 * later, the language model. */
#include "nn/nn.h"
#include "moe.h"

#include "base/gemm.h"
#include "base/vmath.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void linear_forward(float *out, const float *in, const float *W, const float *b, int B, int i,
                    int o) {
    float beta = 0.0f;
    if (b) {
        for (int r = 0; r < B; r++) memcpy(out + (size_t)r * o, b, sizeof(float) * (size_t)o);
        beta = 1.0f;
    }
    /* out [B,o] (+)= in [B,i] W [i,o] */
    moe_sgemm(0,  0, B, o, i, 1.0f, in, i, W, o, beta, out, o);
}

void linear_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int B, int i, int o) {
    /* forward: out = in W + b;  so din += dout W^T, dW += in^T dout, db += colsum(dout) */
    if (din)
        moe_sgemm(0,  1, B, i, o, 1.0f, dout, o, W, o, 1.0f, din, i);
    moe_sgemm(1,  0, i, o, B, 1.0f, in, i, dout, o, 1.0f, dW, o);
    if (db)
        for (int r = 0; r < B; r++) {
            const float *g = dout + (size_t)r * o;
            for (int j = 0; j < o; j++) db[j] += g[j];
        }
}

void relu_forward(float *out, const float *in, size_t count) {
    for (size_t j = 0; j < count; j++) out[j] = in[j] > 0.0f ? in[j] : 0.0f;
}

void relu_backward(float *din, const float *dout, const float *out, size_t count) {
    /* forward: out = max(in, 0);  so din += dout where out > 0 */
    for (size_t j = 0; j < count; j++)
        if (out[j] > 0.0f) din[j] += dout[j];
}

/* Rows per task of the softmax: fixed, so the loss is summed in the same order for any number
 * of threads. */
#define SOFTMAX_ROWS 64

static double softmax_row(float *restrict p, const float *restrict z, int label, int C) {
    float zmax = z[0];
    for (int c = 1; c < C; c++) zmax = z[c] > zmax ? z[c] : zmax;
    for (int c = 0; c < C; c++) p[c] = exp_f(z[c] - zmax);
    double sum = 0.0;
    for (int c = 0; c < C; c++) sum += p[c];
    const float inv = (float)(1.0 / sum);
    for (int c = 0; c < C; c++) p[c] *= inv;
    /* -log softmax computed from the logits, not log(p), so a tiny p does not give -inf */
    return log(sum) - (double)(z[label] - zmax);
}

double softmax_xent_forward(float *losses, float *probs, const float *logits, const int *labels,
                            int B, int C) {
    const int ntask = (B + SOFTMAX_ROWS - 1) / SOFTMAX_ROWS;
    double part_small[64], *part = ntask <= 64 ? part_small : malloc(sizeof(double) * (size_t)ntask);
    if (!part) { /* no memory for the partial sums: one thread, same order */
        double total = 0.0;
        for (int r = 0; r < B; r++) {
            double l = softmax_row(probs + (size_t)r * C, logits + (size_t)r * C, labels[r], C);
            if (losses) losses[r] = (float)l;
            total += l;
        }
        return total / B;
    }
#pragma omp parallel for schedule(static) if ((size_t)B * C >= 65536)
    for (int task = 0; task < ntask; task++) {
        const int r1 = (task + 1) * SOFTMAX_ROWS < B ? (task + 1) * SOFTMAX_ROWS : B;
        double t = 0.0;
        for (int r = task * SOFTMAX_ROWS; r < r1; r++) {
            double l = softmax_row(probs + (size_t)r * C, logits + (size_t)r * C, labels[r], C);
            if (losses) losses[r] = (float)l;
            t += l;
        }
        part[task] = t;
    }
    double total = 0.0;
    for (int task = 0; task < ntask; task++) total += part[task];
    if (part != part_small) free(part);
    return total / B;
}

void softmax_xent_backward(float *dlogits, const float *probs, const int *labels, int B, int C) {
    /* forward: L = (1/B) sum_b -log softmax(z_b)[y_b];  so dz_b += (p_b - onehot(y_b)) / B */
    const float s = 1.0f / (float)B;
    for (int r = 0; r < B; r++) {
        const float *p = probs + (size_t)r * C;
        float *dz = dlogits + (size_t)r * C;
        for (int c = 0; c < C; c++) dz[c] += s * p[c];
        dz[labels[r]] -= s;
    }
}

int argmax_correct(const float *scores, const int *labels, int B, int C) {
    int correct = 0;
    for (int r = 0; r < B; r++) {
        const float *z = scores + (size_t)r * C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (z[c] > z[best]) best = c;
        correct += best == labels[r];
    }
    return correct;
}

void nn_init_uniform(float *x, size_t count, float a, uint64_t seed) {
    for (size_t j = 0; j < count; j++) x[j] = a * (2.0f * moe_rng_uniform(seed, j) - 1.0f);
}
