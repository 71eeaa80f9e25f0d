/* small_gemm.c - the expert products at the sizes a sparse layer gives them (R = 8..128 rows per
 * expert): OpenBLAS's sgemm against libxsmm's JIT kernels, one thread, Y[R,h] = X[R,d] W[d,h]
 * (row-major, as experts.c computes it; libxsmm is column-major, so it runs Y^T = W^T X^T with
 * m = h, n = R, k = d on the same buffers). Prints one JSON line per shape: median GFLOP/s of each
 * over REPS timed runs of enough products to last about 20 ms, and their ratio.
 * Issue 12, item 4: the measurement that decides which to use for which shape. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <libxsmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 7;
    openblas_set_num_threads(1);
    libxsmm_init();
    const int shapes[][2] = {{128, 256}, {256, 128}, {512, 1024}, {1024, 512}}; /* (d, h): W1 and W2 of two models */
    const int rows[] = {8, 16, 32, 64, 128};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            const int d = shapes[s][0], h = shapes[s][1], R = rows[r];
            float *X = malloc(sizeof(float) * (size_t)R * d), *W = malloc(sizeof(float) * (size_t)d * h);
            float *Y1 = calloc((size_t)R * h, sizeof(float)), *Y2 = calloc((size_t)R * h, sizeof(float));
            for (int i = 0; i < R * d; i++) X[i] = (float)((i * 7919) % 97) / 97.0f - 0.5f;
            for (int i = 0; i < d * h; i++) W[i] = (float)((i * 104729) % 89) / 89.0f - 0.5f;
            const float alpha = 1.0f, beta = 0.0f;
            const libxsmm_blasint m = h, n = R, k = d, lda = h, ldb = d, ldc = h;
            libxsmm_smmfunction kern = libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &alpha, &beta, NULL, NULL);
            if (!kern) {
                printf("{\"d\":%d,\"h\":%d,\"rows\":%d,\"libxsmm\":null}\n", d, h, R);
                continue;
            }
            const double flops = 2.0 * R * d * h;
            const int inner = (int)(2e-2 * 50e9 / flops) + 1; /* about 20 ms at 50 GFLOP/s */
            double tb[64], tx[64];
            for (int q = -1; q < reps && q < 64; q++) { /* alternated; q = -1 warms up */
                double t0 = now();
                for (int i = 0; i < inner; i++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, h, d, 1.0f, X, d, W, h, 0.0f, Y1, h);
                double t1 = now();
                for (int i = 0; i < inner; i++) kern(W, X, Y2);
                double t2 = now();
                if (q >= 0) tb[q] = t1 - t0, tx[q] = t2 - t1;
            }
            qsort(tb, (size_t)reps, sizeof(double), cmp);
            qsort(tx, (size_t)reps, sizeof(double), cmp);
            double maxdiff = 0.0;
            for (int i = 0; i < R * h; i++) {
                const double e = (double)Y1[i] - Y2[i];
                if ((e < 0 ? -e : e) > maxdiff) maxdiff = e < 0 ? -e : e;
            }
            const double gb = flops * inner / tb[reps / 2] / 1e9, gx = flops * inner / tx[reps / 2] / 1e9;
            printf("{\"d\":%d,\"h\":%d,\"rows\":%d,\"openblas_gflops\":%.2f,\"libxsmm_gflops\":%.2f,\"libxsmm_over_openblas\":%.3f,"
                   "\"max_abs_diff\":%.2e}\n", d, h, R, gb, gx, gx / gb, maxdiff);
            fflush(stdout);
            free(X), free(W), free(Y1), free(Y2);
        }
    libxsmm_finalize();
    return 0;
}
