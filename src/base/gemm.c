/* gemm.c - the library's one entry to matrix products. OpenBLAS runs single-threaded and the
 * library's OpenMP threads split each large product into row (or column) blocks, so there is
 * one thread pool: a second pool (OpenBLAS's pthreads) spinning against OpenMP's on a small
 * machine made training several times slower. Inside a parallel region (experts spread over
 * threads) a call runs its blocks on the calling thread. Blocks have a fixed size, so results
 * do not depend on the number of threads. */
#include "base/gemm.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds a split costs more than it saves. */
#define GEMM_SPLIT_MIN (1 << 21)
/* Rows (or columns) of C per block. Fixed, not derived from the thread count, so that every
 * element of C is computed by the same sgemm call shape whatever the number of threads:
 * OpenBLAS picks kernels by shape, and another split would round differently. */
#define GEMM_BLOCK 256

void moe_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    const int split_rows = M >= N, len = split_rows ? M : N;
    if ((double)M * N * K < GEMM_SPLIT_MIN || len <= GEMM_BLOCK) {
        cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int nt = moe_threads();
#ifdef _OPENMP
    if (omp_in_parallel()) nt = 1;
#endif
    const int nblk = (len + GEMM_BLOCK - 1) / GEMM_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int blk = 0; blk < nblk; blk++) {
        const int lo = blk * GEMM_BLOCK, hi = lo + GEMM_BLOCK < len ? lo + GEMM_BLOCK : len;
        if (split_rows) {
            /* rows lo..hi of C = rows lo..hi of op(A) times op(B) */
            const float *Ab = ta ? A + lo : A + (size_t)lo * lda;
            cblas_sgemm(CblasRowMajor, TA, TB, hi - lo, N, K, alpha, Ab, lda, B, ldb, beta,
                        C + (size_t)lo * ldc, ldc);
        } else {
            /* columns lo..hi of C = op(A) times columns lo..hi of op(B) */
            const float *Bb = tb ? B + (size_t)lo * ldb : B + lo;
            cblas_sgemm(CblasRowMajor, TA, TB, M, hi - lo, K, alpha, A, lda, Bb, ldb, beta,
                        C + lo, ldc);
        }
    }
}
