/* train.c - the language model's training loop and its checkpoints.
 *
 * A checkpoint is one safetensors file (written atomically) holding everything a run depends on:
 *   lm.<param>, moe.<param>        the weights (SPEC 1.5 names for the MoE layer)
 *   optim.lm.m/v, optim.moe.m/v    Adam's moments over each arena (no m with beta1 = 0; v holds
 *                                  row and column means of matrices with --optim factored)
 *   state                          the LSTM state carried between batches [4,B,d]
 *   __metadata__                   model and training settings, the tokenizer, the step, Adam's
 *                                  step, the random streams' counters, the data position
 * so that resuming continues the exact same sequence of batches, dropout masks and gate noise:
 * N steps then N more give the same parameters as 2N straight. */
#define _POSIX_C_SOURCE 200809L
#include "parallel/comm.h"
#include "io/ckpt_meta.h"
#include "base/internal.h"
#include "data/textdata.h"
#include "data/tokenizer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CKPT_FORMAT "moe-lm-checkpoint-1"
/* optimiser state per tensor (optim.lm.m.<name>, ...); the arena-wide optim.lm.m of earlier
 * checkpoints is not read for resuming */

moe_train_config moe_train_config_default(void) {
    moe_train_config c = {.data = NULL, .words = 0, .min_count = 2, .max_vocab = 10000,
                          .lowercase = 0, .batch = 32, .bptt = 64, .steps = 1000, .minutes = 0.0,
                          .lr = 2e-3f, .warmup = 200, .clip = 1.0f, .optim = NULL, .log_every = 20,
                          .eval_every = 200, .eval_batches = 0, .ckpt_every = 500,
                          .checkpoint = NULL, .seed = 1};
    return c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- checkpoint contents ---- */

typedef struct {
    moe_lm *lm;
    tok *tk;
    moe_adam *opt_lm, *opt_moe; /* may be NULL (inference) */
    int factored;               /* the optimiser is the paper's factored variant */
    moe_comm *comm;             /* NULL: one process */
    const moe_train_config *tc;
    int64_t step;
    td_pos pos;
    uint64_t tokens_seen;
    double elapsed;
} run_state;

static const char *ffn_name(moe_ffn_kind k) {
    return k == MOE_FFN_MOE ? "moe" : k == MOE_FFN_DENSE ? "dense" : "none";
}

/* ---- data parallelism: which streams and experts this rank has ---- */

static int nranks(const moe_comm *c) { return c ? moe_comm_size(c) : 1; }
static int myrank(const moe_comm *c) { return c ? moe_comm_rank(c) : 0; }
/* the first stream (of B) or expert (of n) of rank r */
static int first_of(int total, int P, int r) { return (int)((int64_t)total * r / P); }

/* Collective, before a collective that a rank may be unready for (a buffer it could not get):
 * `mine` is this rank's status, and every rank learns whether any rank failed. Then all of them
 * return a failing status together and none is left waiting: the failing rank keeps its own
 * message, the others name it. The library never ends the job; the application decides. */
static moe_status ranks_ready(moe_comm *comm, moe_status mine) {
    if (nranks(comm) == 1) return mine;
    double v[3] = {mine ? 1.0 : 0.0, mine ? (double)myrank(comm) : 0.0, mine ? (double)mine : 0.0};
    moe_status st = comm_allreduce_sum_f64(comm, v, 3); /* no allocation: it cannot fail for memory */
    if (mine) return mine;
    if (st) return st;
    if (v[0] == 0.0) return MOE_OK;
    if (v[0] == 1.0)
        return moe_fail((moe_status)(int)v[2], "rank %d could not go on (%s; its message says more), so no rank does",
                        (int)v[1], moe_status_str((moe_status)(int)v[2]));
    return moe_fail(MOE_ERR_COMM, "%d ranks could not go on (their messages say why), so no rank does", (int)v[0]);
}

/* Tensors of a checkpoint, gathered on rank 0, which alone writes. */
typedef struct {
    moe_st_writer *w; /* rank 0 only */
    moe_comm *comm;
    int n;            /* experts, for the slices of expert tensors */
    moe_status st;
    void *keep[160];  /* names and gathered buffers, freed after the write */
    int nkeep;
    int stopped;      /* the ranks agreed that one failed (ranks_ready): no more gathers */
} ck_out;

static void *ck_keep(ck_out *o, void *p) {
    if (!p && !o->st) o->st = moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
    else if (p && o->nkeep < (int)(sizeof o->keep / sizeof o->keep[0])) o->keep[o->nkeep++] = p;
    else if (p) {
        free(p);
        p = NULL;
        if (!o->st) o->st = moe_fail(MOE_ERR_NOMEM, "too many tensors in one checkpoint");
    }
    return p;
}

static char *ck_name(ck_out *o, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = ck_keep(o, malloc(la + lb + 1));
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* One tensor. An expert tensor (`expert`) holds this rank's experts along dim 0 when they are
 * split over ranks; the file gets all n in order (collective then). A buffer that a rank cannot
 * have stops the gathering on every rank (ranks_ready), and the checkpoint fails everywhere. */
static void ck_add(ck_out *o, const char *prefix, const char *name, int ndim, const int64_t *shape, const float *data,
                   size_t numel, int expert) {
    const int P = nranks(o->comm), me = myrank(o->comm);
    char *nm = o->w ? ck_name(o, prefix, name) : NULL;
    if (!expert || P == 1) {
        if (o->w && nm && !o->st) o->st = moe_st_writer_add(o->w, nm, MOE_F32, ndim, shape, data);
        return;
    }
    if (o->stopped) return;
    const size_t per = numel / (size_t)shape[0];
    int *rc = malloc(sizeof(int) * (size_t)P), *rd = malloc(sizeof(int) * (size_t)P);
    float *full = NULL;
    moe_status st = MOE_OK;
    if (per * (size_t)o->n > (size_t)INT32_MAX)
        st = moe_fail(MOE_ERR_UNSUPPORTED, "%s%s has %zu floats, more than one MPI gather can take", prefix, name,
                      per * (size_t)o->n);
    else if (me == 0 && !(full = ck_keep(o, moe_alloc_floats(per * (size_t)o->n))))
        st = moe_fail(MOE_ERR_NOMEM, "out of memory for %s%s of the checkpoint", prefix, name);
    else if (!rc || !rd)
        st = moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
    if ((st = ranks_ready(o->comm, st))) {
        o->stopped = 1;
        if (!o->st) o->st = st;
    } else {
        for (int r = 0; r < P; r++) {
            rd[r] = (int)(first_of(o->n, P, r) * per);
            rc[r] = (int)((first_of(o->n, P, r + 1) - first_of(o->n, P, r)) * per);
        }
        st = comm_gatherv_f32(o->comm, data, (int)numel, full, rc, rd, 0);
        if (st && !o->st) o->st = st;
    }
    free(rc);
    free(rd);
    if (me == 0 && nm && !o->st) {
        int64_t fs[3] = {shape[0], shape[1], shape[2]};
        fs[0] = o->n;
        o->st = moe_st_writer_add(o->w, nm, MOE_F32, ndim, fs, full);
    }
}

/* Parameters and their optimiser state (per tensor: m with the parameter's shape; v with it, or
 * [count, rows + cols] for the factored variant's row and column means) of one arena. */
static void ck_add_arena(ck_out *o, const char *tag, moe_adam *opt, int np, moe_param *ps, const float *arena, int sharded) {
    char pfx[3][32];
    snprintf(pfx[0], sizeof pfx[0], "%s.", tag);
    snprintf(pfx[1], sizeof pfx[1], "optim.%s.m.", tag);
    snprintf(pfx[2], sizeof pfx[2], "optim.%s.v.", tag);
    for (int i = 0; i < np; i++) {
        const moe_param *p = &ps[i];
        const int expert = sharded && strncmp(p->name, "experts.", 8) == 0;
        ck_add(o, pfx[0], p->name, p->ndim, p->shape, p->data, p->numel, expert);
        if (!opt) continue;
        float *m = NULL, *v = NULL;
        size_t vl = 0;
        moe_status st = moe_adam_range_state(opt, (size_t)(p->data - arena), p->numel, &m, &v, &vl);
        if (st) {
            if (!o->st) o->st = st;
            continue; /* the same on every rank: the layouts agree */
        }
        if (m) ck_add(o, pfx[1], p->name, p->ndim, p->shape, m, p->numel, expert);
        if (vl == p->numel) {
            ck_add(o, pfx[2], p->name, p->ndim, p->shape, v, vl, expert);
        } else {
            int64_t lead = p->ndim == 3 ? p->shape[0] : 1, vs[3] = {lead, (int64_t)vl / lead, 0};
            ck_add(o, pfx[2], p->name, 2, vs, v, vl, expert);
        }
    }
}

static moe_status ckpt_write(const run_state *r, const char *path) {
    moe_comm *comm = r->comm;
    const int P = nranks(comm), me = myrank(comm);
    moe_st_writer *w = NULL;
    moe_status st = me == 0 ? moe_st_writer_create(&w) : MOE_OK;
    if ((st = ranks_ready(comm, st))) return st; /* rank 0's failure: every rank returns it */
    meta_w m = {w, MOE_OK};
    moe_lm_config c = moe_lm_get_config(r->lm);
    moe_layer *ml = moe_lm_moe(r->lm);
    char *ts = NULL;
    if (me == 0) {
        meta_str(&m, "format", CKPT_FORMAT);
        meta_i64(&m, "vocab", c.vocab);
        meta_i64(&m, "d", c.d);
        meta_str(&m, "ffn", ffn_name(c.ffn));
        meta_i64(&m, "n", c.n);
        meta_i64(&m, "k", c.k);
        meta_i64(&m, "h", c.h);
        meta_f(&m, "w_importance", c.w_importance);
        meta_f(&m, "w_load", c.w_load);
        meta_f(&m, "noise_eps", c.noise_eps);
        meta_f(&m, "dropout", c.dropout);
        meta_i64(&m, "groups", c.groups);
        meta_i64(&m, "k_groups", c.k_groups);
        if (!m.st) m.st = tok_serialize(r->tk, &ts);
        meta_str(&m, "tokenizer", ts ? ts : "");
        meta_str(&m, "tokenizer.kind", tok_get_kind(r->tk) == TOK_WORDS ? "words" : "bytes");
        const moe_train_config *tc = r->tc;
        if (tc) {
            meta_str(&m, "data", tc->data ? tc->data : "");
            meta_i64(&m, "batch", tc->batch);
            meta_i64(&m, "bptt", tc->bptt);
            meta_f(&m, "lr", tc->lr);
            meta_i64(&m, "warmup", tc->warmup);
            meta_f(&m, "clip", tc->clip);
            meta_u64(&m, "seed", tc->seed);
            meta_i64(&m, "ranks", P);
        }
        meta_i64(&m, "step", r->step);
        meta_u64(&m, "tokens_seen", r->tokens_seen);
        meta_f(&m, "elapsed_s", r->elapsed);
        meta_u64(&m, "data.step", r->pos.step);
        meta_u64(&m, "data.ntokens", r->pos.ntokens);
        moe_lm_rng rng = moe_lm_get_rng(r->lm);
        meta_u64(&m, "rng.seed", rng.seed);
        meta_u64(&m, "rng.dropout_counter", rng.dropout_counter);
        meta_u64(&m, "rng.moe_seed", rng.moe_seed);
        meta_u64(&m, "rng.moe_counter", rng.moe_counter);
        if (r->opt_lm) meta_str(&m, "optim", r->factored ? "factored" : "adam");
        for (int o = 0; o < 2; o++) {
            moe_adam *a = o ? r->opt_moe : r->opt_lm;
            moe_adam_state_view sv;
            if (a && !moe_adam_state(a, &sv)) meta_i64(&m, o ? "optim.moe.step" : "optim.lm.step", *sv.step);
        }
    }
    ck_out o = {w, comm, ml ? moe_layer_get_config(ml).n : 1, m.st, {0}, 0, 0};
    moe_param ps[16];
    const int nlp = moe_lm_num_params(r->lm);
    float *arena;
    for (int i = 0; i < nlp; i++) moe_lm_param(r->lm, i, &ps[i]);
    moe_lm_arena(r->lm, &arena, NULL, NULL);
    ck_add_arena(&o, "lm", r->opt_lm, nlp, ps, arena, 0);
    if (ml) {
        const int nmp = moe_layer_num_params(ml);
        for (int i = 0; i < nmp; i++) moe_layer_param(ml, i, &ps[i]);
        moe_layer_arena(ml, &arena, NULL, NULL);
        int e0, ne;
        moe_layer_shard(ml, &e0, &ne);
        ck_add_arena(&o, "moe", r->opt_moe, nmp, ps, arena, ne < o.n);
    }
    if (r->tc) { /* the carried LSTM state of all B streams [4, B, d], each rank's rows in place */
        const int B = r->tc->batch, b0 = first_of(B, P, me), nb = first_of(B, P, me + 1) - b0;
        float *local = malloc(sizeof(float) * 4 * (size_t)nb * c.d);
        float *full = me == 0 ? ck_keep(&o, moe_alloc_floats(4 * (size_t)B * c.d)) : NULL;
        int *rc = P > 1 ? malloc(sizeof(int) * (size_t)P) : NULL, *rd = P > 1 ? malloc(sizeof(int) * (size_t)P) : NULL;
        st = !local || (me == 0 && !full) || (P > 1 && (!rc || !rd))
                 ? moe_fail(MOE_ERR_NOMEM, "out of memory for the LSTM state of the checkpoint")
                 : MOE_OK;
        if (!o.stopped && (st = ranks_ready(comm, st))) o.stopped = 1;
        if (st || o.stopped) {
            if (!o.st) o.st = st ? st : moe_fail(MOE_ERR_NOMEM, "out of memory while writing a checkpoint");
        } else if (P == 1) {
            moe_lm_get_state(r->lm, local, nb);
            memcpy(full, local, sizeof(float) * 4 * (size_t)B * c.d);
        } else {
            moe_lm_get_state(r->lm, local, nb);
            for (int i = 0; i < 4; i++) {
                for (int q = 0; q < P; q++) {
                    rd[q] = (i * B + first_of(B, P, q)) * c.d;
                    rc[q] = (first_of(B, P, q + 1) - first_of(B, P, q)) * c.d;
                }
                st = comm_gatherv_f32(comm, local + (size_t)i * nb * c.d, nb * c.d, full, rc, rd, 0);
                if (st && !o.st) o.st = st;
            }
        }
        free(rc);
        free(rd);
        free(local);
        int64_t sh[3] = {4, B, c.d};
        if (me == 0 && !o.st) o.st = moe_st_writer_add(w, "state", MOE_F32, 3, sh, full);
    }
    st = o.st;
    if (me == 0 && !st) st = moe_st_writer_write(w, path);
    moe_st_writer_free(w);
    free(ts);
    for (int i = 0; i < o.nkeep; i++) moe_free_aligned(o.keep[i]);
    if (P > 1) { /* rank 0's verdict for everyone */
        int code = (int)st;
        comm_bcast(comm, &code, sizeof code, 0);
        if (me != 0 && code) st = moe_fail((moe_status)code, "rank 0 could not write the checkpoint");
    }
    return st;
}

static moe_status ffn_parse(const char *s, moe_ffn_kind *k) {
    if (strcmp(s, "moe") == 0) *k = MOE_FFN_MOE;
    else if (strcmp(s, "dense") == 0) *k = MOE_FFN_DENSE;
    else if (strcmp(s, "none") == 0) *k = MOE_FFN_NONE;
    else return moe_fail(MOE_ERR_FORMAT, "checkpoint has an unknown ffn kind '%s'", s);
    return MOE_OK;
}

static moe_status cfg_from_ckpt(const moe_st *f, moe_lm_config *c) {
    const char *fmt = moe_st_meta(f, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
        return moe_fail(MOE_ERR_FORMAT, "not a moe language-model checkpoint (format '%s', expected '%s')",
                        fmt ? fmt : "(none)", CKPT_FORMAT);
    *c = moe_lm_config_default();
    moe_status st;
    if ((st = get_int(f, "vocab", &c->vocab)) || (st = get_int(f, "d", &c->d)) || (st = get_int(f, "n", &c->n)) ||
        (st = get_int(f, "k", &c->k)) || (st = get_int(f, "h", &c->h)) ||
        (st = get_float(f, "w_importance", &c->w_importance)) || (st = get_float(f, "w_load", &c->w_load)) ||
        (st = get_float(f, "noise_eps", &c->noise_eps)) || (st = get_float(f, "dropout", &c->dropout)))
        return st;
    if (moe_st_meta(f, "groups") && ((st = get_int(f, "groups", &c->groups)) || (st = get_int(f, "k_groups", &c->k_groups))))
        return st; /* absent in checkpoints from before hierarchical layers: flat */
    const char *ffn = moe_st_meta(f, "ffn");
    if (!ffn) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks the setting 'ffn'");
    return ffn_parse(ffn, &c->ffn);
}

/* Copies the named F32 tensor (exact shape) into dst. */
static moe_status load_tensor(const moe_st *f, const char *name, float *dst, size_t numel) {
    moe_tensor t;
    const float *src;
    moe_status st = moe_st_get_f32(f, name, &t, &src);
    if (st) return moe_fail(st, "checkpoint tensor '%s': %s", name, moe_last_error());
    if (t.numel != numel) return moe_fail(MOE_ERR_SHAPE, "checkpoint tensor '%s' has %zu values, the model needs %zu", name, t.numel, numel);
    if (!moe_all_finite(src, numel)) return moe_fail(MOE_ERR_NONFINITE, "checkpoint tensor '%s' contains NaN or Inf", name);
    memcpy(dst, src, sizeof(float) * numel);
    return MOE_OK;
}

/* This rank's part of a checkpoint tensor: all of it, or for an expert tensor held in part
 * (ne < n), experts [e0, e0 + ne) along dim 0. */
static moe_status load_part(const moe_st *f, const char *name, float *dst, size_t numel, int e0, int ne, int n) {
    if (ne >= n) return load_tensor(f, name, dst, numel);
    moe_tensor t;
    const float *src;
    moe_status st = moe_st_get_f32(f, name, &t, &src);
    if (st) return moe_fail(st, "checkpoint tensor '%s': %s", name, moe_last_error());
    const size_t per = numel / (size_t)ne;
    if (t.numel != per * (size_t)n)
        return moe_fail(MOE_ERR_SHAPE, "checkpoint tensor '%s' has %zu values, %d experts need %zu", name, t.numel, n,
                        per * (size_t)n);
    src += (size_t)e0 * per;
    if (!moe_all_finite(src, numel)) return moe_fail(MOE_ERR_NONFINITE, "checkpoint tensor '%s' contains NaN or Inf", name);
    memcpy(dst, src, sizeof(float) * numel);
    return MOE_OK;
}

/* Optimiser state of one arena, per tensor, this rank's part (see ck_add_arena). */
static moe_status load_arena_state(const moe_st *f, const char *tag, moe_adam *opt, moe_layer *ml, moe_lm *lm) {
    const int np = ml ? moe_layer_num_params(ml) : moe_lm_num_params(lm);
    float *arena;
    int e0 = 0, ne = 1, n = 1;
    if (ml) {
        moe_layer_arena(ml, &arena, NULL, NULL);
        moe_layer_shard(ml, &e0, &ne);
        n = moe_layer_get_config(ml).n;
    } else {
        moe_lm_arena(lm, &arena, NULL, NULL);
    }
    char name[128];
    moe_status st = MOE_OK;
    for (int i = 0; i < np && !st; i++) {
        moe_param p;
        if (ml) moe_layer_param(ml, i, &p);
        else moe_lm_param(lm, i, &p);
        const int expert = ml && strncmp(p.name, "experts.", 8) == 0;
        float *m = NULL, *v = NULL;
        size_t vl = 0;
        if ((st = moe_adam_range_state(opt, (size_t)(p.data - arena), p.numel, &m, &v, &vl))) break;
        if (m) {
            snprintf(name, sizeof name, "optim.%s.m.%s", tag, p.name);
            st = load_part(f, name, m, p.numel, expert ? e0 : 0, expert ? ne : 1, expert ? n : 1);
        }
        if (!st) {
            snprintf(name, sizeof name, "optim.%s.v.%s", tag, p.name);
            st = load_part(f, name, v, vl, expert ? e0 : 0, expert ? ne : 1, expert ? n : 1);
        }
    }
    return st;
}

/* Creates the model and tokenizer from an open checkpoint and loads the weights. */
static moe_status model_from_ckpt(const moe_st *f, moe_lm **lm_out, tok **tk_out, moe_comm *comm) {
    moe_lm_config c;
    moe_status st = cfg_from_ckpt(f, &c);
    if (st) return st;
    const char *ts = moe_st_meta(f, "tokenizer");
    if (!ts) return moe_fail(MOE_ERR_MISSING, "checkpoint lacks its tokenizer");
    tok *tk = NULL;
    if ((st = tok_parse(&tk, ts))) return st;
    if (tok_vocab_size(tk) != c.vocab) {
        tok_free(tk);
        return moe_fail(MOE_ERR_FORMAT, "checkpoint's tokenizer has %d ids but the model %d", (int)tok_vocab_size(tk), c.vocab);
    }
    moe_lm *lm = NULL;
    uint64_t seed = 0;
    get_u64(f, "rng.seed", &seed);
    if ((st = comm ? moe_lm_create_sharded(&lm, &c, seed, comm) : moe_lm_create(&lm, &c, seed))) {
        tok_free(tk);
        return st;
    }
    char name[96];
    for (int i = 0; !st && i < moe_lm_num_params(lm); i++) {
        moe_param p;
        moe_lm_param(lm, i, &p);
        snprintf(name, sizeof name, "lm.%s", p.name);
        st = load_tensor(f, name, p.data, p.numel);
    }
    moe_layer *ml = moe_lm_moe(lm);
    int e0 = 0, ne = 1;
    if (ml) moe_layer_shard(ml, &e0, &ne);
    const int n = ml ? moe_layer_get_config(ml).n : 1;
    for (int i = 0; !st && ml && i < moe_layer_num_params(ml); i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        snprintf(name, sizeof name, "moe.%s", p.name);
        const int expert = strncmp(p.name, "experts.", 8) == 0;
        st = load_part(f, name, p.data, p.numel, expert ? e0 : 0, expert ? ne : 1, expert ? n : 1);
    }
    if (st) {
        moe_lm_free(lm);
        tok_free(tk);
        return st;
    }
    *lm_out = lm;
    *tk_out = tk;
    return MOE_OK;
}

/* ---- the training loop ---- */

static double lr_at(const moe_train_config *tc, int64_t step /* 1-based */) {
    if (tc->warmup > 0 && step <= tc->warmup) return tc->lr * (double)step / tc->warmup;
    if (tc->warmup > 0) return tc->lr * sqrt((double)tc->warmup / (double)step);
    return tc->lr;
}

static double grad_norm2(const float *g, size_t n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

static void scale(float *g, size_t n, float a) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= a;
}

/* Mean loss over a split with the model in evaluation mode; the carried training state is
 * saved and restored around it. */
static moe_status eval_split(moe_lm *lm, const td_file *f, const tok *tk, td_split split, int B, int T,
                             int64_t max_batches, double *loss, uint64_t *tokens, moe_comm *comm, int b0, int nb) {
    td_iter *it = NULL;
    moe_status st = td_iter_create(&it, f, tk, split, B, T);
    if (st) return st;
    int64_t nbatch = (int64_t)td_iter_steps_per_epoch(it);
    if (nbatch < 1) nbatch = 1;
    if (max_batches > 0 && nbatch > max_batches) nbatch = max_batches;
    const int d = moe_lm_get_config(lm).d;
    float *saved = malloc(sizeof(float) * 4 * (size_t)nb * d);
    int32_t *tokbuf = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    if (!saved || !tokbuf) {
        free(saved);
        free(tokbuf);
        td_iter_free(it);
        return moe_fail(MOE_ERR_NOMEM, "out of memory for evaluation");
    }
    moe_lm_get_state(lm, saved, nb);
    moe_lm_reset_state(lm);
    double sum[2] = {0.0, 0.0}; /* loss * tokens, tokens */
    for (int64_t b = 0; b < nbatch && !st; b++) {
        st = td_iter_next(it, tokbuf);
        moe_lm_stats s;
        if (!st) st = moe_lm_step(lm, tokbuf + (size_t)b0 * (T + 1), nb, T, 0, &s);
        if (!st) {
            sum[0] += s.loss * (double)s.tokens;
            sum[1] += (double)s.tokens;
        }
    }
    moe_lm_set_state(lm, saved, nb);
    free(saved);
    free(tokbuf);
    td_iter_free(it);
    if (st) return st;
    if (comm && (st = comm_allreduce_sum_f64(comm, sum, 2))) return st;
    *loss = sum[1] > 0 ? sum[0] / sum[1] : 0.0;
    if (tokens) *tokens = (uint64_t)sum[1];
    return MOE_OK;
}

/* Rank 0's value of a flag on every rank (decisions that depend on a clock or a callback). */
static int sync_flag(moe_comm *comm, int v) {
    if (comm) comm_bcast(comm, &v, sizeof v, 0);
    return v;
}

/* Squared norm of the MoE arena's gradients over all ranks. A layer held whole is one sum; a
 * sharded one has the gate's gradients on every rank and each expert's on one. */
static moe_status moe_grad_norm2(moe_layer *ml, moe_comm *comm, double *out) {
    int e0, ne;
    moe_layer_shard(ml, &e0, &ne);
    if (!comm || ne == moe_layer_get_config(ml).n) {
        float *g;
        size_t count;
        moe_layer_arena(ml, NULL, &g, &count);
        *out = grad_norm2(g, count);
        return MOE_OK;
    }
    double mine = 0.0, shared = 0.0;
    for (int i = 0; i < moe_layer_num_params(ml); i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        const double g2 = grad_norm2(p.grad, p.numel);
        if (strncmp(p.name, "experts.", 8) == 0) mine += g2;
        else shared += g2;
    }
    moe_status st = comm_allreduce_sum_f64(comm, &mine, 1);
    *out = shared + mine;
    return st;
}

static moe_status check_train_cfg(const moe_train_config *tc) {
    if (!tc || !tc->data) return moe_fail(MOE_ERR_INVALID_ARG, "no training data file given");
    if (tc->batch < 1 || tc->bptt < 1) return moe_fail(MOE_ERR_CONFIG, "batch (%d) and bptt (%d) must be >= 1", tc->batch, tc->bptt);
    if (tc->steps < 0 || !(tc->minutes >= 0.0)) return moe_fail(MOE_ERR_CONFIG, "steps and minutes must be >= 0");
    if (tc->steps == 0 && tc->minutes == 0.0) return moe_fail(MOE_ERR_CONFIG, "give a bound: steps > 0 or minutes > 0");
    if (!(tc->lr > 0.0f) || !isfinite(tc->lr)) return moe_fail(MOE_ERR_CONFIG, "learning rate %g must be > 0", tc->lr);
    if (tc->warmup < 0 || tc->clip < 0.0f) return moe_fail(MOE_ERR_CONFIG, "warmup and clip must be >= 0");
    if (tc->log_every < 1 || tc->eval_every < 0 || tc->ckpt_every < 0 || tc->eval_batches < 0)
        return moe_fail(MOE_ERR_CONFIG, "log_every must be >= 1; eval_every, ckpt_every, eval_batches >= 0");
    return MOE_OK;
}

/* Resume: everything that decides the data stream must agree with the checkpoint. */
static moe_status check_resume(const moe_st *f, const moe_train_config *tc, const moe_lm_config *mc) {
    const char *data = moe_st_meta(f, "data");
    if (data && strcmp(data, tc->data) != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained on '%s', not '%s': resume with the same --data", data, tc->data);
    int b = 0, t = 0;
    moe_status st;
    if ((st = get_int(f, "batch", &b)) || (st = get_int(f, "bptt", &t))) return st;
    if (b != tc->batch || t != tc->bptt)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint used batch %d and bptt %d, not %d and %d: resume with the same values",
                        b, t, tc->batch, tc->bptt);
    const char *kind = moe_st_meta(f, "tokenizer.kind");
    if (kind && strcmp(kind, tc->words ? "words" : "bytes") != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint uses %s tokens, not %s", kind, tc->words ? "words" : "bytes");
    if (mc) {
        moe_lm_config c;
        if ((st = cfg_from_ckpt(f, &c))) return st;
        if (c.d != mc->d || c.ffn != mc->ffn || (c.ffn != MOE_FFN_NONE && (c.n != mc->n || c.k != mc->k || c.h != mc->h)) ||
            c.groups != mc->groups || (c.groups && c.k_groups != mc->k_groups) ||
            c.dropout != mc->dropout || c.w_importance != mc->w_importance || c.w_load != mc->w_load)
            return moe_fail(MOE_ERR_CONFIG,
                            "the model settings contradict the checkpoint (it has d=%d ffn=%s n=%d k=%d h=%d dropout=%g "
                            "w_importance=%g w_load=%g): drop them when resuming, or start a new run",
                            c.d, ffn_name(c.ffn), c.n, c.k, c.h, c.dropout, c.w_importance, c.w_load);
    }
    return MOE_OK;
}

/* The optimiser: tc->optim if given (and, on resume, the checkpoint's must agree), else the
 * checkpoint's, else plain Adam. */
static moe_status optim_choice(const moe_st *ck, const moe_train_config *tc, int *factored) {
    const char *want = tc->optim, *have = ck ? moe_st_meta(ck, "optim") : NULL;
    if (ck && !have) have = "adam"; /* checkpoints from before the option */
    if (want && strcmp(want, "adam") != 0 && strcmp(want, "factored") != 0)
        return moe_fail(MOE_ERR_CONFIG, "unknown optimiser '%s': use adam or factored", want);
    if (want && have && strcmp(want, have) != 0)
        return moe_fail(MOE_ERR_CONFIG, "the checkpoint was trained with the %s optimiser, not %s: drop the setting when resuming",
                        have, want);
    const char *o = want ? want : have ? have : "adam";
    *factored = strcmp(o, "factored") == 0;
    return MOE_OK;
}

/* Tensors of rank >= 2 are matrices [.., rows, cols] to the optimiser (a stack of experts is
 * `n` matrices). */
static moe_status declare_matrix(moe_adam *a, const moe_param *p, const float *arena) {
    /* the experts' biases [n, h] are n vectors, not a matrix: each expert's state stays its own
     * (and can live on the expert's rank) */
    if (p->ndim < 2 || strncmp(p->name, "experts.b", 9) == 0) return MOE_OK;
    int64_t count = 1;
    for (int j = 0; j < p->ndim - 2; j++) count *= p->shape[j];
    return moe_adam_set_matrices(a, (size_t)(p->data - arena), count, p->shape[p->ndim - 2], p->shape[p->ndim - 1]);
}

moe_status moe_train(const moe_train_config *tc, const moe_lm_config *mc, const char *resume,
                     moe_train_callback cb, void *user) {
    moe_status st = check_train_cfg(tc);
    if (st) return st;
    if (!resume && !mc) return moe_fail(MOE_ERR_INVALID_ARG, "a new run needs model settings");
    const double t_start = now_s();
    td_file *f = NULL;
    tok *tk = NULL;
    moe_lm *lm = NULL;
    moe_adam *opt_lm = NULL, *opt_moe = NULL;
    td_iter *it = NULL;
    moe_st *ck = NULL;
    int32_t *tokbuf = NULL;
    int64_t *expert_tokens = NULL;
    int *counts = NULL;
    run_state rs = {0};
    rs.tc = tc;
    /* data parallel over the ranks of tc->comm: rank me trains streams [b0, b0 + nb) of the
     * batch and holds its share of the experts; rank 0 alone reports and writes */
    moe_comm *comm = tc->comm && moe_comm_size(tc->comm) > 1 ? tc->comm : NULL;
    const int P = nranks(comm), me = myrank(comm);
    rs.comm = comm;
    if (comm) {
        const int64_t same[] = {tc->batch, tc->bptt, tc->steps, (int64_t)tc->seed, tc->words, resume != NULL,
                                (int64_t)(tc->minutes * 1000), tc->ckpt_every, tc->eval_every};
        const char *what[] = {"--batch", "--bptt", "--steps", "--seed", "--words", "--resume", "--minutes",
                              "--ckpt-every", "--eval-every"};
        for (int i = 0; i < 9; i++)
            if ((st = moe_comm_check_same(comm, same[i], what[i]))) return st;
        if (tc->batch < P)
            return moe_fail(MOE_ERR_CONFIG, "batch %d is smaller than the %d ranks: each rank needs at least one stream "
                            "(raise --batch or use fewer ranks)", tc->batch, P);
    }
    if ((st = td_open(&f, tc->data, 0))) goto done;
    if (resume) {
        if ((st = moe_st_open(&ck, resume))) goto done;
        if ((st = check_resume(ck, tc, mc))) goto done;
        if ((st = model_from_ckpt(ck, &lm, &tk, comm))) goto done;
    } else {
        tok_config tcfg = tok_config_default(tc->words ? TOK_WORDS : TOK_BYTES);
        tcfg.min_count = tc->min_count;
        tcfg.max_vocab = tc->max_vocab;
        tcfg.lowercase = tc->lowercase;
        st = tc->words ? td_build_tokenizer(f, TD_TRAIN, &tcfg, &tk) : tok_create_bytes(&tk);
        if (st) goto done;
        moe_lm_config c = *mc;
        c.vocab = tok_vocab_size(tk);
        if ((st = comm ? moe_lm_create_sharded(&lm, &c, tc->seed, comm) : moe_lm_create(&lm, &c, tc->seed))) goto done;
    }
    const int b0 = first_of(tc->batch, P, me), nb = first_of(tc->batch, P, me + 1) - b0;
    if (comm && (st = moe_lm_set_slice(lm, b0, tc->batch))) goto done;
    int factored = 0;
    if ((st = optim_choice(ck, tc, &factored))) goto done;
    moe_adam_config ac = factored ? moe_adam_config_factored() : moe_adam_config_default();
    float *plm, *glm, *pmoe = NULL, *gmoe = NULL;
    size_t nlm, nmoe = 0;
    moe_lm_arena(lm, &plm, &glm, &nlm);
    moe_layer *ml = moe_lm_moe(lm);
    if (ml) moe_layer_arena(ml, &pmoe, &gmoe, &nmoe);
    if ((st = moe_adam_create(&opt_lm, nlm, &ac))) goto done;
    if (ml && (st = moe_adam_create(&opt_moe, nmoe, &ac))) goto done;
    for (int i = 0; i < moe_lm_num_params(lm) && !st; i++) {
        moe_param p;
        moe_lm_param(lm, i, &p);
        st = declare_matrix(opt_lm, &p, plm);
    }
    for (int i = 0; ml && i < moe_layer_num_params(ml) && !st; i++) {
        moe_param p;
        moe_layer_param(ml, i, &p);
        st = declare_matrix(opt_moe, &p, pmoe);
    }
    if (st) goto done;
    if ((st = td_iter_create(&it, f, tk, TD_TRAIN, tc->batch, tc->bptt))) goto done;
    const int B = tc->batch, T = tc->bptt;
    const moe_lm_config cfg = moe_lm_get_config(lm);
    if (resume) {
        /* optimiser moments and steps, random streams, carried state, data position */
        moe_adam *opts[2] = {opt_lm, opt_moe};
        const char *stepnames[2] = {"optim.lm.step", "optim.moe.step"};
        for (int o = 0; o < 2 && !st; o++) {
            if (!opts[o]) continue;
            moe_adam_state_view sv;
            if ((st = moe_adam_state(opts[o], &sv))) break;
            st = o ? load_arena_state(ck, "moe", opt_moe, ml, NULL) : load_arena_state(ck, "lm", opt_lm, NULL, lm);
            if (!st) st = get_i64(ck, stepnames[o], sv.step);
        }
        if (st) goto done;
        moe_lm_rng r;
        if ((st = get_u64(ck, "rng.seed", &r.seed)) || (st = get_u64(ck, "rng.dropout_counter", &r.dropout_counter)) ||
            (st = get_u64(ck, "rng.moe_seed", &r.moe_seed)) || (st = get_u64(ck, "rng.moe_counter", &r.moe_counter)))
            goto done;
        moe_lm_set_rng(lm, &r);
        float *state = malloc(sizeof(float) * 4 * (size_t)B * cfg.d);
        if (!state) {
            st = moe_fail(MOE_ERR_NOMEM, "out of memory");
            goto done;
        }
        st = load_tensor(ck, "state", state, 4 * (size_t)B * cfg.d);
        /* this rank's streams of each of h1, c1, h2, c2 [B, d] */
        for (int i = 0; !st && i < 4 && nb < B; i++) /* in order: each moves down, onto what is read already */
            memmove(state + (size_t)i * nb * cfg.d, state + ((size_t)i * B + b0) * cfg.d, sizeof(float) * (size_t)nb * cfg.d);
        if (!st) st = moe_lm_set_state(lm, state, nb);
        free(state);
        if (st) goto done;
        td_pos pos = td_iter_get_pos(it);
        if ((st = get_u64(ck, "data.step", &pos.step)) || (st = get_i64(ck, "step", &rs.step)) ||
            (st = get_u64(ck, "tokens_seen", &rs.tokens_seen)))
            goto done;
        uint64_t ntok = 0;
        if ((st = get_u64(ck, "data.ntokens", &ntok))) goto done;
        if (ntok != pos.ntokens) {
            st = moe_fail(MOE_ERR_CONFIG, "the data file changed since the checkpoint (%" PRIu64 " training tokens then, %" PRIu64 " now)",
                          ntok, (uint64_t)pos.ntokens);
            goto done;
        }
        if ((st = td_iter_set_pos(it, &pos))) goto done;
        moe_st_free(ck);
        ck = NULL;
    }
    rs.lm = lm;
    rs.tk = tk;
    rs.opt_lm = opt_lm;
    rs.opt_moe = opt_moe;
    rs.factored = factored;
    tokbuf = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    const int n = ml ? moe_layer_get_config(ml).n : 0;
    expert_tokens = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    counts = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    if (!tokbuf || !expert_tokens || !counts) {
        st = moe_fail(MOE_ERR_NOMEM, "out of memory");
        goto done;
    }
    moe_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.kind = MOE_PROGRESS_START;
    pr.ranks = P;
    pr.step = rs.step;
    pr.steps = tc->steps;
    pr.n = n;
    pr.vocab = cfg.vocab;
    moe_lm_param_counts(lm, &pr.params_total, &pr.params_active);
    for (int o = 0; o < 2; o++) {
        moe_adam_state_view sv;
        moe_adam *a = o ? opt_moe : opt_lm;
        if (a && !moe_adam_state(a, &sv)) pr.optim_floats += (int64_t)(sv.m_count + sv.v_count);
    }
    int stop = sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0);
    const int64_t first_step = rs.step;
    /* the dense baseline's one expert is not split over ranks: its gradients are summed too */
    int moe_replicated = 0;
    if (ml) {
        int e0, ne;
        moe_layer_shard(ml, &e0, &ne);
        moe_replicated = ne == n;
    }
    double iv_loss = 0, iv_aux = 0, iv_flops = 0, iv_cvi = 0, iv_cvl = 0, iv_mm = 0, iv_gn = 0;
    int64_t iv_steps = 0, iv_tokens = 0;
    double iv_t0 = now_s(), run_t0 = now_s(), iv_comm = 0.0, layer_comm0 = 0.0;
    uint64_t bytes0 = 0;
    if (ml) {
        uint64_t a, b;
        moe_layer_comm_stats(ml, &layer_comm0, &a, &b);
        bytes0 = a + b;
    }
    while (!stop && (tc->steps == 0 || rs.step < tc->steps)) {
        if ((st = td_iter_next(it, tokbuf))) goto done;
        moe_lm_zero_grad(lm);
        moe_lm_stats s;
        if ((st = moe_lm_step(lm, tokbuf + (size_t)b0 * (T + 1), nb, T, 1, &s))) goto done;
        if (comm) {
            /* the replicated parameters' gradients summed over ranks (each rank's loss gradient
             * is already its share of the global mean); the sharded MoE sums its gate itself */
            const double tc0 = now_s();
            if ((st = moe_comm_allreduce_sum(comm, glm, nlm))) goto done;
            if (moe_replicated && (st = moe_comm_allreduce_sum(comm, gmoe, nmoe))) goto done;
            double tot[3] = {s.loss * (double)s.tokens, (double)s.tokens, s.flops};
            if ((st = comm_allreduce_sum_f64(comm, tot, 3))) goto done;
            iv_comm += now_s() - tc0;
            s.loss = tot[0] / tot[1];
            s.tokens = (int64_t)tot[1];
            s.flops = tot[2];
        }
        double gmoe2 = 0.0;
        if (ml && (st = moe_grad_norm2(ml, comm, &gmoe2))) goto done;
        double gn2 = grad_norm2(glm, nlm) + gmoe2, gn = sqrt(gn2);
        if (!isfinite(gn)) {
            st = moe_fail(MOE_ERR_NONFINITE, "gradient norm is %g at step %" PRId64 ": lower --lr or raise --clip", gn, rs.step + 1);
            goto done;
        }
        if (tc->clip > 0.0f && gn > tc->clip) {
            scale(glm, nlm, (float)(tc->clip / gn));
            if (ml) scale(gmoe, nmoe, (float)(tc->clip / gn));
        }
        rs.step++;
        const float lr = (float)lr_at(tc, rs.step);
        if ((st = moe_adam_step(opt_lm, plm, glm, lr))) goto done;
        if (ml && (st = moe_adam_step(opt_moe, pmoe, gmoe, lr))) goto done;
        rs.tokens_seen += (uint64_t)s.tokens;
        iv_loss += s.loss;
        iv_aux += s.aux;
        iv_flops += s.flops;
        iv_gn += gn;
        iv_cvi += s.moe.cv_importance;
        iv_cvl += s.moe.cv_load;
        iv_mm += s.moe.max_mean_load;
        iv_steps++;
        iv_tokens += s.tokens;
        if (ml && moe_layer_counts(ml, counts) == MOE_OK)
            for (int e = 0; e < n; e++) expert_tokens[e] += counts[e];
        const int last = sync_flag(comm, (tc->steps > 0 && rs.step >= tc->steps) ||
                                             (tc->minutes > 0.0 && now_s() - run_t0 >= tc->minutes * 60.0));
        if (rs.step % tc->log_every == 0 || last) {
            double t = now_s(), dt = t - iv_t0;
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_TRAIN;
            pr.step = rs.step;
            pr.steps = tc->steps;
            pr.loss = iv_loss / iv_steps;
            pr.ppl = exp(pr.loss);
            pr.aux = iv_aux / iv_steps;
            pr.lr = lr;
            pr.grad_norm = iv_gn / iv_steps;
            pr.tokens_per_s = dt > 0 ? iv_tokens / dt : 0;
            pr.gflops = dt > 0 ? iv_flops / dt / 1e9 : 0;
            pr.elapsed_s = rs.elapsed + (t - t_start);
            double per_step = (t - run_t0) / (double)(rs.step - first_step);
            double eta_steps = tc->steps > 0 ? (tc->steps - rs.step) * per_step : 1e300;
            double eta_time = tc->minutes > 0 ? tc->minutes * 60.0 - (t - run_t0) : 1e300;
            pr.eta_s = fmax(0.0, fmin(eta_steps, eta_time));
            pr.epoch = td_iter_epoch(it);
            pr.cv_importance = iv_cvi / iv_steps;
            pr.cv_load = iv_cvl / iv_steps;
            pr.max_mean_load = iv_mm / iv_steps;
            pr.expert_tokens = expert_tokens;
            pr.n = n;
            pr.ranks = P;
            if (comm) {
                double lc = 0.0;
                uint64_t a = 0, b = 0;
                if (ml) moe_layer_comm_stats(ml, &lc, &a, &b);
                pr.comm_fraction = dt > 0 ? (iv_comm + lc - layer_comm0) / dt : 0.0;
                pr.exchange_bytes = (double)(a + b - bytes0) / (double)iv_steps;
                layer_comm0 = lc;
                bytes0 = a + b;
                iv_comm = 0.0;
            }
            stop = sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0);
            iv_loss = iv_aux = iv_flops = iv_cvi = iv_cvl = iv_mm = iv_gn = 0;
            iv_steps = iv_tokens = 0;
            memset(expert_tokens, 0, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
            iv_t0 = now_s();
        }
        if ((tc->eval_every > 0 && rs.step % tc->eval_every == 0) || last) {
            double vl;
            uint64_t vt;
            if ((st = eval_split(lm, f, tk, TD_VALID, B, T, tc->eval_batches, &vl, &vt, comm, b0, nb))) goto done;
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_VALID;
            pr.step = rs.step;
            pr.steps = tc->steps;
            pr.valid_loss = vl;
            pr.valid_ppl = exp(vl);
            pr.elapsed_s = rs.elapsed + (now_s() - t_start);
            if (sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0)) stop = 1;
            iv_t0 = now_s(); /* evaluation time is not training throughput */
            if (ml) { /* nor is its exchange */
                uint64_t a, b;
                moe_layer_comm_stats(ml, &layer_comm0, &a, &b);
                bytes0 = a + b;
            }
        }
        if (tc->checkpoint && ((tc->ckpt_every > 0 && rs.step % tc->ckpt_every == 0) || last || stop)) {
            rs.pos = td_iter_get_pos(it);
            if ((st = ckpt_write(&rs, tc->checkpoint))) {
                st = moe_fail(st, "saving the checkpoint at step %lld failed (%s); the file from the last successful save is unchanged",
                              (long long)rs.step, moe_last_error());
                goto done;
            }
            memset(&pr, 0, sizeof pr);
            pr.kind = MOE_PROGRESS_CHECKPOINT;
            pr.step = rs.step;
            pr.path = tc->checkpoint;
            if (sync_flag(comm, cb && me == 0 ? cb(&pr, user) : 0)) stop = 1;
        }
        if (last) break;
    }
done:
    moe_st_free(ck);
    td_iter_free(it);
    moe_adam_free(opt_lm);
    moe_adam_free(opt_moe);
    moe_lm_free(lm);
    tok_free(tk);
    td_free(f);
    free(tokbuf);
    free(expert_tokens);
    free(counts);
    if (!st) moe_clear_error(); /* a step may have tolerated a failure (e.g. no expert counts) */
    return st;
}

/* ---- checkpoints for inference ---- */

struct moe_ckpt {
    moe_st *f;
    moe_lm *lm;
    tok *tk;
};

moe_status moe_ckpt_load(moe_ckpt **out, const char *path) {
    if (!out || !path) return moe_fail(MOE_ERR_INVALID_ARG, "out and path must not be NULL");
    *out = NULL;
    moe_ckpt *c = calloc(1, sizeof *c);
    if (!c) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_st_open(&c->f, path);
    if (!st) st = model_from_ckpt(c->f, &c->lm, &c->tk, NULL);
    if (st) {
        moe_ckpt_free(c);
        return st;
    }
    *out = c;
    moe_clear_error();
    return MOE_OK;
}

void moe_ckpt_free(moe_ckpt *c) {
    if (!c) return;
    moe_lm_free(c->lm);
    tok_free(c->tk);
    moe_st_free(c->f);
    free(c);
}

moe_lm *moe_ckpt_model(moe_ckpt *c) { return c ? c->lm : NULL; }
const char *moe_ckpt_meta(const moe_ckpt *c, const char *key) { return c ? moe_st_meta(c->f, key) : NULL; }
int moe_ckpt_meta_count(const moe_ckpt *c) { return c ? moe_st_meta_count(c->f) : 0; }
moe_status moe_ckpt_meta_at(const moe_ckpt *c, int i, const char **key, const char **value) {
    if (!c) return moe_fail(MOE_ERR_INVALID_ARG, "checkpoint is NULL");
    return moe_st_meta_at(c->f, i, key, value);
}

moe_status moe_ckpt_encode(const moe_ckpt *c, const char *text, size_t len, int32_t **ids, size_t *n) {
    if (!c || !text || !ids || !n) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    int32_t *out = malloc(sizeof(int32_t) * TOK_ENCODE_MAX(len));
    if (!out) return moe_fail(MOE_ERR_NOMEM, "out of memory");
    *n = tok_encode(c->tk, NULL, text, len, 1, out);
    *ids = out;
    moe_clear_error();
    return MOE_OK;
}

moe_status moe_ckpt_decode(const moe_ckpt *c, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!c || !ids || !text) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    size_t l = 0;
    moe_status st = tok_decode(c->tk, ids, n, text, &l);
    if (st) return st;
    if (len) *len = l;
    moe_clear_error();
    return MOE_OK;
}

moe_status moe_ckpt_eval(moe_ckpt *c, const char *path, int split, int B, int T, int64_t max_batches,
                         double *loss, uint64_t *tokens) {
    if (!c || !path || !loss) return moe_fail(MOE_ERR_INVALID_ARG, "NULL argument");
    if (split < 0 || split > 2) return moe_fail(MOE_ERR_INVALID_ARG, "split must be 0 (train), 1 (valid) or 2 (test)");
    if (B < 1 || T < 1) return moe_fail(MOE_ERR_CONFIG, "B and T must be >= 1");
    td_file *f = NULL;
    moe_status st = td_open(&f, path, 0);
    if (st) return st;
    st = eval_split(c->lm, f, c->tk, (td_split)split, B, T, max_batches, loss, tokens, NULL, 0, B);
    td_free(f);
    if (!st) moe_clear_error();
    return st;
}
