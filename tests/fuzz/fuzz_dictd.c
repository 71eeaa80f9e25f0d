/* fuzz_dictd.c - the Ding dictionary as dictd ships it: an index file and its data file (the
 * input is "index\n--\ndata"; data plain, or dictzip/gzip by its magic bytes). */
#include "fuzz_util.h"
#include "data/s2s_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t ni, nd;
    const uint8_t *d;
    fuzz_split(data, size, &ni, &d, &nd);
    const char *index = fuzz_file(data, ni, 0, ".index"), *dict = fuzz_file(d, nd, 1, ".dict.dz");
    s2s_pairs p;
    if (index && dict && s2s_read_ding(dict, index, 1, &p) == MOE_OK) s2s_pairs_free(&p);
    return 0;
}
