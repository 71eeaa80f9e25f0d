/* test_gradcheck.c - finite-difference checks of every gradient of the MoE layer: x, the gate
 * weights, the expert weights and biases, through the task loss sum(y*dy) and through each
 * balancing loss on its own (so a small wrong term cannot hide under a large right one), and
 * with the balancing losses scaled by an upstream gradient (moe_layer_backward_aux).
 * Training mode uses fixed noise; an entry whose perturbation changes the top-k routing (a
 * discontinuity of the layer) is re-tried with a smaller step or skipped, and too many skips
 * fail the test. */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_layer *l;
    const float *x, *noise, *dy;
    int B, d, n;
    moe_mode mode;
    float *y, *gates;
    float aux; /* the balancing losses' upstream gradient */
} ctx;

/* L = sum(y*dy) + aux * (L_importance + L_load), accumulated in double; also the routing pattern. */
static double loss_at(ctx *c, unsigned char *route) {
    moe_layer_stats st;
    moe_status s = moe_layer_forward(c->l, c->y, c->x, c->B, c->mode, c->noise, &st);
    if (s) {
        fprintf(stderr, "forward failed: %s\n", moe_last_error());
        exit(2);
    }
    double L = 0.0;
    if (c->dy)
        for (int i = 0; i < c->B * c->d; i++) L += (double)c->y[i] * c->dy[i];
    L += (double)c->aux * ((double)st.loss_importance + (double)st.loss_load);
    if (route) {
        moe_layer_gates(c->l, c->gates);
        for (int i = 0; i < c->B * c->n; i++) route[i] = c->gates[i] > 0.0f;
    }
    return L;
}

/* Checks analytic gradient `ana` of the values `v[count]` (perturbed in place). */
static void check_tensor(ctx *c, const char *what, float *v, const float *ana, size_t count,
                         size_t stride, int *skipped, int *checked) {
    unsigned char *r0 = malloc((size_t)c->B * c->n), *r1 = malloc((size_t)c->B * c->n);
    loss_at(c, r0);
    double max_err = 0.0, max_ana = 0.0;
    int bad = 0;
    for (size_t i = 0; i < count; i += stride) {
        float orig = v[i];
        double num = 0.0, fwd = 0.0, bwd = 0.0, l0 = 0.0;
        int ok = 0;
        for (float hstep = 1e-3f; hstep >= 1.2e-4f && !ok; hstep *= 0.25f) {
            v[i] = orig + hstep;
            double lp = loss_at(c, r1);
            int same = memcmp(r0, r1, (size_t)c->B * c->n) == 0;
            v[i] = orig - hstep;
            double lm = loss_at(c, r1);
            same = same && memcmp(r0, r1, (size_t)c->B * c->n) == 0;
            v[i] = orig;
            if (!same) continue;
            l0 = loss_at(c, NULL);
            /* the step actually applied, in float */
            double hp = (double)(float)(orig + hstep) - orig, hm = orig - (double)(float)(orig - hstep);
            num = (lp - lm) / (hp + hm);
            fwd = (lp - l0) / hp;
            bwd = (l0 - lm) / hm;
            ok = 1;
        }
        if (!ok) {
            (*skipped)++;
            continue;
        }
        double a = ana[i], err = fabs(num - a);
        double tol = 1.5e-2 * fmax(fabs(num), fabs(a)) + 2e-3;
        if (err > tol) {
            /* A ReLU kink inside the step bends one side only: the other one-sided difference
             * still sees the true derivative. Counted with the skips, which are bounded. */
            double tf = 3e-2 * fmax(fabs(fwd), fabs(a)) + 4e-3, tb = 3e-2 * fmax(fabs(bwd), fabs(a)) + 4e-3;
            if (fabs(fwd - a) <= tf || fabs(bwd - a) <= tb) {
                (*skipped)++;
                continue;
            }
            if (bad < 5)
                fprintf(stderr, "  %s[%zu]: analytic %.6g numeric %.6g\n", what, i, a, num);
            bad++;
        }
        (*checked)++;
        if (err > max_err) max_err = err;
        if (fabs(a) > max_ana) max_ana = fabs(a);
    }
    CHECK(bad == 0, "%s: %d entries disagree (max abs err %.3g)", what, bad, max_err);
    free(r0);
    free(r1);
}

typedef struct {
    int d, h, n, k, bias;
    int groups, kg; /* hierarchical (SPEC 1.6) when groups > 0 */
} shape;

/* One configuration, one mode, one loss mix. Returns the largest |gradient| seen so the caller
 * can assert the case was not vacuous. */
static double run_case(shape sh, moe_mode mode, float w_imp, float w_load, int use_dy,
                       uint64_t seed, float aux) {
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = sh.d;
    cfg.h = sh.h;
    cfg.n = sh.n;
    cfg.k = sh.k;
    cfg.bias = sh.bias;
    cfg.groups = sh.groups;
    cfg.k_groups = sh.kg;
    cfg.w_importance = w_imp;
    cfg.w_load = w_load;
    cfg.noise_eps = 0.01f;
    const int B = 12;
    moe_layer *l = NULL;
    CHECK(moe_layer_create(&l, &cfg, seed) == MOE_OK, "create: %s", moe_last_error());
    if (!l) return 0.0;
    /* a trained-looking gate: random, not the zero init (which ties every logit) */
    int np = moe_layer_num_params(l);
    for (int i = 0; i < np; i++) {
        moe_param p;
        moe_layer_param(l, i, &p);
        float scale = strncmp(p.name, "gate", 4) == 0 ? 0.6f : 0.4f;
        t_fill_uniform(p.data, p.numel, scale, seed * 31 + (uint64_t)i);
    }
    const int nw = sh.groups ? sh.groups + sh.n : sh.n; /* noise draws per token */
    float *x = malloc(sizeof(float) * B * sh.d), *noise = malloc(sizeof(float) * B * nw);
    float *dy = malloc(sizeof(float) * B * sh.d), *dx = calloc((size_t)B * sh.d, sizeof(float));
    t_fill_uniform(x, (size_t)B * sh.d, 1.0f, seed + 101);
    t_fill_normal(noise, (size_t)B * nw, seed + 202);
    t_fill_uniform(dy, (size_t)B * sh.d, 1.0f, seed + 303);
    ctx c = {l, x, noise, use_dy ? dy : NULL, B, sh.d, sh.n, mode,
             malloc(sizeof(float) * B * sh.d), malloc(sizeof(float) * B * sh.n), aux};
    float *zero = calloc((size_t)B * sh.d, sizeof(float));

    moe_layer_zero_grad(l);
    loss_at(&c, NULL);
    if (aux == 1.0f)
        CHECK(moe_layer_backward(l, dx, use_dy ? dy : zero) == MOE_OK, "backward: %s", moe_last_error());
    else
        CHECK(moe_layer_backward_aux(l, dx, use_dy ? dy : zero, aux) == MOE_OK, "backward_aux: %s", moe_last_error());

    char label[160];
    int skipped = 0, checked = 0;
    double gmax = 0.0;
    for (int i = 0; i < np; i++) {
        moe_param p;
        moe_layer_param(l, i, &p);
        float *ana = malloc(sizeof(float) * p.numel);
        memcpy(ana, p.grad, sizeof(float) * p.numel);
        for (size_t j = 0; j < p.numel; j++) gmax = fmax(gmax, fabs(ana[j]));
        snprintf(label, sizeof label, "n=%d k=%d bias=%d groups=%d/%d %s imp=%g load=%g dy=%d aux=%g %s", sh.n,
                 sh.k, sh.bias, sh.groups, sh.kg, mode == MOE_TRAIN ? "train" : "eval", w_imp, w_load, use_dy, aux,
                 p.name);
        size_t stride = p.numel > 200 ? 3 : 1;
        check_tensor(&c, label, p.data, ana, p.numel, stride, &skipped, &checked);
        free(ana);
    }
    snprintf(label, sizeof label, "n=%d k=%d bias=%d %s imp=%g load=%g dy=%d x", sh.n, sh.k, sh.bias,
             mode == MOE_TRAIN ? "train" : "eval", w_imp, w_load, use_dy);
    for (int j = 0; j < B * sh.d; j++) gmax = fmax(gmax, fabs(dx[j]));
    check_tensor(&c, label, (float *)x, dx, (size_t)B * sh.d, 1, &skipped, &checked);
    CHECK(skipped * 10 <= checked, "%s: %d of %d entries skipped (routing changed)", label, skipped,
          skipped + checked);
    free(x);
    free(noise);
    free(dy);
    free(dx);
    free(zero);
    free(c.y);
    free(c.gates);
    moe_layer_free(l);
    return gmax;
}

int main(void) {
    moe_set_threads(2);
    const shape shapes[] = {
        {6, 10, 8, 2, 1, 0, 0}, /* typical */
        {6, 10, 8, 1, 0, 0, 0}, /* k = 1: task loss gives the gate no gradient, load loss does */
        {5, 7, 5, 5, 1, 0, 0},  /* k = n: load is a count (no gradient) */
        {4, 6, 9, 3, 0, 0, 0},
        {5, 6, 12, 2, 1, 3, 2}, /* hierarchical: 3 groups of 4, 2 groups x 2 experts per token */
        {4, 5, 12, 1, 0, 4, 2}, /* hierarchical, one expert per group */
        {4, 5, 8, 2, 0, 2, 2},  /* hierarchical, every group taken: Load_p is a count */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int m = 0; m < 2; m++) {
            moe_mode mode = m ? MOE_TRAIN : MOE_EVAL;
            uint64_t seed = 1000 + 10 * s + m;
            double g;
            g = run_case(shapes[s], mode, 0.0f, 0.0f, 1, seed, 1.0f); /* task loss alone */
            CHECK(g > 1e-2, "task-loss gradients are all ~0 (%g)", g);
            g = run_case(shapes[s], mode, 1.0f, 0.0f, 0, seed, 1.0f); /* importance loss alone */
            if (shapes[s].k > 1) CHECK(g > 1e-3, "importance-loss gradients are all ~0 (%g)", g);
            g = run_case(shapes[s], mode, 0.0f, 1.0f, 0, seed, 1.0f); /* load loss alone */
            const int nsub = shapes[s].groups ? shapes[s].n / shapes[s].groups : shapes[s].n;
            if (mode == MOE_TRAIN && (shapes[s].k < nsub || shapes[s].kg < shapes[s].groups))
                CHECK(g > 1e-3, "load-loss gradients are all ~0 (%g)", g);
            run_case(shapes[s], mode, 0.1f, 0.05f, 1, seed, 1.0f); /* everything together */
            /* the balancing losses through an upstream gradient: scaled, negative, left out */
            g = run_case(shapes[s], mode, 1.0f, 1.0f, 0, seed, -2.5f);
            if (shapes[s].k > 1) CHECK(g > 2e-3, "aux-scaled gradients are all ~0 (%g)", g);
            g = run_case(shapes[s], mode, 1.0f, 1.0f, 0, seed, 0.0f);
            CHECK(g == 0.0, "aux_grad 0 without dy: every gradient exactly 0 (max %g)", g);
        }
    }
    return test_finish("test_gradcheck");
}
