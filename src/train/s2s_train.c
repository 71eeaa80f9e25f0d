/* s2s_train.c - training the translation model: cross-entropy, MIXER and SCST (SPEC 3) over the
 * trainer core (train/run.h), on one process or data parallel over MPI ranks (each rank runs
 * its rows of every batch; the whole batch's sums are reduced where a step needs them, so P
 * ranks train what one process trains), with validation BLEU and checkpoints that resume
 * exactly (train/s2s_ckpt.c).
 *
 * One step on a batch of B pairs (sources of one length Ts, references y_b of L_b tokens with
 * the end mark):
 *   XENT   coef[b,t] = 1/N for t < L_b
 *   MIXER  the first s_b = min(s, L_b) tokens teacher-forced (coef 1/N; with mixer_from_end
 *          s_b = max(0, L_b - (T - s)): each reference's last T - s tokens), the rest sampled from
 *          the model (same dropout masks as the gradient pass), reward r_b = BLEU(prefix +
 *          sample, y_b), coef[b,t] = (r_b - baseline_t(h_bt)) / N for t >= s_b; the baseline is
 *          a linear regressor per step on the attention output h, trained by squared error and
 *          not backpropagated into the decoder (SPEC 3.2)
 *   SCST   the whole sequence sampled, coef = (r_b - r(greedy_b)) / N
 * N = all scored positions of the batch. With rl_xent > 0, each row of a sampling step is, with
 * that probability, teacher-forced on its whole reference instead (coef 1/N): the mixed
 * objective of GNMT and of Paulus et al., one row at a time. */

#define _POSIX_C_SOURCE 200809L
#include "base/internal.h"
#include "base/rng.h"
#include "io/ckpt_meta.h"
#include "models/model_table.h"
#include "models/s2s.h"
#include "parallel/comm.h"
#include "train/optset.h"
#include "train/run.h"
#include "train/s2s_ckpt.h"
#include "train/s2s_corpus.h"
#include "train/s2s_schedule.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

moe_s2s_train_config moe_s2s_train_config_default(void) {
    moe_s2s_train_config c = {.dict = NULL, .src_file = NULL, .tgt_file = NULL, .out_dir = "runs/seq2seq",
                              .objective = MOE_OBJ_XENT, .epochs = 0, .max_steps = 0, .n_xent = 8, .n_xer = 2, .delta = 3,
                              .batch = 64, .lr = 2e-3f, .lr_rl = 5e-4f, .clip = 1.0f, .seed = 1,
                              .reward = MOE_BLEU_PLUS1, .min_count = 3, .max_vocab = 8000, .max_words = 10,
                              .min_words = 3, .valid_sentences = 0, .log_every = 50, .ckpt_every = 0,
                              .baseline_lr = 1e-3f, .minutes = 0.0, .comm = NULL, .rl_xent = 0.0f};
    return c;
}

/* ---- schedule (SPEC 3.3) ---------------------------------------------------------------------- */
static int total_epochs(const moe_s2s_train_config *tc, int T) {
    return tc->epochs > 0 ? tc->epochs : tc->n_xent + mixer_stages(T, tc->delta) * tc->n_xer;
}
/* s for epoch e (0-based): -1 = cross-entropy only */
static int epoch_s(const moe_s2s_train_config *tc, int T, int e) {
    if (tc->objective == MOE_OBJ_XENT || e < tc->n_xent) return -1;
    if (tc->objective == MOE_OBJ_SCST) return 0;
    return mixer_stage_s(T, tc->delta, (e - tc->n_xent) / tc->n_xer);
}

static moe_status check_tc(const moe_s2s_train_config *tc) {
    if (!tc) return moe_fail(MOE_ERR_INVALID_ARG, "training config is NULL");
    if (tc->batch < 1 || tc->batch > 65536) return moe_fail(MOE_ERR_CONFIG, "batch %d must be in [1, 65536]", tc->batch);
    if (!(tc->lr > 0.0f) || !(tc->lr_rl >= 0.0f)) return moe_fail(MOE_ERR_CONFIG, "learning rates must be positive");
    if (tc->n_xent < 0 || tc->n_xer < 1 || tc->delta < 1)
        return moe_fail(MOE_ERR_CONFIG, "MIXER schedule n_xent=%d n_xer=%d delta=%d: need n_xent >= 0, n_xer >= 1, delta >= 1",
                        tc->n_xent, tc->n_xer, tc->delta);
    if (tc->max_steps < 0) return moe_fail(MOE_ERR_CONFIG, "max steps %lld must be >= 0", (long long)tc->max_steps);
    if (!(tc->minutes >= 0.0) || !isfinite(tc->minutes)) return moe_fail(MOE_ERR_CONFIG, "minutes %g must be >= 0", tc->minutes);
    if (tc->epochs < 0) return moe_fail(MOE_ERR_CONFIG, "epochs %d must be >= 0", tc->epochs);
    if (tc->max_words < 1 || tc->max_words > 4000) return moe_fail(MOE_ERR_CONFIG, "max words %d must be in [1, 4000]", tc->max_words);
    if (tc->min_count < 1) return moe_fail(MOE_ERR_CONFIG, "min count %d must be >= 1", tc->min_count);
    if (tc->objective < MOE_OBJ_XENT || tc->objective > MOE_OBJ_SCST) return moe_fail(MOE_ERR_CONFIG, "unknown objective");
    if ((int)tc->reward < 0 || tc->reward > MOE_BLEU_PLUS1) return moe_fail(MOE_ERR_CONFIG, "unknown reward smoothing");
    if (!(tc->baseline_lr >= 0.0f)) return moe_fail(MOE_ERR_CONFIG, "baseline learning rate must be >= 0");
    if (!(tc->rl_xent >= 0.0f && tc->rl_xent <= 1.0f))
        return moe_fail(MOE_ERR_CONFIG, "rl_xent %g must be in [0, 1] (the share of rows under cross-entropy)", (double)tc->rl_xent);
    return MOE_OK;
}


/* ---- a run ------------------------------------------------------------------------------------ */
typedef struct {
    int32_t *seq, *in, *tgt, *greedy, *tmp;
    float *coef;
    double *nt;          /* [T] rows sampled at step t over all ranks (the baseline's mean) */
    int *len, *glen, *force, *counts;
    double *reward;
} step_ws;

typedef struct {
    double xent_sum; /* sum of -log p over teacher-forced tokens */
    double xent_n, tokens, reward_sum, reward_n, berr_sum, berr_n;
} step_stats;
#define STEP_STATS 7 /* the doubles of step_stats, summed over ranks for a report */

/* A training run of the translation model: the trainer core and everything the steps use. */
typedef struct {
    run_core core;
    const moe_s2s_train_config *tc;
    moe_s2s_callback cb;
    void *user;
    moe_comm *comm; /* NULL: one process */
    moe_s2s *m;
    s2s_corpus c;
    const ptable *pt; /* the model's: groups s2s, moe0, moe1 (if present), baseline */
    optset opt;
    int gbase;        /* the baseline regressors' group, stepped on its own */
    s2s_pos pos;      /* the next batch; pos.step is kept in core.step while running */
    int T, E;         /* longest target with its end mark; epochs in all */
    int64_t steps_per_epoch;
    step_ws w;
    step_stats acc;   /* this rank's sums over the report interval */
    double cv_sum, mm_sum;
    int nint;
    float lr;
    run_watch watch;  /* divergence of the cross-entropy of the forced tokens */
    char path[4096];  /* the checkpoint */
} s2s_run;

static moe_status sum_ranks(const s2s_run *r, double *v, int n) {
    return r->comm ? comm_allreduce_sum_f64(r->comm, v, n) : MOE_OK;
}
static moe_status max_ranks(const s2s_run *r, int *v) {
    if (!r->comm) return MOE_OK;
    int x = -*v;
    moe_status st = comm_allreduce_min_int(r->comm, &x);
    *v = -x;
    return st;
}

static void step_ws_free(step_ws *w) {
    void *p[] = {w->seq, w->in, w->tgt, w->greedy, w->tmp, w->coef, w->nt, w->len, w->glen, w->force, w->counts, w->reward};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    memset(w, 0, sizeof *w);
}

static moe_status step_ws_make(step_ws *w, int B, int T, int n_experts) {
    const size_t n = (size_t)B * T;
    w->seq = malloc(sizeof(int32_t) * n);
    w->in = malloc(sizeof(int32_t) * n);
    w->tgt = malloc(sizeof(int32_t) * n);
    w->greedy = malloc(sizeof(int32_t) * n);
    w->tmp = malloc(sizeof(int32_t) * (size_t)(T + 1));
    w->coef = malloc(sizeof(float) * n);
    w->len = malloc(sizeof(int) * (size_t)B);
    w->glen = malloc(sizeof(int) * (size_t)B);
    w->force = malloc(sizeof(int) * (size_t)B);
    w->reward = malloc(sizeof(double) * (size_t)B);
    w->nt = malloc(sizeof(double) * (size_t)T);
    w->counts = malloc(sizeof(int) * (size_t)(n_experts > 0 ? n_experts : 1));
    if (!w->seq || !w->in || !w->tgt || !w->greedy || !w->tmp || !w->coef || !w->len || !w->glen || !w->force || !w->reward ||
        !w->nt || !w->counts)
        return moe_fail(MOE_ERR_NOMEM, "out of memory for the training step");
    return MOE_OK;
}

/* ---- one training step on this rank's rows [lo, lo + n) of a batch ------------------------------ */
/* How many tokens each row takes from its reference (all: cross-entropy; s: MIXER; 0: SCST);
 * in a sampling epoch a row is all cross-entropy with probability rl_xent, drawn from (seed,
 * step, the row's place in the whole batch) so that any rank count draws the same rows.
 * *rl: whether any row of the whole batch samples. */
static moe_status plan_force(s2s_run *r, const s2s_batch *b, int s, int *rl) {
    const uint64_t key = rng_key(r->tc->seed ^ 0x726c78656e74ULL);
    double any = 0.0;
    for (int i = 0; i < b->n; i++) {
        const int L = b->ref_len[b->lo + i];
        r->w.force[i] = mixer_forced(L, s, r->T, r->tc->mixer_from_end);
        const uint64_t ctr = ((uint64_t)r->core.step << 24) + (uint64_t)(b->lo + i);
        if (s >= 0 && r->tc->rl_xent > 0.0f && rng_uniform_key(key, ctr) < r->tc->rl_xent) r->w.force[i] = L;
        if (r->w.force[i] < L) any = 1.0;
    }
    moe_status st = sum_ranks(r, &any, 1);
    *rl = any > 0.0;
    return st;
}

/* Encodes the rows; the sequences the decoder is trained on: the references, or (REINFORCE)
 * the forced prefix and the model's samples, with their rewards; SCST first decodes greedily
 * for its baseline. *Tt: the longest over the whole batch. */
static moe_status roll_out(s2s_run *r, const s2s_batch *b, int rl, int scst, int *Tt) {
    moe_s2s *m = r->m;
    step_ws *w = &r->w;
    const int n = b->n, T = r->T, V = moe_s2s_get_config(m).tgt_vocab;
    const int32_t *src = b->src + (size_t)b->lo * b->Ts, *ref = b->ref + (size_t)b->lo * b->R;
    const int *ref_len = b->ref_len + b->lo;
    moe_status st = r->comm ? moe_s2s_set_slice(m, b->lo, b->nb) : MOE_OK;
    if (!st && scst && rl) { /* the baseline: the greedy decode's reward (test-time setting: no dropout) */
        st = s2s_encode(m, src, n, b->Ts, 0);
        if (!st) st = s2s_sample(m, NULL, NULL, 0, NULL, T, 1, 0, 0, 0, w->greedy, w->glen);
    }
    if (!st) st = s2s_encode(m, src, n, b->Ts, 1);
    if (!st && rl) {
        const uint64_t ctr = (uint64_t)r->core.step << 24;
        st = s2s_sample(m, ref, ref_len, b->R, w->force, T, 0, 1, r->tc->seed ^ 0x73616d70ULL, ctr, w->seq, w->len);
    }
    if (st) return st;
    *Tt = 0;
    for (int i = 0; i < n; i++) {
        if (rl) {
            moe_bleu_stats bs;
            s2s_bleu_stats(&bs, w->seq + (size_t)i * T, w->len[i], ref + (size_t)i * b->R, ref_len[i], V, w->tmp);
            w->reward[i] = moe_bleu_score(&bs, r->tc->reward);
        } else {
            w->len[i] = ref_len[i];
            memcpy(w->seq + (size_t)i * T, ref + (size_t)i * b->R, sizeof(int32_t) * (size_t)ref_len[i]);
        }
        if (w->len[i] > *Tt) *Tt = w->len[i];
    }
    return max_ranks(r, Tt);
}

/* The teacher-forced pass over the sequences [n, Tt] with coefficient 1/N on the forced tokens
 * (N: the scored positions of the whole batch, *N). */
static moe_status teacher_pass(s2s_run *r, int n, int Tt, double *N, double *loss) {
    step_ws *w = &r->w;
    const int T = r->T, eos = moe_s2s_get_config(r->m).eos;
    *N = 0.0;
    for (int i = 0; i < n; i++) *N += w->len[i];
    moe_status st = sum_ranks(r, N, 1);
    if (st) return st;
    const float invN = (float)(1.0 / *N);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < Tt; t++) {
            const size_t o = (size_t)i * Tt + t;
            const int L = w->len[i];
            w->in[o] = t == 0 ? eos : (t - 1 < L ? w->seq[(size_t)i * T + t - 1] : eos);
            w->tgt[o] = t < L ? w->seq[(size_t)i * T + t] : eos;
            w->coef[o] = t < w->force[i] && t < L ? invN : 0.0f;
        }
    return s2s_decode(r->m, w->in, w->tgt, w->coef, Tt, 1, loss);
}

/* MIXER's baseline for row i at step t: the regressor's prediction, clipped to [0, 1] where a
 * reward lies; its squared error's gradient over the rows sampled at t goes to the regressor. */
static double baseline_at(s2s_run *r, const moe_param *bw, const moe_param *bb, int i, int t, int n) {
    const int d = moe_s2s_get_config(r->m).d;
    const float *h = s2s_hidden(r->m) + ((size_t)t * n + i) * d, *wt = bw->data + (size_t)t * d;
    double pred = bb->data[t];
    for (int j = 0; j < d; j++) pred += (double)wt[j] * h[j];
    const double e = pred - r->w.reward[i];
    r->acc.berr_sum += e * e;
    r->acc.berr_n += 1.0;
    const float g = (float)(e / r->w.nt[t]);
    float *gwt = bw->grad + (size_t)t * d;
    for (int j = 0; j < d; j++) gwt[j] += g * h[j];
    bb->grad[t] += g;
    return pred < 0.0 ? 0.0 : (pred > 1.0 ? 1.0 : pred);
}

/* REINFORCE's coefficients (r - baseline) / N of the sampled positions; MIXER's regressors take
 * their own Adam step on the gradient of the whole batch (after the coefficients used them). */
static moe_status reinforce(s2s_run *r, const s2s_batch *b, int scst, int Tt, double N) {
    step_ws *w = &r->w;
    const int n = b->n, T = r->T, V = moe_s2s_get_config(r->m).tgt_vocab;
    moe_param bw, bb;
    moe_s2s_find_param(r->m, "baseline.w", &bw);
    moe_s2s_find_param(r->m, "baseline.b", &bb);
    memset(w->nt, 0, sizeof(double) * (size_t)T);
    for (int i = 0; i < n; i++)
        for (int t = w->force[i]; t < w->len[i]; t++) w->nt[t] += 1.0;
    moe_status st = sum_ranks(r, w->nt, T);
    for (int i = 0; i < n && !st; i++) {
        if (w->force[i] >= w->len[i]) continue;
        r->acc.reward_sum += w->reward[i];
        r->acc.reward_n += 1.0;
        double base = 0.0;
        if (scst) {
            moe_bleu_stats bs;
            const size_t ro = (size_t)(b->lo + i) * b->R;
            s2s_bleu_stats(&bs, w->greedy + (size_t)i * T, w->glen[i], b->ref + ro, b->ref_len[b->lo + i], V, w->tmp);
            base = moe_bleu_score(&bs, r->tc->reward);
            r->acc.berr_sum += fabs(w->reward[i] - base);
            r->acc.berr_n += 1.0;
        }
        for (int t = w->force[i]; t < w->len[i]; t++) {
            if (!scst) base = baseline_at(r, &bw, &bb, i, t, n);
            w->coef[(size_t)i * Tt + t] = (float)((w->reward[i] - base) / N);
        }
    }
    if (!scst && !st) {
        const pgroup *g = &r->pt->g[r->gbase];
        if (r->comm) st = moe_comm_allreduce_sum(r->comm, g->grads, g->count);
        if (!st) st = optset_step(&r->opt, r->pt, r->tc->baseline_lr, 1u << r->gbase);
    }
    return st ? st : s2s_set_coef(r->m, w->coef);
}

/* One step's forward and backward on a batch with s forced tokens (-1: cross-entropy only). */
static moe_status train_step(s2s_run *r, const s2s_batch *b, int s) {
    const int scst = r->tc->objective == MOE_OBJ_SCST && s >= 0;
    int rl = 0, Tt = 0;
    double N = 0.0, loss = 0.0;
    moe_status st = plan_force(r, b, s, &rl);
    if (!st) st = roll_out(r, b, rl, scst, &Tt);
    if (!st) st = teacher_pass(r, b->n, Tt, &N, &loss);
    if (!st && rl) st = reinforce(r, b, scst, Tt, N);
    if (st) return st;
    double x[2] = {0.0, 0.0}; /* the cross-entropy of the forced tokens: sum -log p, count */
    for (int i = 0; i < b->n; i++) x[1] += r->w.force[i] < r->w.len[i] ? r->w.force[i] : r->w.len[i];
    x[0] = x[1] > 0.0 ? (loss - s2s_last_aux(r->m)) * N : 0.0; /* loss = this rank's sum nll / N + aux */
    r->acc.xent_sum += x[0];
    r->acc.xent_n += x[1];
    if ((st = sum_ranks(r, x, 2))) return st;
    if (x[1] > 0.0 && (st = run_watch_step(&r->watch, x[0] / x[1], r->core.step + 1, r->path))) return st;
    for (int i = 0; i < b->n; i++) r->acc.tokens += r->w.len[i];
    return moe_s2s_backward(r->m);
}

/* The replicated groups' gradients summed over ranks (a split MoE layer sums its gate itself,
 * and the baseline was stepped already), the global norm clipped, the optimisers' step. */
static moe_status optim_step(s2s_run *r) {
    const uint32_t mask = OPT_ALL & ~(1u << r->gbase);
    const ptable *pt = r->pt;
    moe_status st = MOE_OK;
    for (int g = 0; g < pt->ngroups && r->comm && !st; g++)
        if (((mask >> g) & 1u) && !pt->g[g].sharded) st = moe_comm_allreduce_sum(r->comm, pt->g[g].grads, pt->g[g].count);
    double n2 = 0.0;
    if (!st) st = ptable_grad_norm2(pt, r->comm, mask, &n2);
    const double norm = sqrt(n2);
    if (!st && !isfinite(norm)) return run_watch_fail(&r->watch, "the gradient norm", norm, r->core.step + 1, r->path);
    const float clip = r->tc->clip;
    if (!st && clip > 0.0f && norm > clip) ptable_scale_grads(pt, mask, (float)(clip / norm));
    return st ? st : optset_step(&r->opt, pt, r->lr, mask);
}

/* The decoder MoE's balance in the step just taken (its last forward was the training pass). */
static void load_stats(s2s_run *r) {
    moe_layer *ml = moe_s2s_moe(r->m, 1);
    const int n = moe_s2s_get_config(r->m).n;
    int *c = r->w.counts;
    if (!ml || moe_layer_counts(ml, c) != MOE_OK) return;
    double mean = 0, var = 0, mx = 0;
    for (int e = 0; e < n; e++) mean += c[e];
    mean /= n;
    for (int e = 0; e < n; e++) var += (c[e] - mean) * (c[e] - mean), mx = fmax(mx, c[e]);
    r->cv_sum += mean > 0 ? sqrt(var / n) / mean : 0;
    r->mm_sum += mean > 0 ? mx / mean : 0;
}

/* ---- reports, validation, checkpoints ----------------------------------------------------------- */
/* A report of `kind` at the run's position. */
static moe_s2s_progress progress_at(const s2s_run *r, moe_s2s_progress_kind kind, const char *phase, int s) {
    moe_s2s_progress p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.step = r->core.step;
    p.steps = r->steps_per_epoch * r->E;
    p.epoch = r->pos.epoch;
    p.epochs = r->E;
    p.phase = phase;
    p.s = s;
    p.elapsed_s = run_elapsed(&r->core);
    return p;
}

/* rank 0's callback on p, its verdict on every rank */
static int s2s_call(s2s_run *r, const moe_s2s_progress *p) {
    return run_verdict(&r->core, r->cb && r->core.rank == 0 ? r->cb(p, r->user) : 0);
}

/* The interval's means over the whole batch (collective); starts the next interval. */
static moe_status s2s_report(s2s_run *r, const char *phase, int s) {
    double v[STEP_STATS] = {r->acc.xent_sum, r->acc.xent_n, r->acc.tokens, r->acc.reward_sum,
                            r->acc.reward_n, r->acc.berr_sum, r->acc.berr_n};
    moe_status st = sum_ranks(r, v, STEP_STATS);
    if (st) return st;
    const double dt = run_interval(&r->core), t = run_now() - r->core.t_start;
    const int64_t done = r->core.step - r->core.first_step;
    moe_s2s_progress p = progress_at(r, MOE_S2S_TRAIN, phase, s);
    p.loss = v[1] > 0 ? v[0] / v[1] : NAN;
    p.reward = v[4] > 0 ? v[3] / v[4] : NAN;
    p.baseline_err = v[6] > 0 ? v[5] / v[6] : NAN;
    p.tokens_per_s = v[2] / fmax(dt, 1e-9);
    p.eta_s = done > 0 ? t / (double)done * (double)(p.steps - r->core.step) : NAN;
    p.lr = r->lr;
    p.cv_load = r->nint ? r->cv_sum / r->nint : 0;
    p.max_mean_load = r->nint ? r->mm_sum / r->nint : 0;
    s2s_call(r, &p);
    memset(&r->acc, 0, sizeof r->acc);
    r->cv_sum = r->mm_sum = 0;
    r->nint = 0;
    run_restart_interval(&r->core);
    return v[1] > 0 ? run_watch_mean(&r->watch, p.loss, r->core.step, r->path, 1) : MOE_OK;
}

/* Greedy BLEU on the validation split (collective), reported. */
static moe_status s2s_validate(s2s_run *r, const char *phase, int s) {
    double vb = 0;
    int nv = 0;
    moe_status st = s2s_split_bleu(r->m, r->comm, &r->c.data, 1, 1, 0.0f, r->tc->valid_sentences, 128, &vb, &nv);
    if (st) return st;
    moe_s2s_progress p = progress_at(r, MOE_S2S_EPOCH, phase, s);
    p.valid_bleu = vb;
    s2s_call(r, &p);
    run_restart_interval(&r->core); /* the next speed report counts training only */
    return MOE_OK;
}

/* The checkpoint (resuming at batch `next` of the epoch), reported. */
static moe_status s2s_save(s2s_run *r, int next) {
    double x[2] = {r->acc.xent_sum, r->acc.xent_n}; /* the steps since the last report must not be diverging */
    moe_status sw = sum_ranks(r, x, 2);
    if (!sw && x[1] > 0.0) sw = run_watch_mean(&r->watch, x[0] / x[1], r->core.step, r->path, 0);
    if (sw) return sw;
    s2s_pos pos = r->pos;
    pos.batch_in_epoch = next;
    pos.step = r->core.step;
    pos.elapsed = run_elapsed(&r->core);
    moe_status st = s2s_ckpt_write(r->path, r->comm, r->tc, r->m, &r->c, &r->opt, &pos);
    if (st) return st;
    r->watch.last_save = r->core.step;
    moe_s2s_progress p = progress_at(r, MOE_S2S_CHECKPOINT, NULL, -1);
    p.path = r->path;
    s2s_call(r, &p);
    return MOE_OK;
}

/* The start report (collective: the experts of every rank counted). */
static void s2s_start_report(s2s_run *r) {
    const moe_s2s_config cfg = moe_s2s_get_config(r->m);
    moe_s2s_progress p = progress_at(r, MOE_S2S_START, s2s_objective_name(r->tc->objective), -1);
    double experts = 0.0; /* this rank's share of the expert tensors; the rest is on every rank */
    for (int i = 0; i < r->pt->count; i++)
        if (r->pt->t[i].expert) experts += (double)r->pt->t[i].numel;
    const double here = experts;
    if (sum_ranks(r, &experts, 1)) experts = here;
    p.params_total = ptable_numel(r->pt) + (int64_t)(experts - here);
    p.src_vocab = cfg.src_vocab;
    p.tgt_vocab = cfg.tgt_vocab;
    p.train_pairs = r->c.ntrain;
    p.valid_pairs = r->c.nvalid;
    p.test_pairs = r->c.ntest;
    p.dropped = r->c.data.dropped_long;
    s2s_call(r, &p);
}

/* ---- setting up a run --------------------------------------------------------------------------- */
/* Every rank must run the same settings: a mismatch would pair up different collectives. */
static moe_status check_ranks(const moe_s2s_train_config *tc, moe_comm *comm, const char *resume) {
    const int64_t same[] = {tc->batch, (int64_t)tc->seed, tc->objective, tc->epochs, tc->max_steps, tc->n_xent,
                            tc->n_xer, tc->delta, tc->max_words, tc->min_words, tc->min_count, tc->max_vocab,
                            resume != NULL, (int64_t)(tc->minutes * 1000), tc->ckpt_every, tc->log_every,
                            tc->valid_sentences, tc->mixer_from_end, (int64_t)((double)tc->rl_xent * 1e6)};
    const char *what[] = {"--batch", "--seed", "--objective", "--epochs", "--steps", "--n-xent", "--n-xer",
                          "--delta", "--max-words", "--min-words", "--min-count", "--max-vocab", "--resume",
                          "--minutes", "--ckpt-every", "--log-every", "--valid-sentences", "--mixer-from", "--rl-xent"};
    moe_status st = MOE_OK;
    for (size_t i = 0; i < sizeof same / sizeof same[0] && !st; i++) st = moe_comm_check_same(comm, same[i], what[i]);
    return st;
}

/* Resume: the model, the data (which must be the checkpoint's), the position and the seed. */
static moe_status setup_resume(s2s_run *r, const moe_st *ck, moe_s2s_train_config *tc) {
    tok *ts = NULL, *tt = NULL;
    moe_status st = s2s_model_from_ckpt(ck, r->comm, &r->m, &ts, &tt);
    if (st) return st;
    const moe_s2s_config cc = moe_s2s_get_config(r->m);
    if (cc.max_len != tc->max_words + 1) {
        tok_free(ts);
        tok_free(tt);
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with --max-words %d; this run asks for %d",
                        cc.max_len - 1, tc->max_words);
    }
    st = s2s_corpus_load(&r->c, tc->dict, tc->src_file, tc->tgt_file, tc->min_words, tc->min_count, tc->max_vocab,
                         tc->max_words, ts, tt);
    uint64_t h = 0;
    if (!st) st = get_u64(ck, "data.hash", &h);
    if (!st && h != r->c.data.hash)
        st = moe_fail(MOE_ERR_CONFIG, "the data differs from the checkpoint's (other files or --min-words/--max-words): "
                                      "resume with the same data");
    int bsz = 0;
    if (!st) st = get_u64(ck, "seed", &tc->seed); /* the checkpoint's seed: data order, samples */
    if (!st) st = get_int_in(ck, "batch", 1, 65536, &bsz);
    if (!st && bsz != tc->batch)
        st = moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with --batch %d; resume with the same batch", bsz);
    return st ? st : s2s_pos_from_ckpt(ck, &r->pos);
}

/* A new run: the data, its vocabularies, a new model. */
static moe_status setup_new(s2s_run *r, const moe_s2s_config *mc, const moe_s2s_train_config *tc) {
    moe_status st = s2s_corpus_load(&r->c, tc->dict, tc->src_file, tc->tgt_file, tc->min_words, tc->min_count,
                                    tc->max_vocab, tc->max_words, NULL, NULL);
    if (st) return st;
    moe_s2s_config c = *mc;
    c.src_vocab = tok_vocab_size(r->c.ts);
    c.tgt_vocab = tok_vocab_size(r->c.tt);
    c.max_len = tc->max_words + 1;
    c.eos = TOK_NEWLINE;
    return r->comm ? moe_s2s_create_sharded(&r->m, &c, tc->seed, r->comm) : moe_s2s_create(&r->m, &c, tc->seed);
}

static moe_status mkdirs(const char *dir) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n + 1 > sizeof buf) return moe_fail(MOE_ERR_INVALID_ARG, "path too long: %s", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == 0) {
            char ch = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return moe_fail(MOE_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
            buf[i] = ch;
        }
    return MOE_OK;
}

/* The model (new or the checkpoint's), the optimisers, the output directory, the workspace. */
static moe_status s2s_setup(s2s_run *r, const moe_s2s_config *mc, const char *resume, moe_s2s_train_config *tc) {
    moe_st *ck = NULL;
    moe_status st = resume ? moe_st_open(&ck, resume) : MOE_OK;
    if (!st) st = resume ? setup_resume(r, ck, tc) : setup_new(r, mc, tc);
    const moe_adam_config ac = moe_adam_config_default();
    if (!st) {
        r->pt = s2s_table(r->m);
        r->gbase = ptable_group_index(r->pt, "baseline");
        st = optset_create(&r->opt, r->pt, &ac, OPT_ALL);
    }
    if (!st && ck) st = s2s_optim_from_ckpt(ck, r->pt, &r->opt);
    moe_st_free(ck);
    if (st) return st;
    const moe_s2s_config cfg = moe_s2s_get_config(r->m);
    r->T = cfg.max_len;
    r->E = total_epochs(tc, r->T);
    if ((st = r->core.rank == 0 ? mkdirs(tc->out_dir) : MOE_OK)) return st;
    if ((st = step_ws_make(&r->w, tc->batch, r->T, cfg.moe ? cfg.n : 0))) return st;
    s2s_batches bt;
    if ((st = s2s_make_batches(&r->c.data, 0, tc->batch, 1, tc->seed, 0, &bt))) return st;
    r->steps_per_epoch = bt.nbatch;
    s2s_batches_free(&bt);
    if (r->pos.batch_in_epoch > r->steps_per_epoch)
        return moe_fail(MOE_ERR_FORMAT, "the checkpoint resumes at batch %d of an epoch of %lld batches: a damaged file",
                        r->pos.batch_in_epoch, (long long)r->steps_per_epoch);
    return MOE_OK;
}

static void s2s_free(s2s_run *r) {
    step_ws_free(&r->w);
    optset_free(&r->opt);
    moe_s2s_free(r->m);
    s2s_corpus_free(&r->c);
}

/* ---- the loop ----------------------------------------------------------------------------------- */
/* The rest of the current epoch's batches; *bounded when --steps or --minutes ended it. */
static moe_status s2s_epoch(s2s_run *r, int *bounded) {
    const moe_s2s_train_config *tc = r->tc;
    const int s = epoch_s(tc, r->T, r->pos.epoch);
    const char *phase = s < 0 ? "xent" : s2s_objective_name(tc->objective);
    r->lr = s >= 0 && tc->lr_rl > 0.0f ? tc->lr_rl : tc->lr;
    s2s_batches bt;
    moe_status st = s2s_make_batches(&r->c.data, 0, tc->batch, 1, tc->seed, (uint64_t)r->pos.epoch, &bt);
    for (; !st && r->pos.batch_in_epoch < bt.nbatch && !r->core.stop; r->pos.batch_in_epoch++) {
        if (run_bound_reached(&r->core)) {
            *bounded = 1;
            break;
        }
        const int j = r->pos.batch_in_epoch;
        s2s_batch b;
        memset(&b, 0, sizeof b);
        st = s2s_batch_make(&b, &r->c.data, bt.idx + bt.start[j], bt.start[j + 1] - bt.start[j], r->T, r->comm);
        if (r->comm) st = comm_ready(r->comm, st); /* a rank without its batch stops every rank here */
        moe_s2s_zero_grad(r->m);
        if (!st) st = train_step(r, &b, s);
        s2s_batch_free(&b);
        if (!st) st = optim_step(r);
        if (st) break;
        r->core.step++;
        load_stats(r);
        r->nint++;
        if (run_due(&r->core, tc->log_every > 0 ? tc->log_every : 50) || j + 1 == bt.nbatch) st = s2s_report(r, phase, s);
        if (!st && !r->core.stop && run_due(&r->core, tc->ckpt_every)) st = s2s_save(r, j + 1);
    }
    s2s_batches_free(&bt);
    return st;
}

moe_status moe_s2s_train(const moe_s2s_train_config *tc_in, const moe_s2s_config *mc, const char *resume,
                         moe_s2s_callback cb, void *user) {
    moe_status st = check_tc(tc_in);
    if (st) return st;
    if (!mc && !resume) return moe_fail(MOE_ERR_INVALID_ARG, "need a model config or a checkpoint to resume");
    moe_s2s_train_config tc = *tc_in; /* resuming: the checkpoint's seed */
    s2s_run r;
    memset(&r, 0, sizeof r);
    r.tc = &tc;
    r.cb = cb;
    r.user = user;
    r.comm = tc.comm && moe_comm_size(tc.comm) > 1 ? tc.comm : NULL;
    r.core.rank = r.comm ? moe_comm_rank(r.comm) : 0;
    snprintf(r.path, sizeof r.path, "%s/model.safetensors", tc.out_dir);
    if (r.comm && (st = check_ranks(&tc, r.comm, resume))) return st;
    st = s2s_setup(&r, mc, resume, &tc);
    if (!st) {
        run_begin(&r.core, r.comm, r.pos.step, tc.max_steps, tc.minutes, r.pos.elapsed);
        run_watch_begin(&r.watch, moe_s2s_get_config(r.m).tgt_vocab);
        s2s_start_report(&r);
    }
    int bounded = 0;
    while (!st && !r.core.stop && !bounded && r.pos.epoch < r.E) {
        if ((st = s2s_epoch(&r, &bounded))) break;
        const int s = epoch_s(&tc, r.T, r.pos.epoch);
        if (r.pos.batch_in_epoch >= r.steps_per_epoch) { /* the epoch is complete */
            r.pos.epoch++;
            r.pos.batch_in_epoch = 0;
            st = s2s_validate(&r, s < 0 ? "xent" : s2s_objective_name(tc.objective), s);
        }
        if (!st) st = s2s_save(&r, r.pos.batch_in_epoch);
    }
    s2s_free(&r);
    if (!st) moe_clear_error(); /* a step may have tolerated a failure (e.g. no expert counts) */
    return st;
}
