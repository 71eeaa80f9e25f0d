/* test_api.c - the layer API's contracts: bad configs, shapes, NaN/Inf, call order, files that
 * are truncated, malformed or foreign each give their own status and leave the layer intact;
 * deterministic tie-breaking; seeded noise replays; save/load round trip; sparse compute. */
#define _POSIX_C_SOURCE 200809L
#include "moe.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static moe_layer_config small_cfg(int n, int k) {
    moe_layer_config c = moe_layer_config_default();
    c.d = 6;
    c.h = 5;
    c.n = n;
    c.k = k;
    return c;
}

static void test_configs(void) {
    moe_layer *l = (moe_layer *)0x1;
    moe_layer_config c = small_cfg(4, 5);
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG && l == NULL, "k > n must be MOE_ERR_CONFIG and NULL");
    CHECK(strstr(moe_last_error(), "k=5") != NULL, "message should name k: '%s'", moe_last_error());
    c = small_cfg(4, 0);
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "k = 0");
    c = small_cfg(0, 1);
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "n = 0");
    c = small_cfg(4, 2);
    c.d = 0;
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "d = 0");
    c = small_cfg(4, 2);
    c.h = -3;
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "h < 0");
    c = small_cfg(4, 2);
    c.w_load = -1.0f;
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "negative w_load");
    c = small_cfg(4, 2);
    c.noise_eps = NAN;
    CHECK(moe_layer_create(&l, &c, 0) == MOE_ERR_CONFIG, "NaN noise_eps");
    CHECK(moe_layer_create(NULL, &c, 0) == MOE_ERR_INVALID_ARG, "NULL out");
    c = small_cfg(4, 4); /* k == n is legal */
    CHECK(moe_layer_create(&l, &c, 0) == MOE_OK, "k == n: %s", moe_last_error());
    moe_layer_free(l);
    moe_layer_free(NULL); /* harmless */
    moe_st_free(NULL);
    moe_st_writer_free(NULL);
    moe_adam_free(NULL);
    for (int s = 0; s <= MOE_ERR_STATE; s++)
        CHECK(moe_status_str((moe_status)s)[0] != '\0', "status %d has no words", s);
}

static void test_inputs(void) {
    moe_layer_config c = small_cfg(5, 2);
    moe_layer *l = NULL;
    moe_layer_create(&l, &c, 7);
    float x[3 * 6], y[3 * 6], dy[3 * 6], dx[3 * 6], noise[3 * 5];
    t_fill_uniform(x, 18, 1.0f, 1);
    t_fill_uniform(dy, 18, 1.0f, 2);
    t_fill_normal(noise, 15, 3);
    CHECK(moe_layer_backward(l, dx, dy) == MOE_ERR_STATE, "backward before forward");
    CHECK(moe_layer_forward(l, y, x, 0, MOE_EVAL, NULL, NULL) == MOE_ERR_SHAPE, "B = 0");
    CHECK(moe_layer_forward(l, NULL, x, 3, MOE_EVAL, NULL, NULL) == MOE_ERR_INVALID_ARG, "y NULL");
    float xn[18];
    memcpy(xn, x, sizeof x);
    xn[7] = NAN;
    CHECK(moe_layer_forward(l, y, xn, 3, MOE_EVAL, NULL, NULL) == MOE_ERR_NONFINITE, "NaN in x");
    xn[7] = INFINITY;
    CHECK(moe_layer_forward(l, y, xn, 3, MOE_TRAIN, NULL, NULL) == MOE_ERR_NONFINITE, "Inf in x");
    float nn[15];
    memcpy(nn, noise, sizeof noise);
    nn[3] = NAN;
    CHECK(moe_layer_forward(l, y, x, 3, MOE_TRAIN, nn, NULL) == MOE_ERR_NONFINITE, "NaN in noise");
    CHECK(moe_layer_backward(l, dx, dy) == MOE_ERR_STATE, "a failed forward leaves no state to backprop");
    CHECK(moe_layer_forward(l, y, x, 3, MOE_TRAIN, noise, NULL) == MOE_OK, "forward: %s", moe_last_error());
    float dyn[18];
    memcpy(dyn, dy, sizeof dy);
    dyn[0] = NAN;
    CHECK(moe_layer_backward(l, dx, dyn) == MOE_ERR_NONFINITE, "NaN in dy");
    float bad[30] = {0};
    bad[2] = NAN;
    CHECK(moe_layer_set_param(l, "gate.w_gate", bad, 30) == MOE_ERR_NONFINITE, "NaN parameter");
    CHECK(moe_layer_set_param(l, "gate.w_gate", bad, 29) == MOE_ERR_SHAPE, "wrong count");
    CHECK(moe_layer_set_param(l, "experts.b1", bad, 25) == MOE_ERR_MISSING, "absent bias");
    float wg[30];
    CHECK(moe_layer_get_param(l, "gate.w_gate", wg, 30) == MOE_OK, "get_param");
    int zero = 1;
    for (int i = 0; i < 30; i++) zero &= wg[i] == 0.0f;
    CHECK(zero, "gate weights must start at zero (SPEC 1.3)");
    moe_layer_free(l);
}

/* With the zero-initialised gate every logit ties: eval routing must pick experts 0..k-1. */
static void test_ties_and_sparsity(void) {
    moe_layer_config c = small_cfg(7, 3);
    moe_layer *l = NULL;
    moe_layer_create(&l, &c, 3);
    float x[4 * 6], y[4 * 6], gates[4 * 7];
    t_fill_uniform(x, 24, 1.0f, 9);
    CHECK(moe_layer_forward(l, y, x, 4, MOE_EVAL, NULL, NULL) == MOE_OK, "forward");
    moe_layer_gates(l, gates);
    int ok = 1;
    for (int b = 0; b < 4; b++)
        for (int e = 0; e < 7; e++) {
            float want = e < 3 ? 1.0f / 3.0f : 0.0f;
            ok &= fabsf(gates[b * 7 + e] - want) < 1e-7f;
        }
    CHECK(ok, "ties must go to the lower expert index with equal gates 1/k");
    int counts[7];
    moe_layer_counts(l, counts);
    CHECK(counts[0] == 4 && counts[2] == 4 && counts[3] == 0 && counts[6] == 0, "counts follow the routing");
    /* experts with a zero gate are not evaluated: poison an unrouted expert with huge weights;
     * y must not change. */
    float y2[24];
    moe_param w1;
    moe_layer_find_param(l, "experts.w1", &w1);
    for (int i = 0; i < 6 * 5; i++) w1.data[5 * 6 * 5 + i] = 1e30f; /* expert 5 */
    moe_layer_forward(l, y2, x, 4, MOE_EVAL, NULL, NULL);
    CHECK(memcmp(y, y2, sizeof y) == 0, "an expert with zero gate must not be computed");
    moe_layer_free(l);
}

static void test_seeded_noise(void) {
    moe_layer_config c = small_cfg(6, 2);
    moe_layer *a = NULL, *b = NULL;
    moe_layer_create(&a, &c, 42);
    moe_layer_create(&b, &c, 42);
    float wg[36];
    t_fill_uniform(wg, 36, 0.5f, 5);
    moe_layer_set_param(a, "gate.w_noise", wg, 36);
    moe_layer_set_param(b, "gate.w_noise", wg, 36);
    float x[8 * 6], ya[48], yb[48], ya2[48];
    t_fill_uniform(x, 48, 1.0f, 8);
    moe_layer_forward(a, ya, x, 8, MOE_TRAIN, NULL, NULL);
    moe_layer_forward(a, ya2, x, 8, MOE_TRAIN, NULL, NULL);
    CHECK(memcmp(ya, ya2, sizeof ya) != 0, "successive training calls draw fresh noise");
    uint64_t seed, ctr;
    moe_layer_get_rng(a, &seed, &ctr);
    CHECK(seed == 42 && ctr == 2 * 8 * 6, "rng counter advances by B*n per call (%llu)", (unsigned long long)ctr);
    /* b jumps straight to a's second call */
    moe_layer_set_rng(b, 42, 8 * 6);
    moe_layer_forward(b, yb, x, 8, MOE_TRAIN, NULL, NULL);
    CHECK(memcmp(ya2, yb, sizeof yb) == 0, "restoring (seed, counter) replays the noise exactly");
    moe_layer_free(a);
    moe_layer_free(b);
}

/* A hierarchical layer draws only the noise it uses (the primary gate's and each token's chosen
 * groups'), and must use the same values as a caller passing all of the stream's draws [B, a + n].
 * B = 300 rows: enough for the draws to be split over the threads. */
static void test_hier_seeded_noise(void) {
    enum { HB = 300, HN = 8, HA = 4, NW = HA + HN };
    moe_layer_config c = small_cfg(HN, 1);
    c.groups = HA;
    c.k_groups = 2;
    moe_layer *a = NULL, *b = NULL;
    CHECK(moe_layer_create(&a, &c, 9) == MOE_OK && moe_layer_create(&b, &c, 9) == MOE_OK, "create: %s",
          moe_last_error());
    static float x[HB * 6], ya[HB * 6], yb[HB * 6], eps[HB * NW];
    t_fill_uniform(x, HB * 6, 1.0f, 21);
    uint64_t seed, ctr;
    moe_layer_get_rng(a, &seed, &ctr);
    moe_rng_normal_fill(eps, HB * NW, seed, ctr);
    moe_set_threads(2);
    CHECK(moe_layer_forward(a, ya, x, HB, MOE_TRAIN, NULL, NULL) == MOE_OK, "seeded forward: %s", moe_last_error());
    CHECK(moe_layer_forward(b, yb, x, HB, MOE_TRAIN, eps, NULL) == MOE_OK, "given forward: %s", moe_last_error());
    CHECK(memcmp(ya, yb, sizeof ya) == 0, "hierarchical: the seeded draws it uses equal the whole stream's");
    moe_layer_free(a);
    moe_layer_free(b);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_files(void) {
    char path[512], p2[512];
    moe_layer_config c = small_cfg(5, 2);
    c.bias = 1;
    c.w_importance = 0.25f;
    c.noise_eps = 0.0f;
    moe_layer *l = NULL, *m = NULL;
    moe_layer_create(&l, &c, 11);
    float wg[30];
    t_fill_uniform(wg, 30, 0.5f, 3);
    moe_layer_set_param(l, "gate.w_gate", wg, 30);
    snprintf(path, sizeof path, "%s/layer.safetensors", tmpdir);
    CHECK(moe_layer_save(l, path) == MOE_OK, "save: %s", moe_last_error());
    CHECK(moe_layer_load(&m, path) == MOE_OK, "load: %s", moe_last_error());
    if (m) {
        moe_layer_config d = moe_layer_get_config(m);
        CHECK(d.d == 6 && d.h == 5 && d.n == 5 && d.k == 2 && d.bias == 1 && d.w_importance == 0.25f &&
                  d.noise_eps == 0.0f && d.w_load == c.w_load,
              "settings survive the round trip");
        float *pa, *pb, *g;
        size_t na, nb;
        moe_layer_arena(l, &pa, &g, &na);
        moe_layer_arena(m, &pb, &g, &nb);
        CHECK(na == nb && memcmp(pa, pb, sizeof(float) * na) == 0, "parameters survive bit for bit");
        moe_layer_free(m);
    }
    /* read the file back and damage it in several ways */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len);
    CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len, "read back");
    fclose(f);
    snprintf(p2, sizeof p2, "%s/bad.safetensors", tmpdir);
    write_bytes(p2, buf, (size_t)len - 7);
    m = (moe_layer *)0x1;
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_TRUNCATED && m == NULL, "truncated data: %s", moe_last_error());
    write_bytes(p2, buf, 5);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_TRUNCATED, "5-byte file");
    unsigned char *b2 = malloc((size_t)len);
    memcpy(b2, buf, (size_t)len);
    b2[8] = '['; /* JSON header no longer an object */
    write_bytes(p2, b2, (size_t)len);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_FORMAT, "malformed header: %s", moe_last_error());
    CHECK(moe_layer_load(&m, "/nonexistent/dir/x.safetensors") == MOE_ERR_IO, "missing file");
    /* NaN inside the weights */
    moe_param prm;
    moe_layer_find_param(l, "experts.w2", &prm);
    prm.data[3] = NAN;
    moe_st_writer *w = NULL;
    moe_st_writer_create(&w);
    for (int i = 0; i < moe_layer_num_params(l); i++) {
        moe_layer_param(l, i, &prm);
        moe_st_writer_add(w, prm.name, MOE_F32, prm.ndim, prm.shape, prm.data);
    }
    moe_st_writer_write(w, p2);
    moe_st_writer_free(w);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_NONFINITE, "NaN weights: %s", moe_last_error());
    /* a foreign file: valid safetensors, but not a layer */
    float z[4] = {0};
    int64_t sh[1] = {4};
    moe_st_writer_create(&w);
    moe_st_writer_add(w, "embedding.weight", MOE_F32, 1, sh, z);
    moe_st_writer_write(w, p2);
    moe_st_writer_free(w);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_MISSING, "foreign file: %s", moe_last_error());
    /* a layer file with a contradicting shape */
    moe_layer_find_param(l, "experts.w2", &prm);
    prm.data[3] = 0.5f;
    moe_st_writer_create(&w);
    for (int i = 0; i < moe_layer_num_params(l); i++) {
        moe_layer_param(l, i, &prm);
        int64_t shp[3] = {prm.shape[0], prm.shape[1], prm.shape[2]};
        if (strcmp(prm.name, "gate.w_noise") == 0) shp[1] = 4; /* [d, n-1] */
        moe_st_writer_add(w, prm.name, MOE_F32, prm.ndim, shp, prm.data);
    }
    moe_st_writer_meta(w, "k", "2");
    moe_st_writer_write(w, p2);
    moe_st_writer_free(w);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_SHAPE, "shape mismatch: %s", moe_last_error());
    /* metadata that is not a number, and k > n in metadata */
    moe_st_writer_create(&w);
    for (int i = 0; i < moe_layer_num_params(l); i++) {
        moe_layer_param(l, i, &prm);
        moe_st_writer_add(w, prm.name, MOE_F32, prm.ndim, prm.shape, prm.data);
    }
    moe_st_writer_meta(w, "k", "two");
    moe_st_writer_write(w, p2);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_FORMAT, "k='two': %s", moe_last_error());
    moe_st_writer_meta(w, "k", "9");
    moe_st_writer_write(w, p2);
    CHECK(moe_layer_load(&m, p2) == MOE_ERR_CONFIG, "k=9 > n=5: %s", moe_last_error());
    moe_st_writer_free(w);
    /* the original file is still intact after all that */
    CHECK(moe_layer_load(&m, path) == MOE_OK, "original still loads");
    moe_layer_free(m);
    unlink(p2);
    unlink(path);
    free(buf);
    free(b2);
    moe_layer_free(l);
}

static void test_adam(void) {
    moe_adam_config c = moe_adam_config_default();
    moe_adam *a = NULL;
    CHECK(moe_adam_create(&a, 3, &c) == MOE_OK, "adam create");
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.5f, -1.0f, 0.0f};
    moe_adam_step(a, p, g, 0.1f);
    /* first bias-corrected Adam step moves each parameter by lr * sign(g) */
    CHECK(fabsf(p[0] - 0.9f) < 1e-6f && fabsf(p[1] + 1.9f) < 1e-6f && p[2] == 0.5f, "first Adam step (%g %g %g)", p[0], p[1], p[2]);
    g[1] = NAN;
    CHECK(moe_adam_step(a, p, g, 0.1f) == MOE_ERR_NONFINITE && fabsf(p[0] - 0.9f) < 1e-6f, "NaN gradient rejected, params kept");
    moe_adam_free(a);
    c.beta1 = 1.0f;
    CHECK(moe_adam_create(&a, 3, &c) == MOE_ERR_CONFIG, "beta1 = 1 rejected");
}

/* The threading strategy is a setting of each layer (no process-wide state), and each gives the
 * same bits: the expert products are the same BLAS calls, run in another order. */
static void test_strategies(void) {
    moe_layer_config c = small_cfg(16, 2);
    c.d = 32;
    c.h = 48;
    const int B = 200;
    const moe_parallel ps[3] = {MOE_PAR_AUTO, MOE_PAR_BLAS, MOE_PAR_EXPERTS};
    float *x = malloc(sizeof(float) * B * c.d), *dy = malloc(sizeof(float) * B * c.d);
    float *y[3], *dx[3];
    t_fill_normal(x, (size_t)B * c.d, 5);
    t_fill_normal(dy, (size_t)B * c.d, 6);
    moe_layer *l[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        y[i] = malloc(sizeof(float) * B * c.d);
        dx[i] = calloc((size_t)B * c.d, sizeof(float));
        CHECK(moe_layer_create(&l[i], &c, 9) == MOE_OK, "create");
        CHECK(moe_layer_set_parallel(l[i], ps[i]) == MOE_OK && moe_last_error()[0] == 0, "set strategy %d", i);
        CHECK(moe_layer_forward(l[i], y[i], x, B, MOE_TRAIN, NULL, NULL) == MOE_OK, "forward, strategy %d", i);
        CHECK(moe_layer_backward(l[i], dx[i], dy) == MOE_OK, "backward, strategy %d", i);
    }
    float *g[3];
    size_t cnt[3];
    for (int i = 0; i < 3; i++) moe_layer_arena(l[i], NULL, &g[i], &cnt[i]);
    for (int i = 1; i < 3; i++) {
        CHECK(memcmp(y[i], y[0], sizeof(float) * B * c.d) == 0, "strategy %d: y differs from auto", i);
        CHECK(memcmp(dx[i], dx[0], sizeof(float) * B * c.d) == 0, "strategy %d: dx differs from auto", i);
        CHECK(cnt[i] == cnt[0] && memcmp(g[i], g[0], sizeof(float) * cnt[0]) == 0, "strategy %d: gradients differ", i);
    }
    CHECK(moe_layer_set_parallel(l[0], (moe_parallel)7) == MOE_ERR_INVALID_ARG, "unknown strategy");
    CHECK(moe_layer_set_parallel(NULL, MOE_PAR_BLAS) == MOE_ERR_INVALID_ARG, "NULL layer");
    for (int i = 0; i < 3; i++) {
        moe_layer_free(l[i]);
        free(y[i]);
        free(dx[i]);
    }
    free(x);
    free(dy);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moe_test_api_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_configs();
    test_inputs();
    test_strategies();
    test_ties_and_sparsity();
    test_seeded_noise();
    test_hier_seeded_noise();
    test_files();
    test_adam();
    rmdir(tmpdir);
    return test_finish("test_api");
}
