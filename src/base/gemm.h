/* gemm.h - the library's thread count and its matrix product split over those threads
 * (threads.c, gemm.c). Internal. */
#ifndef MOE_GEMM_H
#define MOE_GEMM_H

int moe_threads(void);
/* Row-major C [M,N] = alpha op(A) op(B) + beta C, op = transpose if ta/tb; split over the
 * library's threads when large (see gemm.c). */
void moe_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

#endif
