"""The kernels' own GEMM as a plain matrix product.

Layering: the cells' kernels (_lstm, _gru, _rnn) call the register-blocked
GEMM of _smallgemm.h through _common.gemm_rows for their merged input
projections and dX; this module exposes the same path for one dense product,
so that `rnnkernels bench` can measure the arithmetic peak the machine gives
that kernel (NumPy's BLAS may not know a new CPU and fall back to older
kernels), and tests can check it directly.
Validation here, computation in _common.
"""
from cython cimport floating

from _common cimport gemm_rows


def matmul(const floating[:, ::1] a,      # IN  (m, k)
           const floating[:, ::1] b,      # IN  (k, n)
           floating[:, ::1] out,          # OUT (m, n)
           int nthreads):
    """out = a @ b on the kernels' GEMM, its rows in pieces over nthreads threads."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k:
        raise ValueError(f"b: expected {k} rows (a's columns), got {b.shape[0]}")
    if out.shape[0] != m or out.shape[1] != n:
        raise ValueError(f"out: expected shape ({m}, {n}), got ({out.shape[0]}, {out.shape[1]})")
    if nthreads < 1:
        raise ValueError(f"nthreads: expected at least 1, got {nthreads}")
    if m == 0 or n == 0:
        return
    if max(m, n, k) > 2 ** 31 - 1:
        raise ValueError(f"a, b: dimensions up to 2**31 - 1 supported, got ({m}, {k}) @ ({k}, {n})")
    with nogil:
        gemm_rows(nthreads, <int>m, <int>n, <int>k, &a[0, 0] if k else NULL, <int>k, NULL, NULL,
                  &b[0, 0] if k else NULL, <int>n, &out[0, 0], <int>n, NULL)
