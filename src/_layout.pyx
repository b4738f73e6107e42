"""The packed layout of a batch (plan_rows) and rows gathered by index.

ops.py decides where every row goes; these loops only compute the plan and
move the rows.  Nothing here depends on the CPU's vector width (the weights'
packing into the GEMM kernel's panels does: it lives in _kernels.pyx).
NumPy's fancy indexing copies element by element through its generic
iterator, and a dozen NumPy steps to plan a variable-length batch took a few
hundred microseconds of a small call.  The batch's own rows (x in, y and dX
out) are not copied here at all: the kernels read and write them in the
caller's padded layout through the plan's row maps (_recurrent_t.h), in
parallel and while they are in cache.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

import numpy as np

from _rows cimport check_rows as _check_rows, copy_threads as _copy_threads


def buffer_address(object a):
    """Address of the first byte of ``a``'s buffer (_memory.empty aligns its
    arrays with it)."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_SIMPLE)
    cdef size_t address = <size_t>view.buf
    PyBuffer_Release(&view)
    return address


def take_rows(const floating[:, ::1] src,      # IN  (R, F)
              const Py_ssize_t[::1] index,     # IN  (M,) a row of src, or -1 for zeros
              floating[:, ::1] out,            # OUT (M, F)
              int nthreads):
    """out[i] = src[index[i]], or a zero row where index[i] < 0."""
    cdef Py_ssize_t M = index.shape[0], F = src.shape[1], R = src.shape[0], i, r
    if out.shape[0] != M or out.shape[1] != F:
        raise ValueError(f"out: expected shape ({M}, {F}), got ({out.shape[0]}, {out.shape[1]})")
    _check_rows(index, R, "index", True)
    if M == 0 or F == 0:
        return
    cdef size_t row_bytes = F * sizeof(floating)
    cdef int threads = _copy_threads(M, row_bytes, nthreads)
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


def longest_first(const int64_t[::1] lengths, Py_ssize_t T):
    """Check that every length is in [0, T] and sort the sequences longest
    first, equal lengths in their order (a counting sort: lengths are at most
    T).  Returns (order, S = the longest length, N = sum of lengths, whether
    order is 0, 1, ..., B-1)."""
    cdef Py_ssize_t B = lengths.shape[0], b, t, lo = T, hi = 0, N = 0, S, pos
    cdef bint in_order = True
    for b in range(B):
        lo = min(lo, lengths[b])
        hi = max(hi, lengths[b])
        N += lengths[b]
        if b and lengths[b] > lengths[b - 1]:
            in_order = False
    if B and (lo < 0 or hi > T):
        raise ValueError(f"lengths: expected values in [0, {T}] (T={T}), got min {lo} max {hi}")
    S = hi if B else 0
    order_arr = np.empty(B, dtype=np.intp)
    cdef Py_ssize_t[::1] order = order_arr
    if in_order:
        for b in range(B):
            order[b] = b
        return order_arr, S, N, True
    # starts[S - l]: where the sequences of length l begin in order (longest first)
    starts_arr = np.zeros(S + 2, dtype=np.intp)
    cdef Py_ssize_t[::1] starts = starts_arr
    for b in range(B):
        starts[S - lengths[b] + 1] += 1
    for t in range(1, S + 2):
        starts[t] += starts[t - 1]
    for b in range(B):
        pos = starts[S - lengths[b]]
        order[pos] = b
        starts[S - lengths[b]] = pos + 1
    return order_arr, S, N, False


def plan_rows(const int64_t[::1] lengths,        # IN  (B,) each in [0, T]
              const Py_ssize_t[::1] order,       # IN  (B,) longest first
              Py_ssize_t[::1] counts,            # OUT (S,) sequences longer than s, S = max length
              Py_ssize_t[::1] offsets,           # OUT (S+1,) packed row where step s starts
              Py_ssize_t[::1] padded_of_packed,  # OUT (N,) row t*B + b of packed row p, N = sum(lengths);
                                                 #     or (0,): not wanted
              Py_ssize_t[::1] padding,           # OUT (T*B - N,) the rows t*B + b with t >= lengths[b], ascending
              Py_ssize_t T, bint reverse):
    """The packed layout of a variable-length batch (src/_recurrent_t.h), in one
    pass: as a dozen NumPy steps it took a few hundred microseconds of a
    small call inside a training loop.  Step s holds the counts[s] longest
    sequences, in ``order``; a reversed sequence is read back to front, its
    step s at time lengths[b] - 1 - s."""
    cdef Py_ssize_t B = lengths.shape[0], S = counts.shape[0], s, j, b, t, n = 0, k
    for j in range(B):
        if order[j] < 0 or order[j] >= B:
            raise ValueError(f"order: {order[j]} is out of range for {B} sequences")
        if lengths[order[j]] < 0 or lengths[order[j]] > S or \
                (j and lengths[order[j]] > lengths[order[j - 1]]):
            raise ValueError("lengths, order: expected lengths in [0, S] taken longest first")
        n += lengths[order[j]]
    if S > T or (B and lengths[order[0]] != S) or (not B and S):
        raise ValueError(f"counts: expected {lengths[order[0]] if B else 0} steps (at most T={T}), got {S}")
    if order.shape[0] != B or offsets.shape[0] != S + 1 or padding.shape[0] != T * B - n \
            or padded_of_packed.shape[0] not in (0, n):
        raise ValueError(f"order, offsets, padding, padded_of_packed: expected {B}, {S + 1}, {T * B - n} "
                         f"and {n} or 0 values, got {order.shape[0]}, {offsets.shape[0]}, "
                         f"{padding.shape[0]} and {padded_of_packed.shape[0]}")
    j = B
    offsets[0] = 0
    for s in range(S):
        while j > 0 and lengths[order[j - 1]] <= s:
            j -= 1
        counts[s] = j
        offsets[s + 1] = offsets[s] + j
    for s in range(S if padded_of_packed.shape[0] else 0):
        for j in range(counts[s]):
            b = order[j]
            t = lengths[b] - 1 - s if reverse else s
            padded_of_packed[offsets[s] + j] = t * B + b
    k = 0
    for t in range(T):
        for b in range(B):
            if t >= lengths[b]:
                padding[k] = t * B + b
                k += 1
