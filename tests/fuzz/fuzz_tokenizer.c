/* fuzz_tokenizer.c - the tokenizer's serialised form (as checkpoints store it) on any string:
 * parse, then encode and decode text with it and serialise it again. */
#include "fuzz_util.h"
#include "data/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_str(data, size);
    tok *t = NULL;
    if (!s || tok_parse(&t, s) != MOE_OK) {
        free(s);
        return 0;
    }
    static const char text[] = "The quick brown fox, jumps\nover the lazy dog.";
    int32_t ids[TOK_ENCODE_MAX(sizeof text)];
    const size_t n = tok_encode(t, NULL, text, sizeof text - 1, 1, ids);
    char *back = NULL, *ser = NULL;
    if (tok_decode(t, ids, n, &back, NULL) == MOE_OK) free(back);
    if (tok_serialize(t, &ser) == MOE_OK) free(ser);
    tok_free(t);
    free(s);
    return 0;
}
