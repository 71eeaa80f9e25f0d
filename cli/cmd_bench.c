/* cmd_bench.c - `moe bench layer`: forward and forward+backward throughput of one MoE layer,
 * with, in the same run, the dense FFN of equal active FLOPs (d -> k*h -> d) and a large sgemm
 * as the machine's ceiling. Medians over --reps runs after a warm-up. */
#include "cli.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *BENCH_USAGE =
    "usage: moe bench layer [--B 16384] [--d 512] [--h 1024] [--experts 64] [--k 4] [--bias]\n"
    "                       [--threads T] [--reps 5] [--strategy auto|blas|experts]\n"
    "                       [--no-dense] [--json] [--groups A [--k-groups 2]]\n"
    "\n"
    "Times one MoE layer in training mode (noisy gating, both balancing losses): forward, and\n"
    "forward+backward; then the dense FFN d -> k*h -> d (same active FLOPs) and a 2048^3 sgemm,\n"
    "both with OpenBLAS's own threads.\n"
    "GFLOP/s count the expert matrix products only: 2*B*k*2*d*h forward, 3x that with backward.\n"
    "With --groups (hierarchical) a token goes to k-groups*k experts; the dense FFN matches that.\n"
    "--json prints one JSON object (fwd_tokens_per_s, fwdbwd_tokens_per_s, fwdbwd_gflops,\n"
    "dense_fwdbwd_tokens_per_s, sgemm_gflops, ...; \"n\" is the number of experts).\n"
    "--n N is a deprecated alias of --experts N.\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float *alloc_fill(size_t n, float a, uint64_t seed) {
    float *p = malloc(sizeof(float) * n);
    if (!p) cli_die("out of memory (%zu floats)", n);
    for (size_t i = 0; i < n; i++) p[i] = a * (2.0f * moe_rng_uniform(seed, i) - 1.0f);
    return p;
}

/* The machine's ceiling: a 2048^3 sgemm on OpenBLAS's own threads (set by the caller), GFLOP/s,
 * the median of reps after a warm-up. */
static double sgemm_ceiling(int reps) {
    const int S = 2048;
    float *a = alloc_fill((size_t)S * S, 1.0f, 31), *b = alloc_fill((size_t)S * S, 1.0f, 32);
    float *c = malloc(sizeof(float) * S * S);
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!c || !t) cli_die("out of memory");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, a, S, b, S, 0.0f, c, S);
    for (int r = 0; r < reps; r++) {
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, a, S, b, S, 0.0f, c, S);
        t[r] = cli_now() - t0;
    }
    double g = 2.0 * S * S * (double)S / median(t, reps) / 1e9;
    free(a); free(b); free(c); free(t);
    return g;
}

/* Dense FFN y = relu(x W1) W2 with its backward: the compute-matched baseline. */
typedef struct {
    int B, d, H;
    float *w1, *w2, *dw1, *dw2, *a, *y, *da, *dx;
} dense_ffn;

static void dense_forward(dense_ffn *f, const float *x) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->B, f->H, f->d, 1.0f, x, f->d, f->w1, f->H, 0.0f, f->a, f->H);
    for (size_t i = 0; i < (size_t)f->B * f->H; i++) f->a[i] = f->a[i] > 0.0f ? f->a[i] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->B, f->d, f->H, 1.0f, f->a, f->H, f->w2, f->d, 0.0f, f->y, f->d);
}

static void dense_backward(dense_ffn *f, const float *x, const float *dy) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->H, f->d, f->B, 1.0f, f->a, f->H, dy, f->d, 1.0f, f->dw2, f->d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, f->B, f->H, f->d, 1.0f, dy, f->d, f->w2, f->d, 0.0f, f->da, f->H);
    for (size_t i = 0; i < (size_t)f->B * f->H; i++)
        if (!(f->a[i] > 0.0f)) f->da[i] = 0.0f;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f->d, f->H, f->B, 1.0f, x, f->d, f->da, f->H, 1.0f, f->dw1, f->H);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, f->B, f->d, f->H, 1.0f, f->da, f->H, f->w1, f->H, 0.0f, f->dx, f->d);
}

static int bench_layer(int argc, char **argv) {
    const char *B_s = "16384", *threads_s = NULL, *reps_s = "5", *strat_s = "auto";
    int json = 0, no_dense = 0;
    moe_layer_config defaults = moe_layer_config_default();
    defaults.d = 512;
    defaults.h = 1024;
    defaults.n = 64;
    defaults.k = 4;
    cli_moe mo;
    cli_moe_init(&mo, CLI_MOE_ALL, defaults);
    cli_opt opts[] = {{"B", &B_s, NULL},           {"threads", &threads_s, NULL}, {"reps", &reps_s, NULL},
                      {"strategy", &strat_s, NULL}, {"json", NULL, &json},        {"no-dense", NULL, &no_dense},
                      {"n", &mo.arg.experts, NULL}}; /* the deprecated name of --experts */
    cli_parse_moe(argc, argv, opts, sizeof opts / sizeof opts[0], &mo, BENCH_USAGE);
    cli_moe_check(&mo);
    const moe_layer_config cfg = mo.cfg;
    const int B = cli_int("B", B_s, 1, 1 << 24), reps = cli_int("reps", reps_s, 1, 1000);
    const int d = cfg.d, h = cfg.h, n = cfg.n, k = cfg.k, bias = cfg.bias;
    if (threads_s) moe_set_threads(cli_int("threads", threads_s, 1, 1024));
    int threads = moe_get_threads();
    moe_parallel strategy = MOE_PAR_AUTO;
    if (strcmp(strat_s, "blas") == 0) strategy = MOE_PAR_BLAS;
    else if (strcmp(strat_s, "experts") == 0) strategy = MOE_PAR_EXPERTS;
    else if (strcmp(strat_s, "auto") != 0) cli_die("--strategy must be auto, blas or experts, got '%s'", strat_s);

    /* hierarchical: k_groups groups, k experts in each; kk experts per token */
    const int kk = cfg.groups ? cfg.k_groups * k : k;
    moe_layer *l = NULL;
    cli_check(moe_layer_create(&l, &cfg, 1), "creating the layer");
    cli_check(moe_layer_set_parallel(l, strategy), "--strategy");
    float *x = alloc_fill((size_t)B * d, 1.0f, 11), *dy = alloc_fill((size_t)B * d, 1.0f, 12);
    float *y = malloc(sizeof(float) * B * d), *dx = malloc(sizeof(float) * B * d);
    if (!y || !dx) cli_die("out of memory");
    double *tf = malloc(sizeof(double) * reps), *tb = malloc(sizeof(double) * reps);
    moe_layer_stats st;
    /* warm-up: allocates the workspace and touches every page */
    cli_check(moe_layer_forward(l, y, x, B, MOE_TRAIN, NULL, &st), "forward");
    cli_check(moe_layer_backward(l, dx, dy), "backward");
    for (int r = 0; r < reps; r++) {
        double t0 = cli_now();
        moe_layer_forward(l, y, x, B, MOE_TRAIN, NULL, &st);
        double t1 = cli_now();
        memset(dx, 0, sizeof(float) * B * d);
        double t2 = cli_now();
        moe_layer_backward(l, dx, dy);
        double t3 = cli_now();
        tf[r] = t1 - t0;
        tb[r] = (t1 - t0) + (t3 - t2);
    }
    double fwd = median(tf, reps), fb = median(tb, reps);
    moe_layer_free(l);

    double flop_fwd = 2.0 * B * kk * 2.0 * d * h;
    double dfwd = 0.0, dfb = 0.0;
    /* the baselines use OpenBLAS's own threading, its best on large products (the library
     * keeps OpenBLAS single-threaded and splits products itself) */
    openblas_set_num_threads(threads);
    if (!no_dense) {
        dense_ffn f = {B, d, kk * h, alloc_fill((size_t)d * kk * h, 0.04f, 21), alloc_fill((size_t)kk * h * d, 0.03f, 22),
                       calloc((size_t)d * kk * h, sizeof(float)), calloc((size_t)kk * h * d, sizeof(float)),
                       malloc(sizeof(float) * B * kk * h), malloc(sizeof(float) * B * d),
                       malloc(sizeof(float) * B * kk * h), malloc(sizeof(float) * B * d)};
        if (!f.dw1 || !f.dw2 || !f.a || !f.y || !f.da || !f.dx) cli_die("out of memory for the dense FFN");
        dense_forward(&f, x);
        dense_backward(&f, x, dy);
        for (int r = 0; r < reps; r++) {
            double t0 = cli_now();
            dense_forward(&f, x);
            double t1 = cli_now();
            dense_backward(&f, x, dy);
            double t2 = cli_now();
            tf[r] = t1 - t0;
            tb[r] = t2 - t0;
        }
        dfwd = median(tf, reps);
        dfb = median(tb, reps);
        free(f.w1); free(f.w2); free(f.dw1); free(f.dw2); free(f.a); free(f.y); free(f.da); free(f.dx);
    }
    double sg = sgemm_ceiling(reps);
    openblas_set_num_threads(1);

    double fwd_tps = B / fwd, fb_tps = B / fb, gf = 3.0 * flop_fwd / fb / 1e9;
    if (json) {
        printf("{\"impl\":\"moe\",\"groups\":%d,\"k_groups\":%d,\"B\":%d,\"d\":%d,\"h\":%d,\"n\":%d,\"k\":%d,\"bias\":%d,\"threads\":%d,"
               "\"strategy\":\"%s\",\"reps\":%d,\"fwd_s\":%.6f,\"fwdbwd_s\":%.6f,\"fwd_tokens_per_s\":%.1f,"
               "\"fwdbwd_tokens_per_s\":%.1f,\"fwd_gflops\":%.2f,\"fwdbwd_gflops\":%.2f",
               cfg.groups, cfg.k_groups, B, d, h, n, k, bias, threads, strat_s, reps, fwd, fb, fwd_tps, fb_tps, flop_fwd / fwd / 1e9, gf);
        if (!no_dense)
            printf(",\"dense_fwd_s\":%.6f,\"dense_fwdbwd_s\":%.6f,\"dense_fwdbwd_tokens_per_s\":%.1f,"
                   "\"dense_fwdbwd_gflops\":%.2f,\"moe_over_dense\":%.4f",
                   dfwd, dfb, B / dfb, 3.0 * flop_fwd / dfb / 1e9, dfb / fb);
        printf(",\"sgemm_gflops\":%.2f,\"max_mean_load\":%.4f}\n", sg, st.max_mean_load);
    } else {
        printf("MoE layer B=%d d=%d h=%d n=%d k=%d bias=%d threads=%d strategy=%s (median of %d)\n", B, d, h,
               n, k, bias, threads, strat_s, reps);
        printf("  forward          %8.4f s  %10.0f tokens/s  %7.1f GFLOP/s\n", fwd, fwd_tps, flop_fwd / fwd / 1e9);
        printf("  forward+backward %8.4f s  %10.0f tokens/s  %7.1f GFLOP/s\n", fb, fb_tps, gf);
        if (!no_dense) {
            printf("dense FFN d->%d->d (equal active FLOPs)\n", kk * h);
            printf("  forward          %8.4f s  %10.0f tokens/s\n", dfwd, B / dfwd);
            printf("  forward+backward %8.4f s  %10.0f tokens/s  %7.1f GFLOP/s\n", dfb, B / dfb,
                   3.0 * flop_fwd / dfb / 1e9);
            printf("MoE / dense throughput (forward+backward): %.3f\n", dfb / fb);
        }
        printf("sgemm 2048x2048x2048: %.1f GFLOP/s  (MoE expert products at %.0f%% of it)\n", sg, 100.0 * gf / sg);
    }
    free(x); free(dy); free(y); free(dx); free(tf); free(tb);
    return 0;
}


static const char *BENCH_LM_USAGE =
    "usage: moe bench lm [--ffn moe|dense|none] [--batch 32] [--bptt 64] [--steps 30] [--reps 3]\n"
    "                    [--threads T] [--json] [MoE options: --d 128 --experts 16 --k 2 --h 256 ...]\n"
    "\n"
    "Times training steps of the language model (forward, backward, gradient clipping and Adam, as\n"
    "moe train runs them; the defaults are moe train's model) on random tokens, and in the same run\n"
    "a 2048^3 sgemm on as many threads: the achieved GFLOP/s of all matrix products against that\n"
    "ceiling. Each rep times --steps steps; medians over --reps.\n";

static int bench_lm(int argc, char **argv) {
    const char *ffn_s = "moe", *b_s = "32", *t_s = "64", *steps_s = "30", *reps_s = "3", *threads_s = NULL;
    int json = 0;
    cli_opt opts[] = {{"ffn", &ffn_s, NULL},     {"batch", &b_s, NULL},       {"bptt", &t_s, NULL},
                      {"steps", &steps_s, NULL}, {"reps", &reps_s, NULL},     {"threads", &threads_s, NULL},
                      {"json", NULL, &json}};
    moe_lm_config c = moe_lm_config_default();
    cli_moe mo;
    cli_moe_init(&mo, CLI_MOE_FLAT | CLI_MOE_GROUPS, cli_moe_of_lm(&c));
    cli_parse_moe(argc, argv, opts, sizeof opts / sizeof opts[0], &mo, BENCH_LM_USAGE);
    if (threads_s) moe_set_threads(cli_int("threads", threads_s, 1, 1024));
    const int threads = moe_get_threads();
    c.ffn = cli_ffn(ffn_s);
    if (c.ffn == MOE_FFN_MOE) cli_moe_check(&mo);
    else if (mo.arg.groups || mo.arg.k_groups) cli_die("--groups makes the MoE hierarchical; it needs --ffn moe");
    cli_moe_to_lm(&mo, &c);
    const int B = cli_int("batch", b_s, 1, 1 << 16), T = cli_int("bptt", t_s, 1, 1 << 16);
    const int steps = cli_int("steps", steps_s, 1, 1 << 20), reps = cli_int("reps", reps_s, 1, 1000);
    /* the ceiling first: right after the training steps, the OpenMP threads still spin for a
     * while and take cores from OpenBLAS's (measured: 105 instead of 180 GFLOP/s, 2026-12-02) */
    openblas_set_num_threads(threads);
    const double sg = sgemm_ceiling(5);
    openblas_set_num_threads(1);
    moe_lm *m = NULL;
    cli_check(moe_lm_create(&m, &c, 1), "creating the model");
    moe_adam_config ac = moe_adam_config_default();
    moe_optim *opt = NULL;
    cli_check(moe_optim_create_lm(&opt, m, &ac), "optimiser");
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    double *tt = malloc(sizeof(double) * (size_t)reps);
    if (!tok || !tt) cli_die("out of memory");
    double flops = 0.0;
    uint64_t ctr = 0;
    for (int r = -1; r < reps; r++) { /* rep -1 warms up */
        double t0 = cli_now();
        for (int s = 0; s < steps; s++) {
            for (size_t i = 0; i < (size_t)B * (T + 1); i++)
                tok[i] = (int32_t)(moe_rng_uniform(77, ctr++) * c.vocab) % c.vocab;
            moe_lm_zero_grad(m);
            moe_lm_stats st;
            cli_check(moe_lm_step(m, tok, B, T, 1, &st), "training step");
            /* clip to 1 as moe train does, then Adam */
            cli_check(moe_optim_step(opt, 1e-3f, 1.0f, NULL), "optimiser step");
            flops = st.flops;
        }
        if (r >= 0) tt[r] = (cli_now() - t0) / steps;
    }
    const double step_s = median(tt, reps), gf = flops / step_s / 1e9;
    moe_optim_free(opt);
    moe_lm_free(m);
    free(tok);
    free(tt);
    const char *fn = c.ffn == MOE_FFN_MOE ? "moe" : c.ffn == MOE_FFN_DENSE ? "dense" : "none";
    if (json)
        printf("{\"impl\":\"moe_lm\",\"ffn\":\"%s\",\"d\":%d,\"n\":%d,\"k\":%d,\"h\":%d,\"batch\":%d,\"bptt\":%d,"
               "\"threads\":%d,\"step_s\":%.6f,\"tokens_per_s\":%.1f,\"gflop_per_step\":%.4f,\"gflops\":%.2f,"
               "\"sgemm_gflops\":%.2f,\"fraction_of_sgemm\":%.4f}\n",
               fn, c.d, c.n, c.k, c.h, B, T, threads, step_s, B * T / step_s, flops / 1e9, gf, sg, gf / sg);
    else {
        printf("language model ffn=%s d=%d n=%d k=%d h=%d, batch %d x bptt %d, %d threads (median of %d x %d steps)\n",
               fn, c.d, c.n, c.k, c.h, B, T, threads, reps, steps);
        printf("  training step %8.4f s  %10.0f tokens/s  %.3f GFLOP  %7.1f GFLOP/s\n", step_s, B * T / step_s,
               flops / 1e9, gf);
        printf("sgemm 2048x2048x2048: %.1f GFLOP/s  (the training step's products at %.0f%% of it)\n", sg,
               100.0 * gf / sg);
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "layer") == 0) return bench_layer(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "lm") == 0) return bench_lm(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(BENCH_USAGE, stdout);
        fputs("\n", stdout);
        fputs(BENCH_LM_USAGE, stdout);
        return 0;
    }
    fprintf(stderr, "moe: error: unknown benchmark: use moe bench layer or moe bench lm (each has --help)\n");
    return 2;
}
