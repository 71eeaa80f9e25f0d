/* test_bleu.c - BLEU against nltk 3.8: every sentence of tests/golden/bleu_nltk.txt (1500 random
 * pairs, written by gen_golden_bleu.py) with each smoothing, and corpus BLEU over the first 100
 * and all pairs, to 1e-9; the known values of SPEC 3.4; edge cases (empty, short sentences). */
#include "moe.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static size_t parse_ids(const char *s, int32_t *out, size_t cap) {
    size_t n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        out[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

static void known_values(void) {
    /* SPEC 3.4: hypothesis and reference of Papineni et al., word ids by first appearance */
    const char *hyp_w[] = {"It", "is", "a", "guide", "to", "action", "which", "ensures", "that", "the", "military",
                           "always", "obeys", "the", "commands", "of", "the", "party"};
    const char *ref_w[] = {"It", "is", "a", "guide", "to", "action", "that", "ensures", "that", "the",
                           "military", "will", "forever", "heed", "Party", "commands"};
    const char *vocab[64];
    int nv = 0;
    int32_t hyp[32], ref[32];
    const char **lists[2] = {hyp_w, ref_w};
    int32_t *outs[2] = {hyp, ref};
    size_t lens[2] = {sizeof hyp_w / sizeof *hyp_w, sizeof ref_w / sizeof *ref_w};
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < lens[l]; i++) {
            int id = -1;
            for (int v = 0; v < nv && id < 0; v++)
                if (strcmp(vocab[v], lists[l][i]) == 0) id = v;
            if (id < 0) vocab[id = nv++] = lists[l][i];
            outs[l][i] = id;
        }
    moe_bleu_stats s;
    CHECK(moe_bleu_stats_sentence(&s, hyp, lens[0], ref, lens[1]) == MOE_OK, "stats");
    double b0 = moe_bleu_score(&s, MOE_BLEU_NONE), b2 = moe_bleu_score(&s, MOE_BLEU_METHOD2);
    CHECK(fabs(b0 - 0.411804) < 5e-7, "SPEC 3.4 unsmoothed: %.7f (0.411804)", b0);
    CHECK(fabs(b2 - 0.445295) < 5e-7, "SPEC 3.4 method 2: %.7f (0.445295)", b2);
}

static void edges(void) {
    int32_t a[4] = {1, 2, 3, 4};
    moe_bleu_stats s;
    moe_bleu_stats_sentence(&s, a, 0, a, 4);
    CHECK(moe_bleu_score(&s, MOE_BLEU_PLUS1) == 0.0, "empty hypothesis scores 0");
    moe_bleu_stats_sentence(&s, a, 4, a, 4);
    CHECK(fabs(moe_bleu_score(&s, MOE_BLEU_NONE) - 1.0) < 1e-15, "identical sentences score 1");
    moe_bleu_stats_sentence(&s, a, 4, a, 0);
    CHECK(moe_bleu_score(&s, MOE_BLEU_METHOD1) == 0.0, "empty reference: no match, 0");
    CHECK(moe_bleu_stats_sentence(NULL, a, 4, a, 4) == MOE_ERR_INVALID_ARG, "NULL stats refused");
    CHECK(moe_bleu_stats_sentence(&s, NULL, 3, a, 4) == MOE_ERR_INVALID_ARG, "NULL hypothesis refused");
}

/* The paired bootstrap over the golden pairs (all [n], each a hypothesis against its reference) */
static void bootstrap(const moe_bleu_stats *all, int n) {
    moe_bleu_bootstrap r, r2, sw;
    /* a system against itself: every resample a tie */
    CHECK(moe_bleu_bootstrap_pair(all, all, (size_t)n, 200, MOE_BLEU_NONE, 5, &r) == MOE_OK, "bootstrap A vs A");
    CHECK(r.p_a_better == 0.0 && r.p_b_better == 0.0 && r.delta_lo == 0.0 && r.delta_hi == 0.0,
          "A vs itself: P %.3f/%.3f, delta [%g, %g]", r.p_a_better, r.p_b_better, r.delta_lo, r.delta_hi);
    CHECK(r.a_lo == r.b_lo && r.a_hi == r.b_hi && r.a_lo < r.bleu_a && r.bleu_a < r.a_hi && r.resamples == 200,
          "A vs itself: intervals [%g, %g] and [%g, %g] around %g", r.a_lo, r.a_hi, r.b_lo, r.b_hi, r.bleu_a);
    /* perfect translations (each reference against itself) beat the golden hypotheses every time */
    moe_bleu_stats *perfect = calloc((size_t)n, sizeof *perfect);
    for (int i = 0; perfect && i < n; i++) {
        perfect[i] = all[i];
        for (int k = 0; k < 4; k++) {
            const int64_t g = all[i].ref_len - k;
            perfect[i].match[k] = g > 0 ? g : 0;
            perfect[i].total[k] = g > 0 ? g : 1;
        }
        perfect[i].hyp_len = all[i].ref_len;
    }
    CHECK(perfect && moe_bleu_bootstrap_pair(perfect, all, (size_t)n, 300, MOE_BLEU_METHOD3, 5, &r) == MOE_OK, "perfect");
    CHECK(r.p_a_better == 1.0 && r.p_b_better == 0.0 && r.delta_lo > 0.0 && r.bleu_a > r.bleu_b,
          "perfect vs golden: P(A>B) %.3f, delta [%g, %g], BLEU %.6f vs %.6f", r.p_a_better, r.delta_lo, r.delta_hi,
          r.bleu_a, r.bleu_b);
    /* the same draws either way round; the same seed, the same result; another seed, others */
    CHECK(moe_bleu_bootstrap_pair(all, perfect, (size_t)n, 300, MOE_BLEU_METHOD3, 5, &sw) == MOE_OK, "swapped");
    CHECK(sw.p_b_better == r.p_a_better && sw.delta_lo == -r.delta_hi && sw.delta_hi == -r.delta_lo && sw.a_lo == r.b_lo,
          "swapping A and B mirrors the result");
    CHECK(moe_bleu_bootstrap_pair(all, NULL, (size_t)n, 300, MOE_BLEU_NONE, 9, &r) == MOE_OK &&
              moe_bleu_bootstrap_pair(all, NULL, (size_t)n, 300, MOE_BLEU_NONE, 9, &r2) == MOE_OK &&
              memcmp(&r, &r2, sizeof r) == 0,
          "seeded: the same result twice");
    CHECK(moe_bleu_bootstrap_pair(all, NULL, (size_t)n, 300, MOE_BLEU_NONE, 10, &r2) == MOE_OK && r2.a_lo != r.a_lo,
          "another seed draws other resamples");
    /* resampling is over sentences: 15x fewer sentences, an interval about sqrt(15) ~ 3.9x wider */
    CHECK(moe_bleu_bootstrap_pair(all, NULL, (size_t)(n / 15), 300, MOE_BLEU_NONE, 9, &r2) == MOE_OK, "small set");
    const double wide = (r2.a_hi - r2.a_lo) / (r.a_hi - r.a_lo);
    CHECK(wide > 2.5 && wide < 6.0, "interval widths: %d sentences %.4f, %d sentences %.4f (ratio %.2f, want ~3.9)",
          n / 15, r2.a_hi - r2.a_lo, n, r.a_hi - r.a_lo, wide);
    /* one sentence: every resample is that sentence */
    CHECK(moe_bleu_bootstrap_pair(perfect, NULL, 1, 50, MOE_BLEU_NONE, 1, &r) == MOE_OK && r.a_lo == r.bleu_a &&
              r.a_hi == r.bleu_a, "one sentence: a point interval");
    CHECK(moe_bleu_bootstrap_pair(all, all, (size_t)n, 1, MOE_BLEU_NONE, 1, &r) == MOE_ERR_INVALID_ARG &&
              moe_bleu_bootstrap_pair(all, all, 0, 100, MOE_BLEU_NONE, 1, &r) == MOE_ERR_INVALID_ARG &&
              moe_bleu_bootstrap_pair(NULL, all, 3, 100, MOE_BLEU_NONE, 1, &r) == MOE_ERR_INVALID_ARG &&
              moe_bleu_bootstrap_pair(all, all, 3, 100, (moe_bleu_smoothing)9, 1, &r) == MOE_ERR_INVALID_ARG,
          "bad arguments refused");
    free(perfect);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/golden";
    char path[1024];
    snprintf(path, sizeof path, "%s/bleu_nltk.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s (regenerate with tests/gen_golden_bleu.py)", path);
    static char line[8192];
    int32_t hyp[256], ref[256];
    const moe_bleu_smoothing sms[5] = {MOE_BLEU_NONE, MOE_BLEU_METHOD1, MOE_BLEU_METHOD2, MOE_BLEU_METHOD3,
                                       MOE_BLEU_PLUS1};
    moe_bleu_stats *all = calloc(4000, sizeof *all);
    int ns = 0, nc = 0, bad = 0;
    double worst = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *tab1 = strchr(line, '\t'), *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        char *tab3 = tab2 ? strchr(tab2 + 1, '\t') : NULL;
        if (line[0] == 'S' && tab3 && ns < 4000) {
            *tab2 = *tab3 = 0;
            size_t nh = parse_ids(tab1 + 1, hyp, 256), nr = parse_ids(tab2 + 1, ref, 256);
            moe_bleu_stats_sentence(&all[ns], hyp, nh, ref, nr);
            char *p = tab3 + 1;
            for (int i = 0; i < 5; i++) {
                double want = strtod(p, &p), got = moe_bleu_score(&all[ns], sms[i]), e = fabs(got - want);
                if (e > worst) worst = e;
                if (e > 1e-9 && bad++ < 5)
                    fprintf(stderr, "  pair %d smoothing %d: got %.17g want %.17g\n", ns, i, got, want);
            }
            ns++;
        } else if (line[0] == 'C' && tab2) {
            int count = atoi(tab1 + 1);
            moe_bleu_stats acc;
            memset(&acc, 0, sizeof acc);
            for (int i = 0; i < count && i < ns; i++) moe_bleu_stats_add(&acc, &all[i]);
            char *p = tab2 + 1;
            for (int i = 0; i < 5; i++) {
                double want = strtod(p, &p), got = moe_bleu_score(&acc, sms[i]);
                CHECK(fabs(got - want) <= 1e-9, "corpus BLEU over %d pairs, smoothing %d: %.17g vs nltk %.17g", count, i,
                      got, want);
            }
            nc++;
        }
    }
    if (f) fclose(f);
    CHECK(ns >= 1000 && nc == 2, "golden file has %d sentence pairs and %d corpus lines", ns, nc);
    CHECK(bad == 0, "%d sentence scores differ from nltk by more than 1e-9 (worst %.3g)", bad, worst);
    bootstrap(all, ns);
    free(all);
    known_values();
    edges();
    return test_finish("test_bleu");
}
