/* test_golden.c - parity with PyTorch: every case in tests/golden (written by gen_golden.py and
 * gen_golden_hier.py, the hierarchical layer, from
 * a float64 torch reference) is run through the library and each output and gradient compared.
 * Error metric per tensor: max|got - want| / max(max|want|, 1e-6) <= 1e-5. The test is also run
 * with one and with two threads, and both runs must agree bit for bit (determinism). */
#define _POSIX_C_SOURCE 200809L
#include "moe.h"
#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-5

static void compare(const char *cs, const moe_st *exp, const char *name, const float *got, size_t n) {
    moe_tensor t;
    const float *want = NULL;
    moe_status s = moe_st_get_f32(exp, name, &t, &want);
    CHECK(s == MOE_OK, "%s: expected file lacks '%s'", cs, name);
    if (s) return;
    CHECK(t.numel == n, "%s: '%s' has %zu values, got %zu", cs, name, t.numel, n);
    if (t.numel != n) return;
    double e = t_rel_err(got, want, n);
    CHECK(e <= RTOL, "%s: %s rel.err %.3g > %g", cs, name, e, RTOL);
}

/* Runs one case; returns y, dx and every parameter gradient in one buffer (*len floats) for the
 * determinism check. */
static float *run_case(const char *dir, const char *cs, int threads, size_t *len) {
    char p[1024], in[1024], ex[1024];
    snprintf(p, sizeof p, "%s/%s.params.safetensors", dir, cs);
    snprintf(in, sizeof in, "%s/%s.input.safetensors", dir, cs);
    snprintf(ex, sizeof ex, "%s/%s.expected.safetensors", dir, cs);
    moe_set_threads(threads);
    moe_layer *l = NULL;
    moe_st *fi = NULL, *fe = NULL;
    moe_status s = moe_layer_load(&l, p);
    CHECK(s == MOE_OK, "%s: load params: %s", cs, moe_last_error());
    s = s ? s : moe_st_open(&fi, in);
    s = s ? s : moe_st_open(&fe, ex);
    CHECK(s == MOE_OK, "%s: open inputs: %s", cs, moe_last_error());
    if (s) {
        moe_layer_free(l);
        moe_st_free(fi);
        moe_st_free(fe);
        return NULL;
    }
    moe_layer_config c = moe_layer_get_config(l);
    moe_tensor tx, tdy, te;
    const float *x = NULL, *dy = NULL, *eps = NULL;
    moe_st_get_f32(fi, "x", &tx, &x);
    moe_st_get_f32(fi, "dy", &tdy, &dy);
    const char *mode = moe_st_meta(fi, "mode");
    int train = mode && strcmp(mode, "train") == 0;
    if (train) moe_st_get_f32(fi, "eps", &te, &eps);
    CHECK(x && dy && (!train || eps), "%s: input file incomplete", cs);
    int B = (int)tx.shape[0];
    float *y = malloc(sizeof(float) * B * c.d), *gates = malloc(sizeof(float) * B * c.n);
    float *dx = calloc((size_t)B * c.d, sizeof(float)), *v = malloc(sizeof(float) * c.n);
    moe_layer_stats st;
    s = moe_layer_forward(l, y, x, B, train ? MOE_TRAIN : MOE_EVAL, eps, &st);
    CHECK(s == MOE_OK, "%s: forward: %s", cs, moe_last_error());
    compare(cs, fe, "y", y, (size_t)B * c.d);
    moe_layer_gates(l, gates);
    compare(cs, fe, "gates", gates, (size_t)B * c.n);
    compare(cs, fe, "loss.importance", &st.loss_importance, 1);
    compare(cs, fe, "loss.load", &st.loss_load, 1);
    moe_layer_importance(l, v);
    compare(cs, fe, "stats.importance", v, (size_t)c.n);
    moe_layer_load_vec(l, v);
    compare(cs, fe, "stats.load", v, (size_t)c.n);
    moe_layer_zero_grad(l);
    s = moe_layer_backward(l, dx, dy);
    CHECK(s == MOE_OK, "%s: backward: %s", cs, moe_last_error());
    compare(cs, fe, "grad.x", dx, (size_t)B * c.d);
    for (int i = 0; i < moe_layer_num_params(l); i++) {
        moe_param prm;
        moe_layer_param(l, i, &prm);
        char gname[64];
        snprintf(gname, sizeof gname, "grad.%s", prm.name);
        compare(cs, fe, gname, prm.grad, prm.numel);
    }
    float *params = NULL, *grads = NULL;
    size_t count = 0, Bd = (size_t)B * c.d;
    moe_layer_arena(l, &params, &grads, &count);
    float *out = malloc(sizeof(float) * (2 * Bd + count));
    memcpy(out, y, sizeof(float) * Bd);
    memcpy(out + Bd, dx, sizeof(float) * Bd);
    memcpy(out + 2 * Bd, grads, sizeof(float) * count);
    *len = 2 * Bd + count;
    free(y);
    free(gates);
    free(dx);
    free(v);
    moe_st_free(fi);
    moe_st_free(fe);
    moe_layer_free(l);
    return out;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden";
    DIR *dp = opendir(dir);
    CHECK(dp != NULL, "cannot open golden directory %s", dir);
    if (!dp) return test_finish("test_golden");
    char *cases[256];
    int nc = 0;
    struct dirent *de;
    while ((de = readdir(dp)) && nc < 256) {
        const char *suf = ".params.safetensors";
        size_t L = strlen(de->d_name), S = strlen(suf);
        if (L > S && strcmp(de->d_name + L - S, suf) == 0) cases[nc++] = strndup(de->d_name, L - S);
    }
    closedir(dp);
    CHECK(nc >= 48, "only %d golden cases found in %s (expected 48: regenerate with tests/gen_golden.py and tests/gen_golden_hier.py)", nc, dir);
    int mismatched = 0;
    for (int i = 0; i < nc; i++) {
        size_t la = 0, lb = 0;
        float *a = run_case(dir, cases[i], 1, &la);
        float *b = run_case(dir, cases[i], 2, &lb);
        if (a && b && (la != lb || memcmp(a, b, sizeof(float) * la) != 0)) mismatched++;
        free(a);
        free(b);
        free(cases[i]);
    }
    CHECK(mismatched == 0, "%d cases differ between 1 and 2 threads", mismatched);
    return test_finish("test_golden");
}
