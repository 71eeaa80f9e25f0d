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
    "                [--hyp2 HYP2 [--bootstrap 1000] [--seed 1]] [--json]\n"
    "\n"
    "BLEU-4 of the hypotheses in HYP against the references in REF (one sentence a line, the\n"
    "same number of lines; tokens are the white-space separated words, compared exactly).\n"
    "Prints corpus BLEU (statistics summed over all lines) with its n-gram precisions and\n"
    "brevity penalty, corpus BLEU smoothed with method 3 (nltk's method3, NIST's geometric\n"
    "smoothing, sacreBLEU's 'exp'), and the share of lines identical to their reference; with\n"
    "--sentence, one sentence BLEU a line instead.\n"
    "  --smooth 0      none (default; an order without matches gives ~0, as nltk)\n"
    "           1|2|3  Chen and Cherry's methods 1, 2, 3 (nltk's method1, method2, method3)\n"
    "           plus1  BLEU+1: one added to the matches and totals of every order\n"
    "  --hyp2 HYP2     a second system's hypotheses for the same references: both scored, and a\n"
    "                  paired bootstrap (Koehn 2004) over the lines, --bootstrap resamples (default\n"
    "                  1000) drawn from --seed: how often HYP beats HYP2, and 95% intervals of both\n"
    "                  and of their difference, with --smooth's smoothing\n";

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

/* One system's scores: the per-line statistics (for the bootstrap) and exact matches */
typedef struct {
    moe_bleu_stats *per, total;
    long lines, cap, exact;
} scored;

static void scored_add(scored *s, const moe_bleu_stats *st, int exact) {
    if (s->lines == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->per = realloc(s->per, sizeof *s->per * (size_t)s->cap);
        if (!s->per) cli_die("out of memory");
    }
    s->per[s->lines++] = *st;
    moe_bleu_stats_add(&s->total, st);
    s->exact += exact;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void die_lines(FILE *fa, FILE *fb, const char *pa, const char *pb, long lines, int ga, int gb, char **la, size_t *ca) {
    long more = 1; /* count the rest, to say by how much they differ */
    while (read_line(ga ? fa : fb, la, ca)) more++;
    cli_die("%s has %ld lines but %s has %ld: each hypothesis needs its reference on the same line", pa,
            lines + (ga ? more : 0), pb, lines + (gb ? more : 0));
}

static double brevity(const moe_bleu_stats *t) {
    return t->hyp_len > t->ref_len ? 1.0 : t->hyp_len ? exp(1.0 - (double)t->ref_len / t->hyp_len) : 0.0;
}

static void print_corpus(const char *name, const scored *s, moe_bleu_smoothing sm) {
    const moe_bleu_stats *t = &s->total;
    const double b = moe_bleu_score(t, sm);
    printf("%sBLEU %.6f (%.2f) | precisions", name, b, 100.0 * b);
    for (int n = 0; n < 4; n++) printf(" %.4f", (double)t->match[n] / (double)t->total[n]);
    printf(" | BP %.4f | hyp_len %lld ref_len %lld | %ld sentences\n", brevity(t), (long long)t->hyp_len,
           (long long)t->ref_len, s->lines);
    printf("%ssmoothed (method 3) %.2f | exact %ld of %ld (%.2f%%)\n", name, 100.0 * moe_bleu_score(t, MOE_BLEU_METHOD3),
           s->exact, s->lines, 100.0 * (double)s->exact / (double)s->lines);
}

static void json_corpus(const scored *s, moe_bleu_smoothing sm) {
    printf("{\"bleu\":%.9f,\"bleu_smooth\":%.9f,\"exact\":%.9f,\"sentences\":%ld}", moe_bleu_score(&s->total, sm),
           moe_bleu_score(&s->total, MOE_BLEU_METHOD3), (double)s->exact / (double)s->lines, s->lines);
}

static moe_bleu_smoothing parse_smooth(const char *v) {
    if (strcmp(v, "0") == 0) return MOE_BLEU_NONE;
    if (strcmp(v, "1") == 0) return MOE_BLEU_METHOD1;
    if (strcmp(v, "2") == 0) return MOE_BLEU_METHOD2;
    if (strcmp(v, "3") == 0) return MOE_BLEU_METHOD3;
    if (strcmp(v, "plus1") == 0) return MOE_BLEU_PLUS1;
    cli_die("--smooth must be 0, 1, 2, 3 or plus1, got '%s'", v);
}

static FILE *open_or_die(const char *path, const char *what) {
    FILE *f = fopen(path, "r");
    if (!f) cli_die("cannot open the %s %s: %s", what, path, strerror(errno));
    return f;
}

int cmd_bleu(int argc, char **argv) {
    const char *ref = NULL, *hyp = NULL, *hyp2 = NULL, *smooth_s = "0", *boot = NULL, *seed_s = NULL;
    int sentence = 0, json = 0;
    cli_opt opts[] = {{"ref", &ref, NULL},        {"hyp", &hyp, NULL},       {"hyp2", &hyp2, NULL},
                      {"smooth", &smooth_s, NULL}, {"sentence", NULL, &sentence}, {"bootstrap", &boot, NULL},
                      {"seed", &seed_s, NULL},    {"json", NULL, &json}};
    cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], BLEU_USAGE);
    if (!ref || !hyp) cli_die("--ref and --hyp are required (see moe bleu --help)");
    if ((boot || seed_s) && !hyp2) cli_die("--bootstrap and --seed compare two systems: give the second with --hyp2 HYP2");
    if (sentence && (hyp2 || json)) cli_die("--sentence scores one system line by line: leave out --hyp2 and --json");
    const moe_bleu_smoothing sm = parse_smooth(smooth_s);
    const int R = boot ? cli_int("bootstrap", boot, 2, 1000000) : 1000;
    const uint64_t seed = seed_s ? cli_u64("seed", seed_s) : 1;
    FILE *fr = open_or_die(ref, "references"), *fh = open_or_die(hyp, "hypotheses"),
         *f2 = hyp2 ? open_or_die(hyp2, "second hypotheses") : NULL;
    vocab v = {0};
    char *lr = NULL, *lh = NULL, *l2 = NULL;
    size_t cr = 0, ch = 0, c2 = 0, capr = 0, caph = 0, cap2 = 0;
    int32_t *idr = NULL, *idh = NULL, *id2 = NULL;
    scored a = {0}, b = {0};
    long lines = 0;
    for (;;) {
        int gr = read_line(fr, &lr, &cr), gh = read_line(fh, &lh, &ch), g2 = f2 ? read_line(f2, &l2, &c2) : gr;
        if (!gr && !gh && !g2) break;
        if (gr != gh) die_lines(fr, fh, ref, hyp, lines, gr, gh, gr ? &lr : &lh, gr ? &cr : &ch);
        if (gr != g2) die_lines(fr, f2, ref, hyp2, lines, gr, g2, gr ? &lr : &l2, gr ? &cr : &c2);
        lines++;
        size_t nr = tokenize(&v, lr, &idr, &capr), nh = tokenize(&v, lh, &idh, &caph);
        moe_bleu_stats s;
        cli_check(moe_bleu_stats_sentence(&s, idh, nh, idr, nr), "BLEU");
        scored_add(&a, &s, same_ids(idh, nh, idr, nr));
        if (sentence) printf("%.9f\n", moe_bleu_score(&s, sm));
        if (f2) {
            size_t n2 = tokenize(&v, l2, &id2, &cap2);
            cli_check(moe_bleu_stats_sentence(&s, id2, n2, idr, nr), "BLEU");
            scored_add(&b, &s, same_ids(id2, n2, idr, nr));
        }
    }
    fclose(fr);
    fclose(fh);
    if (f2) fclose(f2);
    if (!sentence && lines == 0) cli_die("%s and %s are empty: nothing to score", ref, hyp);
    moe_bleu_bootstrap r;
    if (f2) cli_check(moe_bleu_bootstrap_pair(a.per, b.per, (size_t)lines, R, sm, seed, &r), "bootstrap");
    if (json) {
        printf("{\"a\":");
        json_corpus(&a, sm);
        if (f2) {
            printf(",\"b\":");
            json_corpus(&b, sm);
            printf(",\"bootstrap\":%d,\"a_lo\":%.9f,\"a_hi\":%.9f,\"b_lo\":%.9f,\"b_hi\":%.9f,\"delta_lo\":%.9f,"
                   "\"delta_hi\":%.9f,\"p_a_better\":%.6f,\"p_b_better\":%.6f",
                   R, r.a_lo, r.a_hi, r.b_lo, r.b_hi, r.delta_lo, r.delta_hi, r.p_a_better, r.p_b_better);
        }
        printf("}\n");
    } else if (!sentence) {
        print_corpus(f2 ? "A: " : "", &a, sm);
        if (f2) {
            print_corpus("B: ", &b, sm);
            printf("paired bootstrap, %d resamples of %ld lines: A %.2f [%.2f, %.2f], B %.2f [%.2f, %.2f], "
                   "A-B [%+.2f, %+.2f], P(A>B) %.3f, P(B>A) %.3f\n",
                   R, lines, 100 * r.bleu_a, 100 * r.a_lo, 100 * r.a_hi, 100 * r.bleu_b, 100 * r.b_lo, 100 * r.b_hi,
                   100 * r.delta_lo, 100 * r.delta_hi, r.p_a_better, r.p_b_better);
        }
    }
    for (size_t i = 0; i < v.cap; i++) free(v.keys[i]);
    free(v.keys);
    free(v.ids);
    free(lr), free(lh), free(l2);
    free(idr), free(idh), free(id2);
    free(a.per), free(b.per);
    return 0;
}
