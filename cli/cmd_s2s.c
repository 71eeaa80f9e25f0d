/* cmd_s2s.c - the translation commands: `moe seq2seq train` (cross-entropy, MIXER, SCST; progress
 * line, JSON-lines log, checkpoints, Ctrl-C), `moe seq2seq eval` (corpus BLEU of a split) and
 * `moe translate` (sentences on stdin). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *TRAIN_USAGE =
    "usage: moe seq2seq train [--objective xent|mixer|scst] [--out DIR] [--resume CKPT] [options]\n"
    "\n"
    "Trains an LSTM encoder-decoder with attention (and an MoE layer on each side) on German ->\n"
    "English phrases of the Ding dictionary (Debian's dict-freedict-deu-eng), or on your own\n"
    "parallel text.\n"
    "data:   --dict FILE.dict.dz (default /usr/share/dictd/freedict-deu-eng.dict.dz)\n"
    "        --src FILE --tgt FILE  one sentence a line, paired by line (split 90/5/5 by hash)\n"
    "        --min-words 3 (dictionary entries with >= this many German words)  --max-words 10\n"
    "        --min-count 3  --max-vocab 8000 (word vocabularies, lower-cased, <unk> for the rest)\n"
    "objective: --objective xent|mixer|scst (default xent)\n"
    "        --n-xent 8   cross-entropy epochs first (MIXER's N_XENT; SCST's pre-training)\n"
    "        --n-xer 2    epochs per MIXER stage (N_XE+R); s = T, T-delta, ..., the last stage s = 0\n"
    "        --delta 3    (T = max-words + 1, the end mark counted)\n"
    "        --mixer-from start|end  s counts from each reference's start (default: its first\n"
    "                     min(s, L) tokens forced) or its end (its last T - s tokens sampled)\n"
    "        --rl-xent F  in the epochs that sample (MIXER, SCST) each row is trained by\n"
    "                     cross-entropy on its reference with probability F instead (0 to 1,\n"
    "                     default 0): the mixed objective F XENT + (1 - F) REINFORCE\n"
    "        --epochs E   stop after epoch E (default: n-xent + stages * n-xer, for every objective)\n"
    "        --steps N    stop after step N (mid-epoch too; --resume continues)\n"
    "        --minutes M  stop after M minutes of this run (a checkpoint first)\n"
    "        --reward plus1|0|1|2|3  sentence-BLEU smoothing of the reward (default plus1 = BLEU+1)\n"
    "model:  --layers 2 --bidir 1 --moe 1 --dropout 0.1, and the MoE layer's options below\n"
    "train:  --batch 64 --lr 0.002 --lr-rl 0.0005 (0: lr) --baseline-lr 0.001 --clip 1 --seed 1\n"
    "        --threads T --log-every 50 --ckpt-every 0 (steps; 0: at each epoch's end)\n"
    "        --valid-sentences 0 (validation BLEU on the first N; 0: all)\n" CLI_COMM_TIMEOUT_HELP
    "Writes DIR/model.safetensors (each epoch and on Ctrl-C) and DIR/log.jsonl (default DIR\n"
    "runs/seq2seq). --resume continues a checkpoint exactly; with another --objective it starts\n"
    "that objective's schedule at the checkpoint's epoch. Under `mpirun -np P` each process runs\n"
    "its share of every batch and the MoE layers' experts are split over them: the same training\n"
    "as one process.\n";

static const char *EVAL_USAGE =
    "usage: moe seq2seq eval --model CKPT [--split test|valid] [--beam N] [--alpha A] [--threads T]\n"
    "                        [--compare CKPT2 [--bootstrap 1000] [--seed 1]] [--json]\n"
    "\n"
    "Greedy (beam 1) or beam-search translations of a split of the data the checkpoint was trained\n"
    "on, scored three ways: corpus BLEU (x 100, 4-grams, unsmoothed, as nltk's corpus_bleu), the\n"
    "same smoothed with Chen and Cherry's method 3 (nltk's method3, NIST's geometric smoothing,\n"
    "sacreBLEU's 'exp': it still orders systems where no 4-gram matches), and the share of\n"
    "translations identical to their reference. --alpha: beam scores are sum log p / len^A (default 1).\n"
    "--compare CKPT2: the same for a second checkpoint trained on the same data, and a paired\n"
    "bootstrap over the split's sentences (--bootstrap resamples, seeded): how often the first\n"
    "beats the second, and 95% intervals of both and of their difference, for both scores.\n";

static const char *TRANSLATE_USAGE =
    "usage: moe translate --model CKPT [--beam N] [--alpha A] [--threads T] < sentences\n"
    "\n"
    "Translates each line of stdin (default beam 1: greedy) and prints one line per input line.\n"
    "Words outside the vocabulary are read as <unk> (a note on stderr says how many).\n";


typedef struct {
    FILE *log;
    int tty;
} ui;


static void json_num(FILE *f, const char *k, double v) {
    if (isfinite(v)) fprintf(f, ",\"%s\":%.6g", k, v);
    else fprintf(f, ",\"%s\":null", k);
}

static int cb(const moe_s2s_progress *p, void *user) {
    ui *u = user;
    char eta[32], el[32];
    cli_fmt_time(eta, sizeof eta, p->eta_s);
    cli_fmt_time(el, sizeof el, p->elapsed_s);
    switch (p->kind) {
    case MOE_S2S_START:
        printf("data: %d train, %d valid, %d test pairs (%d left out: longer than --max-words or empty); "
               "vocabularies %d German, %d English words\n",
               p->train_pairs, p->valid_pairs, p->test_pairs, p->dropped, p->src_vocab, p->tgt_vocab);
        printf("model: %lld parameters; %d epochs of %lld steps, starting at epoch %d step %lld\n",
               (long long)p->params_total, p->epochs, (long long)(p->epochs ? p->steps / p->epochs : 0), p->epoch,
               (long long)p->step);
        if (u->log)
            fprintf(u->log, "{\"kind\":\"start\",\"step\":%lld,\"epoch\":%d,\"epochs\":%d,\"params\":%lld,\"train_pairs\":%d}\n",
                    (long long)p->step, p->epoch, p->epochs, (long long)p->params_total, p->train_pairs);
        break;
    case MOE_S2S_TRAIN: {
        char stage[48];
        if (p->s >= 0 && strcmp(p->phase, "mixer") == 0) snprintf(stage, sizeof stage, "mixer s=%d", p->s);
        else snprintf(stage, sizeof stage, "%s", p->phase);
        char xe[24] = "-", rw[24] = "-", be[24] = "-"; /* "-": nothing of the kind in the interval */
        if (isfinite(p->loss)) snprintf(xe, sizeof xe, "%.4f", p->loss);
        if (isfinite(p->reward)) snprintf(rw, sizeof rw, "%.4f", p->reward);
        if (isfinite(p->baseline_err)) snprintf(be, sizeof be, "%.4f", p->baseline_err);
        printf("%sepoch %d/%d step %lld/%lld | %s | xent %s | reward %s | baseline err %s | %.0f tok/s | "
               "load CV %.3f max/mean %.2f | %s, ETA %s%s",
               u->tty ? "\r" : "", p->epoch + 1, p->epochs, (long long)p->step, (long long)p->steps, stage, xe, rw, be,
               p->tokens_per_s, p->cv_load, p->max_mean_load, el, eta, u->tty ? "   " : "\n");
        fflush(stdout);
        if (u->log) {
            fprintf(u->log, "{\"kind\":\"train\",\"step\":%lld,\"epoch\":%d,\"phase\":\"%s\",\"s\":%d", (long long)p->step,
                    p->epoch, p->phase, p->s);
            json_num(u->log, "xent", p->loss);
            json_num(u->log, "reward", p->reward);
            json_num(u->log, "baseline_err", p->baseline_err);
            json_num(u->log, "tokens_per_s", p->tokens_per_s);
            json_num(u->log, "lr", p->lr);
            json_num(u->log, "cv_load", p->cv_load);
            json_num(u->log, "max_mean_load", p->max_mean_load);
            json_num(u->log, "elapsed_s", p->elapsed_s);
            fprintf(u->log, "}\n");
            fflush(u->log);
        }
        break;
    }
    case MOE_S2S_EPOCH:
        printf("%sepoch %d/%d done (%s%s) | valid BLEU %.2f | %s\n", u->tty ? "\n" : "", p->epoch, p->epochs, p->phase,
               p->s >= 0 && strcmp(p->phase, "mixer") == 0 ? ", stage" : "", p->valid_bleu, el);
        if (u->log) {
            fprintf(u->log, "{\"kind\":\"epoch\",\"step\":%lld,\"epoch\":%d,\"phase\":\"%s\",\"s\":%d,\"valid_bleu\":%.4f,\"elapsed_s\":%.2f}\n",
                    (long long)p->step, p->epoch, p->phase, p->s, p->valid_bleu, p->elapsed_s);
            fflush(u->log);
        }
        break;
    case MOE_S2S_CHECKPOINT:
        if (u->log) {
            fprintf(u->log, "{\"kind\":\"checkpoint\",\"step\":%lld,\"path\":\"%s\"}\n", (long long)p->step, p->path);
            fflush(u->log);
        }
        break;
    }
    return cli_stop_asked();
}


static int cmd_s2s_train(int argc, char **argv) {
    const char *dict = NULL, *src = NULL, *tgt = NULL, *out = "runs/seq2seq", *resume = NULL, *obj = NULL;
    const char *nx = NULL, *nxr = NULL, *dl = NULL, *ep = NULL, *rw = NULL, *minw = NULL, *maxw = NULL, *minc = NULL;
    const char *maxv = NULL, *layers = NULL, *bidir = NULL, *moe = NULL;
    const char *drop = NULL, *batch = NULL, *lr = NULL, *lrrl = NULL, *blr = NULL;
    const char *clip = NULL, *seed = NULL, *th = NULL, *loge = NULL, *cke = NULL, *vs = NULL, *steps = NULL;
    const char *minutes = NULL, *ctime_s = NULL, *from = NULL, *rlx = NULL;
    cli_opt opts[] = {{"dict", &dict, NULL},       {"src", &src, NULL},
                      {"tgt", &tgt, NULL},         {"out", &out, NULL},
                      {"resume", &resume, NULL},   {"objective", &obj, NULL},
                      {"n-xent", &nx, NULL},       {"n-xer", &nxr, NULL},
                      {"delta", &dl, NULL},        {"epochs", &ep, NULL},
                      {"mixer-from", &from, NULL}, {"rl-xent", &rlx, NULL},
                      {"reward", &rw, NULL},       {"min-words", &minw, NULL},
                      {"max-words", &maxw, NULL},  {"min-count", &minc, NULL},
                      {"max-vocab", &maxv, NULL},  {"layers", &layers, NULL},
                      {"bidir", &bidir, NULL},     {"moe", &moe, NULL},
                      {"dropout", &drop, NULL},
                      {"batch", &batch, NULL},     {"lr", &lr, NULL},
                      {"lr-rl", &lrrl, NULL},      {"baseline-lr", &blr, NULL},
                      {"clip", &clip, NULL},       {"seed", &seed, NULL},
                      {"threads", &th, NULL},      {"log-every", &loge, NULL},
                      {"ckpt-every", &cke, NULL},  {"valid-sentences", &vs, NULL},
                      {"steps", &steps, NULL},     {"minutes", &minutes, NULL},
                      {"comm-timeout", &ctime_s, NULL}};
    moe_s2s_train_config tc = moe_s2s_train_config_default();
    moe_s2s_config mc = moe_s2s_config_default();
    cli_moe mo;
    cli_moe_init(&mo, CLI_MOE_FLAT, cli_moe_of_s2s(&mc));
    cli_parse_moe(argc, argv, opts, sizeof opts / sizeof opts[0], &mo, TRAIN_USAGE);
    /* under mpirun: one process per rank, each its rows of every batch, the experts split */
    moe_comm *comm = cli_mpi_start(&argc, &argv, ctime_s);
    tc.comm = comm;
    const int rank0 = !comm || moe_comm_rank(comm) == 0;
    if (th) moe_set_threads(cli_int("threads", th, 1, 1024));
    tc.dict = dict;
    tc.src_file = src;
    tc.tgt_file = tgt;
    if ((src != NULL) != (tgt != NULL)) cli_die("--src and --tgt go together: give both files of the parallel text");
    if (dict && src) cli_die("give either --dict or --src/--tgt, not both");
    tc.out_dir = out;
    if (obj) {
        if (strcmp(obj, "xent") == 0) tc.objective = MOE_OBJ_XENT;
        else if (strcmp(obj, "mixer") == 0) tc.objective = MOE_OBJ_MIXER;
        else if (strcmp(obj, "scst") == 0) tc.objective = MOE_OBJ_SCST;
        else cli_die("--objective %s: expected xent, mixer or scst", obj);
    }
    if (nx) tc.n_xent = cli_int("n-xent", nx, 0, 100000);
    if (nxr) tc.n_xer = cli_int("n-xer", nxr, 1, 100000);
    if (dl) tc.delta = cli_int("delta", dl, 1, 100000);
    if (from && strcmp(from, "start") != 0 && strcmp(from, "end") != 0)
        cli_die("--mixer-from must be start or end, got '%s'", from);
    tc.mixer_from_end = from && strcmp(from, "end") == 0;
    if (rlx) tc.rl_xent = (float)cli_double("rl-xent", rlx, 0.0, 1.0);
    if (ep) tc.epochs = cli_int("epochs", ep, 1, 1000000);
    if (steps) tc.max_steps = cli_int("steps", steps, 1, 2147483647);
    if (minutes) tc.minutes = cli_double("minutes", minutes, 0.0, 1e7);
    if (rw) {
        if (strcmp(rw, "plus1") == 0) tc.reward = MOE_BLEU_PLUS1;
        else tc.reward = (moe_bleu_smoothing)cli_int("reward", rw, 0, 3);
    }
    if (minw) tc.min_words = cli_int("min-words", minw, 1, 1000);
    if (maxw) tc.max_words = cli_int("max-words", maxw, 1, 4000);
    if (minc) tc.min_count = cli_int("min-count", minc, 1, 1 << 30);
    if (maxv) tc.max_vocab = cli_int("max-vocab", maxv, 3, 1 << 24);
    if (layers) mc.layers = cli_int("layers", layers, 1, 2);
    if (bidir) mc.bidir = cli_int("bidir", bidir, 0, 1);
    if (moe) mc.moe = cli_int("moe", moe, 0, 1);
    if (layers && !moe && mc.layers == 1) mc.moe = 0; /* one layer has no room for the MoE */
    if (mc.moe) cli_moe_check(&mo);
    cli_moe_to_s2s(&mo, &mc);
    if (drop) mc.dropout = (float)cli_double("dropout", drop, 0.0, 0.99);
    if (batch) tc.batch = cli_int("batch", batch, 1, 65536);
    if (lr) tc.lr = (float)cli_double("lr", lr, 1e-9, 10.0);
    if (lrrl) tc.lr_rl = (float)cli_double("lr-rl", lrrl, 0.0, 10.0);
    if (blr) tc.baseline_lr = (float)cli_double("baseline-lr", blr, 0.0, 100.0);
    if (clip) tc.clip = (float)cli_double("clip", clip, 0.0, 1e9);
    if (seed) tc.seed = cli_u64("seed", seed);
    if (loge) tc.log_every = cli_int("log-every", loge, 1, 1 << 30);
    if (cke) tc.ckpt_every = cli_int("ckpt-every", cke, 0, 1 << 30);
    if (vs) tc.valid_sentences = cli_int("valid-sentences", vs, 0, 1 << 30);
    const int model_given = mo.given || layers || bidir || moe || drop;
    if (resume && model_given) cli_die("--resume takes the model from the checkpoint: leave out the model options");
    if (cli_mkdir_p(out) != 0) cli_die("cannot create %s: %s", out, strerror(errno));
    char logpath[4200];
    snprintf(logpath, sizeof logpath, "%s/log.jsonl", out);
    ui u = {rank0 ? fopen(logpath, resume ? "a" : "w") : NULL, cli_isatty_stdout()};
    if (rank0 && !u.log) cli_die("cannot write %s: %s", logpath, strerror(errno));
    if (comm) printf("ranks: %d processes, experts split over them\n", moe_comm_size(comm));
    cli_catch_stop();
    moe_status st = moe_s2s_train(&tc, resume ? NULL : &mc, resume, cb, &u);
    if (u.log) fclose(u.log);
    if (st) cli_check(st, resume ? "resuming" : "training");
    cli_set_comm(NULL);
    moe_comm_free(comm);
    if (cli_stop_asked()) {
        printf("\ninterrupted: checkpoint written to %s/model.safetensors (continue with --resume)\n", out);
        return 130;
    }
    printf("done: checkpoint %s/model.safetensors, log %s\n", out, logpath);
    return 0;
}

static void print_eval(const char *what, const char *split, const moe_s2s_eval *e, int beam, double secs) {
    printf("%s: %s BLEU %.2f, smoothed %.2f, exact %.2f%% (%d sentences, %s, %.1f s)\n", what, split, e->bleu,
           e->bleu_smooth, 100.0 * e->exact, e->sentences, beam > 1 ? "beam" : "greedy", secs);
}

static void json_eval(const moe_s2s_eval *e) {
    printf("{\"bleu\":%.6f,\"bleu_smooth\":%.6f,\"exact\":%.6f,\"sentences\":%d}", e->bleu, e->bleu_smooth, e->exact,
           e->sentences);
}

/* the paired bootstrap of a against b with smoothing sm (the checkpoints' sentences must pair) */
static moe_bleu_bootstrap bootstrap(const moe_s2s_eval *a, const moe_s2s_eval *b, int R, uint64_t seed, moe_bleu_smoothing sm) {
    moe_bleu_bootstrap r;
    cli_check(moe_bleu_bootstrap_pair(a->per_sentence, b->per_sentence, (size_t)a->sentences, R, sm, seed, &r), "bootstrap");
    return r;
}

static void print_boot(const char *name, const moe_bleu_bootstrap *r) {
    printf("  %-8s A %.2f [%.2f, %.2f]  B %.2f [%.2f, %.2f]  A-B [%+.2f, %+.2f]  P(A>B) %.3f  P(B>A) %.3f\n", name,
           100 * r->bleu_a, 100 * r->a_lo, 100 * r->a_hi, 100 * r->bleu_b, 100 * r->b_lo, 100 * r->b_hi,
           100 * r->delta_lo, 100 * r->delta_hi, r->p_a_better, r->p_b_better);
}

static void json_boot(const char *name, const moe_bleu_bootstrap *r) {
    printf(",\"%s\":{\"a_lo\":%.6f,\"a_hi\":%.6f,\"b_lo\":%.6f,\"b_hi\":%.6f,\"delta_lo\":%.6f,\"delta_hi\":%.6f,"
           "\"p_a_better\":%.6f,\"p_b_better\":%.6f}",
           name, 100 * r->a_lo, 100 * r->a_hi, 100 * r->b_lo, 100 * r->b_hi, 100 * r->delta_lo, 100 * r->delta_hi,
           r->p_a_better, r->p_b_better);
}

/* the two checkpoints were scored on the same sentences: the same count and reference lengths */
static void check_paired(const moe_s2s_eval *a, const moe_s2s_eval *b, const char *ma, const char *mb) {
    int same = a->sentences == b->sentences;
    for (int i = 0; same && i < a->sentences; i++) same = a->per_sentence[i].ref_len == b->per_sentence[i].ref_len;
    if (!same)
        cli_die("%s and %s were not evaluated on the same sentences (%d and %d, or other references): compare "
                "checkpoints trained on the same data with the same --max-words", ma, mb, a->sentences, b->sentences);
}

static int cmd_s2s_eval(int argc, char **argv) {
    const char *model = NULL, *split = "test", *beam = NULL, *alpha = NULL, *th = NULL, *cmp = NULL, *boot = NULL,
               *seed = NULL;
    int json = 0;
    cli_opt opts[] = {{"model", &model, NULL}, {"split", &split, NULL},     {"beam", &beam, NULL},
                      {"alpha", &alpha, NULL}, {"threads", &th, NULL},      {"compare", &cmp, NULL},
                      {"bootstrap", &boot, NULL}, {"seed", &seed, NULL},    {"json", NULL, &json}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], EVAL_USAGE);
    if (!model) cli_die("--model CKPT is required (a checkpoint from moe seq2seq train)");
    if ((boot || seed) && !cmp) cli_die("--bootstrap and --seed compare two checkpoints: give the second with --compare CKPT2");
    if (th) moe_set_threads(cli_int("threads", th, 1, 1024));
    int sp = strcmp(split, "test") == 0 ? 2 : (strcmp(split, "valid") == 0 ? 1 : 0);
    if (!sp) cli_die("--split %s: expected test or valid", split);
    const int b = beam ? cli_int("beam", beam, 1, 256) : 1;
    const float a = alpha ? (float)cli_double("alpha", alpha, 0.0, 10.0) : 1.0f;
    const int R = boot ? cli_int("bootstrap", boot, 2, 1000000) : 1000;
    const uint64_t sd = seed ? cli_u64("seed", seed) : 1;
    moe_s2s_ckpt *c = NULL, *c2 = NULL;
    cli_check(moe_s2s_ckpt_load(&c, model), model);
    if (cmp) cli_check(moe_s2s_ckpt_load(&c2, cmp), cmp);
    moe_s2s_eval e, e2;
    double t0 = cli_now();
    cli_check(moe_s2s_ckpt_eval(c, sp, b, a, &e), "evaluating");
    const double t1 = cli_now();
    if (c2) cli_check(moe_s2s_ckpt_eval(c2, sp, b, a, &e2), "evaluating the second checkpoint");
    const double t2 = cli_now();
    moe_bleu_bootstrap bp, bs;
    if (c2) {
        check_paired(&e, &e2, model, cmp);
        bp = bootstrap(&e, &e2, R, sd, MOE_BLEU_NONE);
        bs = bootstrap(&e, &e2, R, sd, MOE_BLEU_METHOD3);
    }
    if (json) {
        printf("{\"split\":\"%s\",\"beam\":%d,\"a\":", split, b);
        json_eval(&e);
        if (c2) {
            printf(",\"b\":");
            json_eval(&e2);
            printf(",\"bootstrap\":%d", R);
            json_boot("boot_bleu", &bp);
            json_boot("boot_smooth", &bs);
        }
        printf("}\n");
    } else {
        print_eval(c2 ? "A" : model, split, &e, b, t1 - t0);
        if (b > 1) printf("beam %d, alpha %.2f\n", b, a);
        if (c2) {
            print_eval("B", split, &e2, b, t2 - t1);
            printf("paired bootstrap, %d resamples of %d sentences (A %s, B %s):\n", R, e.sentences, model, cmp);
            print_boot("BLEU", &bp);
            print_boot("smoothed", &bs);
        }
    }
    moe_s2s_ckpt_free(c);
    moe_s2s_ckpt_free(c2);
    return 0;
}

int cmd_seq2seq(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs("usage: moe seq2seq train|eval [options]   (moe seq2seq train --help)\n", argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "train") == 0) return cmd_s2s_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "eval") == 0) return cmd_s2s_eval(argc - 1, argv + 1);
    cli_die("unknown seq2seq command '%s': expected train or eval", argv[1]);
}

int cmd_translate(int argc, char **argv) {
    const char *model = NULL, *beam = NULL, *alpha = NULL, *th = NULL;
    cli_opt opts[] = {{"model", &model, NULL}, {"beam", &beam, NULL}, {"alpha", &alpha, NULL}, {"threads", &th, NULL}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], TRANSLATE_USAGE);
    if (!model) cli_die("--model CKPT is required (a checkpoint from moe seq2seq train)");
    if (th) moe_set_threads(cli_int("threads", th, 1, 1024));
    const int b = beam ? cli_int("beam", beam, 1, 256) : 1;
    const float a = alpha ? (float)cli_double("alpha", alpha, 0.0, 10.0) : 1.0f;
    moe_s2s_ckpt *c = NULL;
    cli_check(moe_s2s_ckpt_load(&c, model), model);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lines = 0, unknown_total = 0, empty = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lines++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        char *outs = NULL;
        int unk = 0;
        moe_status st = moe_s2s_ckpt_translate(c, line, b, a, &outs, &unk);
        if (st == MOE_ERR_INVALID_ARG) { /* an empty line stays an empty line */
            printf("\n");
            empty++;
            continue;
        }
        if (st) {
            free(line);
            moe_s2s_ckpt_free(c);
            cli_die("line %d: %s", lines, moe_last_error());
        }
        printf("%s\n", outs);
        fflush(stdout);
        unknown_total += unk;
        free(outs);
    }
    free(line);
    moe_s2s_ckpt_free(c);
    if (lines == 0) cli_die("no input: give sentences on stdin, one a line (echo 'ein guter tag' | moe translate --model M)");
    if (unknown_total) fprintf(stderr, "moe: note: %d word(s) of the input are not in the vocabulary (read as <unk>)\n", unknown_total);
    if (empty) fprintf(stderr, "moe: note: %d empty line(s) left empty\n", empty);
    return 0;
}
