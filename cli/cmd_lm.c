/* cmd_lm.c - the language-model commands: `moe train` (progress line, JSON-lines log,
 * checkpoints, Ctrl-C), `moe eval`, `moe sample` and `moe info`. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* textdata.h's fortunes corpus builder is internal; declared here to keep the CLI on the
 * library's side of the line without exposing the whole header. */
moe_status td_build_fortunes(const char *dir, const char *out_path, int *nfiles, uint64_t *nbytes);

static const char *TRAIN_USAGE =
    "usage: moe train [--data FILE] [--words] [--steps 1000 | --minutes M] [--out DIR]\n"
    "                 [--resume CKPT] [model and training options]\n"
    "\n"
    "Trains the paper's language model: embedding -> LSTM -> MoE -> LSTM -> softmax.\n"
    "  --data FILE        UTF-8 text (default: Debian's fortunes, gathered into DIR/../fortunes.txt;\n"
    "                     `english`: the 113 MB English corpus that `make corpus` gathers into\n"
    "                     runs/english.txt, for the large models; found there from the\n"
    "                     current folder or next to --out's folder)\n"
    "  --words            word tokens (default: bytes); --min-count 2 --max-vocab 10000 --lowercase\n"
    "  --steps N          stop at step N (default 1000); --minutes M stops after M minutes\n"
    "  --out DIR          where model.safetensors and log.jsonl go (default runs/lm)\n"
    "  --resume CKPT      continue a checkpoint exactly (same --data, --batch, --bptt)\n"
    "model:  --ffn moe|dense|none (default moe; dense: one FFN d -> k*h -> d, the compute-matched\n"
    "        baseline; none: no middle layer)  --dropout 0.1  and the MoE layer's options below\n"
    "train:  --batch 32  --bptt 64  --lr 0.002  --warmup 200  --clip 1.0  --seed 1  --threads T\n"
    "        --log-every 20  --eval-every 200  --eval-batches 0 (0 = whole valid split)\n"
    "        --ckpt-every 500\n" CLI_COMM_TIMEOUT_HELP
    "        --plan   print the memory plan (parameters, gradients, optimiser state, activations\n"
    "        against what is available) and stop; exit 1 if it does not fit. A run whose plan\n"
    "        does not fit is refused before it allocates, naming settings that would fit.\n"
    "        --optim adam|factored (factored: the paper's memory-saving Adam, beta1 = 0 and a\n"
    "        factored second moment; default adam, or the checkpoint's on --resume)\n"
    "        --fused  fused expert updates: each expert is stepped as soon as backward has its\n"
    "        gradient, so the experts keep no gradients (half the memory of the experts with\n"
    "        --optim factored). --clip then clips each expert by its own gradient norm and the\n"
    "        rest of the model by the rest's; without clipping the result is the same.\n"
    "        --bf16   (with --fused) the experts' weight matrices in bfloat16: half their memory;\n"
    "        float32 products, updates rounded stochastically (seeded: --resume stays exact)\n"
    "Ctrl-C writes a checkpoint and stops; --resume continues from it.\n";


typedef struct {
    FILE *log;
    int tty;
    int64_t steps;
    int64_t params_total, params_active, optim_floats;
} train_ui;


static int train_cb(const moe_lm_progress *p, void *user) {
    train_ui *ui = user;
    char eta[32], el[32];
    cli_fmt_time(eta, sizeof eta, p->eta_s);
    cli_fmt_time(el, sizeof el, p->elapsed_s);
    switch (p->kind) {
    case MOE_LM_START:
        ui->params_total = p->params_total;
        ui->optim_floats = p->optim_floats;
        ui->params_active = p->params_active;
        printf("model: %lld parameters, %lld active per token; vocabulary %lld; starting at step %lld\n",
               (long long)p->params_total, (long long)p->params_active, (long long)p->vocab, (long long)p->step);
        if (ui->log)
            fprintf(ui->log, "{\"kind\":\"start\",\"step\":%lld,\"params_total\":%lld,\"params_active\":%lld,\"vocab\":%lld}\n",
                    (long long)p->step, (long long)p->params_total, (long long)p->params_active, (long long)p->vocab);
        break;
    case MOE_LM_TRAIN: {
        if (ui->tty) {
            int w = 20, fill = p->steps > 0 ? (int)(w * (double)p->step / p->steps) : 0;
            char bar[32];
            for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
            bar[w] = 0;
            printf("\r[%s] ", bar);
        }
        char of[32] = "";
        if (p->steps) snprintf(of, sizeof of, "/%lld", (long long)p->steps);
        printf("step %lld%s | loss %.4f ppl %.2f | %.0f tok/s %.1f GFLOP/s | CV imp %.3f load %.3f "
               "max/mean %.2f | lr %.2e | %s, ETA %s",
               (long long)p->step, of, p->loss, p->ppl,
               p->tokens_per_s, p->gflops, p->cv_importance, p->cv_load, p->max_mean_load, p->lr, el, eta);
        if (p->ranks > 1)
            printf(" | %d ranks, comm %.1f%%, exchange %.2f MB/step", p->ranks, 100.0 * p->comm_fraction,
                   p->exchange_bytes / 1e6);
        if (!ui->tty) printf("\n");
        fflush(stdout);
        if (ui->log) {
            fprintf(ui->log,
                    "{\"kind\":\"train\",\"step\":%lld,\"loss\":%.6f,\"ppl\":%.4f,\"aux\":%.6f,\"lr\":%.6g,"
                    "\"grad_norm\":%.4f,\"tokens_per_s\":%.1f,\"gflops\":%.3f,\"cv_importance\":%.5f,"
                    "\"cv_load\":%.5f,\"max_mean_load\":%.4f,\"epoch\":%.4f,\"elapsed_s\":%.2f,\"ranks\":%d,"
                    "\"comm_fraction\":%.5f,\"exchange_bytes_per_step\":%.0f,\"expert_tokens\":[",
                    (long long)p->step, p->loss, p->ppl, p->aux, p->lr, p->grad_norm, p->tokens_per_s, p->gflops,
                    p->cv_importance, p->cv_load, p->max_mean_load, p->epoch, p->elapsed_s, p->ranks,
                    p->comm_fraction, p->exchange_bytes);
            for (int e = 0; e < p->n; e++) fprintf(ui->log, "%s%lld", e ? "," : "", (long long)p->expert_tokens[e]);
            fprintf(ui->log, "]}\n");
            fflush(ui->log);
        }
        break;
    }
    case MOE_LM_VALID:
        printf("%sstep %lld | valid loss %.4f ppl %.2f\n", ui->tty ? "\n" : "", (long long)p->step, p->valid_loss, p->valid_ppl);
        if (ui->log) {
            fprintf(ui->log, "{\"kind\":\"valid\",\"step\":%lld,\"loss\":%.6f,\"ppl\":%.4f,\"elapsed_s\":%.2f}\n",
                    (long long)p->step, p->valid_loss, p->valid_ppl, p->elapsed_s);
            fflush(ui->log);
        }
        break;
    case MOE_LM_CHECKPOINT:
        if (ui->log) {
            fprintf(ui->log, "{\"kind\":\"checkpoint\",\"step\":%lld,\"path\":\"%s\"}\n", (long long)p->step, p->path);
            fflush(ui->log);
        }
        break;
    }
    return cli_stop_asked();
}


int cmd_train(int argc, char **argv) {
    const char *data = NULL, *steps_s = NULL, *minutes_s = NULL, *out = "runs/lm", *resume = NULL;
    const char *ffn_s = NULL, *drop_s = NULL, *batch_s = NULL, *bptt_s = NULL, *lr_s = NULL, *warm_s = NULL;
    const char *clip_s = NULL, *seed_s = NULL, *threads_s = NULL, *log_s = NULL, *eval_s = NULL;
    const char *evb_s = NULL, *ck_s = NULL, *minc_s = NULL, *maxv_s = NULL, *optim_s = NULL, *ctime_s = NULL;
    int words = 0, lower = 0, plan_only = 0, fused = 0, bf16 = 0;
    cli_opt opts[] = {
        {"data", &data, NULL},          {"words", NULL, &words},         {"steps", &steps_s, NULL},
        {"minutes", &minutes_s, NULL},  {"out", &out, NULL},             {"resume", &resume, NULL},
        {"ffn", &ffn_s, NULL},          {"dropout", &drop_s, NULL},
        {"batch", &batch_s, NULL},      {"bptt", &bptt_s, NULL},         {"lr", &lr_s, NULL},
        {"warmup", &warm_s, NULL},      {"clip", &clip_s, NULL},         {"seed", &seed_s, NULL},
        {"threads", &threads_s, NULL},  {"log-every", &log_s, NULL},     {"eval-every", &eval_s, NULL},
        {"eval-batches", &evb_s, NULL}, {"ckpt-every", &ck_s, NULL},     {"min-count", &minc_s, NULL},
        {"max-vocab", &maxv_s, NULL},   {"lowercase", NULL, &lower},     {"optim", &optim_s, NULL},
        {"comm-timeout", &ctime_s, NULL}, {"plan", NULL, &plan_only}, {"fused", NULL, &fused},
        {"bf16", NULL, &bf16}};
    moe_lm_config mc = moe_lm_config_default();
    cli_moe mo;
    cli_moe_init(&mo, CLI_MOE_FLAT | CLI_MOE_GROUPS, cli_moe_of_lm(&mc));
    cli_parse_moe(argc, argv, opts, sizeof opts / sizeof opts[0], &mo, TRAIN_USAGE);
    /* under mpirun: one process per rank, data parallel, the experts split over the ranks */
    moe_comm *comm = cli_mpi_start(&argc, &argv, ctime_s);
    if (threads_s) moe_set_threads(cli_int("threads", threads_s, 1, 1024));
    moe_lm_train_config tc = moe_lm_train_config_default();
    tc.comm = comm;
    const int rank0 = !comm || moe_comm_rank(comm) == 0;
    const int model_given = mo.given || ffn_s || drop_s;
    if (ffn_s) mc.ffn = cli_ffn(ffn_s);
    if (mc.ffn == MOE_FFN_MOE) cli_moe_check(&mo);
    else if (mo.arg.groups || mo.arg.k_groups) cli_die("--groups makes the MoE hierarchical; it needs --ffn moe");
    cli_moe_to_lm(&mo, &mc);
    if (drop_s) mc.dropout = (float)cli_double("dropout", drop_s, 0, 0.99);
    if (steps_s) tc.steps = cli_int("steps", steps_s, 0, 2000000000);
    if (minutes_s) {
        tc.minutes = cli_double("minutes", minutes_s, 0, 1e7);
        if (!steps_s) tc.steps = 0;
    }
    if (batch_s) tc.batch = cli_int("batch", batch_s, 1, 1 << 16);
    if (bptt_s) tc.bptt = cli_int("bptt", bptt_s, 1, 1 << 16);
    if (lr_s) tc.lr = (float)cli_double("lr", lr_s, 1e-9, 10);
    if (warm_s) tc.warmup = cli_int("warmup", warm_s, 0, 1 << 30);
    if (clip_s) tc.clip = (float)cli_double("clip", clip_s, 0, 1e9);
    if (seed_s) tc.seed = cli_u64("seed", seed_s);
    if (optim_s && strcmp(optim_s, "adam") != 0 && strcmp(optim_s, "factored") != 0)
        cli_die("--optim must be adam or factored, got '%s'", optim_s);
    tc.optim = optim_s;
    tc.fused = fused;
    tc.bf16 = bf16;
    if (log_s) tc.log_every = cli_int("log-every", log_s, 1, 1 << 30);
    if (eval_s) tc.eval_every = cli_int("eval-every", eval_s, 0, 1 << 30);
    if (evb_s) tc.eval_batches = cli_int("eval-batches", evb_s, 0, 1 << 30);
    if (ck_s) tc.ckpt_every = cli_int("ckpt-every", ck_s, 0, 1 << 30);
    if (minc_s) tc.min_count = cli_int("min-count", minc_s, 1, 1 << 30);
    if (maxv_s) tc.max_vocab = cli_int("max-vocab", maxv_s, 0, 1 << 30);
    tc.words = words;
    tc.lowercase = lower;
    if (cli_mkdir_p(out) != 0) cli_die("cannot create the output directory %s: %s", out, strerror(errno));
    char corpus[4096], ckpt[4096], logp[4096];
    if (!data) {
        /* the default corpus: Debian's fortunes, gathered once into one file */
        snprintf(corpus, sizeof corpus, "%s/../fortunes.txt", out);
        struct stat sb;
        if (rank0 && stat(corpus, &sb) != 0) {
            int nf = 0;
            uint64_t nb = 0;
            cli_check(td_build_fortunes(NULL, corpus, &nf, &nb), "building the default corpus (install it with `apt-get install fortunes` or pass --data FILE)");
            printf("corpus: %d fortune files, %llu bytes -> %s\n", nf, (unsigned long long)nb, corpus);
        }
        data = corpus;
        /* the other ranks wait until rank 0 has gathered it */
        if (comm) cli_check(moe_comm_check_same(comm, 1, "the corpus barrier"), "waiting for the corpus");
    }
    if (strcmp(data, "english") == 0) { /* the named large corpus: where `make corpus` puts it, or
                                            next to the output folder (runs/NAME -> runs/english.txt) */
        struct stat sb;
        snprintf(corpus, sizeof corpus, "runs/english.txt");
        if (stat(corpus, &sb) != 0) snprintf(corpus, sizeof corpus, "%s/../english.txt", out);
        if (stat(corpus, &sb) != 0)
            cli_die("neither runs/english.txt nor %s exists: gather the English corpus with `make corpus` (installs "
                    "Debian's dict-gcide, dict-wn, dict-jargon, dict-foldoc, python3-doc and linux-doc; about 113 MB "
                    "of text)", corpus);
        data = corpus;
    }
    tc.data = data;
    snprintf(ckpt, sizeof ckpt, "%s/model.safetensors", out);
    snprintf(logp, sizeof logp, "%s/log.jsonl", out);
    tc.checkpoint = ckpt;
    moe_mem_plan plan;
    cli_check(moe_lm_train_plan(&tc, resume && !model_given ? NULL : &mc, resume, &plan), "planning the memory");
    printf("memory plan: %.1f MB per process (parameters %.1f, gradients %.1f, optimiser %.1f, activations %.1f); "
           "%.1f MB available\n", plan.total / 1e6, plan.params / 1e6, plan.grads / 1e6, plan.optim / 1e6,
           plan.activations / 1e6, plan.available / 1e6);
    if (plan_only) {
        cli_set_comm(NULL);
        moe_comm_free(comm);
        return plan.available > 0 && plan.total > plan.available ? 1 : 0;
    }
    train_ui ui = {0};
    ui.tty = cli_isatty_stdout();
    if (rank0) {
        ui.log = fopen(logp, resume ? "a" : "w");
        if (!ui.log) cli_die("cannot write the log %s: %s", logp, strerror(errno));
    }
    cli_catch_stop();
    printf("training on %s (%s tokens), batch %d x bptt %d, checkpoint %s, log %s\n", data, words ? "word" : "byte",
           tc.batch, tc.bptt, ckpt, logp);
    moe_status st = moe_lm_train(&tc, resume && !model_given ? NULL : &mc, resume, train_cb, &ui);
    if (ui.log) fclose(ui.log);
    if (ui.tty) printf("\n");
    cli_check(st, "training");
    if (comm) printf("ranks: %d processes, experts split over them\n", moe_comm_size(comm));
    if (cli_stop_asked()) {
        printf("interrupted: checkpoint written to %s (continue with --resume %s)\n", ckpt, ckpt);
        cli_set_comm(NULL);
        moe_comm_free(comm);
        return 130;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("memory: peak RSS %.1f MB (planned %.1f); parameters %.1f MB (%lld); gradients %.1f MB; optimiser state "
           "%.1f MB\n", ru.ru_maxrss / 1024.0, plan.total / 1e6, plan.params / 1e6, (long long)ui.params_total,
           plan.grads / 1e6, 4.0 * ui.optim_floats / 1e6);
    printf("done: checkpoint %s, log %s\n", ckpt, logp);
    cli_set_comm(NULL);
    moe_comm_free(comm);
    return 0;
}

static int split_of(const char *s) {
    if (strcmp(s, "train") == 0) return 0;
    if (strcmp(s, "valid") == 0) return 1;
    if (strcmp(s, "test") == 0) return 2;
    cli_die("--split must be train, valid or test, got '%s'", s);
}

int cmd_eval(int argc, char **argv) {
    static const char *U =
        "usage: moe eval --model CKPT --data FILE [--split test] [--batch 16] [--bptt 64]\n"
        "                [--max-batches 0] [--json] [--threads T]\n"
        "Mean cross-entropy (nats per token) and perplexity of the model on one split (train,\n"
        "valid or test: the same 90/5/5 block split that training uses) of a text file.\n";
    const char *model = NULL, *data = NULL, *split_s = "test", *b_s = "16", *t_s = "64", *mb_s = "0", *th = NULL;
    int json = 0;
    cli_opt opts[] = {{"model", &model, NULL}, {"data", &data, NULL},  {"split", &split_s, NULL},
                      {"batch", &b_s, NULL},   {"bptt", &t_s, NULL},   {"max-batches", &mb_s, NULL},
                      {"json", NULL, &json},   {"threads", &th, NULL}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], U);
    if (!model || !data) cli_die("--model and --data are required (see moe eval --help)");
    if (th) moe_set_threads(cli_int("threads", th, 1, 1024));
    int split = split_of(split_s);
    moe_lm_ckpt *c = NULL;
    cli_check(moe_lm_ckpt_load(&c, model), model);
    double loss = 0;
    uint64_t tokens = 0;
    cli_check(moe_lm_ckpt_eval(c, data, split, cli_int("batch", b_s, 1, 1 << 16), cli_int("bptt", t_s, 1, 1 << 16),
                            cli_int("max-batches", mb_s, 0, 1 << 30), &loss, &tokens),
              data);
    if (json) printf("{\"loss\":%.6f,\"ppl\":%.4f,\"tokens\":%llu,\"split\":\"%s\"}\n", loss, exp(loss), (unsigned long long)tokens, split_s);
    else printf("%s split of %s: loss %.4f nats/token, perplexity %.2f over %llu tokens\n", split_s, data, loss, exp(loss),
                (unsigned long long)tokens);
    moe_lm_ckpt_free(c);
    return 0;
}

int cmd_sample(int argc, char **argv) {
    static const char *U =
        "usage: moe sample --model CKPT [--prompt TEXT] [--temperature 1.0] [--top-k 0]\n"
        "                  [--length 200] [--seed 1]\n"
        "Feeds the prompt, then draws --length tokens (top-k 0 = the whole vocabulary).\n";
    const char *model = NULL, *prompt = "\n", *temp_s = "1.0", *topk_s = "0", *len_s = "200", *seed_s = "1";
    cli_opt opts[] = {{"model", &model, NULL},     {"prompt", &prompt, NULL}, {"temperature", &temp_s, NULL},
                      {"top-k", &topk_s, NULL},    {"length", &len_s, NULL},  {"seed", &seed_s, NULL}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], U);
    if (!model) cli_die("--model is required (see moe sample --help)");
    double temp = cli_double("temperature", temp_s, 1e-3, 100);
    int topk = cli_int("top-k", topk_s, 0, 1 << 30), len = cli_int("length", len_s, 0, 1 << 24);
    uint64_t seed = cli_u64("seed", seed_s);
    moe_lm_ckpt *c = NULL;
    cli_check(moe_lm_ckpt_load(&c, model), model);
    char *text = NULL;
    size_t tl = 0;
    cli_check(moe_lm_ckpt_sample(c, prompt, strlen(prompt), len, temp, topk, seed, &text, &tl), "sampling");
    fwrite(text, 1, tl, stdout);
    printf("\n");
    free(text);
    moe_lm_ckpt_free(c);
    return 0;
}

/* "format: moe-checkpoint version 2", or the format string of a version-1 file */
static void print_format(const char *format, const char *version) {
    if (!format) return;
    if (version) printf("  format: %s version %s\n", format, version);
    else printf("  format: %s (version 1)\n", format);
}

/* The "tensors:" block: each tensor of the file (parameters, optimiser state, carried state) as
 * name, dtype and shape, names padded to one column, then the totals. */
static void print_tensors(const char *path) {
    moe_st *f = NULL;
    cli_check(moe_st_open(&f, path), path);
    int width = 0;
    for (int i = 0; i < moe_st_count(f); i++) {
        moe_tensor t;
        cli_check(moe_st_at(f, i, &t), path);
        const int len = (int)strlen(t.name);
        if (len > width) width = len;
    }
    printf("  tensors:\n");
    uint64_t elements = 0, bytes = 0;
    for (int i = 0; i < moe_st_count(f); i++) {
        moe_tensor t;
        cli_check(moe_st_at(f, i, &t), path);
        printf("    %-*s  %-4s  [", width, t.name, moe_dtype_str(t.dtype));
        for (int j = 0; j < t.ndim; j++) printf("%s%lld", j ? ", " : "", (long long)t.shape[j]);
        printf("]\n");
        elements += t.numel;
        bytes += (uint64_t)t.numel * moe_dtype_size(t.dtype);
    }
    printf("  total: %d tensors, %llu elements, %llu bytes\n", moe_st_count(f), (unsigned long long)elements,
           (unsigned long long)bytes);
    moe_st_free(f);
}

/* moe info on a translation checkpoint (small models: loading it checks it whole) */
static void info_s2s(const char *model) {
    moe_s2s_ckpt *sc = NULL;
    cli_check(moe_s2s_ckpt_load(&sc, model), model);
    const char *keys[] = {"src_vocab", "tgt_vocab", "d", "layers", "bidir", "moe", "n", "k", "h", "dropout",
                          "max_len", "objective", "epoch", "step", "batch", "lr", "seed", "data.dict", "data.src",
                          "data.tgt", "elapsed_s"};
    printf("%s: translation model (moe seq2seq)\n", model);
    print_format(moe_s2s_ckpt_meta(sc, "format"), moe_s2s_ckpt_meta(sc, "format_version"));
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = moe_s2s_ckpt_meta(sc, keys[i]);
        if (v && *v) printf("  %s: %s\n", keys[i], v);
    }
    moe_s2s_ckpt_free(sc);
    print_tensors(model);
}

int cmd_info(int argc, char **argv) {
    static const char *U = "usage: moe info CKPT   (or --model CKPT)\nPrints a checkpoint's settings, size and progress, then its tensors (name, dtype, shape) and their total.\n";
    const char *model = NULL;
    if (argc == 2 && strncmp(argv[1], "--", 2) != 0) model = argv[1];
    else {
        cli_opt opts[] = {{"model", &model, NULL}};
        cli_parse(argc, argv, opts, 1, U);
    }
    if (!model) cli_die("give a checkpoint: moe info CKPT");
    /* a language model's settings come from the header alone: no weights are read, so a
     * checkpoint of many GB answers at once */
    moe_st *f = NULL;
    cli_check(moe_st_open(&f, model), model);
    const char *kind = moe_st_meta(f, "kind"), *format = moe_st_meta(f, "format");
    if ((kind && strcmp(kind, "seq2seq") == 0) || (format && strcmp(format, "moe-seq2seq 1") == 0)) {
        moe_st_free(f);
        info_s2s(model);
        return 0;
    }
    moe_lm_config cfg;
    cli_check(moe_lm_ckpt_config(f, &cfg), model);
    int64_t total = 0, active = 0;
    cli_check(moe_lm_config_param_counts(&cfg, &total, &active), model);
    printf("%s\n", model);
    printf("  model: vocab %d, d %d, middle layer %s", cfg.vocab, cfg.d,
           cfg.ffn == MOE_FFN_MOE ? "MoE" : cfg.ffn == MOE_FFN_DENSE ? "dense FFN" : "none");
    if (cfg.ffn == MOE_FFN_MOE && cfg.groups)
        printf(" (hierarchical: %d groups of %d experts, %d groups and k %d experts in each per token, h %d, "
               "w_importance %g, w_load %g)", cfg.groups, cfg.n / cfg.groups, cfg.k_groups, cfg.k, cfg.h, cfg.w_importance,
               cfg.w_load);
    else if (cfg.ffn == MOE_FFN_MOE)
        printf(" (n %d experts, k %d, h %d, w_importance %g, w_load %g)", cfg.n, cfg.k, cfg.h, cfg.w_importance, cfg.w_load);
    if (cfg.ffn == MOE_FFN_DENSE) printf(" (hidden %d)", cfg.k * cfg.h);
    printf(", dropout %g\n", cfg.dropout);
    printf("  parameters: %lld total, %lld active per token\n", (long long)total, (long long)active);
    print_format(moe_st_meta(f, "format"), moe_st_meta(f, "format_version"));
    const char *keys[] = {"tokenizer.kind", "data", "step", "tokens_seen", "batch", "bptt", "lr", "warmup", "seed", "bf16"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = moe_st_meta(f, keys[i]);
        if (v) printf("  %s: %s\n", keys[i], v);
    }
    moe_st_free(f);
    print_tensors(model);
    return 0;
}
