"""The packed layout of a batch (plan_rows), rows gathered by index, and the
weight tiles packed into the GEMM kernel's panels.

ops.py decides where every row goes; these loops only compute the plan and
move the rows.  NumPy's fancy indexing copies element by element through its
generic iterator, and a dozen NumPy steps to plan a variable-length batch took
a few hundred microseconds of a small call.  The batch's own rows (x in, y and
dX out) are not copied here at all: the kernels read and write them in the
caller's padded layout through the plan's row map (_common.pxd's gemm_rows,
store_y_row, zero_rows), in parallel and while they are in cache.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

import numpy as np

from _blas cimport packed_size
from _common cimport tile_start

cdef enum:
    # Below this many bytes a fork/join costs more than a second thread saves.
    # The copies here run between kernel calls, on data the kernels have just
    # pushed out to L3 or memory: they wait on misses, and two cores wait on
    # twice as many at once.
    PARALLEL_BYTES = 1 << 16


cdef int _check_rows(const Py_ssize_t[::1] index, Py_ssize_t R, str name, bint zeros_allowed) except -1:
    """Every index names one of R rows (or, where allowed, is negative: a zero row)."""
    cdef Py_ssize_t i
    for i in range(index.shape[0]):
        if index[i] >= R or (index[i] < 0 and not zeros_allowed):
            raise ValueError(f"{name}: row {index[i]} is out of range for {R} rows")
    return 0


cdef inline int _copy_threads(Py_ssize_t rows, size_t row_bytes, int nthreads) noexcept nogil:
    return nthreads if rows * row_bytes >= PARALLEL_BYTES else 1


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
    """The packed layout of a variable-length batch (see _lstm.pyx), in one
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


def panel_values(str dtype, Py_ssize_t k, Py_ssize_t n):
    """Values a (k x n) matrix takes in the kernels' packed panel layout
    (whole panels of NR columns; NR depends on the dtype and the vector width)."""
    if dtype == "float32":
        return packed_size(<float*>NULL, k, n)
    if dtype == "float64":
        return packed_size(<double*>NULL, k, n)
    raise TypeError(f"dtype: expected float32 or float64, got {dtype}")


cdef void _pack_block(const floating* w, const Py_ssize_t* rows,  # IN  W = w[rows] (rows NULL: w)
                      Py_ssize_t C, Py_ssize_t k, Py_ssize_t b0, Py_ssize_t width, bint row_blocks,
                      floating* out) noexcept nogil:                  # OUT packed_size(k, width) values
    """Block W[b0:b0+width].T (row_blocks) or W[:, b0:b0+width], k x width, in
    the packed panel layout of _smallgemm.h: panel j holds columns j*NR ..
    j*NR+NR-1 as k rows of NR values, zeros past width."""
    cdef Py_ssize_t nr = packed_size(<floating*>NULL, 1, 1), jp, j0, p, q, wd, r
    cdef const floating* srcs[64]  # a panel's source rows (NR <= 32)
    cdef floating* panel
    if width % nr:  # the last panel's columns past width stay zero; the loops write the rest
        memset(out + (width // nr) * nr * k, 0, nr * k * sizeof(floating))
    for jp in range((width + nr - 1) // nr):
        j0 = jp * nr
        wd = min(nr, width - j0)
        panel = out + jp * nr * k
        if row_blocks:  # column q of the panel is a row of W, contiguous in w
            for q in range(wd):
                r = b0 + j0 + q
                srcs[q] = w + (rows[r] if rows != NULL else r) * C
            # Write the panel in order, reading NR rows at once.  Walking a
            # column at a time instead wrote one value per 64-byte line, k
            # lines apart: several times slower, the lines falling into a few L1 sets.
            for p in range(k):
                for q in range(wd):
                    panel[p * nr + q] = srcs[q][p]
        else:  # row p of the panel is part of row p of W
            for p in range(k):
                r = rows[p] if rows != NULL else p
                memcpy(panel + p * nr, w + r * C + b0 + j0, wd * sizeof(floating))


def blocks_values(str dtype, Py_ssize_t k, const Py_ssize_t[::1] bounds):
    """Values that pack_blocks writes: blocks of k rows and bounds[j+1] -
    bounds[j] columns, each padded to whole panels."""
    cdef Py_ssize_t j, total = 0
    if dtype != "float32" and dtype != "float64":
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    for j in range(bounds.shape[0] - 1):
        if dtype == "float32":
            total += packed_size(<float*>NULL, k, bounds[j + 1] - bounds[j])
        else:
            total += packed_size(<double*>NULL, k, bounds[j + 1] - bounds[j])
    return total


def pack_blocks(const floating[:, ::1] w,        # IN  (R, C)
                const Py_ssize_t[::1] rows,      # IN  (R,) row of w to read for each row, or (0,)
                const Py_ssize_t[::1] bounds,    # IN  (nblocks+1,) increasing block bounds
                bint row_blocks,
                floating[::1] out,               # OUT blocks_values(...) values
                int nthreads):
    """Blocks of W = w[rows] packed one after the other, as the kernels'
    weight tiles (tile_start in _common.pxd finds block j by adding up the
    same sizes).  With row_blocks, block j is W[bounds[j]:bounds[j+1]].T
    (C x width: the forward tiles); otherwise W[:, bounds[j]:bounds[j+1]]
    (R x width: the backward ones).  Reading w through ``rows`` (the tile
    permutation) spares a permuted copy of the weights, and one call does
    every tile: a call per tile cost more in Python than the copying (a small
    LSTM's weights took longer to prepare than to use).

    The blocks are packed in parallel: inside a training loop the weights
    and the output come from L3 or memory, the copy waits on misses, and two
    cores wait on twice as many at once."""
    cdef Py_ssize_t R = w.shape[0], C = w.shape[1], nb = bounds.shape[0] - 1, j
    cdef Py_ssize_t extent = R if row_blocks else C, k = C if row_blocks else R
    cdef Py_ssize_t need = 0, start, width
    if rows.shape[0] not in (0, R):
        raise ValueError(f"rows: expected {R} row indices or none, got {rows.shape[0]}")
    _check_rows(rows, R, "rows", False)
    for j in range(nb):
        if bounds[j] < 0 or bounds[j + 1] < bounds[j] or bounds[j + 1] > extent:
            raise ValueError(f"bounds: expected increasing values in [0, {extent}], "
                             f"got {bounds[j]}, {bounds[j + 1]} at block {j}")
        need += packed_size(<floating*>NULL, k, bounds[j + 1] - bounds[j])
    if out.shape[0] != need:
        raise ValueError(f"out: expected {need} values for {nb} blocks, got {out.shape[0]}")
    if need == 0:
        return
    cdef const floating* wp = &w[0, 0]
    cdef const Py_ssize_t* rp = &rows[0] if rows.shape[0] else NULL
    cdef floating* op = &out[0]
    with nogil:
        for j in prange(nb, num_threads=_copy_threads(1, need * sizeof(floating), nthreads),
                        schedule='static'):
            # where block j starts: the same sum the kernels' tile_start does
            start = tile_start(op, &bounds[0], j, k, 1)
            width = bounds[j + 1] - bounds[j]
            _pack_block(wp, rp, C, k, bounds[j], width, row_blocks, op + start)


def permute_input_weights(const floating[:, ::1] w_ih,    # IN  (G, I) PyTorch order
                          const Py_ssize_t[::1] colmap,   # IN  (G,) source row of each permuted row
                          floating[:, ::1] w_ih_t,        # OUT (I, G) rows in tile order, transposed
                          floating[:, ::1] w_ih_p,        # OUT (G, I) rows in tile order, or (0, I)
                          int nthreads):
    """The permuted input weights: transposed for the input projection, and
    (training only) as rows for dX, in one pass, in parallel over blocks of
    rows (see pack_blocks)."""
    cdef Py_ssize_t G = w_ih.shape[0], I = w_ih.shape[1], r, r0, r1, i, blk
    cdef bint rows_too = w_ih_p.shape[0] != 0
    if colmap.shape[0] != G:
        raise ValueError(f"colmap: expected {G} rows, got {colmap.shape[0]}")
    if (w_ih_t.shape[0], w_ih_t.shape[1]) != (I, G) or \
            (rows_too and (w_ih_p.shape[0], w_ih_p.shape[1]) != (G, I)):
        raise ValueError(f"w_ih_t, w_ih_p: expected shapes ({I}, {G}) and ({G}, {I}) or (0, {I})")
    _check_rows(colmap, G, "colmap", False)
    if G == 0 or I == 0:
        return
    cdef const floating* ih = &w_ih[0, 0]
    cdef floating* iht = &w_ih_t[0, 0]
    cdef floating* ihp = &w_ih_p[0, 0] if rows_too else NULL
    cdef const Py_ssize_t* cm = &colmap[0]
    with nogil:
        # The transpose by blocks of 16 rows, so that each store fills a whole
        # line: a row at a time stored I values G apart, which at G = 2048
        # floats all fell into one L1 set.
        for blk in prange((G + 15) // 16, num_threads=_copy_threads(G, I * sizeof(floating), nthreads),
                          schedule='static'):
            r0 = blk * 16
            r1 = min(r0 + 16, G)
            if rows_too:
                for r in range(r0, r1):
                    memcpy(ihp + r * I, ih + cm[r] * I, I * sizeof(floating))
            for i in range(I):
                for r in range(r0, r1):
                    iht[i * G + r] = ih[cm[r] * I + i]
