/* test_s2s.c - the sequence-to-sequence model: finite-difference check of every parameter's
 * gradient (embeddings, the bidirectional and stacked LSTMs, both MoE layers, attention, output)
 * for a loss mixing cross-entropy, REINFORCE-like negative coefficients and masked positions,
 * with dropout on; step-by-step decoding against the teacher-forced pass (greedy picks the
 * argmax of the same distribution, with and without the training step's dropout masks); beam 1
 * equals greedy; bad input. */
#include "moe.h"
#include "models/s2s.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { B = 3, TS = 4, TT = 5, VS = 7, VT = 6 };

typedef struct {
    moe_s2s *m;
    int32_t src[B * TS], in[B * TT], tgt[B * TT];
    float coef[B * TT];
    uint64_t step, moe_seed[2], moe_ctr[2];
} ctx;

static double loss_at(void *cv) {
    ctx *c = cv;
    s2s_set_step_counter(c->m, c->step);
    for (int s = 0; s < 2; s++)
        if (moe_s2s_moe(c->m, s)) moe_layer_set_rng(moe_s2s_moe(c->m, s), c->moe_seed[s], c->moe_ctr[s]);
    double loss = 0.0;
    moe_status st = moe_s2s_forward(c->m, c->src, B, TS, c->in, c->tgt, c->coef, TT, MOE_TRAIN, &loss);
    if (st) {
        fprintf(stderr, "forward failed: %s\n", moe_last_error());
        exit(2);
    }
    return loss;
}

static moe_s2s_config small_cfg(int layers, int bidir, int moe, float dropout) {
    moe_s2s_config cfg = moe_s2s_config_default();
    cfg.src_vocab = VS;
    cfg.tgt_vocab = VT;
    cfg.d = 6;
    cfg.layers = layers;
    cfg.bidir = bidir;
    cfg.moe = moe;
    cfg.n = 4;
    cfg.k = 2;
    cfg.h = 5;
    cfg.w_importance = 0.3f;
    cfg.w_load = 0.2f;
    cfg.dropout = dropout;
    cfg.max_len = 8;
    cfg.eos = 1;
    return cfg;
}

static void fill_batch(ctx *c, uint64_t seed) {
    for (int i = 0; i < B * TS; i++) c->src[i] = (int32_t)(t_mix(seed + i) % VS);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < TT; t++) {
            const int i = b * TT + t;
            c->tgt[i] = (int32_t)(t_mix(seed + 100 + i) % VT);
            c->in[i] = t == 0 ? 1 : c->tgt[i - 1];
            /* row 0 cross-entropy, row 1 REINFORCE-like signs, row 2 masked after t = 2 */
            c->coef[i] = b == 0 ? 0.2f : (b == 1 ? (t % 2 ? -0.3f : 0.15f) : (t <= 2 ? 0.25f : 0.0f));
        }
}

static void gradcheck(int layers, int bidir, int moe, float dropout) {
    moe_s2s_config cfg = small_cfg(layers, bidir, moe, dropout);
    ctx c;
    memset(&c, 0, sizeof c);
    CHECK(moe_s2s_create(&c.m, &cfg, 11) == MOE_OK, "create: %s", moe_last_error());
    if (!c.m) return;
    for (int s = 0; s < 2 && moe; s++) { /* a routed gate, not the zero init */
        moe_layer *ml = moe_s2s_moe(c.m, s);
        moe_param p;
        moe_layer_find_param(ml, "gate.w_gate", &p);
        t_fill_uniform(p.data, p.numel, 0.8f, 77 + s);
        moe_layer_find_param(ml, "gate.w_noise", &p);
        t_fill_uniform(p.data, p.numel, 0.5f, 79 + s);
        moe_layer_get_rng(ml, &c.moe_seed[s], &c.moe_ctr[s]);
    }
    /* biases and the zero-initialised output layer get values, so their paths are exercised */
    moe_param p;
    const char *nz[] = {"comb.b", "out.b", "enc1.b_ih", "dec1.b_hh"};
    for (int i = 0; i < 4; i++)
        if (!moe_s2s_find_param(c.m, nz[i], &p)) t_fill_uniform(p.data, p.numel, 0.3f, 300 + i);
    fill_batch(&c, 1000 * layers + 100 * bidir + 10 * moe);
    c.step = 41;
    moe_s2s_zero_grad(c.m);
    loss_at(&c);
    CHECK(moe_s2s_backward(c.m) == MOE_OK, "backward: %s", moe_last_error());
    moe_param ps[48];
    float *ana[48];
    int np = 0;
    for (int i = 0; i < moe_s2s_num_params(c.m); i++) moe_s2s_param(c.m, i, &ps[np++]);
    for (int s = 0; s < 2; s++) {
        moe_layer *ml = moe_s2s_moe(c.m, s);
        for (int i = 0; ml && i < moe_layer_num_params(ml); i++) moe_layer_param(ml, i, &ps[np++]);
    }
    for (int i = 0; i < np; i++) {
        ana[i] = malloc(sizeof(float) * ps[i].numel);
        memcpy(ana[i], ps[i].grad, sizeof(float) * ps[i].numel);
    }
    int kinks = 0, total = 0;
    for (int i = 0; i < np; i++) {
        /* the baseline regressors are trained by the trainer, not by this loss: zero gradient */
        if (strncmp(ps[i].name, "baseline.", 9) == 0) {
            double s = 0;
            for (size_t j = 0; j < ps[i].numel; j++) s += fabs(ana[i][j]);
            CHECK(s == 0.0, "%s gets no gradient from the loss", ps[i].name);
        } else {
            t_check_grad(loss_at, &c, ps[i].name, ps[i].data, ana[i], ps[i].numel, &kinks);
            total += (int)(ps[i].numel > 120 ? 60 : ps[i].numel);
        }
        free(ana[i]);
    }
    CHECK(kinks * 10 <= total, "too many kinks: %d of %d", kinks, total);
    printf("gradcheck layers=%d bidir=%d moe=%d dropout=%.1f: %d parameters, %d kinks\n", layers, bidir, moe,
           dropout, np, kinks);
    moe_s2s_free(c.m);
}

/* -log p(w) at (b, t) through the teacher-forced pass */
static double nll_at(moe_s2s *m, const int32_t *src, const int32_t *seq, int L, int b, int t, int32_t w,
                     int train, uint64_t step) {
    int32_t in[B * 8], tgt[B * 8];
    float coef[B * 8];
    for (int r = 0; r < B; r++)
        for (int j = 0; j < L; j++) {
            in[r * L + j] = j == 0 ? 1 : seq[r * 8 + j - 1];
            tgt[r * L + j] = seq[r * 8 + j];
            coef[r * L + j] = 0.0f;
        }
    tgt[b * L + t] = w;
    coef[b * L + t] = 1.0f;
    double loss = 0;
    if (train) {
        s2s_set_step_counter(m, step - 1);
        s2s_encode(m, src, B, TS, 1);
        s2s_decode(m, in, tgt, coef, L, 1, &loss);
    } else {
        moe_s2s_forward(m, src, B, TS, in, tgt, coef, L, MOE_EVAL, &loss);
    }
    return loss;
}

static void decoding(int moe) {
    moe_s2s_config cfg = small_cfg(2, 1, moe, 0.3f);
    moe_s2s *m = NULL;
    CHECK(moe_s2s_create(&m, &cfg, 5) == MOE_OK, "create");
    moe_param p;
    moe_s2s_find_param(m, "out.w", &p);
    t_fill_uniform(p.data, p.numel, 1.5f, 9);
    ctx c;
    fill_batch(&c, 77);
    const int L = 6;
    for (int train = 0; train < 2; train++) {
        if (train && moe) continue; /* the decoder's MoE samples without gate noise (s2s.h) */
        int32_t seq[B * 8];
        int len[B];
        const uint64_t step = 90;
        s2s_set_step_counter(m, step - 1);
        CHECK(s2s_encode(m, c.src, B, TS, train) == MOE_OK, "encode");
        if (!train) s2s_set_step_counter(m, step);
        int32_t out[B * L];
        CHECK(s2s_sample(m, NULL, NULL, 0, NULL, L, 1, train, 0, 0, out, len) == MOE_OK, "greedy: %s", moe_last_error());
        for (int b = 0; b < B; b++)
            for (int t = 0; t < 8; t++) seq[b * 8 + t] = t < len[b] ? out[b * L + t] : 1; /* then end marks */
        int ok = 1;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < len[b]; t++) {
                const double best = nll_at(m, c.src, seq, L, b, t, seq[b * 8 + t], train, step);
                for (int w = 0; w < VT; w++)
                    if (nll_at(m, c.src, seq, L, b, t, w, train, step) < best - 1e-5) ok = 0;
            }
        CHECK(ok, "greedy (train masks %d) picks the teacher-forced pass's argmax at every step", train);
    }
    /* teacher forcing inside s2s_sample: a row forced through its whole reference (end mark
     * included) returns the reference; a row forced for 2 tokens starts with them */
    {
        int32_t ref[B * 4] = {2, 3, 1, 0, 4, 4, 5, 1, 3, 2, 0, 1}, out[B * 7];
        int rl[B] = {3, 4, 4}, force[B] = {3, 2, 4}, len[B];
        CHECK(s2s_encode(m, c.src, B, TS, 0) == MOE_OK, "encode");
        CHECK(s2s_sample(m, ref, rl, 4, force, 7, 0, 0, 3, 0, out, len) == MOE_OK, "forced sampling: %s", moe_last_error());
        CHECK(len[0] == 3 && memcmp(out, ref, 3 * sizeof(int32_t)) == 0, "row forced to its end is the reference");
        CHECK(len[2] == 4 && memcmp(out + 14, ref + 8, 4 * sizeof(int32_t)) == 0, "row 2 too");
        CHECK(len[1] >= 2 && out[7] == 4 && out[8] == 4, "row forced for 2 tokens starts with them");
        force[1] = 5;
        CHECK(s2s_sample(m, ref, rl, 4, force, 7, 0, 0, 3, 0, out, len) == MOE_ERR_INVALID_ARG, "forcing past the reference");
    }
    /* beam 1 without a length penalty is greedy */
    int32_t g[B * 8], bm[8];
    int gl[B], bl;
    CHECK(moe_s2s_greedy(m, c.src, B, TS, 7, g, gl) == MOE_OK, "greedy");
    int same = 1;
    for (int b = 0; b < B; b++) {
        CHECK(moe_s2s_beam(m, c.src + b * TS, TS, 1, 0.0f, 7, bm, &bl) == MOE_OK, "beam: %s", moe_last_error());
        same &= bl == gl[b] && memcmp(bm, g + b * 7, sizeof(int32_t) * (size_t)bl) == 0;
        /* a wider beam finds a sequence at least as probable as greedy's */
        CHECK(moe_s2s_beam(m, c.src + b * TS, TS, 4, 0.0f, 7, bm, &bl) == MOE_OK, "beam 4");
    }
    CHECK(same, "beam 1 equals greedy");
    /* bad input */
    int32_t bad[TS] = {0, 1, VS, 2};
    CHECK(moe_s2s_greedy(m, bad, 1, TS, 7, g, gl) == MOE_ERR_INVALID_ARG, "source token outside the vocabulary");
    CHECK(moe_s2s_greedy(m, c.src, 1, TS, 99, g, gl) == MOE_ERR_CONFIG, "decoding longer than max_len");
    CHECK(moe_s2s_beam(m, c.src, TS, 0, 0.0f, 7, bm, &bl) == MOE_ERR_CONFIG, "beam 0");
    moe_s2s_free(m);
    moe_s2s *x = NULL;
    cfg.moe = 1;
    cfg.layers = 1;
    CHECK(moe_s2s_create(&x, &cfg, 1) == MOE_ERR_CONFIG && !x, "MoE needs two layers");
    cfg = small_cfg(1, 0, 0, 0.0f);
    cfg.eos = VT;
    CHECK(moe_s2s_create(&x, &cfg, 1) == MOE_ERR_CONFIG && !x, "end mark outside the target vocabulary");
    moe_s2s_free(NULL);
}

int main(void) {
    gradcheck(2, 1, 1, 0.2f);
    gradcheck(1, 0, 0, 0.0f);
    gradcheck(2, 0, 0, 0.3f);
    gradcheck(1, 1, 0, 0.0f);
    decoding(0);
    decoding(1);
    return test_finish("test_s2s");
}
