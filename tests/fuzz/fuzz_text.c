/* fuzz_text.c - a text corpus on any bytes: open it in small blocks, build a word vocabulary
 * from its training split, and read batches of every split. */
#include "fuzz_util.h"
#include "data/textdata.h"
#include "data/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, 0, ".txt");
    td_file *f = NULL;
    if (!path || td_open(&f, path, 64) != MOE_OK) return 0;
    tok *t = NULL;
    tok_config tc = tok_config_default(TOK_WORDS);
    tc.min_count = 1;
    if (td_build_tokenizer(f, TD_TRAIN, &tc, &t) == MOE_OK) {
        for (int s = 0; s < 3; s++) {
            td_iter *it = NULL;
            int32_t buf[2 * 9];
            if (td_iter_create(&it, f, t, (td_split)s, 2, 8) != MOE_OK) continue;
            for (int i = 0; i < 4 && td_iter_next(it, buf) == MOE_OK; i++) {
            }
            td_iter_free(it);
        }
        tok_free(t);
    }
    td_free(f);
    return 0;
}
