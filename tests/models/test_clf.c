/* test_clf.c - the classifier (moe_clf): finite-difference check of the gradient of
 * loss + aux (cross-entropy and the MoE layer's balancing losses, gate noise on) with respect to
 * every tensor of its table, dense layers and MoE layer alike; the table itself; and argument
 * errors, each a status with a message. */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_clf *m;
    const float *x;
    const int *y;
    int B;
    uint64_t seed, counter; /* the gate noise of the checked forward, replayed every time */
} ctx;

static double loss_at(void *cv) {
    ctx *c = cv;
    moe_layer_set_rng(moe_clf_moe(c->m), c->seed, c->counter);
    moe_clf_stats st;
    if (moe_clf_forward(c->m, c->x, c->y, c->B, MOE_TRAIN, &st)) {
        fprintf(stderr, "forward failed: %s\n", moe_last_error());
        exit(2);
    }
    return st.loss + st.aux;
}

static moe_clf_config small_config(void) {
    moe_clf_config cfg = moe_clf_config_default();
    cfg.in = 5;
    cfg.classes = 4;
    cfg.moe.d = 6;
    cfg.moe.h = 7;
    cfg.moe.n = 5;
    cfg.moe.k = 2;
    cfg.moe.bias = 1;
    cfg.moe.w_importance = 0.3f;
    cfg.moe.w_load = 0.2f;
    return cfg;
}

static void gradcheck(void) {
    const moe_clf_config cfg = small_config();
    moe_clf *m = NULL;
    CHECK(moe_clf_create(&m, &cfg, 9) == MOE_OK && m, "create: %s", moe_last_error());
    if (!m) return;
    /* a routed gate, not the zero init */
    moe_layer *ml = moe_clf_moe(m);
    moe_param p;
    moe_layer_find_param(ml, "gate.w_gate", &p);
    t_fill_uniform(p.data, p.numel, 0.8f, 77);
    moe_layer_find_param(ml, "gate.w_noise", &p);
    t_fill_uniform(p.data, p.numel, 0.5f, 78);
    /* nonzero biases, so their gradients reach every term */
    const int nt = moe_clf_num_tensors(m);
    for (int i = 0; i < nt; i++) {
        moe_clf_tensor(m, i, &p);
        if (strstr(p.name, ".b")) t_fill_uniform(p.data, p.numel, 0.2f, 100 + (uint64_t)i);
    }
    enum { B = 7 };
    float x[B * 5];
    int y[B];
    t_fill_normal(x, sizeof x / sizeof x[0], 31);
    for (int r = 0; r < B; r++) y[r] = (int)(t_mix(500 + r) % 4);
    ctx c = {m, x, y, B, 0, 0};
    moe_layer_get_rng(ml, &c.seed, &c.counter);
    moe_clf_zero_grad(m);
    loss_at(&c);
    CHECK(moe_clf_backward(m) == MOE_OK, "backward: %s", moe_last_error());
    CHECK(moe_clf_backward(m) == MOE_ERR_STATE, "a second backward of one forward is refused");
    /* snapshot every analytic gradient: the finite differences below overwrite the forward */
    CHECK(nt == 4 + 6, "table: 4 dense tensors and the layer's 6 (with biases), got %d", nt);
    moe_param ps[16];
    float *ana[16];
    const char *want[] = {"clf.w1", "clf.b1", "clf.w2", "clf.b2", "moe.gate.w_gate"};
    for (int i = 0; i < nt && i < 16; i++) {
        moe_clf_tensor(m, i, &ps[i]);
        if (i < 5) CHECK(strcmp(ps[i].name, want[i]) == 0, "tensor %d is %s, want %s", i, ps[i].name, want[i]);
        ana[i] = malloc(sizeof(float) * ps[i].numel);
        memcpy(ana[i], ps[i].grad, sizeof(float) * ps[i].numel);
    }
    CHECK(ps[0].ndim == 2 && ps[0].shape[0] == 5 && ps[0].shape[1] == 6 && ps[3].ndim == 1 && ps[3].shape[0] == 4,
          "clf.w1 [in,d], clf.b2 [C]");
    int kinks = 0, total = 0;
    for (int i = 0; i < nt && i < 16; i++) {
        t_check_grad(loss_at, &c, ps[i].name, ps[i].data, ana[i], ps[i].numel, &kinks);
        total += (int)(ps[i].numel > 120 ? 60 : ps[i].numel);
        free(ana[i]);
    }
    CHECK(kinks * 10 <= total, "too many kinks: %d of %d", kinks, total);
    /* the logits agree with the loss: eval forward, then cross-entropy by hand */
    moe_clf_stats st;
    CHECK(moe_clf_forward(m, x, y, B, MOE_EVAL, &st) == MOE_OK, "eval forward");
    float logits[B * 4];
    CHECK(moe_clf_logits(m, logits) == MOE_OK, "logits");
    double xent = 0.0;
    int hits = 0;
    for (int r = 0; r < B; r++) {
        const float *l = logits + r * 4;
        double mx = l[0], s = 0.0;
        int arg = 0;
        for (int j = 1; j < 4; j++)
            if (l[j] > mx) mx = l[j], arg = j;
        for (int j = 0; j < 4; j++) s += exp(l[j] - mx);
        xent += log(s) + mx - l[y[r]];
        hits += arg == y[r];
    }
    CHECK(fabs(xent / B - st.loss) < 1e-5 && hits == st.correct, "loss %.7g vs %.7g from the logits, correct %d vs %d",
          st.loss, xent / B, st.correct, hits);
    CHECK(moe_clf_forward(m, x, NULL, B, MOE_EVAL, &st) == MOE_OK && isnan(st.loss), "eval without labels: logits only");
    CHECK(moe_clf_backward(m) == MOE_ERR_STATE, "no backward after an evaluation");
    moe_clf_free(m);
}

/* A failing call returns its status and says why; the next good call clears the message. */
static void expect_fail(moe_status got, moe_status want, const char *what) {
    CHECK(got == want && moe_last_error()[0] != '\0', "%s: status %d (want %d), message '%s'", what, (int)got,
          (int)want, moe_last_error());
}

static void contracts(void) {
    moe_clf_config cfg = small_config();
    moe_clf *m = (moe_clf *)&cfg; /* not NULL: create must set *out to NULL on failure */
    expect_fail(moe_clf_create(NULL, &cfg, 1), MOE_ERR_INVALID_ARG, "create with out NULL");
    expect_fail(moe_clf_create(&m, NULL, 1), MOE_ERR_INVALID_ARG, "create with cfg NULL");
    CHECK(m == NULL, "*out NULL after a failed create");
    cfg.classes = 1;
    expect_fail(moe_clf_create(&m, &cfg, 1), MOE_ERR_CONFIG, "one class");
    cfg = small_config();
    cfg.in = 0;
    expect_fail(moe_clf_create(&m, &cfg, 1), MOE_ERR_CONFIG, "no inputs");
    cfg = small_config();
    cfg.moe.k = 6;
    expect_fail(moe_clf_create(&m, &cfg, 1), MOE_ERR_CONFIG, "k > n");
    CHECK(strstr(moe_last_error(), "k") != NULL, "the k > n message names k: %s", moe_last_error());
    cfg = small_config();
    CHECK(moe_clf_create(&m, &cfg, 1) == MOE_OK && moe_last_error()[0] == '\0', "create clears the error");
    float x[3 * 5] = {0}, logits[3 * 4];
    int y[3] = {0, 1, 3};
    expect_fail(moe_clf_logits(m, logits), MOE_ERR_STATE, "logits before a forward");
    expect_fail(moe_clf_backward(m), MOE_ERR_STATE, "backward before a forward");
    expect_fail(moe_clf_forward(NULL, x, y, 3, MOE_TRAIN, NULL), MOE_ERR_INVALID_ARG, "forward of NULL");
    expect_fail(moe_clf_forward(m, NULL, y, 3, MOE_TRAIN, NULL), MOE_ERR_INVALID_ARG, "forward of x NULL");
    expect_fail(moe_clf_forward(m, x, NULL, 3, MOE_TRAIN, NULL), MOE_ERR_INVALID_ARG, "training without labels");
    expect_fail(moe_clf_forward(m, x, y, 0, MOE_TRAIN, NULL), MOE_ERR_SHAPE, "B = 0");
    expect_fail(moe_clf_forward(m, x, y, 3, (moe_mode)7, NULL), MOE_ERR_INVALID_ARG, "unknown mode");
    y[2] = 4;
    expect_fail(moe_clf_forward(m, x, y, 3, MOE_TRAIN, NULL), MOE_ERR_INVALID_ARG, "label = classes");
    y[2] = -1;
    expect_fail(moe_clf_forward(m, x, y, 3, MOE_TRAIN, NULL), MOE_ERR_INVALID_ARG, "negative label");
    y[2] = 3;
    x[4] = NAN;
    expect_fail(moe_clf_forward(m, x, y, 3, MOE_TRAIN, NULL), MOE_ERR_NONFINITE, "NaN input");
    x[4] = 0.0f;
    CHECK(moe_clf_forward(m, x, y, 3, MOE_TRAIN, NULL) == MOE_OK && moe_last_error()[0] == '\0', "forward clears the error");
    moe_param p;
    expect_fail(moe_clf_tensor(m, moe_clf_num_tensors(m), &p), MOE_ERR_INVALID_ARG, "tensor index past the end");
    expect_fail(moe_clf_tensor(m, -1, &p), MOE_ERR_INVALID_ARG, "negative tensor index");
    expect_fail(moe_clf_tensor(NULL, 0, &p), MOE_ERR_INVALID_ARG, "tensor of NULL");
    CHECK(moe_clf_num_tensors(NULL) == 0 && moe_clf_moe(NULL) == NULL, "NULL model: no tensors, no layer");
    /* the same seed gives the same model */
    moe_clf *m2 = NULL;
    moe_clf_create(&m2, &cfg, 1);
    int same = moe_clf_num_tensors(m) == moe_clf_num_tensors(m2);
    for (int i = 0; same && i < moe_clf_num_tensors(m); i++) {
        moe_param a, b;
        moe_clf_tensor(m, i, &a);
        moe_clf_tensor(m2, i, &b);
        same = a.numel == b.numel && memcmp(a.data, b.data, sizeof(float) * a.numel) == 0;
    }
    CHECK(same, "same seed, same parameters");
    moe_clf_zero_grad(NULL);
    moe_clf_free(NULL);
    moe_clf_free(m2);
    moe_clf_free(m);
}

int main(void) {
    moe_set_threads(1);
    gradcheck();
    contracts();
    return test_finish("test_clf");
}
