/* fuzz_util.h - what the fuzz targets share: the input written to a file of this process (for
 * the loaders that read paths), the input as a NUL-terminated string, and the replay main of
 * builds without libFuzzer. */
#ifndef MOE_FUZZ_UTIL_H
#define MOE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data [size] into the file "<dir>/moe-fuzz-<pid>-<tag><suffix>" (dir: /dev/shm if it exists);
 * returns the path (static per tag slot), or NULL if it cannot be written. */
static inline const char *fuzz_file(const uint8_t *data, size_t size, int slot, const char *suffix) {
    static char paths[4][256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(paths[slot], sizeof paths[slot], "%s/moe-fuzz-%ld-%d%s", dir, (long)getpid(), slot, suffix);
    FILE *f = fopen(paths[slot], "wb");
    if (!f) return NULL;
    const int ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0 || !ok) return NULL;
    return paths[slot];
}

/* data as a string (malloc'ed; the caller frees) */
static inline char *fuzz_str(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return NULL;
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Splits data at the first "\n--\n" into two parts (b empty if none). */
static inline void fuzz_split(const uint8_t *data, size_t size, size_t *na, const uint8_t **b, size_t *nb) {
    for (size_t i = 0; i + 4 <= size; i++)
        if (memcmp(data + i, "\n--\n", 4) == 0) {
            *na = i;
            *b = data + i + 4;
            *nb = size - i - 4;
            return;
        }
    *na = size;
    *b = data + size;
    *nb = 0;
}

#ifdef MOE_FUZZ_REPLAY
/* Without libFuzzer: runs every file named on the command line through the target once (the
 * corpus and the regression files, in the normal test suite). */
int main(int argc, char **argv) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "cannot open %s\n", argv[i]);
            return 1;
        }
        size_t cap = 1 << 16, len = 0;
        uint8_t *buf = malloc(cap);
        for (size_t r; buf && (r = fread(buf + len, 1, cap - len, f)) > 0;) {
            len += r;
            if (len == cap) buf = realloc(buf, cap *= 2);
        }
        fclose(f);
        if (!buf) return 1;
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        n++;
    }
    printf("replayed %d inputs\n", n);
    return n > 0 ? 0 : 1;
}
#endif

#endif
