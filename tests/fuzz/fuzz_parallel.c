/* fuzz_parallel.c - parallel text (two files of one sentence a line; the input is
 * "source\n--\ntarget"): read, vocabularies built, encoded and batched. */
#include "fuzz_util.h"
#include "data/s2s_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t na, nb;
    const uint8_t *b;
    fuzz_split(data, size, &na, &b, &nb);
    const char *src = fuzz_file(data, na, 0, ".src"), *tgt = fuzz_file(b, nb, 1, ".tgt");
    s2s_pairs p;
    if (!src || !tgt || s2s_read_parallel(src, tgt, &p) != MOE_OK) return 0;
    tok *ts = NULL, *tt = NULL;
    s2s_data d;
    memset(&d, 0, sizeof d);
    if (s2s_build_vocab(&p, 0, 1, 100, &ts) == MOE_OK && s2s_build_vocab(&p, 1, 1, 100, &tt) == MOE_OK &&
        s2s_data_encode(&p, ts, tt, 20, 1, &d) == MOE_OK) {
        s2s_batches bt;
        if (s2s_make_batches(&d, 0, 4, 1, 1, 0, &bt) == MOE_OK) s2s_batches_free(&bt);
    }
    s2s_data_free(&d);
    tok_free(ts);
    tok_free(tt);
    s2s_pairs_free(&p);
    return 0;
}
