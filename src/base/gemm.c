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
#ifdef MOE_HAVE_XSMM
#include <libxsmm.h>
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

/* ---- products over an expert's few rows ---- */

/* Up to MOE_GEMM_FEW_ROWS rows libxsmm's kernels measured faster than OpenBLAS's (1.1x at 128
 * rows, 2-2.5x at 8-16, BENCHMARKS.md section 7); beyond, OpenBLAS's blocking wins or ties. */
#define FEW_ROWS MOE_GEMM_FEW_ROWS

#ifdef MOE_HAVE_XSMM
/* Column-major libxsmm over row-major buffers: row-major C [M,N] is column-major C^T [N,M], so
 * every product runs as C^T = op(B)^T op(A)^T: libxsmm's (m, n) = (N, M), its A is our B. The
 * kernels are generated once per shape and kept by libxsmm's registry (thread-safe). Returns 0
 * when libxsmm has no kernel for the shape. */
static int xsmm(int flags, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                int ldc) {
    const libxsmm_blasint m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
    const float alpha = 1.0f;
    const libxsmm_smmfunction f = libxsmm_smmdispatch(m, n, k, &la, &lb, &lc, &alpha, &beta, &flags, NULL);
    if (!f) return 0;
    f(B, A, C);
    return 1;
}
#endif

void moe_sgemm_few_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
#ifdef MOE_HAVE_XSMM
    if (M <= FEW_ROWS && xsmm(0, M, N, K, A, lda, B, ldb, beta, C, ldc)) return;
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void moe_sgemm_few_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
#ifdef MOE_HAVE_XSMM
    /* C^T = B^T A: our A, read as libxsmm's second operand, transposed */
    if (K <= FEW_ROWS && xsmm(LIBXSMM_GEMM_FLAG_TRANS_B, M, N, K, A, lda, B, ldb, beta, C, ldc)) return;
#endif
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

size_t moe_sgemm_few_nt_work(int M, int N, int K) { return (size_t)M * ((size_t)K + (size_t)N); }

void moe_sgemm_few_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc, float *work) {
#ifdef MOE_HAVE_XSMM
    if (work && M <= FEW_ROWS) {
        /* C^T [N,M] = B [N,K] A^T [K,M]: a product without transposes on the small copies */
        float *At = work, *Ct = work + (size_t)K * M;
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++) At[(size_t)k * M + i] = A[(size_t)i * lda + k];
        if (xsmm(0, N, M, K, B, ldb, At, M, 0.0f, Ct, M)) {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    C[(size_t)i * ldc + j] = (beta != 0.0f ? beta * C[(size_t)i * ldc + j] : 0.0f) + Ct[(size_t)j * M + i];
            return;
        }
    }
#else
    (void)work;
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

int moe_gemm_has_xsmm(void) {
#ifdef MOE_HAVE_XSMM
    return 1;
#else
    return 0;
#endif
}
