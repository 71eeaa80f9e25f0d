/* test_lstm.c - the language model's LSTM layer, embedding and dropout (src/nn/lstm.h).
 *
 * 1. Finite differences: every gradient of the LSTM (x, h0, c0, W_ih, W_hh, b_ih, b_hh) for
 *    L = sum(h * R) + sum(hT * R2) + sum(cT * R3), then the embedding and dropout backward.
 * 2. Contracts: backward accumulates into dW, db and dx and overwrites dh0/dc0; NULL outputs
 *    change nothing else; carrying (hT, cT) into the next forward in place (truncated BPTT)
 *    equals one long forward; the threaded paths agree bit for bit with one thread; dropout's
 *    mask is a pure function of (seed, counter) with the right rate and scale.
 * 3. Parity with float64 torch.nn.LSTM: tests/golden/lstm_*.safetensors (gen_golden_lstm.py),
 *    error max|got - want| / max(max|want|, 1e-6) <= 1e-5 per tensor. Missing files fail.
 */
#include "nn/lstm.h"
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define RTOL 1e-5

/* ---- finite differences ------------------------------------------------------------------ */

typedef double (*loss_fn)(void *ctx);

/* Compares ana [count] with central differences of loss() in the values v [count] (perturbed in
 * place and restored). The loss is summed in double over float32 outputs, so a difference errs
 * by about (float rounding of the outputs) / step + step^2 L''' / 6: steps of 3e-3 to 1e-2 do
 * best here (worst error about 1e-4 on gradients of order 1; 1e-3 and 3e-2 give 3e-4 and 1e-3).
 * The tolerance leaves about 10x headroom over that; a wrong term errs by far more. */
static double fd_check(const char *what, loss_fn loss, void *ctx, float *v, const float *ana,
                       size_t count) {
    const float step = 1e-2f;
    int bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        const float orig = v[i];
        v[i] = orig + step;
        const double hp = (double)v[i] - orig; /* the step actually applied, in float */
        const double lp = loss(ctx);
        v[i] = orig - step;
        const double hm = orig - (double)v[i];
        const double lm = loss(ctx);
        v[i] = orig;
        const double num = (lp - lm) / (hp + hm), a = ana[i];
        const double err = fabs(num - a), tol = 1e-3 * fmax(fabs(num), fabs(a)) + 3e-4;
        if (err / tol > worst) worst = err / tol;
        if (err > tol) {
            if (bad < 5)
                fprintf(stderr, "  %s[%zu]: analytic %.7g numeric %.7g\n", what, i, a, num);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d of %zu entries disagree with finite differences", what, bad, count);
    return worst;
}

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* ---- one LSTM with its inputs, parameters, outputs and gradients ------------------------- */

typedef struct {
    int T, B, D, H;
    int state;                              /* 0: h0 = c0 = NULL and dhT = dcT = NULL */
    float *x, *h0, *c0;                     /* [T,B,D], [B,H], [B,H] */
    float *w_ih, *w_hh, *b_ih, *b_hh;       /* [4H,D], [4H,H], [4H], [4H] */
    float *R, *R2, *R3;                     /* loss weights [T,B,H], [B,H], [B,H] */
    float *h, *hT, *cT, *cache, *scratch;   /* outputs and buffers */
    float *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh; /* gradients */
} lstm_case;

static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* Each input and parameter with its gradient of the same size, in one list: case_create
 * allocates them, case_zero_grad clears the gradients, the gradient check walks them. h0 and c0
 * come last, so that a case without a state has the first LSTM_NOSTATE. */
enum { LSTM_NVAR = 7, LSTM_NOSTATE = 5 };
typedef struct {
    const char *name;
    float **v, **g;
    size_t n;
} lstm_var;

static void case_vars(lstm_case *c, lstm_var out[LSTM_NVAR]) {
    const size_t BH = (size_t)c->B * c->H, G = 4 * (size_t)c->H;
    const lstm_var t[LSTM_NVAR] = {{"x", &c->x, &c->dx, (size_t)c->T * c->B * c->D},
                                   {"w_ih", &c->w_ih, &c->dw_ih, G * c->D},
                                   {"w_hh", &c->w_hh, &c->dw_hh, G * c->H},
                                   {"b_ih", &c->b_ih, &c->db_ih, G},
                                   {"b_hh", &c->b_hh, &c->db_hh, G},
                                   {"h0", &c->h0, &c->dh0, BH},
                                   {"c0", &c->c0, &c->dc0, BH}};
    memcpy(out, t, sizeof t);
}

static lstm_case case_create(int T, int B, int D, int H, int state, float wscale, uint64_t seed) {
    lstm_case c = {.T = T, .B = B, .D = D, .H = H, .state = state};
    const size_t BH = (size_t)B * H, G = 4 * (size_t)H, TB = (size_t)T * B;
    lstm_var v[LSTM_NVAR];
    case_vars(&c, v);
    for (int k = 0; k < LSTM_NVAR; k++) {
        *v[k].v = falloc(v[k].n);
        *v[k].g = falloc(v[k].n);
    }
    c.R = falloc(TB * H);
    c.R2 = falloc(BH);
    c.R3 = falloc(BH);
    c.h = falloc(TB * H);
    c.hT = falloc(BH);
    c.cT = falloc(BH);
    c.cache = falloc(lstm_cache_floats(T, B, H));
    c.scratch = falloc(lstm_scratch_floats(T, B, H));
    t_fill_uniform(c.x, TB * D, 1.0f, seed + 1);
    t_fill_uniform(c.w_ih, G * D, wscale, seed + 2);
    t_fill_uniform(c.w_hh, G * H, wscale, seed + 3);
    t_fill_uniform(c.b_ih, G, 0.3f, seed + 4);
    t_fill_uniform(c.b_hh, G, 0.3f, seed + 5);
    t_fill_normal(c.R, TB * H, seed + 6);
    if (state) {
        t_fill_uniform(c.h0, BH, 0.8f, seed + 7);
        t_fill_uniform(c.c0, BH, 1.5f, seed + 8);
        t_fill_normal(c.R2, BH, seed + 9);
        t_fill_normal(c.R3, BH, seed + 10);
    }
    return c;
}

static void case_free(lstm_case *c) {
    float *bufs[] = {c->x, c->h0, c->c0, c->w_ih, c->w_hh, c->b_ih, c->b_hh, c->R, c->R2,
                     c->R3, c->h, c->hT, c->cT, c->cache, c->scratch, c->dx, c->dh0, c->dc0,
                     c->dw_ih, c->dw_hh, c->db_ih, c->db_hh};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void case_forward(lstm_case *c) {
    lstm_forward(c->h, c->hT, c->cT, c->cache, c->x, c->state ? c->h0 : NULL,
                 c->state ? c->c0 : NULL, c->w_ih, c->w_hh, c->b_ih, c->b_hh, c->T, c->B, c->D,
                 c->H);
}

static void case_backward(lstm_case *c) {
    lstm_backward(c->dx, c->dw_ih, c->dw_hh, c->db_ih, c->db_hh, c->dh0, c->dc0, c->scratch, c->R,
                  c->state ? c->R2 : NULL, c->state ? c->R3 : NULL, c->x, c->h, c->cache, c->w_ih,
                  c->w_hh, c->T, c->B, c->D, c->H);
}

static void case_zero_grad(lstm_case *c) {
    lstm_var v[LSTM_NVAR];
    case_vars(c, v);
    for (int k = 0; k < LSTM_NVAR; k++) memset(*v[k].g, 0, sizeof(float) * v[k].n);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double lstm_loss(void *ctx) {
    lstm_case *c = ctx;
    case_forward(c);
    const size_t BH = (size_t)c->B * c->H;
    return dot(c->h, c->R, (size_t)c->T * BH) + dot(c->hT, c->R2, BH) + dot(c->cT, c->R3, BH);
}

/* Every gradient against finite differences, then the accumulation contract. */
static void test_lstm_gradcheck(int T, int B, int D, int H, int state, float wscale,
                                uint64_t seed) {
    lstm_case c = case_create(T, B, D, H, state, wscale, seed);
    char what[96];
#define LABEL(name)                                                                            \
    (snprintf(what, sizeof what, "T=%d B=%d D=%d H=%d state=%d %s", T, B, D, H, state, name), what)
    case_zero_grad(&c);
    case_forward(&c);
    case_backward(&c);
    /* the saved analytic gradients; fd_check reruns forward, which leaves them alone */
    lstm_var t[LSTM_NVAR];
    case_vars(&c, t);
    /* without a state, h0 and c0 are NULL: nothing to perturb */
    const int nt = state ? LSTM_NVAR : LSTM_NOSTATE;
    float *g1[LSTM_NVAR];
    double worst = 0.0;
    for (int k = 0; k < nt; k++) {
        g1[k] = falloc(t[k].n);
        memcpy(g1[k], *t[k].g, sizeof(float) * t[k].n);
        CHECK(max_abs(g1[k], t[k].n) > 1e-2, "%s: gradient is all ~0 (%g)", LABEL(t[k].name),
              max_abs(g1[k], t[k].n));
    }
    for (int k = 0; k < nt; k++)
        worst = fmax(worst, fd_check(LABEL(t[k].name), lstm_loss, &c, *t[k].v, g1[k], t[k].n));
    printf("lstm gradcheck T=%d B=%d D=%d H=%d state=%d: worst err/tol %.3f\n", T, B, D, H, state,
           worst);

    /* a second backward of the same forward: dx and parameter gradients double, dh0/dc0 are
     * overwritten with the same values */
    case_forward(&c);
    case_backward(&c);
    for (int k = 0; k < nt; k++) {
        float *two = falloc(t[k].n);
        for (size_t i = 0; i < t[k].n; i++) two[i] = 2.0f * g1[k][i];
        const int overwritten = k >= LSTM_NOSTATE;
        double e = t_rel_err(*t[k].g, overwritten ? g1[k] : two, t[k].n);
        CHECK(e <= 1e-6, "%s: second backward %s (rel.err %.3g)", LABEL(t[k].name),
              overwritten ? "did not overwrite" : "did not accumulate", e);
        free(two);
    }
    /* NULL dx, dh0, dc0: the parameter gradients come out the same */
    case_zero_grad(&c);
    lstm_backward(NULL, c.dw_ih, c.dw_hh, c.db_ih, c.db_hh, NULL, NULL, c.scratch, c.R,
                  state ? c.R2 : NULL, state ? c.R3 : NULL, c.x, c.h, c.cache, c.w_ih, c.w_hh, T,
                  B, D, H);
    for (int k = 1; k < LSTM_NOSTATE; k++)
        CHECK(memcmp(*t[k].g, g1[k], sizeof(float) * t[k].n) == 0,
              "%s: differs with NULL dx/dh0/dc0", LABEL(t[k].name));
    for (int k = 0; k < nt; k++) free(g1[k]);
#undef LABEL
    case_free(&c);
}

/* Truncated BPTT: T steps in one call equal chunks that carry (hT, cT) in place through the
 * same buffers, and h0 = NULL equals explicit zeros. */
static void test_lstm_carry(void) {
    const int T = 6, B = 3, D = 4, H = 5, T1 = 2;
    lstm_case c = case_create(T, B, D, H, 1, 0.6f, 4242);
    const size_t BH = (size_t)B * H;
    case_forward(&c);
    float *h = falloc((size_t)T * BH), *cache = falloc(lstm_cache_floats(T, B, H));
    float *hs = falloc(BH), *cs = falloc(BH);
    memcpy(hs, c.h0, sizeof(float) * BH);
    memcpy(cs, c.c0, sizeof(float) * BH);
    lstm_forward(h, hs, cs, cache, c.x, hs, cs, c.w_ih, c.w_hh, c.b_ih, c.b_hh, T1, B, D, H);
    lstm_forward(h + T1 * BH, hs, cs, cache, c.x + (size_t)T1 * B * D, hs, cs, c.w_ih, c.w_hh,
                 c.b_ih, c.b_hh, T - T1, B, D, H);
    CHECK(t_rel_err(h, c.h, (size_t)T * BH) <= 1e-6,
          "carried state: h differs from one long forward");
    CHECK(t_rel_err(hs, c.hT, BH) <= 1e-6 && t_rel_err(cs, c.cT, BH) <= 1e-6,
          "carried state: final (h, c) differs from one long forward");
    /* T = 0 passes the state through */
    lstm_forward(h, hs, cs, cache, c.x, c.h0, c.c0, c.w_ih, c.w_hh, c.b_ih, c.b_hh, 0, B, D, H);
    CHECK(memcmp(hs, c.h0, sizeof(float) * BH) == 0 && memcmp(cs, c.c0, sizeof(float) * BH) == 0,
          "T=0 does not copy (h0, c0) to (hT, cT)");
    /* NULL initial state is a zero state */
    memset(hs, 0, sizeof(float) * BH);
    memset(cs, 0, sizeof(float) * BH);
    lstm_forward(h, NULL, NULL, cache, c.x, hs, cs, c.w_ih, c.w_hh, c.b_ih, c.b_hh, T, B, D, H);
    c.state = 0;
    case_forward(&c);
    CHECK(memcmp(h, c.h, sizeof(float) * T * BH) == 0, "h0 = c0 = NULL differs from zeros");
    free(h);
    free(cache);
    free(hs);
    free(cs);
    case_free(&c);
}

/* Sizes large enough for the OpenMP paths (B*H and T*B*4H above the threshold in lstm.c) and
 * for moe_sgemm to split the products: one thread and two must give the same bits (each output
 * element comes from one single-threaded sgemm over the full K either way). */
static float *threads_run(int threads, size_t *len) {
    const int T = 3, B = 32, D = 16, H = 512;
    moe_set_threads(threads);
    lstm_case c = case_create(T, B, D, H, 1, 0.1f, 777);
    case_zero_grad(&c);
    case_forward(&c);
    case_backward(&c);
    const size_t TBH = (size_t)T * B * H, G = 4 * (size_t)H, BH = (size_t)B * H;
    const float *parts[] = {c.h, c.hT, c.cT, c.dx, c.dw_ih, c.dw_hh, c.db_ih, c.db_hh, c.dh0,
                            c.dc0};
    const size_t sizes[] = {TBH, BH, BH, (size_t)T * B * D, G * D, G * H, G, G, BH, BH};
    *len = 0;
    for (int k = 0; k < 10; k++) *len += sizes[k];
    float *out = falloc(*len);
    size_t off = 0;
    for (int k = 0; k < 10; k++) {
        memcpy(out + off, parts[k], sizeof(float) * sizes[k]);
        off += sizes[k];
    }
    case_free(&c);
    return out;
}

static void test_lstm_threads(void) {
    size_t len = 0;
    float *a = threads_run(1, &len), *b = threads_run(2, &len);
    CHECK(memcmp(a, b, sizeof(float) * len) == 0, "LSTM results differ between 1 and 2 threads");
    free(a);
    free(b);
    moe_set_threads(2);
}

/* ---- embedding ---------------------------------------------------------------------------- */

typedef struct {
    float *out, *w, *R;
    const int32_t *tok;
    int N, V, E;
} emb_ctx;

static double emb_loss(void *ctx) {
    emb_ctx *c = ctx;
    if (embedding_forward(c->out, c->tok, c->w, c->N, c->V, c->E) != MOE_OK) return NAN;
    return dot(c->out, c->R, (size_t)c->N * c->E);
}

static void test_embedding(void) {
    enum { N = 12, V = 7, E = 70 }; /* E > 64: more than one column task */
    /* repeats (3 three times, 0 twice) and unused rows (1, 5) */
    const int32_t tok[N] = {3, 0, 6, 3, 2, 4, 0, 3, 6, 2, 4, 6};
    float w[V * E], out[N * E], R[N * E], dw[V * E] = {0}, g1[V * E];
    t_fill_uniform(w, V * E, 1.0f, 11);
    t_fill_normal(R, N * E, 12);
    CHECK(embedding_forward(out, tok, w, N, V, E) == MOE_OK, "embedding forward failed");
    int same = 1;
    for (int r = 0; r < N; r++) same &= memcmp(out + r * E, w + tok[r] * E, sizeof(float) * E) == 0;
    CHECK(same, "embedding forward: rows are not copies of W_emb[token]");
    embedding_backward(dw, R, tok, N, E);
    memcpy(g1, dw, sizeof g1);
    emb_ctx c = {out, w, R, tok, N, V, E};
    fd_check("embedding W_emb", emb_loss, &c, w, g1, V * E);
    embedding_backward(dw, R, tok, N, E);
    for (int i = 0; i < V * E; i++) g1[i] *= 2.0f;
    CHECK(t_rel_err(dw, g1, V * E) <= 1e-6, "embedding backward does not accumulate");
    /* a token outside [0, V) is refused before anything is written */
    int32_t badtok[N];
    memcpy(badtok, tok, sizeof badtok);
    float before[N * E];
    memcpy(before, out, sizeof before);
    badtok[N - 1] = V;
    CHECK(embedding_forward(out, badtok, w, N, V, E) == MOE_ERR_INVALID_ARG, "token V accepted");
    badtok[N - 1] = -1;
    CHECK(embedding_forward(out, badtok, w, N, V, E) == MOE_ERR_INVALID_ARG, "token -1 accepted");
    CHECK(memcmp(before, out, sizeof before) == 0, "a refused embedding forward wrote its output");
}

/* ---- dropout ------------------------------------------------------------------------------ */

typedef struct {
    float *x, *out, *R;
    size_t n;
    float p;
    uint64_t seed, counter;
} drop_ctx;

static double drop_loss(void *ctx) {
    drop_ctx *c = ctx;
    dropout_forward(c->out, c->x, c->n, c->p, c->seed, c->counter);
    return dot(c->out, c->R, c->n);
}

static void test_dropout(void) {
    enum { n = 64 };
    float x[n], out[n], R[n], dx[n] = {0}, g1[n];
    t_fill_uniform(x, n, 1.0f, 21);
    t_fill_normal(R, n, 22);
    drop_ctx c = {x, out, R, n, 0.3f, 99, 1000};
    dropout_backward(dx, R, n, c.p, c.seed, c.counter);
    memcpy(g1, dx, sizeof g1);
    fd_check("dropout x", drop_loss, &c, x, g1, n);
    dropout_backward(dx, R, n, c.p, c.seed, c.counter);
    for (int i = 0; i < n; i++) g1[i] *= 2.0f;
    CHECK(t_rel_err(dx, g1, n) <= 1e-6, "dropout backward does not accumulate");

    /* rate, scale, determinism, counter offsets */
    const size_t N = 40000;
    const float p = 0.25f, scale = 1.0f / (1.0f - p);
    float *xs = falloc(N), *a = falloc(N), *b = falloc(N);
    t_fill_uniform(xs, N, 1.0f, 23);
    for (size_t i = 0; i < N; i++) xs[i] += xs[i] >= 0 ? 0.5f : -0.5f; /* no zeros in x */
    dropout_forward(a, xs, N, p, 5, 77);
    size_t dropped = 0, badval = 0;
    for (size_t i = 0; i < N; i++) {
        if (a[i] == 0.0f) dropped++;
        else if (a[i] != xs[i] * scale) badval++;
    }
    double rate = (double)dropped / N;
    CHECK(fabs(rate - p) < 0.01, "dropout rate %.4f, want %.2f", rate, p);
    CHECK(badval == 0, "dropout: %zu kept values are not x / (1-p)", badval);
    dropout_forward(b, xs, N, p, 5, 77);
    CHECK(memcmp(a, b, sizeof(float) * N) == 0, "dropout is not deterministic");
    /* two calls over halves, the second at counter + N/2, give the one-call mask */
    dropout_forward(b, xs, N / 2, p, 5, 77);
    dropout_forward(b + N / 2, xs + N / 2, N - N / 2, p, 5, 77 + N / 2);
    CHECK(memcmp(a, b, sizeof(float) * N) == 0, "dropout mask depends on how the call is split");
    dropout_forward(b, xs, N, p, 6, 77);
    size_t diff = 0;
    for (size_t i = 0; i < N; i++) diff += (a[i] == 0.0f) != (b[i] == 0.0f);
    CHECK(diff > N / 10, "dropout mask barely changes with the seed (%zu of %zu)", diff, N);
    /* in place, and the extremes */
    memcpy(b, xs, sizeof(float) * N);
    dropout_forward(b, b, N, p, 5, 77);
    CHECK(memcmp(a, b, sizeof(float) * N) == 0, "dropout in place differs");
    dropout_forward(b, xs, N, 0.0f, 5, 77);
    CHECK(memcmp(b, xs, sizeof(float) * N) == 0, "dropout p=0 is not the identity");
    dropout_forward(b, xs, N, 1.0f, 5, 77);
    CHECK(max_abs(b, N) == 0.0, "dropout p=1 is not all zeros (or has NaN)");
    free(xs);
    free(a);
    free(b);
}

/* ---- PyTorch parity ----------------------------------------------------------------------- */

static const float *get(const moe_st *f, const char *cs, const char *name, size_t numel,
                        int required) {
    moe_tensor t;
    const float *data = NULL;
    moe_status s = moe_st_get_f32(f, name, &t, &data);
    if (s == MOE_ERR_MISSING && !required) return NULL;
    CHECK(s == MOE_OK, "%s: '%s': %s", cs, name, moe_last_error());
    if (s) return NULL;
    CHECK(t.numel == numel, "%s: '%s' has %zu values, want %zu", cs, name, t.numel, numel);
    return t.numel == numel ? data : NULL;
}

static int meta_int(const moe_st *f, const char *key) {
    const char *v = moe_st_meta(f, key);
    return v ? atoi(v) : -1;
}

static void compare(const char *cs, const moe_st *f, const char *name, const float *got, size_t n) {
    const float *want = get(f, cs, name, n, 1);
    if (!want) return;
    double e = t_rel_err(got, want, n);
    CHECK(e <= RTOL, "%s: %s rel.err %.3g > %g", cs, name, e, RTOL);
}

/* Runs one golden case; returns every output and gradient in one buffer (*len floats) for the
 * comparison between thread counts, or NULL if the file is unusable. */
static float *golden_case(const char *dir, const char *cs, int threads, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/lstm_%s.safetensors", dir, cs);
    moe_set_threads(threads);
    moe_st *f = NULL;
    moe_status s = moe_st_open(&f, path);
    CHECK(s == MOE_OK, "%s (regenerate with tests/gen_golden_lstm.py)", moe_last_error());
    if (s) return NULL;
    const int T = meta_int(f, "T"), B = meta_int(f, "B");
    const int D = meta_int(f, "D"), H = meta_int(f, "H");
    CHECK(T > 0 && B > 0 && D > 0 && H > 0, "%s: bad metadata T=%d B=%d D=%d H=%d", cs, T, B, D, H);
    if (T <= 0 || B <= 0 || D <= 0 || H <= 0) {
        moe_st_free(f);
        return NULL;
    }
    const size_t BH = (size_t)B * H, G = 4 * (size_t)H, TB = (size_t)T * B;
    const float *x = get(f, cs, "x", TB * D, 1), *w_ih = get(f, cs, "w_ih", G * D, 1);
    const float *w_hh = get(f, cs, "w_hh", G * H, 1), *b_ih = get(f, cs, "b_ih", G, 1);
    const float *b_hh = get(f, cs, "b_hh", G, 1), *dh = get(f, cs, "dh", TB * H, 1);
    /* absent in cases without a carried state: run with NULL (zero) */
    const float *h0 = get(f, cs, "h0", BH, 0), *c0 = get(f, cs, "c0", BH, 0);
    const float *dhT = get(f, cs, "dhT", BH, 0), *dcT = get(f, cs, "dcT", BH, 0);
    if (!x || !w_ih || !w_hh || !b_ih || !b_hh || !dh) {
        moe_st_free(f);
        return NULL;
    }
    /* outputs and gradients in one buffer, in the order of `names` */
    static const char *names[] = {"h", "hT", "cT", "grad.x", "grad.h0", "grad.c0",
                                  "grad.w_ih", "grad.w_hh", "grad.b_ih", "grad.b_hh"};
    const size_t sizes[] = {TB * H, BH, BH, TB * D, BH, BH, G * D, G * H, G, G};
    size_t off[11] = {0};
    for (int k = 0; k < 10; k++) off[k + 1] = off[k] + sizes[k];
    float *res = falloc(off[10]);
    float *cache = falloc(lstm_cache_floats(T, B, H));
    float *scratch = falloc(lstm_scratch_floats(T, B, H));
    float *r[10];
    for (int k = 0; k < 10; k++) r[k] = res + off[k];
    lstm_forward(r[0], r[1], r[2], cache, x, h0, c0, w_ih, w_hh, b_ih, b_hh, T, B, D, H);
    lstm_backward(r[3], r[6], r[7], r[8], r[9], r[4], r[5], scratch, dh, dhT, dcT, x, r[0], cache,
                  w_ih, w_hh, T, B, D, H);
    for (int k = 0; k < 10; k++) compare(cs, f, names[k], r[k], sizes[k]);
    free(cache);
    free(scratch);
    moe_st_free(f);
    *len = off[10];
    return res;
}

static void test_golden(const char *dir) {
    static const char *cases[] = {"t7_b4_d5_h8", "t5_b3_d10_h6_state", "t1_b2_d3_h4_sat"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t la = 0, lb = 0;
        float *a = golden_case(dir, cases[i], 1, &la);
        float *b = golden_case(dir, cases[i], 2, &lb);
        if (a && b)
            CHECK(la == lb && memcmp(a, b, sizeof(float) * la) == 0,
                  "%s: results differ between 1 and 2 threads", cases[i]);
        free(a);
        free(b);
    }
    moe_set_threads(2);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden";
    moe_set_threads(2);
    test_lstm_gradcheck(5, 3, 4, 6, 1, 0.6f, 100); /* the main case: carried state, D != H */
    test_lstm_gradcheck(1, 2, 3, 5, 1, 0.6f, 200); /* one step: W_hh learns from h0 alone */
    test_lstm_gradcheck(3, 2, 6, 17, 0, 1.2f, 300); /* NULL state, 4H > 64, saturating weights */
    test_lstm_carry();
    test_lstm_threads();
    test_embedding();
    test_dropout();
    test_golden(dir);
    return test_finish("test_lstm");
}
