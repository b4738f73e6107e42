"""The uniforms and masks of rnnkernels/_util/keyed_random.py, compiled: for each
sample's key and each element index, SplitMix64(key ^ element) -> its top 53
bits as a double in [0, 1).  The same integer arithmetic as the NumPy version
(which stays the reference, tests/util/test_keyed_random.py), so the same bits
on every build.

Layering: keyed_random.py chains the keys (seed, stream, draw, sample) in
NumPy (a few values per batch) and allocates; this family (compiled once per
instruction set, as the kernels are) checks shapes and splits the samples over
threads; the per-element loops are C in src/_keyed.h, where they vectorise.
"""
from cython.parallel cimport prange
from libc.math cimport ceil
from libc.stdint cimport uint64_t


cdef extern from "_keyed.h" nogil:
    void rk_uniform_row(double* out, uint64_t key, uint64_t j0, Py_ssize_t m)
    void rk_mask_row_f(float* out, uint64_t key, uint64_t j0, Py_ssize_t m, uint64_t threshold,
                       float below, float above)
    void rk_mask_row_d(double* out, uint64_t key, uint64_t j0, Py_ssize_t m, uint64_t threshold,
                       double below, double above)


def _check(Py_ssize_t n_ids, Py_ssize_t n, int threads, str where):
    if n_ids != n:
        raise ValueError(f"ids: expected {n} keys ({where}), got {n_ids}")
    if threads < 1:
        raise ValueError(f"threads: expected at least 1, got {threads}")


def uniforms(const uint64_t[::1] ids,   # IN  (n,) each sample's key
             double[:, ::1] out,        # OUT (n, m) element j of sample i
             int threads):
    """out[i, j] = top 53 bits of SplitMix64(ids[i] ^ j), scaled to [0, 1)."""
    cdef Py_ssize_t n = out.shape[0], m = out.shape[1], i
    _check(ids.shape[0], n, threads, "out's rows")
    if n == 0 or m == 0:
        return
    with nogil:
        for i in prange(n, num_threads=threads, schedule='static'):
            rk_uniform_row(&out[i, 0], ids[i], 0, m)


ctypedef fused real:
    float
    double


def masks(const uint64_t[::1] ids,   # IN  (n,) each sample's key
          real[:, :, ::1] out,       # OUT (A, n, C) the mask, sample i in column i
          double rate, double below, double above, int threads):
    """out[a, i, c] = below if uniform(ids[i], a * C + c) < rate else above.

    The uniforms of :func:`uniforms` with the sample axis in the middle of the
    caller's shape (a zoneout mask's (T, B, H): A = T, C = H), thresholded and
    written in the caller's dtype in the same pass: no float64 array, no
    comparison pass, no strided copy."""
    cdef Py_ssize_t A = out.shape[0], n = out.shape[1], C = out.shape[2], i, a
    cdef uint64_t threshold
    _check(ids.shape[0], n, threads, "out's middle axis")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate!r}")
    if A == 0 or n == 0 or C == 0:
        return
    threshold = <uint64_t>ceil(rate * 9007199254740992.0)  # rate * 2**53 is exact
    with nogil:
        for i in prange(n, num_threads=threads, schedule='static'):
            for a in range(A):
                if real is float:
                    rk_mask_row_f(&out[a, i, 0], ids[i], <uint64_t>(a * C), C, threshold,
                                  <float>below, <float>above)
                else:
                    rk_mask_row_d(&out[a, i, 0], ids[i], <uint64_t>(a * C), C, threshold, below, above)
