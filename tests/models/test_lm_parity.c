/* test_lm_parity.c - parity with PyTorch for one training step of the language model: every case
 * lm_<case>.safetensors in tests/golden (written by gen_golden_lm.py from a float64 torch
 * reference) is loaded into a model (parameters, carried LSTM state, random streams), run
 * through moe_lm_step(train = 1), and its loss, balancing losses, carried-out state and every
 * parameter gradient (dense arena and MoE layer) compared.
 * Error metric per tensor: max|got - want| / max(max|want|, 1e-6) <= 1e-5. Each case runs with
 * one and with two threads, and both runs must agree bit for bit.
 * lm_rng.safetensors holds values of the generator's numpy port of src/base/rng.c, which drew the
 * reference's dropout masks and gate noise; they must match the library's. */
#include "moe.h"
#include "testutil.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-5

static const char *const CASES[] = {"moe", "dense", "none"};
static const char *const SCALARS[] = {"loss", "aux", "loss.importance", "loss.load"};

#define NCASES (int)(sizeof CASES / sizeof CASES[0])
static double g_worst[NCASES]; /* largest error per case and its tensor, for the summary */
static char g_worst_name[NCASES][80];

static void compare(int ci, const moe_st *f, const char *name, const float *got, size_t n) {
    moe_tensor t;
    const float *want = NULL;
    moe_status s = moe_st_get_f32(f, name, &t, &want);
    CHECK(s == MOE_OK, "lm_%s: golden file lacks '%s'", CASES[ci], name);
    if (s) return;
    CHECK(t.numel == n, "lm_%s: '%s' has %zu values, got %zu", CASES[ci], name, t.numel, n);
    if (t.numel != n) return;
    double e = t_rel_err(got, want, n);
    if (e > g_worst[ci]) {
        g_worst[ci] = e;
        snprintf(g_worst_name[ci], sizeof g_worst_name[ci], "%.70s", name);
    }
    CHECK(e <= RTOL, "lm_%s: %s rel.err %.3g > %g", CASES[ci], name, e, RTOL);
}

/* Metadata: integers, uint64 streams and floats, each required. */
static const char *meta(const moe_st *f, const char *key, int *ok) {
    const char *v = moe_st_meta(f, key);
    if (!v) {
        *ok = 0;
        CHECK(0, "golden metadata lacks '%s'", key);
    }
    return v;
}
static uint64_t meta_u64(const moe_st *f, const char *key, int *ok) {
    const char *v = meta(f, key, ok);
    return v ? strtoull(v, NULL, 10) : 0;
}
static int meta_int(const moe_st *f, const char *key, int *ok) { return (int)meta_u64(f, key, ok); }
static float meta_f(const moe_st *f, const char *key, int *ok) {
    const char *v = meta(f, key, ok);
    return v ? strtof(v, NULL) : 0.0f;
}

/* Copies the golden values of a parameter named `name` into p (shape checked). */
static int load_param(int ci, const moe_st *f, const char *name, const moe_param *p) {
    moe_tensor t;
    const float *v = NULL;
    moe_status s = moe_st_get_f32(f, name, &t, &v);
    CHECK(s == MOE_OK, "lm_%s: golden file lacks parameter '%s'", CASES[ci], name);
    if (s) return 0;
    int same = t.ndim == p->ndim;
    for (int i = 0; same && i < t.ndim; i++) same = t.shape[i] == p->shape[i];
    CHECK(same && t.numel == p->numel, "lm_%s: '%s' shape differs from the model's", CASES[ci], name);
    if (!same || t.numel != p->numel) return 0;
    memcpy(p->data, v, sizeof(float) * p->numel);
    return 1;
}

/* Runs one case; returns loss, aux and every gradient in one buffer (*len floats) for the
 * determinism check, NULL if the case could not run. */
static float *run_case(const char *dir, int ci, int threads, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/lm_%s.safetensors", dir, CASES[ci]);
    moe_set_threads(threads);
    moe_st *f = NULL;
    moe_status s = moe_st_open(&f, path);
    CHECK(s == MOE_OK, "cannot open %s (regenerate with tests/gen_golden_lm.py): %s", path,
          moe_last_error());
    if (s) return NULL;
    int ok = 1;
    moe_lm_config cfg = moe_lm_config_default();
    cfg.vocab = meta_int(f, "vocab", &ok);
    cfg.d = meta_int(f, "d", &ok);
    cfg.n = meta_int(f, "n", &ok);
    cfg.k = meta_int(f, "k", &ok);
    cfg.h = meta_int(f, "h", &ok);
    cfg.w_importance = meta_f(f, "w_importance", &ok);
    cfg.w_load = meta_f(f, "w_load", &ok);
    cfg.noise_eps = meta_f(f, "noise_eps", &ok);
    cfg.dropout = meta_f(f, "dropout", &ok);
    const char *ffn = meta(f, "ffn", &ok);
    if (ffn && strcmp(ffn, "moe") && strcmp(ffn, "dense") && strcmp(ffn, "none")) {
        ok = 0;
        CHECK(0, "lm_%s: unknown ffn '%s'", CASES[ci], ffn);
    }
    cfg.ffn = ffn && !strcmp(ffn, "dense") ? MOE_FFN_DENSE
              : ffn && !strcmp(ffn, "none") ? MOE_FFN_NONE : MOE_FFN_MOE;
    const int B = meta_int(f, "B", &ok), T = meta_int(f, "T", &ok);
    moe_lm_rng rng = {meta_u64(f, "seed", &ok), meta_u64(f, "dropout_counter", &ok),
                      meta_u64(f, "moe_seed", &ok), meta_u64(f, "moe_counter", &ok)};
    moe_tensor tt, ts;
    const float *state = NULL;
    int have_tok = moe_st_get(f, "tokens", &tt) == MOE_OK && tt.dtype == MOE_I32 &&
                   tt.ndim == 2 && tt.shape[0] == B && tt.shape[1] == T + 1;
    int have_state = moe_st_get_f32(f, "state", &ts, &state) == MOE_OK &&
                     ts.numel == 4 * (size_t)B * cfg.d;
    CHECK(have_tok && have_state, "lm_%s: tokens [B,T+1] (I32) or state [4,B,d] missing", CASES[ci]);
    moe_lm *m = NULL;
    if (ok && have_tok && have_state) {
        s = moe_lm_create(&m, &cfg, 1);
        CHECK(s == MOE_OK, "lm_%s: create: %s", CASES[ci], moe_last_error());
    }
    if (!m) {
        moe_st_free(f);
        return NULL;
    }
    /* parameters: the dense arena, then the MoE layer's as moe.<name> */
    moe_layer *ml = moe_lm_moe(m);
    CHECK((ml != NULL) == (cfg.ffn != MOE_FFN_NONE), "lm_%s: middle layer present iff ffn != none", CASES[ci]);
    moe_param ps[32];
    char names[32][64];
    int np = 0, loaded = 0;
    for (int i = 0; i < moe_lm_num_params(m) && np < 32; i++, np++) {
        moe_lm_param(m, i, &ps[np]);
        snprintf(names[np], sizeof names[np], "%s", ps[np].name);
    }
    for (int i = 0; ml && i < moe_layer_num_params(ml) && np < 32; i++, np++) {
        moe_layer_param(ml, i, &ps[np]);
        snprintf(names[np], sizeof names[np], "moe.%s", ps[np].name);
    }
    for (int i = 0; i < np; i++) loaded += load_param(ci, f, names[i], &ps[i]);
    /* the file holds tokens, state, 5 expected values and each parameter with its gradient:
     * a parameter the model lacks would be left unchecked */
    CHECK(moe_st_count(f) == 7 + 2 * np, "lm_%s: %d tensors in the file, the model explains %d",
          CASES[ci], moe_st_count(f), 7 + 2 * np);
    CHECK(moe_lm_set_state(m, state, B) == MOE_OK, "lm_%s: set state: %s", CASES[ci], moe_last_error());
    moe_lm_set_rng(m, &rng);
    moe_lm_zero_grad(m);

    moe_lm_stats st;
    memset(&st, 0, sizeof st);
    s = moe_lm_step(m, (const int32_t *)tt.data, B, T, 1, &st);
    CHECK(s == MOE_OK, "lm_%s: step: %s", CASES[ci], moe_last_error());
    float *out = NULL;
    if (s == MOE_OK && loaded == np) {
        const int N = T * B;
        float sc[4] = {(float)st.loss, (float)st.aux, st.moe.loss_importance, st.moe.loss_load};
        for (int i = 0; i < 4; i++) compare(ci, f, SCALARS[i], &sc[i], 1);
        CHECK(st.tokens == N, "lm_%s: %lld tokens, want %d", CASES[ci], (long long)st.tokens, N);
        float *so = malloc(sizeof(float) * 4 * (size_t)B * cfg.d);
        moe_lm_get_state(m, so, B);
        compare(ci, f, "state_out", so, 4 * (size_t)B * cfg.d);
        free(so);
        /* the streams advanced past what the step drew: 4 dropout masks, N*n normals */
        moe_lm_rng after = moe_lm_get_rng(m);
        const uint64_t nn = cfg.ffn == MOE_FFN_MOE ? (uint64_t)cfg.n : 1; /* dense: n = 1 */
        CHECK(after.seed == rng.seed && after.dropout_counter == rng.dropout_counter + 4ull * N * cfg.d,
              "lm_%s: dropout counter %" PRIu64 " after the step", CASES[ci], after.dropout_counter);
        CHECK(!ml || (after.moe_seed == rng.moe_seed && after.moe_counter == rng.moe_counter + nn * N),
              "lm_%s: gate noise counter %" PRIu64 " after the step", CASES[ci], after.moe_counter);
        size_t total = 2;
        for (int i = 0; i < np; i++) total += ps[i].numel;
        out = malloc(sizeof(float) * total);
        out[0] = sc[0];
        out[1] = sc[1];
        *len = 2;
        for (int i = 0; i < np; i++) {
            char gname[80];
            snprintf(gname, sizeof gname, "grad.%.63s", names[i]);
            compare(ci, f, gname, ps[i].grad, ps[i].numel);
            memcpy(out + *len, ps[i].grad, sizeof(float) * ps[i].numel);
            *len += ps[i].numel;
        }
    }
    moe_lm_free(m);
    moe_st_free(f);
    return out;
}

/* The numpy port of moe_rng_u64 / _uniform / _normal against the library. */
static void check_rng(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/lm_rng.safetensors", dir);
    moe_st *f = NULL;
    moe_status s = moe_st_open(&f, path);
    CHECK(s == MOE_OK, "cannot open %s (regenerate with tests/gen_golden_lm.py): %s", path,
          moe_last_error());
    if (s) return;
    moe_tensor ts, tc, tu, tun, tnr;
    const float *uni = NULL, *nrm = NULL;
    int ok = moe_st_get(f, "seed", &ts) == MOE_OK && moe_st_get(f, "counter", &tc) == MOE_OK &&
             moe_st_get(f, "u64", &tu) == MOE_OK && moe_st_get_f32(f, "uniform", &tun, &uni) == MOE_OK &&
             moe_st_get_f32(f, "normal", &tnr, &nrm) == MOE_OK;
    ok = ok && ts.dtype == MOE_I64 && tc.dtype == MOE_I64 && tu.dtype == MOE_I64;
    ok = ok && tc.numel == ts.numel && tu.numel == ts.numel && tun.numel == ts.numel &&
         tnr.numel == ts.numel && ts.numel > 0;
    CHECK(ok, "lm_rng: seed, counter, u64 [K] (I64), uniform, normal [K] (F32) expected");
    if (ok) {
        const int64_t *seed = ts.data, *ctr = tc.data, *u64 = tu.data;
        int bad_u = 0, bad_f = 0, bad_n = 0;
        for (size_t i = 0; i < ts.numel; i++) {
            const uint64_t sd = (uint64_t)seed[i], c = (uint64_t)ctr[i];
            bad_u += moe_rng_u64(sd, c) != (uint64_t)u64[i];
            bad_f += moe_rng_uniform(sd, c) != uni[i];
            /* float of libm's log and cos: allow one rounding step */
            bad_n += !(fabsf(moe_rng_normal(sd, c) - nrm[i]) <= 2.5e-7f * fmaxf(1.0f, fabsf(nrm[i])));
        }
        CHECK(bad_u == 0, "lm_rng: %d of %zu moe_rng_u64 values differ from the port", bad_u, ts.numel);
        CHECK(bad_f == 0, "lm_rng: %d of %zu moe_rng_uniform values differ from the port", bad_f, ts.numel);
        CHECK(bad_n == 0, "lm_rng: %d of %zu moe_rng_normal values differ from the port", bad_n, ts.numel);
    }
    moe_st_free(f);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden";
    check_rng(dir);
    for (int ci = 0; ci < NCASES; ci++) {
        size_t la = 0, lb = 0;
        float *a = run_case(dir, ci, 1, &la);
        float *b = run_case(dir, ci, 2, &lb);
        CHECK(a && b, "lm_%s: the case did not run", CASES[ci]);
        CHECK(!a || !b || (la == lb && memcmp(a, b, sizeof(float) * la) == 0),
              "lm_%s: results differ between 1 and 2 threads", CASES[ci]);
        if (a && b) printf("lm_%s: largest rel.err %.3g (%s)\n", CASES[ci], g_worst[ci], g_worst_name[ci]);
        free(a);
        free(b);
    }
    return test_finish("test_lm_parity");
}
