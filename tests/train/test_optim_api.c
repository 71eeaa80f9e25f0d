/* test_optim_api.c - the public optimiser over a model's tensors (moe_optim): on a layer, its
 * steps equal bit for bit the same steps done by hand (the global gradient norm, the clip, one
 * moe_adam_step over the layer's arena), plain and factored; a NaN gradient is
 * MOE_ERR_NONFINITE and changes nothing; argument errors; the models' optimisers step. */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { B = 9, D = 6 };

static moe_layer *make_layer(void) {
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = D;
    cfg.h = 5;
    cfg.n = 4;
    cfg.k = 2;
    cfg.bias = 1;
    moe_layer *l = NULL;
    CHECK(moe_layer_create(&l, &cfg, 11) == MOE_OK, "layer: %s", moe_last_error());
    moe_param p;
    moe_layer_find_param(l, "gate.w_gate", &p);
    t_fill_uniform(p.data, p.numel, 0.7f, 5);
    return l;
}

/* One forward and backward of step s's batch: the gradients of sum(y * dy) + the balancing
 * losses, the same for every layer made by make_layer. */
static void gradients(moe_layer *l, int s) {
    float x[B * D], dy[B * D], y[B * D];
    t_fill_normal(x, B * D, 40 + (uint64_t)s);
    t_fill_normal(dy, B * D, 80 + (uint64_t)s);
    moe_layer_zero_grad(l);
    CHECK(moe_layer_forward(l, y, x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward");
    CHECK(moe_layer_backward(l, NULL, dy) == MOE_OK, "backward");
}

/* The same step by hand: the norm over the whole arena, the trainers' clip, Adam. */
static double hand_step(moe_adam *a, float *params, float *grads, size_t count, float lr, float clip) {
    double n2 = 0.0;
    for (size_t i = 0; i < count; i++) n2 += (double)grads[i] * grads[i];
    const double norm = sqrt(n2);
    if (clip > 0.0f && norm > clip)
        for (size_t i = 0; i < count; i++) grads[i] *= (float)(clip / norm);
    CHECK(moe_adam_step(a, params, grads, lr) == MOE_OK, "hand Adam step");
    return norm;
}

static void against_hand(int factored) {
    moe_layer *la = make_layer(), *lb = make_layer();
    moe_adam_config cfg = factored ? moe_adam_config_factored() : moe_adam_config_default();
    cfg.weight_decay = 0.01f;
    moe_optim *o = NULL;
    CHECK(moe_optim_create_layer(&o, la, &cfg) == MOE_OK && o, "create: %s", moe_last_error());
    float *pa, *ga, *pb, *gb;
    size_t na, nb;
    moe_layer_arena(la, &pa, &ga, &na);
    moe_layer_arena(lb, &pb, &gb, &nb);
    moe_adam *hand = NULL;
    moe_adam_create(&hand, nb, &cfg);
    /* the matrices the optimiser declares from the layer's table: every weight matrix or stack
     * of them; the experts' biases are vectors */
    for (int i = 0; i < moe_layer_num_params(lb); i++) {
        moe_param p;
        moe_layer_param(lb, i, &p);
        if (p.ndim < 2 || strncmp(p.name, "experts.b", 9) == 0) continue;
        const int64_t count = p.ndim == 3 ? p.shape[0] : 1;
        moe_adam_set_matrices(hand, (size_t)(p.data - pb), count, p.shape[p.ndim - 2], p.shape[p.ndim - 1]);
    }
    CHECK(na == nb && memcmp(pa, pb, sizeof(float) * na) == 0, "the two layers start equal");
    const float clips[] = {0.05f, 0.0f, 1e6f, 0.2f}; /* clipped, off, above the norm, clipped */
    for (int s = 0; s < 4; s++) {
        gradients(la, s);
        gradients(lb, s);
        double norm = -1.0;
        CHECK(moe_optim_step(o, 1e-2f, clips[s], &norm) == MOE_OK && moe_last_error()[0] == '\0', "step: %s",
              moe_last_error());
        const double want = hand_step(hand, pb, gb, nb, 1e-2f, clips[s]);
        CHECK(norm == want, "factored %d step %d: norm %.17g, by hand %.17g", factored, s, norm, want);
        CHECK(memcmp(ga, gb, sizeof(float) * na) == 0, "factored %d step %d: clipped gradients bit for bit", factored, s);
        CHECK(memcmp(pa, pb, sizeof(float) * na) == 0, "factored %d step %d: parameters bit for bit", factored, s);
    }
    CHECK(moe_optim_state_floats(o) > 0, "state floats");
    if (!factored) CHECK(moe_optim_state_floats(o) == 2 * (int64_t)na, "two moments of Adam over the arena");

    /* a NaN gradient: no step at all (parameters, gradients and the moments as they were) */
    gradients(la, 9);
    gradients(lb, 9);
    float *p0 = malloc(sizeof(float) * na), *g0 = malloc(sizeof(float) * na);
    memcpy(p0, pa, sizeof(float) * na);
    const float keep = ga[3];
    ga[3] = NAN;
    memcpy(g0, ga, sizeof(float) * na);
    double norm = 0.0;
    const moe_status st = moe_optim_step(o, 1e-2f, 0.1f, &norm);
    CHECK(st == MOE_ERR_NONFINITE && strstr(moe_last_error(), "norm"), "NaN gradient: status %d, '%s'", (int)st,
          moe_last_error());
    CHECK(isnan(norm), "the reported norm is NaN");
    CHECK(memcmp(pa, p0, sizeof(float) * na) == 0, "NaN gradient: parameters unchanged");
    CHECK(memcmp(ga, g0, sizeof(float) * na) == 0, "NaN gradient: gradients unchanged (not scaled)");
    ga[3] = keep;
    CHECK(moe_optim_step(o, 1e-2f, 0.1f, NULL) == MOE_OK, "the step after");
    hand_step(hand, pb, gb, nb, 1e-2f, 0.1f);
    CHECK(memcmp(pa, pb, sizeof(float) * na) == 0, "after the refused step the moments are as by hand");
    free(p0);
    free(g0);
    moe_adam_free(hand);
    moe_optim_free(o);
    moe_layer_free(la);
    moe_layer_free(lb);
}

static void expect_fail(moe_status got, moe_status want, const char *what) {
    CHECK(got == want && moe_last_error()[0] != '\0', "%s: status %d (want %d), message '%s'", what, (int)got,
          (int)want, moe_last_error());
}

static void contracts(void) {
    moe_layer *l = make_layer();
    const moe_adam_config cfg = moe_adam_config_default();
    moe_optim *o = (moe_optim *)&cfg;
    expect_fail(moe_optim_create_layer(NULL, l, &cfg), MOE_ERR_INVALID_ARG, "out NULL");
    expect_fail(moe_optim_create_layer(&o, NULL, &cfg), MOE_ERR_INVALID_ARG, "layer NULL");
    CHECK(o == NULL, "*out NULL after a failed create");
    expect_fail(moe_optim_create_layer(&o, l, NULL), MOE_ERR_INVALID_ARG, "config NULL");
    expect_fail(moe_optim_create_lm(&o, NULL, &cfg), MOE_ERR_INVALID_ARG, "model NULL");
    expect_fail(moe_optim_create_s2s(&o, NULL, &cfg), MOE_ERR_INVALID_ARG, "translation model NULL");
    expect_fail(moe_optim_create_clf(&o, NULL, &cfg), MOE_ERR_INVALID_ARG, "classifier NULL");
    moe_adam_config bad = cfg;
    bad.beta2 = 1.5f;
    expect_fail(moe_optim_create_layer(&o, l, &bad), MOE_ERR_CONFIG, "beta2 1.5");
    CHECK(moe_optim_create_layer(&o, l, &cfg) == MOE_OK, "create");
    expect_fail(moe_optim_step(NULL, 1e-3f, 0.0f, NULL), MOE_ERR_INVALID_ARG, "step of NULL");
    expect_fail(moe_optim_step(o, -1e-3f, 0.0f, NULL), MOE_ERR_INVALID_ARG, "negative lr");
    expect_fail(moe_optim_step(o, NAN, 0.0f, NULL), MOE_ERR_INVALID_ARG, "NaN lr");
    expect_fail(moe_optim_step(o, 1e-3f, -1.0f, NULL), MOE_ERR_INVALID_ARG, "negative clip");
    expect_fail(moe_optim_step(o, 1e-3f, INFINITY, NULL), MOE_ERR_INVALID_ARG, "infinite clip");
    CHECK(moe_optim_state_floats(NULL) == 0, "no state of NULL");
    moe_optim_free(o);
    moe_optim_free(NULL);
    moe_layer_free(l);
}

/* Every model's optimiser covers all its tensors and moves them. */
static void models(void) {
    const moe_adam_config cfg = moe_adam_config_default();
    moe_lm_config lc = moe_lm_config_default();
    lc.vocab = 7, lc.d = 4, lc.n = 4, lc.k = 2, lc.h = 3;
    moe_lm *lm = NULL;
    moe_optim *o = NULL;
    CHECK(moe_lm_create(&lm, &lc, 1) == MOE_OK && moe_optim_create_lm(&o, lm, &cfg) == MOE_OK, "LM optimiser: %s",
          moe_last_error());
    int32_t tok[2 * 4];
    for (int i = 0; i < 8; i++) tok[i] = (int32_t)(t_mix(i) % 7);
    moe_lm_zero_grad(lm);
    moe_lm_step(lm, tok, 2, 3, 1, NULL);
    /* every tensor with a gradient moves, in both groups */
    const int nt = moe_lm_num_tensors(lm);
    float *before[32];
    for (int i = 0; i < nt && i < 32; i++) {
        moe_param p;
        moe_lm_tensor(lm, i, &p);
        before[i] = malloc(sizeof(float) * p.numel);
        memcpy(before[i], p.data, sizeof(float) * p.numel);
    }
    double norm = 0.0;
    CHECK(moe_optim_step(o, 1e-2f, 1.0f, &norm) == MOE_OK && norm > 0.0, "LM step, norm %g", norm);
    int still = 0, moved_moe = 0;
    for (int i = 0; i < nt && i < 32; i++) {
        moe_param p;
        moe_lm_tensor(lm, i, &p);
        int grad = 0, moved = 0;
        for (size_t j = 0; j < p.numel; j++) {
            grad |= p.grad[j] != 0.0f;
            moved |= p.data[j] != before[i][j];
        }
        if (grad && !moved && still++ < 3) fprintf(stderr, "  %s has a gradient but did not move\n", p.name);
        moved_moe += moved && strncmp(p.name, "moe.", 4) == 0;
        free(before[i]);
    }
    CHECK(nt > 11 && still == 0 && moved_moe > 0, "the LM's %d tensors: %d with a gradient did not move, %d of the MoE moved",
          nt, still, moved_moe);
    moe_optim_free(o);
    moe_lm_free(lm);

    moe_s2s_config sc = moe_s2s_config_default();
    sc.src_vocab = sc.tgt_vocab = 9;
    sc.d = 4, sc.n = 4, sc.h = 3;
    moe_s2s *s2s = NULL;
    CHECK(moe_s2s_create(&s2s, &sc, 1) == MOE_OK && moe_optim_create_s2s(&o, s2s, &cfg) == MOE_OK,
          "translation optimiser: %s", moe_last_error());
    int64_t numel = 0;
    for (int i = 0; i < moe_s2s_num_tensors(s2s); i++) {
        moe_param p;
        moe_s2s_tensor(s2s, i, &p);
        numel += (int64_t)p.numel;
    }
    CHECK(moe_optim_state_floats(o) >= 2 * numel, "translation: both moments of all %lld parameters",
          (long long)numel);
    CHECK(moe_optim_step(o, 1e-3f, 1.0f, &norm) == MOE_OK && norm == 0.0, "translation step of zero gradients");
    moe_optim_free(o);
    moe_s2s_free(s2s);
}

int main(void) {
    moe_set_threads(1); /* the hand-done norm sums in order, as one thread does */
    against_hand(0);
    against_hand(1);
    contracts();
    models();
    return test_finish("test_optim_api");
}
