/* test_s2s_schedule.c - MIXER's schedule (train/s2s_schedule.h): the stages of SPEC 3.3, and the
 * tokens forced at each s from a reference's start and from its end, against the definitions
 * written out case by case. */
#include "testutil.h"
#include "train/s2s_schedule.h"

static void test_stages(void) {
    CHECK(mixer_stages(7, 3) == 3, "T=7, delta 3: stages s = 7, 4, then 0");
    CHECK(mixer_stage_s(7, 3, 0) == 7 && mixer_stage_s(7, 3, 1) == 4 && mixer_stage_s(7, 3, 2) == 0 &&
              mixer_stage_s(7, 3, 5) == 0, "T=7, delta 3: s of each stage, and 0 past the last");
    CHECK(mixer_stages(41, 8) == 6 && mixer_stage_s(41, 8, 4) == 9 && mixer_stage_s(41, 8, 5) == 0,
          "T=41, delta 8: s = 41, 33, 25, 17, 9, 0");
    CHECK(mixer_stages(2, 1) == 2 && mixer_stage_s(2, 1, 1) == 0, "T=2, delta 1: s = 2, 0");
}

static void test_forced(void) {
    const int T = 41;
    int bad_start = 0, bad_end = 0;
    for (int L = 1; L <= T; L++)
        for (int s = 0; s <= T; s++) {
            /* from the start: min(s, L) */
            const int want_start = s < L ? s : L;
            /* from the end: the last T - s sampled, never fewer than 0 forced */
            int want_end = L - (T - s);
            if (want_end < 0) want_end = 0;
            bad_start += mixer_forced(L, s, T, 0) != want_start;
            bad_end += mixer_forced(L, s, T, 1) != want_end;
        }
    CHECK(bad_start == 0, "from the start: min(s, L) forced for every L, s (%d wrong)", bad_start);
    CHECK(bad_end == 0, "from the end: max(0, L - (T - s)) forced for every L, s (%d wrong)", bad_end);
    CHECK(mixer_forced(8, -1, T, 0) == 8 && mixer_forced(8, -1, T, 1) == 8, "cross-entropy epochs force everything");
    CHECK(mixer_forced(8, T, T, 1) == 8 && mixer_forced(8, T, T, 0) == 8, "s = T forces everything either way");
    CHECK(mixer_forced(8, 0, T, 1) == 0 && mixer_forced(8, 0, T, 0) == 0, "s = 0 forces nothing either way");
    /* the point of the end: at the first stage after s = T a short sentence is sampled */
    CHECK(mixer_forced(8, T - 8, T, 0) == 8, "from the start, s = 33 leaves an 8-token sentence unsampled");
    CHECK(mixer_forced(8, T - 8, T, 1) == 0 && mixer_forced(12, T - 8, T, 1) == 4,
          "from the end, s = 33 samples the last 8 tokens of every sentence");
}

int main(void) {
    test_stages();
    test_forced();
    return test_finish("test_s2s_schedule");
}
