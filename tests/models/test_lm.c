/* test_lm.c - finite-difference check of the whole language model's gradients (embedding,
 * both LSTMs, the MoE layer, the softmax) for loss + aux, with dropout on and the LSTM state
 * carried in from a previous batch; plus its contracts (bad tokens, state save/restore,
 * exact replay from (rng, state)). */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_lm *m;
    const int32_t *tok;
    int B, T;
    moe_lm_rng rng;
    float *state;
} ctx;

static double loss_at(void *cv) {
    ctx *c = cv;
    moe_lm_set_rng(c->m, &c->rng);
    moe_lm_set_state(c->m, c->state, c->B);
    moe_lm_stats st;
    moe_status s = moe_lm_step(c->m, c->tok, c->B, c->T, 1, &st);
    if (s) {
        fprintf(stderr, "step failed: %s\n", moe_last_error());
        exit(2);
    }
    return st.loss + st.aux;
}

static void gradcheck(moe_ffn_kind ffn, float dropout, int groups) {
    moe_lm_config cfg = moe_lm_config_default();
    cfg.vocab = 11;
    cfg.d = 6;
    cfg.n = groups ? 6 : 5;
    cfg.k = 2;
    cfg.groups = groups; /* hierarchical: groups of n/groups experts */
    cfg.k_groups = groups ? 2 : 0;
    cfg.h = 7;
    cfg.ffn = ffn;
    cfg.dropout = dropout;
    cfg.w_importance = 0.3f;
    cfg.w_load = 0.2f;
    moe_lm *m = NULL;
    CHECK(moe_lm_create(&m, &cfg, 5) == MOE_OK, "create: %s", moe_last_error());
    if (!m) return;
    /* a routed gate, not the zero init */
    moe_layer *ml = moe_lm_moe(m);
    if (ml && ffn == MOE_FFN_MOE) {
        moe_param p;
        moe_layer_find_param(ml, "gate.w_gate", &p);
        t_fill_uniform(p.data, p.numel, 0.8f, 77);
        moe_layer_find_param(ml, "gate.w_noise", &p);
        t_fill_uniform(p.data, p.numel, 0.5f, 78);
        if (groups) {
            moe_layer_find_param(ml, "gate2.w_gate", &p);
            t_fill_uniform(p.data, p.numel, 0.8f, 79);
            moe_layer_find_param(ml, "gate2.w_noise", &p);
            t_fill_uniform(p.data, p.numel, 0.5f, 80);
        }
    }
    const int B = 3, T = 4;
    int32_t tok[3 * 5];
    for (int i = 0; i < B * (T + 1); i++) tok[i] = (int32_t)(t_mix(900 + i) % 11);
    /* a first batch so the state carried into the checked one is not zero */
    moe_lm_stats st;
    CHECK(moe_lm_step(m, tok, B, T, 0, &st) == MOE_OK, "warm-up step");
    float *state = malloc(sizeof(float) * 4 * B * cfg.d);
    moe_lm_get_state(m, state, B);
    ctx c = {m, tok, B, T, moe_lm_get_rng(m), state};
    moe_lm_zero_grad(m);
    loss_at(&c);
    /* snapshot every analytic gradient first: each finite-difference evaluation below runs a
     * training step, which accumulates more gradient */
    moe_param ps[32];
    float *ana[32];
    int np = 0;
    for (int i = 0; i < moe_lm_num_params(m); i++) moe_lm_param(m, i, &ps[np++]);
    for (int i = 0; ml && i < moe_layer_num_params(ml); i++) moe_layer_param(ml, i, &ps[np++]);
    for (int i = 0; i < np; i++) {
        ana[i] = malloc(sizeof(float) * ps[i].numel);
        memcpy(ana[i], ps[i].grad, sizeof(float) * ps[i].numel);
    }
    int kinks = 0, total = 0;
    for (int i = 0; i < np; i++) {
        t_check_grad(loss_at, &c, ps[i].name, ps[i].data, ana[i], ps[i].numel, &kinks);
        total += (int)(ps[i].numel > 120 ? 60 : ps[i].numel);
        free(ana[i]);
    }
    CHECK(kinks * 10 <= total, "too many kinks: %d of %d", kinks, total);
    free(state);
    moe_lm_free(m);
}

static void contracts(void) {
    moe_lm_config cfg = moe_lm_config_default();
    cfg.vocab = 9;
    cfg.d = 8;
    cfg.n = 4;
    cfg.k = 2;
    cfg.h = 6;
    moe_lm *a = NULL, *b = NULL;
    moe_lm_create(&a, &cfg, 3);
    moe_lm_create(&b, &cfg, 3);
    int32_t tok[2 * 6];
    for (int i = 0; i < 12; i++) tok[i] = (int32_t)(t_mix(i) % 9);
    tok[5] = 9;
    CHECK(moe_lm_step(a, tok, 2, 5, 1, NULL) == MOE_ERR_INVALID_ARG, "token outside the vocabulary");
    tok[5] = 1;
    cfg.dropout = 1.0f;
    moe_lm *bad = NULL;
    CHECK(moe_lm_create(&bad, &cfg, 1) == MOE_ERR_CONFIG, "dropout 1 rejected");
    cfg.k = 5;
    cfg.dropout = 0.1f;
    CHECK(moe_lm_create(&bad, &cfg, 1) == MOE_ERR_CONFIG && !bad, "k > n rejected");
    /* replay: a runs two batches; b restores a's (rng, state) after batch one and must
     * produce the same second-batch loss and gradients */
    moe_lm_stats s1, s2;
    moe_lm_step(a, tok, 2, 5, 1, &s1);
    moe_lm_rng r = moe_lm_get_rng(a);
    float state[4 * 2 * 8];
    moe_lm_get_state(a, state, 2);
    moe_lm_zero_grad(a);
    moe_lm_step(a, tok, 2, 5, 1, &s1);
    moe_lm_set_rng(b, &r);
    moe_lm_set_state(b, state, 2);
    moe_lm_step(b, tok, 2, 5, 1, &s2);
    CHECK(s1.loss == s2.loss && s1.aux == s2.aux, "replayed loss %.9g vs %.9g", s1.loss, s2.loss);
    float *ga, *gb;
    size_t na, nb;
    moe_lm_arena(a, NULL, &ga, &na);
    moe_lm_arena(b, NULL, &gb, &nb);
    /* b's grads hold only the replayed step; a's were zeroed before it */
    CHECK(na == nb && memcmp(ga, gb, sizeof(float) * na) == 0, "replayed gradients identical");
    int64_t total, active;
    moe_lm_param_counts(a, &total, &active);
    CHECK(total > active && active > 0, "MoE model: total %lld > active %lld params", (long long)total, (long long)active);
    float logits[2 * 9];
    CHECK(moe_lm_next_logits(a, tok, 2, logits) == MOE_OK, "next logits");
    moe_lm_free(a);
    moe_lm_free(b);
}

/* The counts from a configuration alone (what `moe info` prints without building the model) are
 * the numbers of values the built model's tensors hold. */
static void config_counts(moe_ffn_kind ffn, int groups) {
    moe_lm_config c = moe_lm_config_default();
    c.vocab = 11, c.d = 6, c.n = 6, c.k = 2, c.h = 5, c.ffn = ffn, c.groups = groups, c.k_groups = groups ? 2 : 0;
    moe_lm *m = NULL;
    CHECK(moe_lm_create(&m, &c, 3) == MOE_OK, "create (ffn %d, groups %d)", (int)ffn, groups);
    if (!m) return;
    int64_t held = 0, total = -1, active = -1, mt = -2, ma = -2;
    for (int i = 0; i < moe_lm_num_tensors(m); i++) {
        moe_param p;
        if (moe_lm_tensor(m, i, &p) == MOE_OK) held += (int64_t)p.numel;
    }
    CHECK(moe_lm_config_param_counts(&c, &total, &active) == MOE_OK, "config counts");
    moe_lm_param_counts(m, &mt, &ma);
    CHECK(total == held, "ffn %d groups %d: config says %lld parameters, the model holds %lld", (int)ffn, groups,
          (long long)total, (long long)held);
    CHECK(mt == total && ma == active, "model and config counts agree (%lld/%lld vs %lld/%lld)", (long long)mt,
          (long long)ma, (long long)total, (long long)active);
    CHECK(ffn == MOE_FFN_MOE ? active < total : active == total, "active %lld of %lld", (long long)active,
          (long long)total);
    moe_lm_free(m);
}

int main(void) {
    moe_set_threads(2);
    config_counts(MOE_FFN_MOE, 0);
    config_counts(MOE_FFN_MOE, 3);
    config_counts(MOE_FFN_DENSE, 0);
    config_counts(MOE_FFN_NONE, 0);
    gradcheck(MOE_FFN_MOE, 0.0f, 0);
    gradcheck(MOE_FFN_MOE, 0.3f, 0);
    gradcheck(MOE_FFN_MOE, 0.2f, 3); /* hierarchical: 3 groups of 2 */
    gradcheck(MOE_FFN_DENSE, 0.2f, 0);
    gradcheck(MOE_FFN_NONE, 0.2f, 0);
    contracts();
    return test_finish("test_lm");
}
