/* test_optim.c - Adam and the paper's factored variant against a double-precision reference
 * written from the formulas (SPEC 1.7), over several steps on an arena that mixes stacked
 * matrices, a single matrix and vectors; the state sizes; thread-count independence; bad
 * declarations. */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* arena: [0,6) vector | [6, 6+3*5*7) three 5x7 matrices | 5 vector | [116, 116+40*70) one 40x70 */
enum { V0 = 6, Q = 3, R1 = 5, C1 = 7, V1 = 5, R2 = 40, C2 = 70 };
#define OFF1 ((size_t)V0)
#define OFF2 (OFF1 + (size_t)Q * R1 * C1 + V1)
#define COUNT (OFF2 + (size_t)R2 * C2)

typedef struct {
    double b1, b2, eps, wd;
    int factored;
    double *p, *m, *v; /* v per element (full variant) */
    double *R[Q + 1], *C[Q + 1];
    int64_t t;
} ref_adam;

static void ref_init(ref_adam *r, const float *p0, double b1, int factored) {
    memset(r, 0, sizeof *r);
    r->b1 = b1;
    r->b2 = 0.999;
    r->eps = 1e-8;
    r->wd = 0.01;
    r->factored = factored;
    r->p = calloc(COUNT, sizeof(double));
    r->m = calloc(COUNT, sizeof(double));
    r->v = calloc(COUNT, sizeof(double));
    for (size_t i = 0; i < COUNT; i++) r->p[i] = p0[i];
    for (int q = 0; q <= Q; q++) {
        int rows = q < Q ? R1 : R2, cols = q < Q ? C1 : C2;
        r->R[q] = calloc((size_t)rows, sizeof(double));
        r->C[q] = calloc((size_t)cols, sizeof(double));
    }
}

static void ref_free(ref_adam *r) {
    free(r->p);
    free(r->m);
    free(r->v);
    for (int q = 0; q <= Q; q++) {
        free(r->R[q]);
        free(r->C[q]);
    }
}

/* one step; vhat[i] is formed per element, from v or from R and C */
static void ref_step(ref_adam *r, const float *g, double lr) {
    r->t++;
    double c1 = 1.0 - pow(r->b1, (double)r->t), c2 = 1.0 - pow(r->b2, (double)r->t);
    double *vhat = calloc(COUNT, sizeof(double));
    for (size_t i = 0; i < COUNT; i++) {
        r->v[i] = r->b2 * r->v[i] + (1 - r->b2) * (double)g[i] * g[i];
        vhat[i] = r->v[i] / c2;
    }
    if (r->factored) {
        for (int q = 0; q <= Q; q++) {
            int rows = q < Q ? R1 : R2, cols = q < Q ? C1 : C2;
            size_t o = q < Q ? OFF1 + (size_t)q * R1 * C1 : OFF2;
            double mr = 0;
            for (int i = 0; i < rows; i++) {
                double s = 0;
                for (int j = 0; j < cols; j++) s += (double)g[o + i * cols + j] * g[o + i * cols + j];
                r->R[q][i] = r->b2 * r->R[q][i] + (1 - r->b2) * s / cols;
                mr += r->R[q][i] / rows;
            }
            for (int j = 0; j < cols; j++) {
                double s = 0;
                for (int i = 0; i < rows; i++) s += (double)g[o + i * cols + j] * g[o + i * cols + j];
                r->C[q][j] = r->b2 * r->C[q][j] + (1 - r->b2) * s / rows;
            }
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) vhat[o + i * cols + j] = r->R[q][i] * r->C[q][j] / mr / c2;
        }
    }
    for (size_t i = 0; i < COUNT; i++) {
        double mm = g[i];
        if (r->b1 > 0) {
            r->m[i] = r->b1 * r->m[i] + (1 - r->b1) * g[i];
            mm = r->m[i] / c1;
        }
        r->p[i] -= lr * mm / (sqrt(vhat[i]) + r->eps) + lr * r->wd * r->p[i];
    }
    free(vhat);
}

static moe_adam *make(float b1, int factored) {
    moe_adam_config c = factored ? moe_adam_config_factored() : moe_adam_config_default();
    c.beta1 = b1;
    c.weight_decay = 0.01f;
    moe_adam *a = NULL;
    CHECK(moe_adam_create(&a, COUNT, &c) == MOE_OK, "create");
    /* declared out of order: the layout sorts them */
    CHECK(moe_adam_set_matrices(a, OFF2, 1, R2, C2) == MOE_OK, "declare the single matrix");
    CHECK(moe_adam_set_matrices(a, OFF1, Q, R1, C1) == MOE_OK, "declare the stack");
    return a;
}

/* gradients of varying scale per row and column, so the factored estimate is not exact */
static void grads(float *g, int step) {
    t_fill_normal(g, COUNT, 100 + (uint64_t)step);
    for (size_t i = 0; i < COUNT; i++) g[i] *= 0.1f + (float)((i * 7 + (size_t)step) % 13) / 4.0f;
}

static void run_case(float b1, int factored) {
    float *p = malloc(sizeof(float) * COUNT), *g = malloc(sizeof(float) * COUNT);
    t_fill_uniform(p, COUNT, 1.0f, 7);
    ref_adam r;
    ref_init(&r, p, b1, factored);
    moe_adam *a = make(b1, factored);
    double worst = 0;
    for (int s = 1; s <= 6; s++) {
        grads(g, s);
        CHECK(moe_adam_step(a, p, g, 0.01f) == MOE_OK, "step %d", s);
        ref_step(&r, g, 0.01);
        for (size_t i = 0; i < COUNT; i++) {
            double e = fabs(p[i] - r.p[i]) / (fabs(r.p[i]) + 0.1);
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 1e-5, "beta1=%g factored=%d: parameters match the reference after 6 steps (worst rel err %.2e)", b1,
          factored, worst);
    moe_adam_state_view sv;
    CHECK(moe_adam_state(a, &sv) == MOE_OK && *sv.step == 6, "state and step");
    size_t want_v = factored ? COUNT - (size_t)Q * R1 * C1 - (size_t)R2 * C2 + (size_t)Q * (R1 + C1) + (R2 + C2) : COUNT;
    CHECK(sv.v_count == want_v, "v holds %zu floats (want %zu)", sv.v_count, want_v);
    CHECK(b1 > 0 ? (sv.m != NULL && sv.m_count == COUNT) : (sv.m == NULL && sv.m_count == 0), "m present iff beta1 > 0");
    CHECK(moe_adam_set_matrices(a, 0, 1, 2, 3) == MOE_ERR_INVALID_ARG, "declaring after the layout is fixed is refused");
    /* per-tensor views: a vector run, the stack, a part of the stack */
    float *rm = NULL, *rv = NULL;
    size_t rl = 0;
    CHECK(moe_adam_range_state(a, 0, V0, &rm, &rv, &rl) == MOE_OK && rl == V0 && (b1 > 0) == (rm != NULL) &&
              rv == sv.v,
          "range state of the leading vector");
    size_t want_stack = factored ? (size_t)Q * (R1 + C1) : (size_t)Q * R1 * C1;
    CHECK(moe_adam_range_state(a, OFF1, (size_t)Q * R1 * C1, &rm, &rv, &rl) == MOE_OK && rl == want_stack &&
              (!rm || rm == sv.m + OFF1),
          "range state of the stacked matrices (%zu floats of v)", rl);
    CHECK(moe_adam_range_state(a, OFF1, (size_t)R1 * C1, &rm, &rv, &rl) == (factored ? MOE_ERR_SHAPE : MOE_OK),
          "one matrix of a factored stack is not a range of its own");
    CHECK(moe_adam_range_state(a, COUNT - 1, 2, &rm, &rv, &rl) == MOE_ERR_SHAPE, "a range past the end is refused");
    moe_adam_free(a);
    ref_free(&r);
    free(p);
    free(g);
}

/* The factored estimate is exact when the squared gradients are an outer product: then the
 * factored and the full optimiser must agree. */
static void test_rank_one_exact(void) {
    float *p1 = malloc(sizeof(float) * COUNT), *p2 = malloc(sizeof(float) * COUNT), *g = malloc(sizeof(float) * COUNT);
    t_fill_uniform(p1, COUNT, 1.0f, 3);
    memcpy(p2, p1, sizeof(float) * COUNT);
    moe_adam *full = make(0.0f, 0), *fac = make(0.0f, 1);
    for (int s = 1; s <= 3; s++) {
        /* g_ij = sign * a_i * b_j with a, b fixed: every step's g^2 is rank one */
        for (size_t e = 0; e < COUNT; e++) g[e] = ((t_mix(e + 1000 * (size_t)s) & 1) ? 1.0f : -1.0f);
        for (int i = 0; i < R2; i++)
            for (int j = 0; j < C2; j++) g[OFF2 + i * C2 + j] *= (0.5f + i * 0.1f) * (1.0f + (j % 5));
        moe_adam_step(full, p1, g, 0.01f);
        moe_adam_step(fac, p2, g, 0.01f);
    }
    double worst = 0;
    for (size_t i = 0; i < COUNT; i++) worst = fmax(worst, fabs(p1[i] - p2[i]));
    CHECK(worst < 1e-6, "rank-one g^2: factored equals full Adam (max diff %.2e)", worst);
    moe_adam_free(full);
    moe_adam_free(fac);
    free(p1);
    free(p2);
    free(g);
}

#ifdef _OPENMP
/* the two optimisers and three buffers of a comparison */
static void free_two(moe_adam *a1, moe_adam *a2, float *p1, float *p2, float *g) {
    moe_adam_free(a1);
    moe_adam_free(a2);
    free(p1);
    free(p2);
    free(g);
}
#endif

static void test_threads(void) {
#ifdef _OPENMP
    float *p1 = malloc(sizeof(float) * COUNT), *p2 = malloc(sizeof(float) * COUNT), *g = malloc(sizeof(float) * COUNT);
    t_fill_uniform(p1, COUNT, 1.0f, 5);
    memcpy(p2, p1, sizeof(float) * COUNT);
    moe_adam *a1 = make(0.0f, 1), *a2 = make(0.0f, 1);
    for (int s = 1; s <= 3; s++) {
        grads(g, s);
        moe_set_threads(1);
        moe_adam_step(a1, p1, g, 0.01f);
        moe_set_threads(2);
        moe_adam_step(a2, p2, g, 0.01f);
    }
    CHECK(memcmp(p1, p2, sizeof(float) * COUNT) == 0, "factored step: same bits on 1 and 2 threads");
    free_two(a1, a2, p1, p2, g);
#endif
}

/* A factored matrix large enough to be split over the threads (at the top level) and the same
 * matrix stepped on one thread from inside a parallel region (as fused expert updates are: both
 * means in one pass over the gradient) give the same bits. 150 x 130: more rows than the one-pass
 * path's row block, and columns that are not a multiple of its 8 lanes. */
static void test_split_vs_one_pass(void) {
#ifdef _OPENMP
    enum { BR = 150, BC = 130, BN = BR * BC };
    float *p1 = malloc(sizeof(float) * BN), *p2 = malloc(sizeof(float) * BN), *g = malloc(sizeof(float) * BN);
    t_fill_uniform(p1, BN, 1.0f, 6);
    memcpy(p2, p1, sizeof(float) * BN);
    moe_adam_config c = moe_adam_config_factored();
    moe_adam *a1 = NULL, *a2 = NULL;
    CHECK(moe_adam_create(&a1, BN, &c) == MOE_OK && moe_adam_create(&a2, BN, &c) == MOE_OK, "create two");
    CHECK(moe_adam_set_matrices(a1, 0, 1, BR, BC) == MOE_OK && moe_adam_set_matrices(a2, 0, 1, BR, BC) == MOE_OK,
          "declare the matrix");
    moe_set_threads(2);
    int ok = 1;
    for (int s = 1; s <= 3; s++) {
        t_fill_normal(g, BN, 300 + (uint64_t)s);
        for (int i = 0; i < BN; i++) g[i] *= 0.1f + (float)((i / BC) % 5 + (i % BC) % 7) / 3.0f;
        ok &= moe_adam_step(a1, p1, g, 0.01f) == MOE_OK;
        moe_status st2 = MOE_OK;
#pragma omp parallel num_threads(2)
#pragma omp single
        st2 = moe_adam_step(a2, p2, g, 0.01f);
        ok &= st2 == MOE_OK;
    }
    CHECK(ok, "both steps run");
    CHECK(memcmp(p1, p2, sizeof(float) * BN) == 0, "factored step: split over threads and one pass inside a region, same bits");
    free_two(a1, a2, p1, p2, g);
#endif
}

static void test_bad(void) {
    moe_adam_config c = moe_adam_config_factored();
    moe_adam *a = NULL;
    CHECK(moe_adam_create(&a, 100, &c) == MOE_OK, "create");
    CHECK(moe_adam_set_matrices(a, 90, 1, 4, 4) == MOE_ERR_SHAPE, "a block past the end is refused");
    CHECK(moe_adam_set_matrices(a, 0, 1, 0, 4) == MOE_ERR_CONFIG, "zero rows refused");
    CHECK(moe_adam_set_matrices(a, 0, 2, 4, 4) == MOE_OK && moe_adam_set_matrices(a, 20, 1, 4, 4) == MOE_OK,
          "two overlapping blocks declared");
    float p[100] = {0}, g[100] = {0};
    CHECK(moe_adam_step(a, p, g, 0.1f) == MOE_ERR_CONFIG, "overlap found at the first step");
    moe_adam_free(a);
    CHECK(moe_adam_create(&a, 0, &c) == MOE_ERR_CONFIG, "zero parameters refused");
    moe_adam_free(NULL);
}

int main(void) {
    run_case(0.9f, 0);
    run_case(0.0f, 0);
    run_case(0.0f, 1);
    run_case(0.9f, 1);
    test_rank_one_exact();
    test_threads();
    test_split_vs_one_pass();
    test_bad();
    return test_finish("test_optim");
}
