# The GEMM kernel's packed-panel sizes (_smallgemm.h), generic over float/double.
from cython cimport floating

cdef extern from "_smallgemm.h" nogil:
    Py_ssize_t rk_small_sgemm_packed_size(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t rk_small_dgemm_packed_size(Py_ssize_t k, Py_ssize_t n)


cdef inline Py_ssize_t packed_size(const floating* like, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Values B (k x n) takes packed into whole panels (``like`` only selects the type)."""
    if floating is float:
        return rk_small_sgemm_packed_size(k, n)
    else:
        return rk_small_dgemm_packed_size(k, n)
