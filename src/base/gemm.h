/* gemm.h - the library's thread count and its matrix product split over those threads
 * (threads.c, gemm.c). Internal. */
#ifndef MOE_GEMM_H
#define MOE_GEMM_H

#include <stddef.h>

int moe_threads(void);
/* Row-major C [M,N] = alpha op(A) op(B) + beta C, op = transpose if ta/tb; split over the
 * library's threads when large (see gemm.c). */
void moe_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* The products of one expert over its few rows, single-threaded, row-major, alpha = 1 and beta
 * 0 or 1, by the kernel measured fastest for the shape: libxsmm's JIT kernels where the build has
 * them (MOE_HAVE_XSMM) and the shape is small (BENCHMARKS.md section 7), else OpenBLAS. The
 * choice depends only on the shape, so results do not depend on the number of threads.
 *   nn: C [M,N] = A [M,K] B [K,N]         (forward: rows x weight)
 *   tn: C [M,N] = A^T B, A [K,M], B [K,N]  (weight gradient: K = rows)
 *   nt: C [M,N] = A B^T, A [M,K], B [N,K]  (input gradient: M = rows); libxsmm generates no kernel
 *       with A transposed, so this one runs as C^T = B A^T on transposed copies in `work`
 *       [moe_sgemm_few_nt_work floats] (NULL: OpenBLAS) */
#define MOE_GEMM_FEW_ROWS 128 /* up to this many rows libxsmm measured faster (section 7) */
void moe_sgemm_few_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc);
void moe_sgemm_few_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc);
void moe_sgemm_few_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc, float *work);
size_t moe_sgemm_few_nt_work(int M, int N, int K);
/* 1 when the few-row products use libxsmm (for reports) */
int moe_gemm_has_xsmm(void);

#endif
