/* s2s_schedule.h - MIXER's schedule (SPEC 3.3), internal: which stage an epoch is in, its s, and
 * how many tokens of a reference are teacher-forced at that s. Pure functions of the settings,
 * so the trainer, a resumed run and the tests all compute the same plan. */
#ifndef MOE_S2S_SCHEDULE_H
#define MOE_S2S_SCHEDULE_H

/* MIXER's stages: s = T, T - delta, ... while s > 1, then a last stage at s = 0 */
static inline int mixer_stages(int T, int delta) {
    int n = 0;
    for (int s = T; s > 1; s -= delta) n++;
    return n + 1;
}

/* s of stage j (0-based) */
static inline int mixer_stage_s(int T, int delta, int j) {
    const int n = mixer_stages(T, delta);
    return j >= n - 1 ? 0 : T - j * delta;
}

/* Tokens of a reference of L tokens taught by cross-entropy at s (s < 0: all of them). From the
 * start (SPEC 3.3 as written): the first min(s, L); a reference shorter than s is then not
 * sampled at all, so with T the longest reference most short sentences meet REINFORCE only in
 * the last stages. From the end: all but the last T - s, so every reference has T - s tokens
 * (or all of its own) sampled from the first stage after s = T. Both force all at s = T and
 * none at s = 0. */
static inline int mixer_forced(int L, int s, int T, int from_end) {
    if (s < 0) return L;
    if (from_end) return L > T - s ? L - (T - s) : 0;
    return s < L ? s : L;
}

#endif
