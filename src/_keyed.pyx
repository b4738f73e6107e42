"""The uniforms of rnnkernels/_util/keyed_random.py, compiled: for each sample's
key and each element index, SplitMix64(key ^ element) -> its top 53 bits as a
double in [0, 1).  The same integer arithmetic as the NumPy version (which
stays the reference, tests/util/test_keyed_random.py), so the same bits; NumPy
needed ~10 passes over a zoneout mask's (T, B, H) elements, this one.

Layering: keyed_random.py chains the keys (seed, stream, draw, sample) in
NumPy (a few values per batch); only the per-element loop is here.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint64_t


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    z = z + <uint64_t>0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


def uniforms(const uint64_t[::1] ids,   # IN  (n,) each sample's key
             double[:, ::1] out,        # OUT (n, m) element j of sample i
             int threads):
    """out[i, j] = top 53 bits of SplitMix64(ids[i] ^ j), scaled to [0, 1)."""
    cdef Py_ssize_t n = out.shape[0], m = out.shape[1], i, j
    cdef double scale = 1.0 / 9007199254740992.0
    if ids.shape[0] != n:
        raise ValueError(f"ids: expected {n} keys (out's rows), got {ids.shape[0]}")
    if threads < 1:
        raise ValueError(f"threads: expected at least 1, got {threads}")
    with nogil:
        for i in prange(n, num_threads=threads, schedule='static'):
            for j in range(m):
                out[i, j] = <double>(_mix(ids[i] ^ <uint64_t>j) >> 11) * scale
