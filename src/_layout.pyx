"""Copies between the caller's layout and the kernels' packed, permuted one,
and the weight tiles packed into the GEMM kernel's panels.

ops.py decides where every row goes (index arrays built with NumPy, once per
call); these loops only move the rows.  NumPy's fancy indexing copies element
by element through its generic iterator: for a small variable-length batch
(T=100, B=32) packing x, packing dy, scattering the outputs and unpacking dx
cost about 0.4 ms per training step, as much as 4% of the step.  Here each row
is one memcpy, and copies of a megabyte or more are split over the threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from _blas cimport packed_size

cdef enum:
    # Below this many bytes a fork/join costs more than a second thread saves.
    PARALLEL_BYTES = 1 << 20


def take_rows(const floating[:, ::1] src,      # IN  (R, F)
              const Py_ssize_t[::1] index,     # IN  (M,) a row of src, or -1 for zeros
              floating[:, ::1] out,            # OUT (M, F)
              int nthreads):
    """out[i] = src[index[i]], or a zero row where index[i] < 0."""
    cdef Py_ssize_t M = index.shape[0], F = src.shape[1], R = src.shape[0], i, r
    if out.shape[0] != M or out.shape[1] != F:
        raise ValueError(f"out: expected shape ({M}, {F}), got ({out.shape[0]}, {out.shape[1]})")
    for i in range(M):
        if index[i] >= R:
            raise ValueError(f"index: row {index[i]} is out of range for {R} rows")
    if M == 0 or F == 0:
        return
    cdef size_t row_bytes = F * sizeof(floating)
    cdef int threads = nthreads if M * row_bytes >= PARALLEL_BYTES else 1
    cdef const floating* sp = &src[0, 0] if R else NULL
    cdef floating* op = &out[0, 0]
    cdef const Py_ssize_t* ip = &index[0]
    with nogil:
        for i in prange(M, num_threads=threads, schedule='static'):
            r = ip[i]
            if r >= 0:
                memcpy(op + i * F, sp + r * F, row_bytes)
            else:
                memset(op + i * F, 0, row_bytes)


def zero_rows(floating[:, ::1] out,              # IN/OUT (M, F)
              const Py_ssize_t[::1] rows,        # IN  rows of out to set to zero
              int nthreads):
    """out[rows] = 0 (the padding of outputs that the kernels write in place)."""
    cdef Py_ssize_t M = out.shape[0], F = out.shape[1], n = rows.shape[0], i
    for i in range(n):
        if rows[i] < 0 or rows[i] >= M:
            raise ValueError(f"rows: row {rows[i]} is out of range for {M} rows")
    if n == 0 or F == 0:
        return
    cdef size_t row_bytes = F * sizeof(floating)
    cdef int threads = nthreads if n * row_bytes >= PARALLEL_BYTES else 1
    cdef floating* op = &out[0, 0]
    cdef const Py_ssize_t* rp = &rows[0]
    with nogil:
        for i in prange(n, num_threads=threads, schedule='static'):
            memset(op + rp[i] * F, 0, row_bytes)


def panel_values(str dtype, Py_ssize_t k, Py_ssize_t n):
    """Values a (k x n) matrix takes in the kernels' packed panel layout
    (whole panels of NR columns; NR depends on the dtype and the vector width)."""
    if dtype == "float32":
        return packed_size(<float*>NULL, k, n)
    if dtype == "float64":
        return packed_size(<double*>NULL, k, n)
    raise TypeError(f"dtype: expected float32 or float64, got {dtype}")


def pack_panels(const floating[:, :] src,        # IN  (k, n), any strides
                floating[::1] out):              # OUT panel_values(k, n) values
    """out = src in the packed panel layout of _smallgemm.h: panel j holds
    columns j*NR .. j*NR+NR-1 as k rows of NR values, zeros past n."""
    cdef Py_ssize_t k = src.shape[0], n = src.shape[1], jp, j0, p, q, w
    cdef Py_ssize_t need = packed_size(<floating*>NULL, k, n)
    cdef Py_ssize_t nr = packed_size(<floating*>NULL, 1, 1)
    # Strides in elements, held in locals: indexing the memoryview reloaded
    # them at every element (the stores to out might alias them), 3x slower.
    cdef Py_ssize_t s0 = src.strides[0] // sizeof(floating), s1 = src.strides[1] // sizeof(floating)
    cdef const floating* base
    cdef const floating* col
    cdef floating* panel
    if out.shape[0] != need:
        raise ValueError(f"out: expected {need} values for a ({k}, {n}) matrix, got {out.shape[0]}")
    if need == 0:
        return
    base = &src[0, 0]
    if n % nr:  # the last panel's columns past n stay zero; the loop writes the rest
        out[(n // nr) * nr * k:] = 0
    with nogil:
        for jp in range((n + nr - 1) // nr):
            j0 = jp * nr
            w = min(nr, n - j0)
            panel = &out[jp * nr * k]
            # Walk the source along its contiguous axis: the forward tiles are
            # transposed views, whose columns are the weights' rows.
            if s0 >= s1:
                for p in range(k):
                    for q in range(w):
                        panel[p * nr + q] = base[p * s0 + (j0 + q) * s1]
            else:
                for q in range(w):
                    col = base + (j0 + q) * s1
                    for p in range(k):
                        panel[p * nr + q] = col[p * s0]
