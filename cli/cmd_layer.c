/* cmd_layer.c - `moe layer` (evaluate one layer from safetensors files, SPEC 1.5) and
 * `moe diff` (compare two files tensor by tensor): how a user checks moe against their own
 * framework. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *LAYER_USAGE =
    "usage: moe layer --params P.safetensors --input X.safetensors --out O.safetensors\n"
    "                 [--train] [--noise Z.safetensors] [--grad-output G.safetensors]\n"
    "                 [--seed S] [--threads T]\n"
    "\n"
    "Evaluates one MoE layer exactly as SPEC 1.5 describes.\n"
    "  --params       layer weights (gate.w_gate, gate.w_noise, experts.w1, experts.w2, ...);\n"
    "                 settings k, w_importance, w_load, noise_eps come from its metadata\n"
    "  --input        x [B,d] (tensor 'x', or the file's only tensor)\n"
    "  --train        training mode: noisy gating and the smooth load estimator\n"
    "  --noise        eps [B,n] standard normal draws (tensor 'eps'); without it, --train\n"
    "                 draws them from the seeded stream (--seed, default 0)\n"
    "  --grad-output  dy [B,d] (tensor 'dy'): O then also holds grad.x and grad.<param> for the\n"
    "                 loss sum(y*dy) + L_importance + L_load\n"
    "  --out          y [B,d], gates [B,n], loss.importance [], loss.load [],\n"
    "                 stats.importance [n], stats.load [n], stats.counts [n]\n";

/* The tensor called `name`, or the file's only tensor; must be F32 [rows, cols]. */
static const float *get_matrix(const moe_st *f, const char *file, const char *name, int64_t rows,
                               int64_t cols, int64_t *rows_out) {
    moe_tensor t;
    const float *data = NULL;
    moe_status s = moe_st_get_f32(f, name, &t, &data);
    if (s == MOE_ERR_MISSING && moe_st_count(f) == 1) {
        moe_st_at(f, 0, &t);
        if (t.dtype != MOE_F32) cli_die("%s: tensor '%s' must be F32", file, t.name);
        data = t.data;
        s = MOE_OK;
    }
    if (s == MOE_ERR_MISSING) cli_die("%s has no tensor '%s' (and more than one tensor, so none is implied)", file, name);
    cli_check(s, file);
    if (t.ndim != 2 || (rows >= 0 && t.shape[0] != rows) || t.shape[1] != cols)
        cli_die("%s: tensor '%s' must be [%s,%lld], it is %d-dimensional [%lld,%lld]", file, t.name,
                rows >= 0 ? "B" : "B", (long long)cols, t.ndim, t.ndim > 0 ? (long long)t.shape[0] : 0LL,
                t.ndim > 1 ? (long long)t.shape[1] : 0LL);
    if (t.shape[0] < 1 || t.shape[0] > 1 << 28) cli_die("%s: batch size %lld out of range", file, (long long)t.shape[0]);
    if (rows_out) *rows_out = t.shape[0];
    return data;
}

int cmd_layer(int argc, char **argv) {
    const char *params = NULL, *input = NULL, *noise_path = NULL, *grad_path = NULL, *out = NULL;
    const char *seed_s = "0", *threads_s = NULL;
    int train = 0;
    cli_opt opts[] = {{"params", &params, NULL},     {"input", &input, NULL},
                      {"noise", &noise_path, NULL},  {"grad-output", &grad_path, NULL},
                      {"out", &out, NULL},           {"train", NULL, &train},
                      {"seed", &seed_s, NULL},       {"threads", &threads_s, NULL}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], LAYER_USAGE);
    if (!params || !input || !out) cli_die("--params, --input and --out are required (see moe layer --help)");
    if (noise_path && !train) cli_die("--noise only applies in training mode: add --train");
    uint64_t seed = cli_u64("seed", seed_s);
    if (threads_s) moe_set_threads(cli_int("threads", threads_s, 1, 1024));

    moe_st *pf = NULL, *xf = NULL, *nf = NULL, *gf = NULL;
    cli_check(moe_st_open(&pf, params), params);
    moe_layer_config cfg;
    cli_check(moe_layer_config_from_st(pf, &cfg), params);
    moe_layer *l = NULL;
    cli_check(moe_layer_create(&l, &cfg, seed), "creating the layer");
    cli_check(moe_layer_load_st(l, pf), params);
    moe_st_free(pf);

    cli_check(moe_st_open(&xf, input), input);
    int64_t B = 0;
    const float *x = get_matrix(xf, input, "x", -1, cfg.d, &B);
    const float *noise = NULL, *dy = NULL;
    if (noise_path) {
        if (strcmp(noise_path, input) == 0) nf = NULL;
        else cli_check(moe_st_open(&nf, noise_path), noise_path);
        noise = get_matrix(nf ? nf : xf, noise_path, "eps", B, cfg.groups ? cfg.groups + cfg.n : cfg.n, NULL);
    }
    if (grad_path) {
        if (strcmp(grad_path, input) == 0) gf = NULL;
        else cli_check(moe_st_open(&gf, grad_path), grad_path);
        dy = get_matrix(gf ? gf : xf, grad_path, "dy", B, cfg.d, NULL);
    }
    if (cfg.k == 1 && dy)
        fprintf(stderr, "moe: warning: k=1: the softmax over one expert is constant, so the task loss "
                        "gives the gate no gradient (only the balancing losses do)\n");

    size_t Bd = (size_t)B * cfg.d, Bn = (size_t)B * cfg.n;
    float *y = malloc(sizeof(float) * Bd), *gates = malloc(sizeof(float) * Bn);
    float *imp = malloc(sizeof(float) * cfg.n), *load = malloc(sizeof(float) * cfg.n);
    float *counts = malloc(sizeof(float) * cfg.n);
    int *icounts = malloc(sizeof(int) * cfg.n);
    float *dx = dy ? calloc(Bd, sizeof(float)) : NULL;
    if (!y || !gates || !imp || !load || !counts || !icounts || (dy && !dx)) cli_die("out of memory for B=%lld", (long long)B);
    moe_layer_stats st;
    cli_check(moe_layer_forward(l, y, x, (int)B, train ? MOE_TRAIN : MOE_EVAL, noise, &st), "forward");
    moe_layer_gates(l, gates);
    moe_layer_importance(l, imp);
    moe_layer_load_vec(l, load);
    moe_layer_counts(l, icounts);
    for (int e = 0; e < cfg.n; e++) counts[e] = (float)icounts[e];
    if (dy) {
        moe_layer_zero_grad(l);
        cli_check(moe_layer_backward(l, dx, dy), "backward");
    }

    moe_st_writer *w = NULL;
    cli_check(moe_st_writer_create(&w), "writer");
    int64_t sh_bd[2] = {B, cfg.d}, sh_bn[2] = {B, cfg.n}, sh_n[1] = {cfg.n};
    cli_check(moe_st_writer_add(w, "y", MOE_F32, 2, sh_bd, y), "out");
    cli_check(moe_st_writer_add(w, "gates", MOE_F32, 2, sh_bn, gates), "out");
    cli_check(moe_st_writer_add(w, "loss.importance", MOE_F32, 0, NULL, &st.loss_importance), "out");
    cli_check(moe_st_writer_add(w, "loss.load", MOE_F32, 0, NULL, &st.loss_load), "out");
    cli_check(moe_st_writer_add(w, "stats.importance", MOE_F32, 1, sh_n, imp), "out");
    cli_check(moe_st_writer_add(w, "stats.load", MOE_F32, 1, sh_n, load), "out");
    cli_check(moe_st_writer_add(w, "stats.counts", MOE_F32, 1, sh_n, counts), "out");
    char names[8][64];
    if (dy) {
        cli_check(moe_st_writer_add(w, "grad.x", MOE_F32, 2, sh_bd, dx), "out");
        for (int i = 0; i < moe_layer_num_params(l); i++) {
            moe_param p;
            moe_layer_param(l, i, &p);
            snprintf(names[i], sizeof names[i], "grad.%s", p.name);
            cli_check(moe_st_writer_add(w, names[i], MOE_F32, p.ndim, p.shape, p.grad), "out");
        }
    }
    cli_check(moe_st_writer_meta(w, "mode", train ? "train" : "eval"), "out");
    cli_check(moe_st_writer_write(w, out), out);
    printf("wrote %s: B=%lld d=%d n=%d k=%d %s  L_importance=%.6g L_load=%.6g CV(importance)=%.4f "
           "CV(load)=%.4f max/mean load=%.3f\n",
           out, (long long)B, cfg.d, cfg.n, cfg.k, train ? "train" : "eval", st.loss_importance,
           st.loss_load, st.cv_importance, st.cv_load, st.max_mean_load);
    moe_st_writer_free(w);
    moe_st_free(xf);
    moe_st_free(nf);
    moe_st_free(gf);
    moe_layer_free(l);
    free(y); free(gates); free(imp); free(load); free(counts); free(icounts); free(dx);
    return 0;
}

static const char *DIFF_USAGE =
    "usage: moe diff --got A.safetensors --want B.safetensors [--rtol 1e-5]\n"
    "\n"
    "For every tensor of B (F32 or BF16): A must have it with the same shape, and\n"
    "  max|a - b| / max(max|b|, 1e-6) <= rtol   (error relative to the tensor's scale).\n"
    "Prints one line per tensor; exits 1 if any tensor is missing or off.\n";

/* value j of an F32 or BF16 tensor */
static double value_at(const moe_tensor *t, size_t j) {
    if (t->dtype == MOE_BF16) {
        const uint32_t u = (uint32_t)((const uint16_t *)t->data)[j] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return ((const float *)t->data)[j];
}

int cmd_diff(int argc, char **argv) {
    const char *got = NULL, *want = NULL, *rtol_s = "1e-5";
    cli_opt opts[] = {{"got", &got, NULL}, {"want", &want, NULL}, {"rtol", &rtol_s, NULL}};
    cli_parse(argc, argv, opts, 3, DIFF_USAGE);
    if (!got || !want) cli_die("--got and --want are required (see moe diff --help)");
    double rtol = cli_double("rtol", rtol_s, 0.0, 1e30);
    moe_st *a = NULL, *b = NULL;
    cli_check(moe_st_open(&a, got), got);
    cli_check(moe_st_open(&b, want), want);
    int bad = 0;
    for (int i = 0; i < moe_st_count(b); i++) {
        moe_tensor tb, ta;
        moe_st_at(b, i, &tb);
        if (tb.dtype != MOE_F32 && tb.dtype != MOE_BF16) continue;
        if (moe_st_get(a, tb.name, &ta) != MOE_OK || (ta.dtype != MOE_F32 && ta.dtype != MOE_BF16)) {
            printf("MISSING  %s\n", tb.name);
            bad++;
            continue;
        }
        int same = ta.ndim == tb.ndim && ta.numel == tb.numel;
        for (int j = 0; same && j < ta.ndim; j++) same = ta.shape[j] == tb.shape[j];
        if (!same) {
            printf("SHAPE    %s\n", tb.name);
            bad++;
            continue;
        }
        double maxd = 0.0, maxb = 0.0;
        int nan = 0;
        for (size_t j = 0; j < tb.numel; j++) {
            const double vb = value_at(&tb, j), dd = fabs(value_at(&ta, j) - vb);
            if (isnan(dd)) nan = 1;
            else if (dd > maxd) maxd = dd;
            if (fabs(vb) > maxb) maxb = fabs(vb);
        }
        double rel = nan ? INFINITY : maxd / fmax(maxb, 1e-6);
        int ok = rel <= rtol;
        printf("%-8s %-24s rel.err %.3g (max|diff| %.3g, scale %.3g)%s\n", ok ? "ok" : "OFF", tb.name, rel, maxd, maxb,
               ta.dtype != tb.dtype ? " (F32 against BF16)" : "");
        bad += !ok;
    }
    moe_st_free(a);
    moe_st_free(b);
    if (bad) printf("%d tensor(s) differ beyond rtol %g\n", bad, rtol);
    return bad ? 1 : 0;
}
