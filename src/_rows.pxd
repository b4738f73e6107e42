# Row-index checks and the copy threshold shared by the Cython modules that
# move rows (_layout, _kernels).

cdef enum:
    # Below this many bytes a fork/join costs more than a second thread saves.
    # The copies run between kernel calls, on data the kernels have just
    # pushed out to L3 or memory: they wait on misses, and two cores wait on
    # twice as many at once.
    PARALLEL_BYTES = 1 << 16


cdef inline int check_rows(const Py_ssize_t[::1] index, Py_ssize_t R, str name,
                           bint zeros_allowed) except -1:
    """Every index names one of R rows (or, where allowed, is negative: a zero row)."""
    cdef Py_ssize_t i
    for i in range(index.shape[0]):
        if index[i] >= R or (index[i] < 0 and not zeros_allowed):
            raise ValueError(f"{name}: row {index[i]} is out of range for {R} rows")
    return 0


cdef inline int copy_threads(Py_ssize_t rows, size_t row_bytes, int nthreads) noexcept nogil:
    return nthreads if rows * row_bytes >= PARALLEL_BYTES else 1
