/* test_train.c - the training loop end to end on a small generated text: the loss falls, N steps
 * then N more from the checkpoint equal 2N straight (every tensor bit for bit), and bad input
 * (missing, empty, binary data; corrupt or foreign checkpoints; contradicting settings on
 * resume) gives its status with the previous checkpoint intact. */
#define _POSIX_C_SOURCE 200809L
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void path(char *out, const char *name) { snprintf(out, 512, "%s/%s", dir, name); }

static void write_file(const char *p, const void *data, size_t n) {
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* a text with structure to learn: repeated sentences with variations */
static void make_corpus(const char *p) {
    const char *words[] = {"the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "red", "ball", "and"};
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 3000; i++) {
        int a = (int)(t_mix(i) % 12), b = (int)(t_mix(i + 7777) % 12);
        fprintf(f, "the %s %s on the mat.\n", words[a], words[b]);
    }
    fclose(f);
}

typedef struct {
    double first, last;
    int reports;
} losses;

static int cb(const moe_lm_progress *p, void *user) {
    losses *l = user;
    if (p->kind == MOE_LM_TRAIN) {
        if (l->reports++ == 0) l->first = p->loss;
        l->last = p->loss;
    }
    return 0;
}

static moe_lm_config small_model(void) {
    moe_lm_config c = moe_lm_config_default();
    c.d = 16;
    c.n = 4;
    c.k = 2;
    c.h = 16;
    c.dropout = 0.1f;
    return c;
}

static moe_lm_train_config small_train(const char *data, const char *ckpt, int64_t steps) {
    moe_lm_train_config t = moe_lm_train_config_default();
    t.data = data;
    t.checkpoint = ckpt;
    t.batch = 4;
    t.bptt = 16;
    t.steps = steps;
    t.lr = 5e-3f;
    t.warmup = 5;
    t.log_every = 5;
    t.eval_every = 0;
    t.eval_batches = 2;
    t.ckpt_every = 0;
    t.seed = 9;
    return t;
}

/* every tensor of two checkpoints equal, bit for bit */
static int same_tensors(const char *a, const char *b) {
    moe_st *fa = NULL, *fb = NULL;
    if (moe_st_open(&fa, a) || moe_st_open(&fb, b)) {
        moe_st_free(fa);
        return 0;
    }
    int ok = moe_st_count(fa) == moe_st_count(fb) && moe_st_count(fa) > 10;
    for (int i = 0; ok && i < moe_st_count(fa); i++) {
        moe_tensor ta, tb;
        moe_st_at(fa, i, &ta);
        ok = moe_st_get(fb, ta.name, &tb) == MOE_OK && ta.numel == tb.numel &&
             memcmp(ta.data, tb.data, ta.numel * 4) == 0;
        if (!ok) fprintf(stderr, "  tensor %s differs\n", ta.name);
    }
    const char *sa = moe_st_meta(fa, "step"), *sb = moe_st_meta(fb, "step");
    ok = ok && sa && sb && strcmp(sa, sb) == 0;
    moe_st_free(fa);
    moe_st_free(fb);
    return ok;
}

int main(void) {
    moe_set_threads(2);
    snprintf(dir, sizeof dir, "/tmp/moe_test_train_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    char data[512], ck_a[512], ck_b[512], p[512];
    path(data, "corpus.txt");
    path(ck_a, "a.safetensors");
    path(ck_b, "b.safetensors");
    make_corpus(data);
    moe_lm_config mc = small_model();

    /* 2N straight, with the loss going down */
    losses la = {0};
    moe_lm_train_config t = small_train(data, ck_a, 40);
    CHECK(moe_lm_train(&t, &mc, NULL, cb, &la) == MOE_OK, "train 40: %s", moe_last_error());
    CHECK(la.reports >= 4 && la.last < la.first - 0.3, "loss falls: %.3f -> %.3f", la.first, la.last);
    /* N, then N more from the checkpoint */
    t = small_train(data, ck_b, 20);
    CHECK(moe_lm_train(&t, &mc, NULL, NULL, NULL) == MOE_OK, "train 20: %s", moe_last_error());
    t.steps = 40;
    CHECK(moe_lm_train(&t, NULL, ck_b, NULL, NULL) == MOE_OK, "resume to 40: %s", moe_last_error());
    CHECK(same_tensors(ck_a, ck_b), "20 + 20 resumed equals 40 straight (weights, optimiser, state)");

    /* the same with the paper's factored optimiser, which must also learn */
    {
        char fa[512], fb[512];
        path(fa, "fa.safetensors");
        path(fb, "fb.safetensors");
        losses lf = {0};
        t = small_train(data, fa, 40);
        t.optim = "factored";
        CHECK(moe_lm_train(&t, &mc, NULL, cb, &lf) == MOE_OK, "factored: train 40: %s", moe_last_error());
        CHECK(lf.reports >= 4 && lf.last < lf.first - 0.3, "factored: loss falls: %.3f -> %.3f", lf.first, lf.last);
        t = small_train(data, fb, 20);
        t.optim = "factored";
        CHECK(moe_lm_train(&t, &mc, NULL, NULL, NULL) == MOE_OK, "factored: train 20: %s", moe_last_error());
        t.steps = 40;
        t.optim = NULL; /* taken from the checkpoint */
        CHECK(moe_lm_train(&t, NULL, fb, NULL, NULL) == MOE_OK, "factored: resume to 40: %s", moe_last_error());
        CHECK(same_tensors(fa, fb), "factored: 20 + 20 resumed equals 40 straight");
        moe_st *f = NULL;
        moe_tensor tv, tw;
        CHECK(moe_st_open(&f, fa) == MOE_OK && moe_st_get(f, "optim.moe.m.experts.w1", &tv) != MOE_OK &&
                  moe_st_get(f, "optim.moe.v.experts.w1", &tv) == MOE_OK && moe_st_get(f, "moe.experts.w1", &tw) == MOE_OK &&
                  tv.numel == (size_t)(mc.n * (mc.d + mc.h)) && tw.numel == (size_t)(mc.n * mc.d * mc.h),
              "factored checkpoint: no first moment; the experts' second moment is n x (d + h) row and column means");
        moe_st_free(f);
        t.steps = 45;
        t.optim = "adam";
        CHECK(moe_lm_train(&t, NULL, fb, NULL, NULL) == MOE_ERR_CONFIG, "resuming factored with adam refused: %s",
              moe_last_error());
        t.optim = "sgd";
        CHECK(moe_lm_train(&t, &mc, NULL, NULL, NULL) == MOE_ERR_CONFIG, "unknown optimiser refused");
    }

    /* the checkpoint serves inference */
    moe_lm_ckpt *c = NULL;
    CHECK(moe_lm_ckpt_load(&c, ck_a) == MOE_OK, "load: %s", moe_last_error());
    if (c) {
        double loss = 0;
        uint64_t n = 0;
        CHECK(moe_lm_ckpt_eval(c, data, 2, 2, 16, 0, &loss, &n) == MOE_OK && n > 0 && loss > 0 && loss < 3.0,
              "eval on the test split: loss %.3f over %llu tokens", loss, (unsigned long long)n);
        int32_t *ids = NULL;
        size_t ni = 0;
        char *text = NULL;
        CHECK(moe_lm_ckpt_encode(c, "the cat", 7, &ids, &ni) == MOE_OK && ni == 7, "encode (bytes)");
        CHECK(moe_lm_ckpt_decode(c, ids, ni, &text, NULL) == MOE_OK && strcmp(text, "the cat") == 0, "decode");
        free(ids);
        free(text);
        const char *step = moe_lm_ckpt_meta(c, "step");
        CHECK(step && strcmp(step, "40") == 0, "step recorded");
        /* the model is for inference: no expert gradients, and a training step says so */
        moe_param pw;
        moe_layer *ml = moe_lm_moe(moe_lm_ckpt_model(c));
        CHECK(ml && moe_layer_find_param(ml, "experts.w1", &pw) == MOE_OK && pw.grad == NULL, "no expert gradients");
        int32_t tk[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        moe_lm_stats ls;
        CHECK(moe_lm_step(moe_lm_ckpt_model(c), tk, 2, 4, 1, &ls) == MOE_ERR_STATE, "a training step is refused: %s",
              moe_last_error());
        CHECK(moe_lm_step(moe_lm_ckpt_model(c), tk, 2, 4, 0, &ls) == MOE_OK, "an evaluation step runs");
        moe_lm_ckpt_free(c);
    }

    /* bad input */
    moe_lm_train_config tb = small_train(data, ck_b, 45);
    moe_lm_config other = mc;
    other.n = 8;
    CHECK(moe_lm_train(&tb, &other, ck_b, NULL, NULL) == MOE_ERR_CONFIG, "resume with other expert count: %s", moe_last_error());
    tb.batch = 5;
    CHECK(moe_lm_train(&tb, NULL, ck_b, NULL, NULL) == MOE_ERR_CONFIG, "resume with other batch: %s", moe_last_error());
    path(p, "missing.txt");
    tb = small_train(p, NULL, 5);
    CHECK(moe_lm_train(&tb, &mc, NULL, NULL, NULL) == MOE_ERR_IO, "missing data: %s", moe_last_error());
    path(p, "empty.txt");
    write_file(p, "", 0);
    tb.data = p;
    CHECK(moe_lm_train(&tb, &mc, NULL, NULL, NULL) == MOE_ERR_FORMAT, "empty data: %s", moe_last_error());
    unsigned char bin[4096];
    for (int i = 0; i < 4096; i++) bin[i] = (unsigned char)(t_mix(i) & 0xff);
    path(p, "binary.bin");
    write_file(p, bin, sizeof bin);
    CHECK(moe_lm_train(&tb, &mc, NULL, NULL, NULL) == MOE_ERR_FORMAT, "binary data: %s", moe_last_error());
    /* a truncated checkpoint and a foreign one */
    FILE *f = fopen(ck_a, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len);
    CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len, "read checkpoint");
    fclose(f);
    path(p, "trunc.safetensors");
    write_file(p, buf, (size_t)len / 2);
    CHECK(moe_lm_ckpt_load(&c, p) == MOE_ERR_TRUNCATED, "truncated checkpoint: %s", moe_last_error());
    tb = small_train(data, ck_b, 50);
    CHECK(moe_lm_train(&tb, NULL, p, NULL, NULL) == MOE_ERR_TRUNCATED, "resume from a truncated checkpoint");
    free(buf);
    char golden[512];
    snprintf(golden, sizeof golden, "%s", "/dev/null");
    moe_st_writer *w = NULL;
    moe_st_writer_create(&w);
    float z[2] = {0};
    int64_t sh[1] = {2};
    moe_st_writer_add(w, "x", MOE_F32, 1, sh, z);
    path(p, "foreign.safetensors");
    moe_st_writer_write(w, p);
    moe_st_writer_free(w);
    CHECK(moe_lm_ckpt_load(&c, p) == MOE_ERR_FORMAT, "foreign checkpoint: %s", moe_last_error());
    /* a checkpoint path that cannot be written: the error is reported, nothing else lost */
    path(p, "no/such/dir/c.safetensors");
    tb = small_train(data, p, 3);
    CHECK(moe_lm_train(&tb, &mc, NULL, NULL, NULL) == MOE_ERR_IO, "unwritable checkpoint path: %s", moe_last_error());
    CHECK(same_tensors(ck_a, ck_a), "earlier checkpoint still readable");

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish("test_train");
}
