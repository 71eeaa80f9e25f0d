/* clock.c - the monotonic clock the library times itself with (collective timeouts, the trainer
 * core's bounds and intervals, the expert exchange's share of a step). */
#define _POSIX_C_SOURCE 200809L
#include "base/internal.h"

#include <time.h>

double moe_clock_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
