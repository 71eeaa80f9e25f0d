/* test_s2s_data.c - the translation data: the dictd parser on a small hand-made dictionary
 * (IPA, grammar tags, annotations, first translation, word-count filter, repeated index entries,
 * the 00-database entries, a corrupt index), the real Ding dictionary when it is installed,
 * parallel files (pairing, empty lines, unequal line counts, CRLF), the hash split, encoding
 * limits and the length-bucketed batches. */
#define _POSIX_C_SOURCE 200809L
#include "data/s2s_data.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef MOE_HAVE_ZLIB
#include <zlib.h>
#endif

static char g_dir[] = "/tmp/moe_s2s_data_XXXXXX";

static void b64(char *out, unsigned long v) {
    const char *A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = A[v % 64];
        v /= 64;
    } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static const char *ENTRIES[] = {
    "00-database-info\nThis is the header\n",
    "das A und O /das \xcb\x88\xc9\x91\xcb\x90 \xca\x8ant \xcb\x88o\xcb\x90/\n [ugs.] the nuts and bolts [coll.]\n",
    "Aal blau /\xcb\x88\xc9\x91\xcb\x90l bl\xcb\x88" "a\xca\x8a/\nEel au bleu, Eel steamed and served\n   Synonym: {blauer Aal}\n",
    "in Streit geraten /\xc9\xaan \xca\x83tra\xc9\xaat/ <v>\nlock horns <v>; quarrel\n see: {Streit}\n",
    "jdm. etw. in Rechnung stellen /j\xc9\x94t/ <vt>\n {v} to charge sb. for sth. <v>, to bill sb.\n",
    "eine kleine Nachtmusik\nA Little Night Music\n",
};

static void dictd(void) {
#ifdef MOE_HAVE_ZLIB
    char dz[256], ix[256];
    snprintf(dz, sizeof dz, "%s/t.dict.dz", g_dir);
    snprintf(ix, sizeof ix, "%s/t.index", g_dir);
    gzFile g = gzopen(dz, "wb");
    FILE *fi = fopen(ix, "w");
    unsigned long off = 0;
    const int n = (int)(sizeof ENTRIES / sizeof ENTRIES[0]);
    for (int i = 0; i < n; i++) {
        const unsigned long len = (unsigned long)strlen(ENTRIES[i]);
        gzwrite(g, ENTRIES[i], (unsigned)len);
        char o[16], l[16];
        b64(o, off);
        b64(l, len);
        fprintf(fi, "headword%d\t%s\t%s\n", i, o, l);
        if (i == 2) fprintf(fi, "blauer Aal\t%s\t%s\n", o, l); /* the same entry twice */
        off += len;
    }
    gzclose(g);
    fclose(fi);
    s2s_pairs p;
    CHECK(s2s_read_ding(dz, NULL, 3, &p) == MOE_OK, "read the small dictionary: %s", moe_last_error());
    /* kept (>= 3 German words): das A und O, in Streit geraten, jdm. etw. in Rechnung stellen,
     * eine kleine Nachtmusik; "Aal blau" has 2 words */
    CHECK(p.n == 4, "4 pairs, got %d", p.n);
    const char *want[][2] = {{"das A und O", "the nuts and bolts"},
                             {"in Streit geraten", "lock horns"},
                             {"jdm. etw. in Rechnung stellen", "to charge sb. for sth."},
                             {"eine kleine Nachtmusik", "A Little Night Music"}};
    for (int i = 0; i < p.n && i < 4; i++) {
        const char *gs = p.src + p.src_off[i], *e = p.tgt + p.tgt_off[i];
        CHECK(strcmp(gs, want[i][0]) == 0 && strcmp(e, want[i][1]) == 0, "pair %d: '%s' -> '%s' (want '%s' -> '%s')", i, gs, e,
              want[i][0], want[i][1]);
    }
    s2s_pairs_free(&p);
    CHECK(s2s_read_ding(dz, NULL, 2, &p) == MOE_OK && p.n == 5, "min 2 words keeps Aal blau once (the index lists it twice)");
    s2s_pairs_free(&p);
    CHECK(s2s_read_ding(dz, NULL, 9, &p) == MOE_ERR_FORMAT, "nothing with 9 words: an error, not an empty set");
    write_file(ix, "x\tAAA\n");
    CHECK(s2s_read_ding(dz, NULL, 3, &p) == MOE_ERR_FORMAT, "corrupt index line");
    write_file(ix, "x\tA\tZZZZZ\n");
    CHECK(s2s_read_ding(dz, NULL, 3, &p) == MOE_ERR_FORMAT, "index entry beyond the data");
    CHECK(strstr(moe_last_error(), "t.index:1") != NULL, "the message names the line: %s", moe_last_error());
    CHECK(s2s_read_ding("/nonexistent/x.dict.dz", NULL, 3, &p) == MOE_ERR_IO, "missing dictionary");
    CHECK(s2s_read_ding("/tmp/x.txt", NULL, 3, &p) == MOE_ERR_INVALID_ARG, "not a .dict.dz name");
#endif
    /* the real dictionary, when installed (scripts/deps.sh installs it) */
    const char *real = "/usr/share/dictd/freedict-deu-eng.dict.dz";
    if (access(real, R_OK) == 0) {
        s2s_pairs r;
        CHECK(s2s_read_ding(real, NULL, 3, &r) == MOE_OK, "the Ding dictionary: %s", moe_last_error());
        CHECK(r.n > 30000 && r.n < 80000, "about 40,000+ phrase entries, got %d", r.n);
        int found = 0, bad = 0;
        for (int i = 0; i < r.n; i++) {
            const char *gs = r.src + r.src_off[i], *e = r.tgt + r.tgt_off[i];
            if (strcmp(gs, "das A und O") == 0 && strcmp(e, "the nuts and bolts") == 0) found = 1;
            const int b = (strstr(gs, " /") != NULL) + (strchr(e, '[') || strchr(e, '<') || strchr(e, '{'));
            if (b && bad < 5) printf("  leftover: '%s' -> '%s'\n", gs, e);
            bad += b;
        }
        CHECK(found, "'das A und O' -> 'the nuts and bolts' is among them");
        CHECK(bad * 1000 < r.n, "annotations left in %d pairs", bad);
        printf("Ding dictionary: %d pairs with >= 3 German words, %d with leftovers\n", r.n, bad);
        s2s_pairs_free(&r);
    } else {
        printf("Ding dictionary not installed: real-data checks skipped\n");
    }
}

static void parallel(void) {
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/a.txt", g_dir);
    snprintf(b, sizeof b, "%s/b.txt", g_dir);
    write_file(a, "ein haus\r\nzwei  haeuser\nnoch ein satz");
    write_file(b, "a house\r\ntwo houses\nanother sentence\n");
    s2s_pairs p;
    CHECK(s2s_read_parallel(a, b, &p) == MOE_OK && p.n == 3, "3 pairs (CRLF, no final newline)");
    if (p.n == 3) {
        CHECK(strcmp(p.src + p.src_off[0], "ein haus") == 0 && strcmp(p.tgt + p.tgt_off[0], "a house") == 0, "CR dropped");
        CHECK(strcmp(p.src + p.src_off[1], "zwei haeuser") == 0, "spaces collapsed");
    }
    s2s_pairs_free(&p);
    write_file(b, "a house\ntwo houses\n");
    CHECK(s2s_read_parallel(a, b, &p) == MOE_ERR_FORMAT, "unequal line counts");
    CHECK(strstr(moe_last_error(), "3 lines") && strstr(moe_last_error(), "2"), "message gives both counts: %s", moe_last_error());
    write_file(b, "a house\n  \nanother\n");
    CHECK(s2s_read_parallel(a, b, &p) == MOE_ERR_FORMAT, "empty line");
    CHECK(strstr(moe_last_error(), "b.txt:2") != NULL, "message names file and line: %s", moe_last_error());
    write_file(b, "");
    write_file(a, "");
    CHECK(s2s_read_parallel(a, b, &p) == MOE_ERR_FORMAT, "empty files");
    CHECK(s2s_read_parallel(a, "/nonexistent/file", &p) == MOE_ERR_IO, "missing file");
}

static void split_encode_batches(void) {
    /* the split: fixed per sentence, close to 90/5/5 */
    int cnt[3] = {0, 0, 0};
    char s[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(s, sizeof s, "satz nummer %d", i);
        cnt[s2s_split_of(s)]++;
    }
    CHECK(cnt[0] > 17600 && cnt[0] < 18400 && cnt[1] > 800 && cnt[1] < 1200 && cnt[2] > 800 && cnt[2] < 1200,
          "split %d/%d/%d of 20000", cnt[0], cnt[1], cnt[2]);
    CHECK(s2s_split_of("das A und O") == s2s_split_of("das A und O"), "deterministic");
    /* pairs of source length 1..5 */
    s2s_pairs p;
    memset(&p, 0, sizeof p);
    char src[128], tgt[128];
    for (int i = 0; i < 3000; i++) {
        int L = 1 + i % 5, o = 0;
        for (int w = 0; w < L; w++) o += snprintf(src + o, sizeof src - (size_t)o, "%sw%d", w ? " " : "", (i + w) % 50);
        snprintf(tgt, sizeof tgt, "t%d t%d", i % 40, (i / 3) % 40);
        s2s_pairs_add(&p, src, strlen(src), tgt, strlen(tgt));
    }
    s2s_pairs_add(&p, "w1 w2 w3 w4 w5 w6 w7", 20, "x", 1); /* 7 words */
    tok *ts = NULL, *tt = NULL;
    CHECK(s2s_build_vocab(&p, 0, 1, 0, &ts) == MOE_OK && s2s_build_vocab(&p, 1, 1, 0, &tt) == MOE_OK, "vocabularies");
    s2s_data d;
    CHECK(s2s_data_encode(&p, ts, tt, 6, 0, &d) == MOE_ERR_FORMAT, "over-long pair is an error for user data");
    CHECK(strstr(moe_last_error(), "--max-words 6") != NULL, "message says what to raise: %s", moe_last_error());
    CHECK(s2s_data_encode(&p, ts, tt, 6, 1, &d) == MOE_OK && d.n == 3000 && d.dropped_long == 1, "dropped and counted");
    int ok = 1;
    for (int i = 0; i < d.n; i++) ok &= d.tgt_ids[d.tgt_off[i + 1] - 1] == TOK_NEWLINE;
    CHECK(ok, "every target ends with the end mark");
    s2s_batches b1, b2, b3;
    CHECK(s2s_make_batches(&d, 0, 64, 1, 7, 3, &b1) == MOE_OK, "batches");
    s2s_make_batches(&d, 0, 64, 1, 7, 3, &b2);
    s2s_make_batches(&d, 0, 64, 1, 7, 4, &b3);
    int *seen = calloc((size_t)d.n, sizeof(int)), same_len = 1, ntrain = 0, nseen = 0;
    for (int i = 0; i < d.n; i++) ntrain += d.split[i] == 0;
    for (int j = 0; j < b1.nbatch; j++) {
        const int L0 = (int)(d.src_off[b1.idx[b1.start[j]] + 1] - d.src_off[b1.idx[b1.start[j]]]);
        CHECK(b1.start[j + 1] - b1.start[j] <= 64 && b1.start[j + 1] > b1.start[j], "batch %d size", j);
        for (int q = b1.start[j]; q < b1.start[j + 1]; q++) {
            const int i = b1.idx[q];
            same_len &= (int)(d.src_off[i + 1] - d.src_off[i]) == L0 && d.split[i] == 0;
            nseen += seen[i]++ == 0;
        }
    }
    CHECK(same_len, "a batch holds training sources of one length");
    CHECK(nseen == ntrain && b1.start[b1.nbatch] == ntrain, "every training pair once per epoch (%d of %d)", nseen, ntrain);
    CHECK(b1.nbatch == b2.nbatch && memcmp(b1.idx, b2.idx, sizeof(int) * (size_t)ntrain) == 0, "same seed and epoch: same order");
    CHECK(memcmp(b1.idx, b3.idx, sizeof(int) * (size_t)ntrain) != 0, "another epoch: another order");
    free(seen);
    s2s_batches_free(&b1);
    s2s_batches_free(&b2);
    s2s_batches_free(&b3);
    s2s_data_free(&d);
    tok_free(ts);
    tok_free(tt);
    s2s_pairs_free(&p);
}

int main(void) {
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    dictd();
    parallel();
    split_encode_batches();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_finish("test_s2s_data");
}
