/* test_errors.c - the header's promises about errors and the version: a failing call sets
 * moe_last_error() (per thread), a successful call leaves it empty, including calls that
 * tolerate a failure inside (an optional tensor looked up and absent); moe_version() is the
 * header's version. */
#define _POSIX_C_SOURCE 200809L
#include "moe.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int empty(void) { return moe_last_error()[0] == '\0'; }

/* fails, then checks that the message says something */
#define FAILS(call, want)                                                                           \
    do {                                                                                            \
        moe_status s_ = (call);                                                                     \
        CHECK(s_ == (want), "%s gave %d (%s), want %d", #call, (int)s_, moe_status_str(s_), (int)(want)); \
        CHECK(!empty(), "%s failed without a message", #call);                                     \
    } while (0)
/* succeeds, after which the last error is empty */
#define SUCCEEDS(call)                                                                              \
    do {                                                                                            \
        moe_status s_ = (call);                                                                     \
        CHECK(s_ == MOE_OK, "%s failed: %s", #call, moe_last_error());                              \
        CHECK(empty(), "after a successful %s the last error is still \"%s\"", #call, moe_last_error()); \
    } while (0)

static void *other_thread(void *arg) {
    (void)arg;
    int fresh = empty();
    moe_adam *a = NULL;
    moe_status st = moe_adam_create(&a, 0, NULL); /* fails here, in this thread only */
    return (void *)(intptr_t)(fresh && st != MOE_OK && !empty());
}

int main(void) {
    char ver[32];
    snprintf(ver, sizeof ver, "%d.%d.%d", MOE_VERSION_MAJOR, MOE_VERSION_MINOR, MOE_VERSION_PATCH);
    CHECK(strcmp(moe_version(), ver) == 0, "moe_version() %s, header %s", moe_version(), ver);
    CHECK(moe_version_number() == MOE_VERSION_NUMBER, "moe_version_number() %d, header %d", moe_version_number(),
          MOE_VERSION_NUMBER);
    CHECK(empty(), "the last error starts empty");

    char dir[] = "/tmp/moe_test_errors_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char missing[128], layer_path[128];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
    snprintf(layer_path, sizeof layer_path, "%s/layer.safetensors", dir);

    /* safetensors: failures and successes alternate */
    moe_st *f = NULL;
    FAILS(moe_st_open(&f, missing), MOE_ERR_IO);
    CHECK(strstr(moe_last_error(), "missing.safetensors") != NULL, "the message names the file: %s", moe_last_error());
    moe_st_writer *w = NULL;
    SUCCEEDS(moe_st_writer_create(&w));
    FAILS(moe_st_writer_add(w, "x", MOE_F32, -1, NULL, NULL), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_st_writer_meta(w, "k", "v"));
    moe_st_writer_free(w);

    /* a layer file without expert biases: loading it looks the biases up and does not find them,
     * which is no failure of the load */
    moe_layer_config cfg = moe_layer_config_default();
    cfg.d = 4, cfg.h = 8, cfg.n = 4, cfg.k = 2;
    moe_layer *l = NULL, *l2 = NULL;
    CHECK(moe_layer_create(&l, &cfg, 3) == MOE_OK, "create: %s", moe_last_error());
    FAILS(moe_layer_load(&l2, missing), MOE_ERR_IO);
    SUCCEEDS(moe_layer_save(l, layer_path));
    FAILS(moe_layer_load(&l2, missing), MOE_ERR_IO);
    SUCCEEDS(moe_layer_load(&l2, layer_path));
    CHECK(moe_st_open(&f, layer_path) == MOE_OK, "open: %s", moe_last_error());
    moe_tensor t;
    FAILS(moe_st_get(f, "experts.b1", &t), MOE_ERR_MISSING);
    SUCCEEDS(moe_st_get(f, "experts.w1", &t));
    FAILS(moe_st_get(f, "experts.b1", &t), MOE_ERR_MISSING);
    moe_layer_config c2;
    SUCCEEDS(moe_layer_config_from_st(f, &c2));
    FAILS(moe_st_get_f32(f, "nope", &t, NULL), MOE_ERR_MISSING);
    SUCCEEDS(moe_layer_load_st(l2, f));
    moe_st_free(f);
    moe_layer_free(l2);
    /* the layer's own calls */
    float x[2 * 4] = {0.1f, -0.2f, 0.3f, 0.4f, 1, 2, 3, 4}, y[2 * 4], dx[2 * 4] = {0}, gates[2 * 4], v[4];
    int counts[4];
    FAILS(moe_layer_backward(l, dx, y), MOE_ERR_STATE);
    SUCCEEDS(moe_layer_forward(l, y, x, 2, MOE_TRAIN, NULL, NULL));
    FAILS(moe_layer_forward(l, y, x, 0, MOE_TRAIN, NULL, NULL), MOE_ERR_SHAPE);
    SUCCEEDS(moe_layer_forward(l, y, x, 2, MOE_TRAIN, NULL, NULL));
    FAILS(moe_layer_find_param(l, "nope", NULL), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_backward(l, dx, y));
    FAILS(moe_layer_gates(l, NULL), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_gates(l, gates));
    FAILS(moe_layer_counts(NULL, counts), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_counts(l, counts));
    FAILS(moe_layer_importance(NULL, v), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_importance(l, v));
    FAILS(moe_layer_load_vec(NULL, v), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_load_vec(l, v));
    moe_param prm;
    FAILS(moe_layer_param(l, 99, &prm), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_param(l, 0, &prm));
    FAILS(moe_layer_find_param(l, "nope", &prm), MOE_ERR_MISSING);
    SUCCEEDS(moe_layer_find_param(l, "experts.w1", &prm));
    FAILS(moe_layer_set_param(l, "gate.w_gate", v, 3), MOE_ERR_SHAPE);
    float wg[4 * 4];
    SUCCEEDS(moe_layer_get_param(l, "gate.w_gate", wg, 16));
    FAILS(moe_layer_set_noise_layout(l, 3, 2, 0), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_layer_set_noise_layout(l, 0, 0, 0));
    cfg.k = 9;
    FAILS(moe_layer_config_check(&cfg), MOE_ERR_CONFIG);
    cfg.k = 2;
    SUCCEEDS(moe_layer_config_check(&cfg));
    moe_layer_free(l);

    /* the optimiser, BLEU, the language model */
    moe_adam *a = NULL;
    FAILS(moe_adam_create(&a, 4, NULL), MOE_ERR_INVALID_ARG);
    moe_adam_config ac = moe_adam_config_default();
    SUCCEEDS(moe_adam_create(&a, 4, &ac));
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, NAN, 0, 0};
    FAILS(moe_adam_step(a, p, g, 0.1f), MOE_ERR_NONFINITE);
    g[1] = 0;
    SUCCEEDS(moe_adam_step(a, p, g, 0.1f));
    moe_adam_free(a);
    moe_bleu_stats bs;
    const int32_t hyp[3] = {1, 2, 3};
    FAILS(moe_bleu_stats_sentence(NULL, hyp, 3, hyp, 3), MOE_ERR_INVALID_ARG);
    SUCCEEDS(moe_bleu_stats_sentence(&bs, hyp, 3, hyp, 3));
    moe_lm_config lc = moe_lm_config_default();
    lc.vocab = 16, lc.d = 8, lc.n = 4, lc.k = 5, lc.h = 8;
    moe_lm *m = NULL;
    FAILS(moe_lm_create(&m, &lc, 1), MOE_ERR_CONFIG);
    lc.k = 2;
    SUCCEEDS(moe_lm_create(&m, &lc, 1));
    int32_t tokens[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    tokens[3] = 99; /* outside the vocabulary */
    CHECK(moe_lm_step(m, tokens, 2, 4, 1, NULL) != MOE_OK && !empty(), "a token outside the vocabulary fails");
    tokens[3] = 4;
    SUCCEEDS(moe_lm_step(m, tokens, 2, 4, 1, NULL));
    SUCCEEDS(moe_lm_step(m, tokens, 2, 4, 0, NULL));
    moe_lm_free(m);
    FAILS(moe_comm_check_same(NULL, 1, "x"), MOE_ERR_INVALID_ARG);

    /* the message is per thread: a failure in another thread leaves this one's alone */
    SUCCEEDS(moe_bleu_stats_sentence(&bs, hyp, 3, hyp, 3));
    pthread_t th;
    void *ok = NULL;
    CHECK(pthread_create(&th, NULL, other_thread, NULL) == 0 && pthread_join(th, &ok) == 0, "thread");
    CHECK(ok == (void *)1, "the other thread starts empty and gets its own message");
    CHECK(empty(), "a failure in another thread shows here: \"%s\"", moe_last_error());

    unlink(layer_path);
    rmdir(dir);
    return test_finish("test_errors");
}
