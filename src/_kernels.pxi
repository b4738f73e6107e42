# The compiled kernels: every cell's forward and backward through time (one
# skeleton, src/_recurrent_t.h), the weights' packing into the GEMM kernel's
# panels, and the GEMM itself as a plain product.
#
# Layering: rnnkernels/ops.py validates the caller's arguments and allocates
# every buffer; rnnkernels/_core plans the packed layout and permutes the
# weights (with pack_blocks and permute_input_weights below); this module
# checks every buffer it is handed against the call's sizes (a wrong buffer is
# a ValueError here, never a write out of bounds) and fills the call
# description (rk_forward / rk_backward) that the C skeleton runs, without the
# GIL; the skeleton computes, calling the cells' point updates (src/_cells.h).
#
# Everything here depends on the CPU's vector width (the GEMM kernel's panels),
# so this source is compiled once per instruction set: setup.py generates a
# module _kernels_<isa> that includes it, and rnnkernels/_core/isa.py loads
# the widest one the CPU runs.  (Hence a .pxi: an included file, not a module.)

from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

import numpy as np

from _smallgemm cimport packed_size
from _rows cimport check_rows as _check_rows, copy_threads as _copy_threads

cdef extern from "_recurrent.h" nogil:
    ctypedef struct rk_forward:
        int dtype, cell, nthreads, step_threads
        Py_ssize_t solo_from
        int rows
        Py_ssize_t S, N, B, I, H, P
        const Py_ssize_t* counts
        const Py_ssize_t* offsets
        const Py_ssize_t* tiles
        Py_ssize_t ntiles
        const Py_ssize_t* ptiles
        Py_ssize_t nptiles
        const void* x
        const Py_ssize_t* x_rows
        void* xp
        const void* w_ih_t
        const void* w_fwd
        const Py_ssize_t* w_fwd_starts
        const void* w_hr_fwd
        const Py_ssize_t* w_hr_fwd_starts
        const void* bias
        const void* b_hn
        const void* b_hh
        const void* peep
        const void* mask
        const void* zh
        const void* zc
        double zh_rate, zc_rate
        void* h
        void* c
        void* hm
        void* gates
        int step_gates
        void* aux
        void* gh
        void* m
        void* ctilde
        const void* gamma_ih
        const void* gamma_hh
        const void* gamma_c
        const void* beta_c
        void* x_hat
        void* rec_hat
        void* c_hat
        void* rstd
        void* rec
        void* y
        const Py_ssize_t* y_rows
        const Py_ssize_t* padding
        Py_ssize_t npadding
        const void* w_ih_fwd
        const Py_ssize_t* w_ih_fwd_starts
        int team

    ctypedef struct rk_backward:
        int dtype, cell, nthreads, step_threads, wgrad_pieces
        Py_ssize_t solo_from
        int rows
        Py_ssize_t S, N, B, I, H, P
        const Py_ssize_t* counts
        const Py_ssize_t* offsets
        const Py_ssize_t* tiles
        Py_ssize_t ntiles
        const Py_ssize_t* ptiles
        Py_ssize_t nptiles
        const void* x
        const void* w_ih
        const void* w_bwd
        const void* w_bwd_n
        const Py_ssize_t* w_bwd_starts
        const void* w_hr_bwd
        const Py_ssize_t* w_hr_bwd_starts
        const void* peep
        const void* mask
        const void* zh
        const void* zc
        double zh_rate, zc_rate
        const void* h
        const void* c
        const void* hm
        const void* gates
        const void* aux
        const void* m
        const void* ctilde
        const void* gamma_ih
        const void* gamma_hh
        const void* gamma_c
        const void* beta_c
        const void* x_hat
        const void* rec_hat
        const void* c_hat
        const void* rstd
        const void* dy
        const Py_ssize_t* dy_rows
        void* dh
        void* dc
        void* dgates
        void* dgh
        void* drh
        void* dhp
        void* drec
        void* drec_x
        void* dx
        const Py_ssize_t* dx_rows
        const Py_ssize_t* padding
        Py_ssize_t npadding
        void* dw_ih
        void* dw_hh
        void* dw_hn
        void* dw_hr
        void* db
        void* db_hh
        void* dpeep
        void* dgamma_ih
        void* dgamma_hh
        void* dgamma_c
        void* dbeta_c
        int team

    void rk_run_forward(rk_forward* p)
    void rk_run_backward(rk_backward* p)
    int rk_cell_count()
    const char* rk_cell_name(int k)
    int rk_cell_gates(int k)
    int rk_cell_flags(int k)
    void rk_small_sgemm_pack_b(Py_ssize_t k, Py_ssize_t n, const float* b, Py_ssize_t ldb, float* out)
    void rk_small_dgemm_pack_b(Py_ssize_t k, Py_ssize_t n, const double* b, Py_ssize_t ldb, double* out)
    void rk_gemm_rows_f "rk_gemm_rows_f"(int nthreads, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t k,
                                         const float* a, Py_ssize_t lda, const Py_ssize_t* a_rows,
                                         float* a_packed, const float* b, Py_ssize_t ldb, float* c,
                                         Py_ssize_t ldc, const Py_ssize_t* c_rows)
    void rk_gemm_rows_d "rk_gemm_rows_d"(int nthreads, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t k,
                                         const double* a, Py_ssize_t lda, const Py_ssize_t* a_rows,
                                         double* a_packed, const double* b, Py_ssize_t ldb, double* c,
                                         Py_ssize_t ldc, const Py_ssize_t* c_rows)

cdef enum:
    RK_SEPARATE = 1
    RK_TWO_PHASE = 2
    RK_CELL_STATE = 4
    RK_CARRY = 8
    RK_ROWS = 16


def cells():
    """The kernel cell table: [(name, gates, flags)] by index (src/_cells.h)."""
    return [(rk_cell_name(k).decode(), rk_cell_gates(k), rk_cell_flags(k)) for k in range(rk_cell_count())]


# ------------------------------------------------------------ the buffers
cdef class _Buffers:
    """The checked addresses of one call's buffers (a name -> array dict).
    Each buffer is checked for its element size, C-contiguity, element count
    and, for outputs, writability; an array missing from the dict (or None)
    is NULL.  The arrays themselves stay alive in the caller's dict."""
    cdef dict arrays
    cdef int itemsize

    def __cinit__(self, dict arrays, int itemsize):
        self.arrays = arrays
        self.itemsize = itemsize

    cdef void* get(self, str name, Py_ssize_t count, bint writable=False, int itemsize=0) except? NULL:
        cdef Py_buffer view
        cdef void* address
        a = self.arrays.get(name)
        if a is None:
            return NULL
        try:
            PyObject_GetBuffer(a, &view, (PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) if writable else PyBUF_C_CONTIGUOUS)
        except (BufferError, ValueError) as exc:
            raise ValueError(f"{name}: expected a C-contiguous{' writable' if writable else ''} buffer "
                             f"({exc})") from None
        address = view.buf
        try:
            if view.itemsize != (itemsize or self.itemsize):
                raise ValueError(f"{name}: expected elements of {itemsize or self.itemsize} bytes, "
                                 f"got {view.itemsize}")
            if count >= 0 and view.len != count * view.itemsize:
                raise ValueError(f"{name}: expected {count} values, got {view.len // view.itemsize}")
        finally:
            PyBuffer_Release(&view)
        if address == NULL and count != 0:
            raise ValueError(f"{name}: expected {count} values, got none")
        return address

    cdef const Py_ssize_t* index(self, str name, Py_ssize_t count, Py_ssize_t bound) except? NULL:
        """An index array of ``count`` entries, each in [0, bound)."""
        cdef const Py_ssize_t[::1] v
        cdef Py_ssize_t i
        a = self.arrays.get(name)
        if a is None:
            return NULL
        v = a
        if v.shape[0] != count:
            raise ValueError(f"{name}: expected {count} indices, got {v.shape[0]}")
        for i in range(count):
            if v[i] < 0 or v[i] >= bound:
                raise ValueError(f"{name}: index {v[i]} out of range for {bound} rows")
        return &v[0] if count else NULL

    cdef int values(self, str name) except -1:
        """How many elements the array ``name`` holds (0 when it is missing)."""
        a = self.arrays.get(name)
        return 0 if a is None else a.size


cdef int _check_plan(const Py_ssize_t[::1] counts, const Py_ssize_t[::1] offsets, Py_ssize_t B,
                     Py_ssize_t N) except -1:
    """counts non-increasing in [1, B], offsets their running sum ending at N."""
    cdef Py_ssize_t s, S = counts.shape[0]
    if offsets.shape[0] != S + 1 or (S and offsets[0] != 0):
        raise ValueError(f"offsets: expected {S + 1} values starting at 0, got {offsets.shape[0]}")
    for s in range(S):
        if counts[s] < 1 or counts[s] > B or (s and counts[s] > counts[s - 1]):
            raise ValueError(f"counts: expected non-increasing values in [1, {B}], got {counts[s]} at step {s}")
        if offsets[s + 1] != offsets[s] + counts[s]:
            raise ValueError(f"offsets: expected offsets[{s + 1}] = {offsets[s] + counts[s]}, got {offsets[s + 1]}")
    if S and offsets[S] != N:
        raise ValueError(f"offsets: expected {N} packed rows in all, got {offsets[S]}")
    return 0


cdef int _check_bounds(const Py_ssize_t[::1] bounds, Py_ssize_t extent, str name) except -1:
    cdef Py_ssize_t k
    if bounds.shape[0] < 2 or bounds[0] != 0 or bounds[bounds.shape[0] - 1] != extent:
        raise ValueError(f"{name}: expected bounds from 0 to {extent}")
    for k in range(bounds.shape[0] - 1):
        if bounds[k + 1] <= bounds[k]:
            raise ValueError(f"{name}: expected increasing bounds, got {bounds[k]}, {bounds[k + 1]}")
    return 0


cdef int _cell_of(int cell) except -1:
    if cell < 0 or cell >= rk_cell_count():
        raise ValueError(f"cell: expected an index in [0, {rk_cell_count()}), got {cell}")
    return 0


def forward(dict a, int cell, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
            int nthreads, int step_threads, double zh_rate=-1.0, double zc_rate=-1.0,
            Py_ssize_t solo_from=-1):
    """One forward call of kernel cell ``cell`` (cells()) over the packed batch
    ``a`` describes (its names: rk_forward's fields, src/_recurrent.h).
    Steps from ``solo_from`` on (none when negative) run on the calling thread
    alone.  Returns the threads the time loop ran on."""
    cdef rk_forward p
    cdef const Py_ssize_t[::1] counts = a["counts"]
    cdef const Py_ssize_t[::1] offsets = a["offsets"]
    cdef const Py_ssize_t[::1] tiles = a["tiles"]
    cdef const Py_ssize_t[::1] ptiles
    cdef const Py_ssize_t[::1] fstarts = a["w_fwd_starts"]
    cdef const Py_ssize_t[::1] istarts
    cdef const Py_ssize_t[::1] pstarts
    cdef Py_ssize_t S = counts.shape[0], G, GH, N, R, Ry
    _cell_of(cell)
    G = rk_cell_gates(cell)
    GH = G * H
    step_gates = bool(a.get("step_gates"))
    if not step_gates:
        N = a["gates"].shape[0]
    elif offsets.shape[0] == S + 1:
        N = offsets[S] if S else 0
    else:
        raise ValueError(f"offsets: expected {S + 1} values starting at 0, got {offsets.shape[0]}")
    memset(&p, 0, sizeof(p))
    cdef _Buffers buf = _Buffers(a, a["h"].dtype.itemsize)
    _check_plan(counts, offsets, B, N)
    _check_bounds(tiles, H, "tiles")
    p.dtype, p.cell, p.nthreads, p.step_threads = buf.itemsize, cell, max(1, nthreads), max(1, step_threads)
    p.solo_from = S if solo_from < 0 or solo_from > S else solo_from
    p.rows = 1 if a.get("rows") else 0
    p.S, p.N, p.B, p.I, p.H, p.P = S, N, B, I, H, P
    p.counts = &counts[0] if S else NULL
    p.offsets = &offsets[0]
    p.tiles = &tiles[0]
    p.ntiles = tiles.shape[0] - 1
    if a.get("ptiles") is not None:
        ptiles = a["ptiles"]
        _check_bounds(ptiles, P, "ptiles")
        p.ptiles = &ptiles[0]
        p.nptiles = ptiles.shape[0] - 1
    R = a["x"].shape[0]
    p.x = buf.get("x", R * I)
    p.x_rows = buf.index("x_rows", N, R)
    if p.x_rows == NULL and R != N:
        raise ValueError(f"x: expected {N} packed rows, got {R}")
    p.xp = buf.get("xp", N * I if p.x_rows != NULL else 0, True)
    if a.get("w_ih_fwd") is None:
        p.w_ih_t = buf.get("w_ih_t", I * GH)   # the input projection pass reads it
    else:
        istarts = a["w_ih_fwd_starts"]
        if istarts.shape[0] != p.ntiles + 1:
            raise ValueError(f"w_ih_fwd_starts: expected a block start for each of the {p.ntiles} tiles")
        p.w_ih_fwd = buf.get("w_ih_fwd", istarts[p.ntiles])
        p.w_ih_fwd_starts = &istarts[0]
        if p.x_rows != NULL and p.xp == NULL:
            raise ValueError("xp: the input side inside the steps reads the gathered rows")
    p.w_fwd = buf.get("w_fwd", fstarts[fstarts.shape[0] - 1])
    p.w_fwd_starts = &fstarts[0]
    if fstarts.shape[0] - 1 != (2 if rk_cell_flags(cell) & (RK_SEPARATE | RK_TWO_PHASE) else 1) * p.ntiles:
        raise ValueError(f"w_fwd_starts: expected a block start for each of the {p.ntiles} tiles' blocks")
    if a.get("w_hr_fwd") is not None:
        pstarts = a["w_hr_fwd_starts"]
        if p.ptiles == NULL or pstarts.shape[0] != p.nptiles + 1:
            raise ValueError("w_hr_fwd_starts: expected a block start for each projection tile")
        p.w_hr_fwd = buf.get("w_hr_fwd", pstarts[pstarts.shape[0] - 1])
        p.w_hr_fwd_starts = &pstarts[0]
        p.m = buf.get("m", N * H, True)
    p.bias = buf.get("bias", GH)
    p.b_hn = buf.get("b_hn", H)
    p.b_hh = buf.get("b_hh", GH)
    p.peep = buf.get("peep", 3 * H)
    p.mask = buf.get("mask", B * P)
    p.zh = buf.get("zh", N * P)
    p.zc = buf.get("zc", N * H)
    p.zh_rate, p.zc_rate = (-1.0 if p.zh != NULL else zh_rate), (-1.0 if p.zc != NULL else zc_rate)
    p.h = buf.get("h", (N + B) * P, True)
    p.c = buf.get("c", (N + B) * H, True)
    p.hm = buf.get("hm", (N + B) * P, True)
    if (p.mask == NULL) != (p.hm == NULL):
        raise ValueError("mask, hm: a recurrent mask needs its masked-state buffer, and only then")
    if (rk_cell_flags(cell) & RK_CELL_STATE) and p.c == NULL:
        raise ValueError("c: this cell needs a cell-state buffer")
    p.step_gates = step_gates
    p.gates = buf.get("gates", (B if step_gates else N) * GH, True)
    if step_gates and (p.w_ih_fwd == NULL or rk_cell_flags(cell) & RK_ROWS):
        raise ValueError("step_gates: one step's gates need the input side inside the steps (w_ih_fwd) "
                         "and a cell without LayerNorm")
    p.aux = buf.get("aux", (B if step_gates else N) * H, True)
    p.gh = buf.get("gh", B * GH, True)
    p.ctilde = buf.get("ctilde", N * H, True)
    if (p.zc != NULL or p.zc_rate >= 0) and p.ctilde == NULL:
        raise ValueError("ctilde: zoneout of c needs the c~ buffer")
    if rk_cell_flags(cell) & RK_SEPARATE and (p.gh == NULL or p.aux == NULL or p.b_hn == NULL):
        raise ValueError("gh, aux, b_hn: the GRU needs its recurrent scratch, aux buffer and b_hn")
    if rk_cell_flags(cell) & RK_TWO_PHASE and p.aux == NULL:
        raise ValueError("aux: the GRU before the reset needs its r * h buffer")
    if rk_cell_flags(cell) & RK_ROWS:
        p.gamma_ih = buf.get("gamma_ih", GH)
        p.gamma_hh = buf.get("gamma_hh", GH)
        p.gamma_c = buf.get("gamma_c", H)
        p.beta_c = buf.get("beta_c", H)
        p.x_hat = buf.get("x_hat", N * GH, True)
        p.rec_hat = buf.get("rec_hat", N * GH, True)
        p.c_hat = buf.get("c_hat", N * H, True)
        p.rstd = buf.get("rstd", N * 3, True)
        p.rec = buf.get("rec", B * GH, True)
        if p.gamma_ih == NULL or p.gamma_hh == NULL or p.x_hat == NULL or p.rec_hat == NULL \
                or p.rstd == NULL or p.rec == NULL or (rk_cell_flags(cell) & RK_CELL_STATE and (
                    p.gamma_c == NULL or p.beta_c == NULL or p.c_hat == NULL)):
            raise ValueError("gamma_ih, gamma_hh, ...: the LayerNorm cells need every LayerNorm buffer")
        if not rk_cell_flags(cell) & RK_CELL_STATE and (p.aux == NULL or p.b_hh == NULL):
            raise ValueError("aux, b_hh: the LayerNorm GRU needs its aux buffer and b_hh")
    if a.get("y") is not None:
        Ry = a["y"].shape[0]
        p.y = buf.get("y", Ry * P, True)
        p.y_rows = buf.index("y_rows", N, Ry)
        p.padding = buf.index("padding", Ry - N, Ry)
        p.npadding = Ry - N
    with nogil:
        rk_run_forward(&p)
    if p.team < 0:
        raise MemoryError("the kernel could not allocate its work buffers")
    return p.team


def backward(dict a, int cell, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
             int nthreads, int step_threads, int wgrad_pieces, double zh_rate=-1.0, double zc_rate=-1.0,
             Py_ssize_t solo_from=-1):
    """The backward call matching forward's (same names; the gradients are
    rk_backward's fields).  Returns the threads the time loop ran on."""
    cdef rk_backward p
    cdef const Py_ssize_t[::1] counts = a["counts"]
    cdef const Py_ssize_t[::1] offsets = a["offsets"]
    cdef const Py_ssize_t[::1] tiles = a["tiles"]
    cdef const Py_ssize_t[::1] ptiles
    cdef const Py_ssize_t[::1] bstarts = a["w_bwd_starts"]
    cdef const Py_ssize_t[::1] hstarts
    cdef Py_ssize_t S = counts.shape[0], G, GH, N, R, nwb
    _cell_of(cell)
    if wgrad_pieces < 1:
        raise ValueError(f"wgrad_pieces: expected at least 1, got {wgrad_pieces}")
    G = rk_cell_gates(cell)
    GH = G * H
    N = a["gates"].shape[0]
    memset(&p, 0, sizeof(p))
    cdef _Buffers buf = _Buffers(a, a["h"].dtype.itemsize)
    _check_plan(counts, offsets, B, N)
    _check_bounds(tiles, H, "tiles")
    p.dtype, p.cell, p.nthreads, p.step_threads = buf.itemsize, cell, max(1, nthreads), max(1, step_threads)
    p.solo_from = S if solo_from < 0 or solo_from > S else solo_from
    p.rows = 1 if a.get("rows") else 0
    p.wgrad_pieces = wgrad_pieces
    p.S, p.N, p.B, p.I, p.H, p.P = S, N, B, I, H, P
    p.counts = &counts[0] if S else NULL
    p.offsets = &offsets[0]
    p.tiles = &tiles[0]
    p.ntiles = tiles.shape[0] - 1
    if a.get("ptiles") is not None:
        ptiles = a["ptiles"]
        _check_bounds(ptiles, P, "ptiles")
        p.ptiles = &ptiles[0]
        p.nptiles = ptiles.shape[0] - 1
    p.x = buf.get("x", N * I)
    p.w_ih = buf.get("w_ih", GH * I)
    nwb = p.nptiles if a.get("w_hr_bwd") is not None else p.ntiles
    if rk_cell_flags(cell) & RK_ROWS:
        nwb = 1
    if bstarts.shape[0] != nwb + 1:
        raise ValueError(f"w_bwd_starts: expected {nwb + 1} block starts, got {bstarts.shape[0]}")
    p.w_bwd = buf.get("w_bwd", bstarts[nwb])
    p.w_bwd_n = buf.get("w_bwd_n", bstarts[nwb])
    p.w_bwd_starts = &bstarts[0]
    if rk_cell_flags(cell) & RK_TWO_PHASE and p.w_bwd_n == NULL:
        raise ValueError("w_bwd_n: the GRU before the reset needs W_hn's backward tiles")
    if a.get("w_hr_bwd") is not None:
        hstarts = a["w_hr_bwd_starts"]
        if p.ptiles == NULL or hstarts.shape[0] != p.ntiles + 1:
            raise ValueError("w_hr_bwd_starts: expected a block start for each tile")
        p.w_hr_bwd = buf.get("w_hr_bwd", hstarts[p.ntiles])
        p.w_hr_bwd_starts = &hstarts[0]
        p.m = buf.get("m", N * H)
        p.dhp = buf.get("dhp", N * P, True)
        p.dw_hr = buf.get("dw_hr", P * H, True)
        if p.m == NULL or p.dhp == NULL or p.dw_hr == NULL:
            raise ValueError("m, dhp, dw_hr: a projecting LSTM's backward needs them")
    p.peep = buf.get("peep", 3 * H)
    p.dpeep = buf.get("dpeep", 3 * H, True)
    if (p.peep == NULL) != (p.dpeep == NULL):
        raise ValueError("peep, dpeep: the peephole weights and their gradient go together")
    p.mask = buf.get("mask", B * P)
    p.zh = buf.get("zh", N * P)
    p.zc = buf.get("zc", N * H)
    p.zh_rate, p.zc_rate = (-1.0 if p.zh != NULL else zh_rate), (-1.0 if p.zc != NULL else zc_rate)
    p.h = buf.get("h", (N + B) * P)
    p.c = buf.get("c", (N + B) * H)
    p.hm = buf.get("hm", (N + B) * P)
    if (p.mask == NULL) != (p.hm == NULL):
        raise ValueError("mask, hm: a recurrent mask needs its masked states, and only then")
    p.gates = buf.get("gates", N * GH)
    p.aux = buf.get("aux", N * H)
    p.ctilde = buf.get("ctilde", N * H)
    if (p.zc != NULL or p.zc_rate >= 0) and p.ctilde == NULL:
        raise ValueError("ctilde: zoneout of c needs the c~ buffer")
    if a.get("dy") is not None:
        R = a["dy"].shape[0]
        p.dy = buf.get("dy", R * P)
        p.dy_rows = buf.index("dy_rows", N, R)
        if p.dy_rows == NULL and R != N:
            raise ValueError(f"dy: expected {N} packed rows, got {R}")
    p.dh = buf.get("dh", B * P, True)
    p.dc = buf.get("dc", B * H, True)
    if (rk_cell_flags(cell) & RK_CELL_STATE) and (p.c == NULL or p.dc == NULL):
        raise ValueError("c, dc: this cell needs its cell states and their gradient")
    p.dgates = buf.get("dgates", N * GH, True)
    p.dgh = buf.get("dgh", 2 * B * GH, True)
    p.drh = buf.get("drh", B * H, True)
    if rk_cell_flags(cell) & RK_SEPARATE and (p.dgh == NULL or p.aux == NULL):
        raise ValueError("dgh, aux: the GRU's backward needs its ring and aux buffer")
    if rk_cell_flags(cell) & RK_TWO_PHASE and (p.drh == NULL or p.aux == NULL):
        raise ValueError("drh, aux: the GRU before the reset needs its scratch and aux buffer")
    if a.get("dx") is not None:  # else no input gradient: the dX GEMM does not run
        R = a["dx"].shape[0]
        p.dx = buf.get("dx", R * I, True)
        p.dx_rows = buf.index("dx_rows", N, R)
        if p.dx_rows == NULL and R != N:
            raise ValueError(f"dx: expected {N} packed rows, got {R}")
        p.padding = buf.index("padding", R - N, R)
        p.npadding = R - N
    p.dw_ih = buf.get("dw_ih", GH * I, True)
    p.dw_hh = buf.get("dw_hh", GH * P, True)
    p.dw_hn = buf.get("dw_hn", GH * H, True)
    p.db = buf.get("db", GH, True)
    p.db_hh = buf.get("db_hh", GH, True)
    if rk_cell_flags(cell) & RK_TWO_PHASE and p.dw_hn == NULL:
        raise ValueError("dw_hn: the GRU before the reset needs W_hn's gradient buffer")
    if rk_cell_flags(cell) & (RK_SEPARATE | RK_ROWS) and not rk_cell_flags(cell) & RK_CELL_STATE \
            and p.db_hh == NULL:
        raise ValueError("db_hh: the GRU needs its recurrent bias gradient")
    if rk_cell_flags(cell) & RK_ROWS:
        p.gamma_ih = buf.get("gamma_ih", GH)
        p.gamma_hh = buf.get("gamma_hh", GH)
        p.gamma_c = buf.get("gamma_c", H)
        p.beta_c = buf.get("beta_c", H)
        p.x_hat = buf.get("x_hat", N * GH)
        p.rec_hat = buf.get("rec_hat", N * GH)
        p.c_hat = buf.get("c_hat", N * H)
        p.rstd = buf.get("rstd", N * 3)
        p.drec = buf.get("drec", N * GH, True)
        p.drec_x = buf.get("drec_x", N * GH, True)
        p.dgamma_ih = buf.get("dgamma_ih", GH, True)
        p.dgamma_hh = buf.get("dgamma_hh", GH, True)
        p.dgamma_c = buf.get("dgamma_c", H, True)
        p.dbeta_c = buf.get("dbeta_c", H, True)
        if p.drec == NULL or p.drec_x == NULL or p.dgamma_ih == NULL \
                or p.dgamma_hh == NULL or p.x_hat == NULL or p.rec_hat == NULL or p.rstd == NULL \
                or (rk_cell_flags(cell) & RK_CELL_STATE and (p.dgamma_c == NULL or p.dbeta_c == NULL
                                                             or p.c_hat == NULL)):
            raise ValueError("drec, drec_x, dgamma_ih, ...: the LayerNorm cells need every LayerNorm buffer")
    with nogil:
        rk_run_backward(&p)
    if p.team < 0:
        raise MemoryError("the kernel could not allocate its work buffers")
    return p.team


# ----------------------------------------------------------------- GEMM
cdef extern from "_smallgemm.h" nogil:
    Py_ssize_t rk_gemm_kc, rk_gemm_mr
    enum: RK_KC, RK_MR, RK_MR_MAX, RK_VBYTES


def gemm_limits():
    """What this build's GEMM allows: its vector bytes, the default k chunk
    and row block, and the widest row block it was compiled for."""
    return {"vector_bytes": RK_VBYTES, "kc": RK_KC, "mr": RK_MR, "mr_max": RK_MR_MAX}


def configure(Py_ssize_t kc, Py_ssize_t mr):
    """Set the products' k chunk and row block (the tuning plan's; neither
    changes a result, see _smallgemm.h).  Returns the previous pair."""
    global rk_gemm_kc, rk_gemm_mr
    if kc < 16 or kc > 4096:
        raise ValueError(f"kc: expected 16 to 4096, got {kc}")
    if mr < 1 or mr > RK_MR_MAX:
        raise ValueError(f"mr: expected 1 to {RK_MR_MAX} (this build's widest row block), got {mr}")
    previous = (rk_gemm_kc, rk_gemm_mr)
    rk_gemm_kc = kc
    rk_gemm_mr = mr
    return previous


def matmul(const floating[:, ::1] a,      # IN  (m, k)
           const floating[:, ::1] b,      # IN  (k, n)
           floating[:, ::1] out,          # OUT (m, n)
           int nthreads):
    """out = a @ b on the kernels' GEMM, its rows in pieces over nthreads
    threads: the path of the merged input projection and dX, exposed so that
    `rnnkernels bench` can measure the peak the machine gives it and tests can
    check it directly."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k:
        raise ValueError(f"b: expected {k} rows (a's columns), got {b.shape[0]}")
    if out.shape[0] != m or out.shape[1] != n:
        raise ValueError(f"out: expected shape ({m}, {n}), got ({out.shape[0]}, {out.shape[1]})")
    if nthreads < 1:
        raise ValueError(f"nthreads: expected at least 1, got {nthreads}")
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:, :] = 0
        return
    with nogil:
        if floating is float:
            rk_gemm_rows_f(nthreads, m, n, k, &a[0, 0], k, NULL, NULL, &b[0, 0], n, &out[0, 0], n, NULL)
        else:
            rk_gemm_rows_d(nthreads, m, n, k, &a[0, 0], k, NULL, NULL, &b[0, 0], n, &out[0, 0], n, NULL)


# ------------------------------------------------------ weights into panels
cdef extern from "_transpose.h" nogil:
    void rk_transpose_panel_f(const float** srcs, Py_ssize_t wd, Py_ssize_t k, Py_ssize_t nr, float* panel)


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
            if floating is float:  # 8 x 8 blocks through registers (_transpose.h)
                rk_transpose_panel_f(<const float**>srcs, wd, k, nr, panel)
            else:
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


def block_starts(str dtype, Py_ssize_t k, const Py_ssize_t[::1] bounds):
    """Where each block that pack_blocks writes starts (and, last, the total):
    blocks of k rows and bounds[j+1] - bounds[j] columns, each padded to whole
    panels.  The kernels find their weight blocks through these starts."""
    cdef Py_ssize_t j, nb = bounds.shape[0] - 1
    if dtype != "float32" and dtype != "float64":
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    starts_arr = np.zeros(max(nb, 0) + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] starts = starts_arr
    for j in range(nb):
        if bounds[j + 1] < bounds[j]:
            raise ValueError(f"bounds: expected increasing values, got {bounds[j]}, {bounds[j + 1]} at block {j}")
        if dtype == "float32":
            starts[j + 1] = starts[j] + packed_size(<float*>NULL, k, bounds[j + 1] - bounds[j])
        else:
            starts[j + 1] = starts[j] + packed_size(<double*>NULL, k, bounds[j + 1] - bounds[j])
    starts_arr.flags.writeable = False
    return starts_arr


def pack_blocks(const floating[:, ::1] w,        # IN  (R, C)
                const Py_ssize_t[::1] rows,      # IN  (R,) row of w to read for each row, or (0,)
                const Py_ssize_t[::1] bounds,    # IN  (nblocks+1,) increasing block bounds
                const Py_ssize_t[::1] starts,    # IN  (nblocks+1,) block_starts of those bounds
                bint row_blocks,
                floating[::1] out,               # OUT starts[-1] values
                int nthreads):
    """Blocks of W = w[rows] packed one after the other, as the kernels'
    weight tiles, block j at starts[j] (block_starts).  With row_blocks, block
    j is W[bounds[j]:bounds[j+1]].T
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
    cdef Py_ssize_t need = 0, width
    if starts.shape[0] != nb + 1:
        raise ValueError(f"starts: expected {nb + 1} block starts, got {starts.shape[0]}")
    if rows.shape[0] not in (0, R):
        raise ValueError(f"rows: expected {R} row indices or none, got {rows.shape[0]}")
    _check_rows(rows, R, "rows", False)
    for j in range(nb):
        if bounds[j] < 0 or bounds[j + 1] < bounds[j] or bounds[j + 1] > extent:
            raise ValueError(f"bounds: expected increasing values in [0, {extent}], "
                             f"got {bounds[j]}, {bounds[j + 1]} at block {j}")
    for j in range(nb):
        if starts[j + 1] - starts[j] != packed_size(<floating*>NULL, k, bounds[j + 1] - bounds[j]):
            raise ValueError(f"starts: block {j} does not hold a {k} x {bounds[j + 1] - bounds[j]} panel block")
        need = starts[j + 1]
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
            width = bounds[j + 1] - bounds[j]
            _pack_block(wp, rp, C, k, bounds[j], width, row_blocks, op + starts[j])


def permute_input_weights(const floating[:, ::1] w_ih,    # IN  (G, I) PyTorch order
                          const Py_ssize_t[::1] colmap,   # IN  (G,) source row of each permuted row
                          floating[:, ::1] w_ih_t,        # OUT (I, G) rows in tile order, transposed, or (0, G)
                          floating[:, ::1] w_ih_p,        # OUT (G, I) rows in tile order, or (0, I)
                          int nthreads):
    """The permuted input weights: transposed for the input projection pass
    (not needed where the input side runs inside the steps), and (training
    only) as rows for dX, in one pass, in parallel over blocks of rows (see
    pack_blocks).  An output with no rows is not written."""
    cdef Py_ssize_t G = w_ih.shape[0], I = w_ih.shape[1], r, r0, r1, i, blk
    cdef bint transposed = w_ih_t.shape[0] != 0
    cdef bint rows_too = w_ih_p.shape[0] != 0
    if colmap.shape[0] != G:
        raise ValueError(f"colmap: expected {G} rows, got {colmap.shape[0]}")
    if (transposed and (w_ih_t.shape[0], w_ih_t.shape[1]) != (I, G)) or \
            (rows_too and (w_ih_p.shape[0], w_ih_p.shape[1]) != (G, I)):
        raise ValueError(f"w_ih_t, w_ih_p: expected shapes ({I}, {G}) or (0, {G}), and ({G}, {I}) or (0, {I})")
    _check_rows(colmap, G, "colmap", False)
    if G == 0 or I == 0 or not (transposed or rows_too):
        return
    cdef const floating* ih = &w_ih[0, 0]
    cdef floating* iht = &w_ih_t[0, 0] if transposed else NULL
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
            if transposed:
                for i in range(I):
                    for r in range(r0, r1):
                        iht[i * G + r] = ih[cm[r] * I + i]
