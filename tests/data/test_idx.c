/* test_idx.c - the IDX loader (plain and gzip files: round trip, and each malformed case gives
 * its own status) and finite-difference gradient checks of the dense blocks in nn.c
 * (linear, ReLU, softmax cross-entropy) on tiny random inputs. */
#define _POSIX_C_SOURCE 200809L
#include "moe.h"
#include "nn/nn.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The library reads gzip when built with zlib; CMake finds zlib exactly when zlib.h is there.
 * -DMOE_TEST_NO_ZLIB checks a library built without zlib instead. */
#if defined(__has_include) && !defined(MOE_TEST_NO_ZLIB)
#if __has_include(<zlib.h>)
#include <zlib.h>
#define T_ZLIB 1
#endif
#endif

static char g_dir[256];
static char g_written[64][512]; /* files to remove at the end */
static int g_nwritten;

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_dir, name);
    return buf[slot];
}

static void remember(const char *path) {
    for (int i = 0; i < g_nwritten; i++)
        if (strcmp(g_written[i], path) == 0) return;
    if (g_nwritten < 64) snprintf(g_written[g_nwritten++], sizeof g_written[0], "%s", path);
}

static void write_bytes(const char *path, const unsigned char *b, size_t n, int gz) {
    remember(path);
#ifdef T_ZLIB
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f || (n && gzwrite(f, b, (unsigned)n) != (int)n) || gzclose(f) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(2);
        }
        return;
    }
#else
    (void)gz;
#endif
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* A valid IDX image of `ndim` dims with sizes `dims`, items i*7+3 mod 256; returns its length. */
static size_t make_idx(unsigned char *buf, int type, int ndim, const uint32_t *dims) {
    size_t p = 0, numel = 1;
    buf[p++] = 0;
    buf[p++] = 0;
    buf[p++] = (unsigned char)type;
    buf[p++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[p++] = (unsigned char)(dims[i] >> 24);
        buf[p++] = (unsigned char)(dims[i] >> 16);
        buf[p++] = (unsigned char)(dims[i] >> 8);
        buf[p++] = (unsigned char)dims[i];
        numel *= dims[i];
    }
    for (size_t i = 0; i < numel; i++) buf[p++] = (unsigned char)(i * 7 + 3);
    return p;
}

/* Writes `bytes` as a file, loads it, and checks the status (and, for MOE_OK, the content). */
static void expect_load(const char *name, const unsigned char *bytes, size_t len, int gz,
                        moe_status want, int ndim, const uint32_t *dims) {
    const char *path = tpath(name);
    write_bytes(path, bytes, len, gz);
    moe_idx m;
    memset(&m, 0xab, sizeof m);
    moe_status s = moe_idx_load(path, &m);
    CHECK(s == want, "%s: status %d (%s: %s), want %d", name, s, moe_status_str(s), moe_last_error(), want);
    if (s != MOE_OK) {
        CHECK(m.data == NULL && m.numel == 0 && m.ndim == 0, "%s: failed load left data behind", name);
        CHECK(strstr(moe_last_error(), name) != NULL, "%s: message does not name the file: %s", name,
              moe_last_error());
        return;
    }
    if (want != MOE_OK) {
        moe_idx_free(&m);
        return;
    }
    size_t numel = 1;
    int same = m.ndim == ndim;
    for (int i = 0; same && i < ndim; i++) {
        same = m.shape[i] == (int64_t)dims[i];
        numel *= dims[i];
    }
    CHECK(same && m.numel == numel, "%s: shape differs (ndim %d numel %zu)", name, m.ndim, m.numel);
    int ok = same && m.numel == numel && m.data != NULL;
    for (size_t i = 0; ok && i < numel; i++) ok = m.data[i] == (unsigned char)(i * 7 + 3);
    CHECK(ok, "%s: data differs", name);
    moe_idx_free(&m);
    CHECK(m.data == NULL && m.numel == 0, "%s: moe_idx_free leaves the struct empty", name);
}

static void test_idx_files(int gz) {
    const char *sfx = gz ? ".gz" : "";
    char name[64];
    unsigned char *buf = malloc(1 << 16), *bad = malloc(1 << 16);
    const uint32_t d3[3] = {5, 4, 3}, d1[1] = {17}, d4[4] = {2, 3, 2, 2};

    size_t len = make_idx(buf, 0x08, 3, d3);
    snprintf(name, sizeof name, "images%s", sfx);
    expect_load(name, buf, len, gz, MOE_OK, 3, d3);
    snprintf(name, sizeof name, "labels%s", sfx);
    size_t len1 = make_idx(bad, 0x08, 1, d1);
    expect_load(name, bad, len1, gz, MOE_OK, 1, d1);
    snprintf(name, sizeof name, "four%s", sfx);
    size_t len4 = make_idx(bad, 0x08, 4, d4);
    expect_load(name, bad, len4, gz, MOE_OK, 4, d4);

    memcpy(bad, buf, len);
    bad[1] = 0x03;
    snprintf(name, sizeof name, "badmagic%s", sfx);
    expect_load(name, bad, len, gz, MOE_ERR_FORMAT, 0, NULL);

    memcpy(bad, buf, len);
    bad[2] = 0x0D; /* float items: a real IDX type, not supported */
    snprintf(name, sizeof name, "float%s", sfx);
    expect_load(name, bad, len, gz, MOE_ERR_DTYPE, 0, NULL);

    memcpy(bad, buf, len);
    bad[3] = 0;
    snprintf(name, sizeof name, "ndim0%s", sfx);
    expect_load(name, bad, len, gz, MOE_ERR_FORMAT, 0, NULL);
    bad[3] = 5;
    snprintf(name, sizeof name, "ndim5%s", sfx);
    expect_load(name, bad, len, gz, MOE_ERR_FORMAT, 0, NULL);

    snprintf(name, sizeof name, "truncdata%s", sfx);
    expect_load(name, buf, len - 1, gz, MOE_ERR_TRUNCATED, 0, NULL);
    snprintf(name, sizeof name, "trunchdr%s", sfx);
    expect_load(name, buf, 9, gz, MOE_ERR_TRUNCATED, 0, NULL);
    snprintf(name, sizeof name, "tiny%s", sfx);
    expect_load(name, buf, 2, gz, MOE_ERR_TRUNCATED, 0, NULL);

    memcpy(bad, buf, len);
    bad[len] = 0x42;
    snprintf(name, sizeof name, "trailing%s", sfx);
    expect_load(name, bad, len + 1, gz, MOE_ERR_FORMAT, 0, NULL);

    /* four sizes of 0xffffffff: their product overflows 64 bits */
    memcpy(bad, buf, 4);
    bad[3] = 4;
    memset(bad + 4, 0xff, 16);
    snprintf(name, sizeof name, "overflow%s", sfx);
    expect_load(name, bad, 20, gz, MOE_ERR_FORMAT, 0, NULL);

    /* a header promising 4 GB over 10 bytes of data: truncated, without allocating 4 GB */
    memcpy(bad, buf, 4);
    bad[3] = 1;
    memset(bad + 4, 0xff, 4);
    memset(bad + 8, 1, 10);
    snprintf(name, sizeof name, "promise%s", sfx);
    expect_load(name, bad, 18, gz, MOE_ERR_TRUNCATED, 0, NULL);
    free(buf);
    free(bad);
}

static void test_idx_misc(void) {
    moe_idx m;
    moe_status s = moe_idx_load(tpath("does-not-exist"), &m);
    CHECK(s == MOE_ERR_IO, "missing file: status %d, want MOE_ERR_IO", s);
    CHECK(strstr(moe_last_error(), "does-not-exist") != NULL, "missing file: message: %s", moe_last_error());
    CHECK(moe_idx_load(NULL, &m) == MOE_ERR_INVALID_ARG, "NULL path");
    CHECK(moe_idx_load(tpath("x"), NULL) == MOE_ERR_INVALID_ARG, "NULL out");
    moe_idx_free(NULL);
    moe_idx empty = {0};
    moe_idx_free(&empty);
#ifdef T_ZLIB
    /* a gzip file cut inside its compressed stream */
    unsigned char buf[4096];
    const uint32_t dims[2] = {40, 50};
    size_t len = make_idx(buf, 0x08, 2, dims);
    const char *full = tpath("cut-src.gz");
    write_bytes(full, buf, len, 1);
    FILE *f = fopen(full, "rb");
    unsigned char z[8192];
    size_t zl = f ? fread(z, 1, sizeof z, f) : 0;
    if (f) fclose(f);
    CHECK(zl > 30, "compressed test file too short (%zu bytes)", zl);
    const char *cut = tpath("cut.gz");
    write_bytes(cut, z, zl - 12, 0); /* drops the CRC, the size and the end of the data */
    s = moe_idx_load(cut, &m);
    CHECK(s == MOE_ERR_TRUNCATED, "cut gzip: status %d (%s), want MOE_ERR_TRUNCATED", s, moe_last_error());
    /* a gzip file whose stored CRC is wrong */
    z[zl - 8] ^= 0x55;
    const char *crc = tpath("crc.gz");
    write_bytes(crc, z, zl, 0);
    s = moe_idx_load(crc, &m);
    CHECK(s == MOE_ERR_FORMAT, "gzip with bad CRC: status %d (%s), want MOE_ERR_FORMAT", s, moe_last_error());
#else
    /* without zlib a gzip file must be refused clearly */
    const unsigned char gzmagic[12] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0, 0};
    write_bytes(tpath("nozlib.gz"), gzmagic, sizeof gzmagic, 0);
    s = moe_idx_load(tpath("nozlib.gz"), &m);
    CHECK(s == MOE_ERR_FORMAT, "gzip without zlib: status %d, want MOE_ERR_FORMAT", s);
#endif
}

/* ---- nn.c: finite differences ---- */

enum { GB = 3, GI = 5, GH = 4, GC = 3 };

typedef struct {
    float x[GB * GI], W1[GI * GH], b1[GH], W2[GH * GC], b2[GC];
    int y[GB];
} net;

/* L = xent(relu(x W1 + b1) W2 + b2, y), in float as the blocks compute it */
static double net_loss(const net *p) {
    float a[GB * GH], z[GB * GC], pr[GB * GC];
    linear_forward(a, p->x, p->W1, p->b1, GB, GI, GH);
    relu_forward(a, a, GB * GH);
    linear_forward(z, a, p->W2, p->b2, GB, GH, GC);
    return softmax_xent_forward(NULL, pr, z, p->y, GB, GC);
}

/* Analytic gradients of net_loss into g (zeroed here, then accumulated by the backward calls). */
static void net_grad(const net *p, net *g) {
    float a[GB * GH], z[GB * GC], pr[GB * GC], dz[GB * GC] = {0}, da[GB * GH] = {0},
                                               dpre[GB * GH] = {0};
    memset(g, 0, sizeof *g);
    linear_forward(a, p->x, p->W1, p->b1, GB, GI, GH);
    relu_forward(a, a, GB * GH);
    linear_forward(z, a, p->W2, p->b2, GB, GH, GC);
    softmax_xent_forward(NULL, pr, z, p->y, GB, GC);
    softmax_xent_backward(dz, pr, p->y, GB, GC);
    linear_backward(da, g->W2, g->b2, dz, a, p->W2, GB, GH, GC);
    relu_backward(dpre, da, a, GB * GH);
    linear_backward(g->x, g->W1, g->b1, dpre, p->x, p->W1, GB, GI, GH);
}

/* Compares every entry of the float block at offset `off` in net (count floats) with central
 * differences; returns the largest error relative to max(|num|, |ana|, 1e-2). */
static double fd_block(net *p, const net *g, size_t off, size_t count) {
    float *v = (float *)((char *)p + off);
    const float *ga = (const float *)((const char *)g + off);
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        const float orig = v[i], h = 1e-2f;
        v[i] = orig + h;
        double lp = net_loss(p);
        v[i] = orig - h;
        double lm = net_loss(p);
        v[i] = orig;
        double num = (lp - lm) / (2.0 * h), ana = ga[i];
        double err = fabs(num - ana) / fmax(fmax(fabs(num), fabs(ana)), 1e-2);
        if (err > worst) worst = err;
    }
    return worst;
}

static void test_nn(void) {
    net p, g;
    t_fill_normal(p.x, GB * GI, 11);
    t_fill_uniform(p.W1, GI * GH, 0.8f, 12);
    t_fill_uniform(p.b1, GH, 0.3f, 13);
    t_fill_uniform(p.W2, GH * GC, 0.8f, 14);
    t_fill_uniform(p.b2, GC, 0.3f, 15);
    for (int b = 0; b < GB; b++) p.y[b] = (b * 2 + 1) % GC;
    /* keep pre-activations away from the ReLU kink so differences stay smooth */
    float pre[GB * GH];
    linear_forward(pre, p.x, p.W1, p.b1, GB, GI, GH);
    for (int j = 0; j < GB * GH; j++)
        if (fabsf(pre[j]) < 0.05f) p.b1[j % GH] += 0.2f;
    linear_forward(pre, p.x, p.W1, p.b1, GB, GI, GH);
    int kinks = 0, alive = 0;
    for (int j = 0; j < GB * GH; j++) {
        kinks += fabsf(pre[j]) < 0.03f;
        alive += pre[j] > 0.0f;
    }
    CHECK(kinks == 0, "test setup: %d pre-activations near the ReLU kink", kinks);
    CHECK(alive > 0 && alive < GB * GH, "test setup: ReLU should be partly active (%d of %d)", alive, GB * GH);

    net_grad(&p, &g);
    const struct {
        const char *name;
        size_t off, count;
    } blocks[] = {{"x", offsetof(net, x), GB * GI},   {"W1", offsetof(net, W1), GI * GH},
                  {"b1", offsetof(net, b1), GH},      {"W2", offsetof(net, W2), GH * GC},
                  {"b2", offsetof(net, b2), GC}};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        double err = fd_block(&p, &g, blocks[i].off, blocks[i].count);
        CHECK(err < 2e-2, "d loss / d %s: max relative error %.3g", blocks[i].name, err);
    }
    /* the check can fail: a wrong gradient (W2's off by 10%) must be caught */
    net wrong = g;
    for (int j = 0; j < GH * GC; j++) wrong.W2[j] *= 1.1f;
    CHECK(fd_block(&p, &wrong, offsetof(net, W2), GH * GC) > 5e-2, "a 10%% error in dW2 went unnoticed");

    /* every backward accumulates: running it twice into the same buffers doubles them */
    {
        float a[GB * GH], z[GB * GC], pr[GB * GC], dz[GB * GC] = {0}, da[GB * GH] = {0},
                                                   dW[GH * GC] = {0}, db[GC] = {0}, dpre[GB * GH] = {0};
        linear_forward(a, p.x, p.W1, p.b1, GB, GI, GH);
        relu_forward(a, a, GB * GH);
        linear_forward(z, a, p.W2, p.b2, GB, GH, GC);
        softmax_xent_forward(NULL, pr, z, p.y, GB, GC);
        float *bufs[5] = {dz, da, dW, db, dpre};
        const int sizes[5] = {GB * GC, GB * GH, GH * GC, GC, GB * GH};
        const char *names[5] = {"dlogits", "din", "dW", "db", "relu din"};
        float once[5][GB * GH > GH * GC ? GB * GH : GH * GC];
        for (int rep = 0; rep < 2; rep++) {
            /* fresh (non-accumulated) upstream gradients feed each call */
            float dz1[GB * GC] = {0}, da1[GB * GH] = {0}, sW[GH * GC] = {0}, sb[GC] = {0};
            softmax_xent_backward(dz, pr, p.y, GB, GC);
            softmax_xent_backward(dz1, pr, p.y, GB, GC);
            linear_backward(da, dW, db, dz1, a, p.W2, GB, GH, GC);
            linear_backward(da1, sW, sb, dz1, a, p.W2, GB, GH, GC);
            relu_backward(dpre, da1, a, GB * GH);
            if (rep == 0)
                for (int b = 0; b < 5; b++) memcpy(once[b], bufs[b], sizeof(float) * sizes[b]);
        }
        for (int b = 0; b < 5; b++) {
            double maxd = 0.0, maxv = 0.0;
            for (int j = 0; j < sizes[b]; j++) {
                maxd = fmax(maxd, fabs(bufs[b][j] - 2.0f * once[b][j]));
                maxv = fmax(maxv, fabs(once[b][j]));
            }
            CHECK(maxv > 0.0 && maxd <= 1e-6 * maxv, "backward does not accumulate into %s: off by %.3g",
                  names[b], maxd);
        }
    }

    /* softmax: rows sum to 1, per-row losses average to the returned mean, a huge logit stays finite */
    float logits[2 * 4] = {1000.0f, 0.0f, -1000.0f, 3.0f, 0.1f, 0.2f, 0.3f, 0.4f}, probs[8], losses[2];
    int labels[2] = {2, 3};
    double mean = softmax_xent_forward(losses, probs, logits, labels, 2, 4);
    CHECK(isfinite(mean) && isfinite(losses[0]) && fabs(losses[0] - 2000.0) < 1e-2,
          "softmax_xent with logits +-1000: loss %g, want 2000", (double)losses[0]);
    CHECK(fabs(mean - 0.5 * (losses[0] + losses[1])) < 1e-4, "mean loss %g vs rows %g %g", mean,
          (double)losses[0], (double)losses[1]);
    double s0 = 0.0, s1 = 0.0;
    for (int c = 0; c < 4; c++) {
        s0 += probs[c];
        s1 += probs[4 + c];
    }
    CHECK(fabs(s0 - 1.0) < 1e-6 && fabs(s1 - 1.0) < 1e-6, "softmax rows sum to %g, %g", s0, s1);

    /* accuracy: argmax with the first index winning ties */
    float sc[3 * 3] = {0.1f, 0.9f, 0.2f, 0.5f, 0.5f, 0.1f, 0.3f, 0.2f, 0.1f};
    int lab[3] = {1, 0, 2};
    CHECK(argmax_correct(sc, lab, 3, 3) == 2, "argmax_correct = %d, want 2", argmax_correct(sc, lab, 3, 3));
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/moe_test_idx_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_idx_files(0);
#ifdef T_ZLIB
    test_idx_files(1);
#endif
    test_idx_misc();
    test_nn();
    for (int i = 0; i < g_nwritten; i++) unlink(g_written[i]);
    if (rmdir(g_dir) != 0) fprintf(stderr, "note: could not remove %s\n", g_dir);
    return test_finish("test_idx");
}
