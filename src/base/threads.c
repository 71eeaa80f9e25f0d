/* threads.c - one place that decides how many threads the library uses. OpenBLAS always runs
 * single-threaded; the library's OpenMP threads split the work (see gemm.c). */
#include "base/gemm.h"
#include "moe.h"

#include <cblas.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_threads = 0; /* 0: not set yet -> all cores */

static int ncores(void) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

void moe_set_threads(int nthreads) {
    g_threads = nthreads > 0 ? nthreads : ncores();
#ifdef _OPENMP
    omp_set_num_threads(g_threads);
#endif
    openblas_set_num_threads(1);
}

int moe_get_threads(void) { return moe_threads(); }

int moe_threads(void) {
    if (g_threads == 0) moe_set_threads(0);
    return g_threads;
}
