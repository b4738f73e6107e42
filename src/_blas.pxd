# Row-major, fused-type GEMM on top of scipy.linalg.cython_blas.
#
# The kernels keep every matrix row-major (C order).  BLAS is column-major, and
# a row-major A (m x k) is the column-major A^T, so C = op(A) @ op(B) in row-major
# is C^T = op(B)^T @ op(A)^T in column-major: swap the operands and m/n.
# BLAS is only ever called single-threaded from inside our own OpenMP regions
# (ops.py limits OpenBLAS to one thread for the duration of each call).
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha,
                      const floating* a, int lda,        # IN  (m x k), or (k x m) if trans_a
                      const floating* b, int ldb,        # IN  (k x n), or (n x k) if trans_b
                      floating beta,
                      floating* c, int ldc) noexcept nogil:   # OUT (m x n)
    """C = alpha * op(A) @ op(B) + beta * C, all row-major."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # BLAS would not scale C by beta for k == 0 in every implementation.
        _scale(m, n, beta, c, ldc)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef inline void _scale(int m, int n, floating beta, floating* c, int ldc) noexcept nogil:
    cdef int i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]


cdef extern from "_smallgemm.h" nogil:
    Py_ssize_t rk_small_sgemm_packed_size(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t rk_small_dgemm_packed_size(Py_ssize_t k, Py_ssize_t n)
    void rk_small_sgemm_pack_b(Py_ssize_t k, Py_ssize_t n, const float* b, Py_ssize_t ldb, float* out)
    void rk_small_dgemm_pack_b(Py_ssize_t k, Py_ssize_t n, const double* b, Py_ssize_t ldb, double* out)
    void rk_small_sgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a, Py_ssize_t lda,
                               const float* bp, float* c, Py_ssize_t ldc, int accumulate)
    void rk_small_dgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* a, Py_ssize_t lda,
                               const double* bp, double* c, Py_ssize_t ldc, int accumulate)
    Py_ssize_t rk_small_sgemm_wgrad_work(Py_ssize_t n1, Py_ssize_t n2)
    Py_ssize_t rk_small_dgemm_wgrad_work(Py_ssize_t n1, Py_ssize_t n2)
    void rk_small_sgemm_wgrad_t(Py_ssize_t m, Py_ssize_t k, const float* a, Py_ssize_t lda,
                                Py_ssize_t n1, const float* b1, Py_ssize_t ldb1,
                                Py_ssize_t n2, const float* b2, Py_ssize_t ldb2,
                                float* out, float* work)
    void rk_small_dgemm_wgrad_t(Py_ssize_t m, Py_ssize_t k, const double* a, Py_ssize_t lda,
                                Py_ssize_t n1, const double* b1, Py_ssize_t ldb1,
                                Py_ssize_t n2, const double* b2, Py_ssize_t ldb2,
                                double* out, double* work)


cdef inline Py_ssize_t packed_size(const floating* like, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Values in B (k x n) packed for packed_gemm (``like`` only selects the type)."""
    if floating is float:
        return rk_small_sgemm_packed_size(k, n)
    else:
        return rk_small_dgemm_packed_size(k, n)


cdef inline void pack_b(Py_ssize_t k, Py_ssize_t n,
                        const floating* b, Py_ssize_t ldb,   # IN  (k x n)
                        floating* out) noexcept nogil:       # OUT packed_size values
    if floating is float:
        rk_small_sgemm_pack_b(k, n, b, ldb, out)
    else:
        rk_small_dgemm_pack_b(k, n, b, ldb, out)


cdef inline void packed_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             const floating* a, Py_ssize_t lda,   # IN  (m x k)
                             const floating* bp,                  # IN  B (k x n) from pack_b
                             floating* c, Py_ssize_t ldc,         # IN/OUT (m x n)
                             bint accumulate) noexcept nogil:
    """C (+)= A @ B on our register-blocked kernel, B packed (see _smallgemm.h):
    the merged input projection and dX, and the per-step recurrent products,
    whose weight tiles ops.py packs once per call."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        rk_small_sgemm_packed(m, n, k, a, lda, bp, c, ldc, accumulate)
    else:
        rk_small_dgemm_packed(m, n, k, a, lda, bp, c, ldc, accumulate)


cdef inline Py_ssize_t wgrad_work(const floating* like, Py_ssize_t n1, Py_ssize_t n2) noexcept nogil:
    """Values of the work buffer wgrad_t needs (``like`` only selects the type)."""
    if floating is float:
        return rk_small_sgemm_wgrad_work(n1, n2)
    else:
        return rk_small_dgemm_wgrad_work(n1, n2)


cdef inline void wgrad_t(Py_ssize_t m, Py_ssize_t k,
                         const floating* a, Py_ssize_t lda,                   # IN  (k x m) gate gradients
                         Py_ssize_t n1, const floating* b1, Py_ssize_t ldb1,  # IN  (k x n1)
                         Py_ssize_t n2, const floating* b2, Py_ssize_t ldb2,  # IN  (k x n2)
                         floating* out,                                       # OUT (n1 + n2) x m
                         floating* work) noexcept nogil:                      # wgrad_work values, aligned
    """out = [B1 | B2]^T @ A: the transposes of A^T B1 and A^T B2, on our
    kernel with A packed once for both (see _smallgemm.h)."""
    if floating is float:
        rk_small_sgemm_wgrad_t(m, k, a, lda, n1, b1, ldb1, n2, b2, ldb2, out, work)
    else:
        rk_small_dgemm_wgrad_t(m, k, a, lda, n1, b1, ldb1, n2, b2, ldb2, out, work)
