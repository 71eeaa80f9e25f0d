/* train_layer.c - trains one sparsely-gated MoE layer on a toy regression task with plain SGD,
 * using nothing but the public API (moe.h). It prints the held-out loss as it falls and exits
 * with status 1 if it did not fall to under half its start, so it doubles as a test.
 *
 * The task: x uniform in [-1, 1]^d, target t_j = |x_j| - x_{(j+1) mod d}, a piecewise-linear
 * function the experts' ReLU nets can learn; the loss is the mean over tokens of
 * 0.5 * |y - t|^2, plus the layer's two balancing losses.
 *
 * Build against an installed libmoe:
 *   cc train_layer.c $(pkg-config --cflags --libs moe) -o train_layer
 * or with CMake: examples/CMakeLists.txt (find_package(moe)). */
#include <moe.h>

#include <stdio.h>
#include <stdlib.h>

enum { D = 8, B = 128, STEPS = 400, REPORT = 50 };

/* A batch of the task: fills x [B, D] and t [B, D]; `batch` picks the draws. */
static void make_batch(float *x, float *t, uint64_t batch) {
    for (size_t i = 0; i < (size_t)B * D; i++) x[i] = 2.0f * moe_rng_uniform(42, batch * B * D + i) - 1.0f;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < D; j++) {
            const float *r = x + (size_t)b * D;
            float a = r[j] < 0 ? -r[j] : r[j];
            t[(size_t)b * D + j] = a - r[(j + 1) % D];
        }
}

/* 0.5 * mean over tokens of |y - t|^2; dy = its gradient (may be NULL). */
static double mse(const float *y, const float *t, float *dy) {
    double s = 0;
    for (size_t i = 0; i < (size_t)B * D; i++) {
        float e = y[i] - t[i];
        s += 0.5 * (double)e * e;
        if (dy) dy[i] = e / B;
    }
    return s / B;
}

static int fail(const char *what, moe_status st) {
    fprintf(stderr, "train_layer: %s: %s: %s\n", what, moe_status_str(st), moe_last_error());
    return 1;
}

int main(void) {
    printf("libmoe %s (header %d.%d.%d)\n", moe_version(), MOE_VERSION_MAJOR, MOE_VERSION_MINOR, MOE_VERSION_PATCH);
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = D;
    cfg.h = 32;
    cfg.n = 8;
    cfg.k = 2;
    cfg.bias = 1;
    moe_layer *layer = NULL;
    moe_status st = moe_layer_create(&layer, &cfg, /* seed */ 7);
    if (st) return fail("creating the layer", st);

    static float x[B * D], t[B * D], y[B * D], dy[B * D], xv[B * D], tv[B * D];
    make_batch(xv, tv, 0); /* held out: batch 0 is never trained on */
    float *params, *grads;
    size_t count;
    if ((st = moe_layer_arena(layer, &params, &grads, &count))) return fail("moe_layer_arena", st);
    const float lr = 0.1f;
    double first = 0, last = 0;
    int rc = 0;
    for (int step = 0; step <= STEPS && !rc; step++) {
        if (step % REPORT == 0) { /* evaluation: no noise, no gradients */
            moe_layer_stats s;
            if ((st = moe_layer_forward(layer, y, xv, B, MOE_EVAL, NULL, &s))) {
                rc = fail("evaluating", st);
                break;
            }
            last = mse(y, tv, NULL);
            if (step == 0) first = last;
            printf("step %3d  held-out loss %.5f  max/mean expert load %.2f\n", step, last, s.max_mean_load);
        }
        if (step == STEPS) break;
        make_batch(x, t, 1 + (uint64_t)step);
        moe_layer_zero_grad(layer);
        /* x must stay alive and unchanged until the backward of this forward */
        if ((st = moe_layer_forward(layer, y, x, B, MOE_TRAIN, NULL, NULL))) {
            rc = fail("training forward", st);
            break;
        }
        mse(y, t, dy);
        /* gradients of sum(y * dy) + the balancing losses, += into `grads` */
        if ((st = moe_layer_backward(layer, NULL, dy))) {
            rc = fail("training backward", st);
            break;
        }
        for (size_t i = 0; i < count; i++) params[i] -= lr * grads[i]; /* plain SGD */
    }
    moe_layer_free(layer);
    if (rc) return rc;
    if (!(last < 0.5 * first)) {
        fprintf(stderr, "train_layer: the loss did not fall enough: %.5f -> %.5f\n", first, last);
        return 1;
    }
    printf("loss %.5f -> %.5f\n", first, last);
    return 0;
}
