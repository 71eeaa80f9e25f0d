/* cmd_bleu.c - `moe bleu`: corpus or sentence BLEU of a hypothesis file against a reference
 * file, one sentence a line, tokens separated by white space (SPEC 3.4; the library's BLEU,
 * which agrees with nltk 3.8). Words become ids through a small hash table. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *BLEU_USAGE =
    "usage: moe bleu --ref REF --hyp HYP [--smooth 0|1|2|3|plus1] [--sentence]\n"
    "\n"
    "BLEU-4 of the hypotheses in HYP against the references in REF (one sentence a line, the\n"
    "same number of lines; tokens are the white-space separated words, compared exactly).\n"
    "Prints corpus BLEU (statistics summed over all lines) with its n-gram precisions and\n"
    "brevity penalty; with --sentence, one sentence BLEU a line instead.\n"
    "  --smooth 0      none (default; an order without matches gives ~0, as nltk)\n"
    "           1|2|3  Chen and Cherry's methods 1, 2, 3 (nltk's method1, method2, method3)\n"
    "           plus1  BLEU+1: one added to the matches and totals of every order\n";

/* word -> id, open addressing over interned strings */
typedef struct {
    char **keys;
    int32_t *ids;
    size_t cap, count;
} vocab;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int32_t vocab_id(vocab *v, const char *w) {
    if (2 * (v->count + 1) > v->cap) { /* grow to keep the table at most half full */
        size_t nc = v->cap ? 2 * v->cap : 1024;
        char **nk = calloc(nc, sizeof *nk);
        int32_t *ni = calloc(nc, sizeof *ni);
        if (!nk || !ni) cli_die("out of memory for the vocabulary");
        for (size_t i = 0; i < v->cap; i++)
            if (v->keys[i]) {
                size_t j = hash_str(v->keys[i]) & (nc - 1);
                while (nk[j]) j = (j + 1) & (nc - 1);
                nk[j] = v->keys[i];
                ni[j] = v->ids[i];
            }
        free(v->keys);
        free(v->ids);
        v->keys = nk;
        v->ids = ni;
        v->cap = nc;
    }
    size_t j = hash_str(w) & (v->cap - 1);
    while (v->keys[j]) {
        if (strcmp(v->keys[j], w) == 0) return v->ids[j];
        j = (j + 1) & (v->cap - 1);
    }
    v->keys[j] = strdup(w);
    if (!v->keys[j]) cli_die("out of memory for the vocabulary");
    v->ids[j] = (int32_t)v->count++;
    return v->ids[j];
}

/* one line -> ids; returns the count (the buffer grows as needed) */
static size_t tokenize(vocab *v, char *line, int32_t **buf, size_t *cap) {
    size_t n = 0;
    for (char *tok = strtok(line, " \t\r\n\v\f"); tok; tok = strtok(NULL, " \t\r\n\v\f")) {
        if (n == *cap) {
            *cap = *cap ? 2 * *cap : 256;
            *buf = realloc(*buf, sizeof **buf * *cap);
            if (!*buf) cli_die("out of memory");
        }
        (*buf)[n++] = vocab_id(v, tok);
    }
    return n;
}

static int read_line(FILE *f, char **line, size_t *cap) { return getline(line, cap, f) >= 0; }

int cmd_bleu(int argc, char **argv) {
    const char *ref = NULL, *hyp = NULL, *smooth_s = "0";
    int sentence = 0;
    cli_opt opts[] = {{"ref", &ref, NULL}, {"hyp", &hyp, NULL}, {"smooth", &smooth_s, NULL}, {"sentence", NULL, &sentence}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], BLEU_USAGE);
    if (!ref || !hyp) cli_die("--ref and --hyp are required (see moe bleu --help)");
    moe_bleu_smoothing sm;
    if (strcmp(smooth_s, "0") == 0) sm = MOE_BLEU_NONE;
    else if (strcmp(smooth_s, "1") == 0) sm = MOE_BLEU_METHOD1;
    else if (strcmp(smooth_s, "2") == 0) sm = MOE_BLEU_METHOD2;
    else if (strcmp(smooth_s, "3") == 0) sm = MOE_BLEU_METHOD3;
    else if (strcmp(smooth_s, "plus1") == 0) sm = MOE_BLEU_PLUS1;
    else cli_die("--smooth must be 0, 1, 2, 3 or plus1, got '%s'", smooth_s);
    FILE *fr = fopen(ref, "r"), *fh = fopen(hyp, "r");
    if (!fr) cli_die("cannot open the references %s: %s", ref, strerror(errno));
    if (!fh) cli_die("cannot open the hypotheses %s: %s", hyp, strerror(errno));
    vocab v = {0};
    char *lr = NULL, *lh = NULL;
    size_t cr = 0, ch = 0, capr = 0, caph = 0;
    int32_t *idr = NULL, *idh = NULL;
    moe_bleu_stats total;
    memset(&total, 0, sizeof total);
    long lines = 0;
    for (;;) {
        int gr = read_line(fr, &lr, &cr), gh = read_line(fh, &lh, &ch);
        if (!gr && !gh) break;
        if (gr != gh) {
            /* count the rest, to say by how much they differ */
            long more = 1;
            while (read_line(gr ? fr : fh, gr ? &lr : &lh, gr ? &cr : &ch)) more++;
            cli_die("%s has %ld lines but %s has %ld: each hypothesis needs its reference on the same line",
                    ref, lines + (gr ? more : 0), hyp, lines + (gh ? more : 0));
        }
        lines++;
        size_t nr = tokenize(&v, lr, &idr, &capr), nh = tokenize(&v, lh, &idh, &caph);
        moe_bleu_stats s;
        cli_check(moe_bleu_stats_sentence(&s, idh, nh, idr, nr), "BLEU");
        moe_bleu_stats_add(&total, &s);
        if (sentence) printf("%.9f\n", moe_bleu_score(&s, sm));
    }
    fclose(fr);
    fclose(fh);
    if (!sentence) {
        if (lines == 0) cli_die("%s and %s are empty: nothing to score", ref, hyp);
        double b = moe_bleu_score(&total, sm);
        double bp = total.hyp_len > total.ref_len ? 1.0 : total.hyp_len ? exp(1.0 - (double)total.ref_len / total.hyp_len) : 0.0;
        printf("BLEU %.6f (%.2f) | precisions", b, 100.0 * b);
        for (int n = 0; n < 4; n++) printf(" %.4f", (double)total.match[n] / (double)total.total[n]);
        printf(" | BP %.4f | hyp_len %lld ref_len %lld | %ld sentences\n", bp, (long long)total.hyp_len,
               (long long)total.ref_len, lines);
    }
    for (size_t i = 0; i < v.cap; i++) free(v.keys[i]);
    free(v.keys);
    free(v.ids);
    free(lr);
    free(lh);
    free(idr);
    free(idh);
    return 0;
}
