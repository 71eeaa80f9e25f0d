/* test_s2s_parity.c - parity with PyTorch for one training step of the translation model: every
 * s2s_<case>.safetensors in tests/golden (written by gen_golden_s2s.py from a float64 torch
 * reference) is loaded into a model (parameters, dropout and gate-noise streams), run through
 * moe_s2s_forward(MOE_TRAIN) + moe_s2s_backward, and the loss and every parameter gradient (dense
 * arena and both MoE layers) compared: max|got - want| / max(max|want|, 1e-6) <= 1e-5 per tensor.
 * Each case runs with one and with two threads, and both runs must agree bit for bit. */
#include "moe.h"
#include "models/s2s.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define RTOL 1e-5

static const char *const CASES[] = {"bi_moe", "uni2", "l1"};

static int meta_int(const moe_st *f, const char *k, long long *v) {
    const char *s = moe_st_meta(f, k);
    CHECK(s != NULL, "golden metadata lacks '%s'", k);
    if (!s) return 0;
    *v = strtoll(s, NULL, 10);
    return 1;
}
static uint64_t meta_u64(const moe_st *f, const char *k) {
    const char *s = moe_st_meta(f, k);
    CHECK(s != NULL, "golden metadata lacks '%s'", k);
    return s ? strtoull(s, NULL, 10) : 0;
}
static float meta_f(const moe_st *f, const char *k) {
    const char *s = moe_st_meta(f, k);
    CHECK(s != NULL, "golden metadata lacks '%s'", k);
    return s ? strtof(s, NULL) : 0.0f;
}

static const void *tensor(const moe_st *f, const char *name, size_t n) {
    moe_tensor t;
    moe_status s = moe_st_get(f, name, &t);
    CHECK(s == MOE_OK && t.numel == n, "tensor %s: status %d, %zu values (want %zu)", name, (int)s, s ? 0 : t.numel, n);
    return s == MOE_OK && t.numel == n ? t.data : NULL;
}

/* one run; returns the gradients concatenated (malloc'ed) for the thread comparison */
static float *run_case(const char *name, const moe_st *f, double *worst, size_t *total) {
    long long V[11];
    const char *ik[] = {"src_vocab", "tgt_vocab", "d", "layers", "bidir", "moe", "n", "k", "h", "B", "Ts"};
    for (int i = 0; i < 11; i++)
        if (!meta_int(f, ik[i], &V[i])) return NULL;
    long long Tt;
    if (!meta_int(f, "Tt", &Tt)) return NULL;
    moe_s2s_config c = moe_s2s_config_default();
    c.src_vocab = (int)V[0], c.tgt_vocab = (int)V[1], c.d = (int)V[2], c.layers = (int)V[3], c.bidir = (int)V[4];
    c.moe = (int)V[5], c.n = (int)V[6], c.k = (int)V[7], c.h = (int)V[8];
    c.w_importance = meta_f(f, "w_importance");
    c.w_load = meta_f(f, "w_load");
    c.noise_eps = meta_f(f, "noise_eps");
    c.dropout = meta_f(f, "dropout");
    c.max_len = (int)Tt;
    const int B = (int)V[9], Ts = (int)V[10];
    moe_s2s *m = NULL;
    CHECK(moe_s2s_create(&m, &c, meta_u64(f, "seed")) == MOE_OK, "s2s_%s: create: %s", name, moe_last_error());
    if (!m) return NULL;
    for (int s = 0; s < 2 && c.moe; s++) {
        char k1[32], k2[32];
        snprintf(k1, sizeof k1, "moe%d_seed", s);
        snprintf(k2, sizeof k2, "moe%d_counter", s);
        moe_layer_set_rng(moe_s2s_moe(m, s), meta_u64(f, k1), meta_u64(f, k2));
    }
    s2s_set_step_counter(m, meta_u64(f, "step") - 1); /* the train forward takes the next */
    moe_param ps[48];
    char pn[48][64];
    int np = 0;
    for (int i = 0; i < moe_s2s_num_params(m); i++, np++) {
        moe_s2s_param(m, i, &ps[np]);
        snprintf(pn[np], sizeof pn[np], "%s", ps[np].name);
    }
    for (int s = 0; s < 2; s++) {
        moe_layer *ml = moe_s2s_moe(m, s);
        for (int i = 0; ml && i < moe_layer_num_params(ml); i++, np++) {
            moe_layer_param(ml, i, &ps[np]);
            snprintf(pn[np], sizeof pn[np], "moe%d.%s", s, ps[np].name);
        }
    }
    int have = 0;
    size_t gsz = 0;
    for (int i = 0; i < np; i++) {
        if (strncmp(pn[i], "baseline.", 9) == 0) continue; /* not part of the loss */
        const float *v = tensor(f, pn[i], ps[i].numel);
        if (v) memcpy(ps[i].data, v, sizeof(float) * ps[i].numel), have++;
        gsz += ps[i].numel;
    }
    const int32_t *src = tensor(f, "src", (size_t)B * Ts), *in = tensor(f, "in", (size_t)B * Tt),
                  *tgt = tensor(f, "tgt", (size_t)B * Tt);
    const float *coef = tensor(f, "coef", (size_t)B * Tt), *wl = tensor(f, "loss", 1);
    float *grads = malloc(sizeof(float) * (gsz + 1));
    if (!src || !in || !tgt || !coef || !wl || !grads) {
        free(grads);
        moe_s2s_free(m);
        return NULL;
    }
    moe_s2s_zero_grad(m);
    double loss = 0;
    CHECK(moe_s2s_forward(m, src, B, Ts, in, tgt, coef, (int)Tt, MOE_TRAIN, &loss) == MOE_OK, "s2s_%s forward: %s", name,
          moe_last_error());
    CHECK(moe_s2s_backward(m) == MOE_OK, "s2s_%s backward", name);
    float lf = (float)loss;
    double e = t_rel_err(&lf, wl, 1);
    CHECK(e <= RTOL, "s2s_%s: loss %.9g want %.9g", name, loss, wl[0]);
    *worst = e;
    size_t o = 0;
    for (int i = 0; i < np; i++) {
        if (strncmp(pn[i], "baseline.", 9) == 0) continue;
        char gname[96];
        snprintf(gname, sizeof gname, "grad.%.63s", pn[i]);
        const float *want = tensor(f, gname, ps[i].numel);
        if (want) {
            double ge = t_rel_err(ps[i].grad, want, ps[i].numel);
            CHECK(ge <= RTOL, "s2s_%s: %s rel.err %.3g > %g", name, gname, ge, RTOL);
            if (ge > *worst) *worst = ge;
        }
        memcpy(grads + o, ps[i].grad, sizeof(float) * ps[i].numel);
        o += ps[i].numel;
    }
    CHECK(have == np - 2, "s2s_%s: %d of %d parameters in the golden file", name, have, np - 2);
    *total = o;
    moe_s2s_free(m);
    return grads;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden";
    for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/s2s_%s.safetensors", dir, CASES[ci]);
        moe_st *f = NULL;
        CHECK(moe_st_open(&f, path) == MOE_OK, "open %s: %s (regenerate: /usr/bin/python3 tests/gen_golden_s2s.py)", path,
              moe_last_error());
        if (!f) continue;
        double w1 = 0, w2 = 0;
        size_t n1 = 0, n2 = 0;
        moe_set_threads(1);
        float *g1 = run_case(CASES[ci], f, &w1, &n1);
        moe_set_threads(2);
        float *g2 = run_case(CASES[ci], f, &w2, &n2);
        CHECK(g1 && g2 && n1 == n2 && memcmp(g1, g2, sizeof(float) * n1) == 0, "s2s_%s: 1 and 2 threads agree bit for bit",
              CASES[ci]);
        printf("s2s_%-7s worst rel.err %.2e over the loss and %zu gradient values\n", CASES[ci], w1, n1);
        free(g1);
        free(g2);
        moe_st_free(f);
    }
    return test_finish("test_s2s_parity");
}
