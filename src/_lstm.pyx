"""LSTM forward and backward-through-time kernels.

Layering: rnnkernels/ops.py validates, sorts sequences by length, packs them,
permutes the weights and allocates every buffer; these functions only compute.

Packed layout (as PyTorch's PackedSequence): rows are sorted by length, step s
has counts[s] active rows (a prefix), stored at packed rows offsets[s] .. +
counts[s].  The state buffers h, c are (N + B, H): the state *entering* step s
for row j sits at offsets[s] + j, and a row's final state at N + j.  The state
leaving step s for row j therefore goes to offsets[s+1] + j while the row goes
on, or to N + j at its last step.  With equal lengths this is the familiar
(T+1, B, H) buffer with slot 0 = h0, and y is a view of it.

Parallel structure: hidden units are split into fixed tiles (tiles[k] ..
tiles[k+1]); weights are permuted so that a tile's four gates are contiguous
(columns 4*u0 .. 4*u1 hold i, f, g, o for units u0..u1).  Per step, each tile
does its slice of the recurrent GEMM and the fused gate update for its units,
then one barrier.  Tiles depend only on H, so results are bitwise identical
for any thread count.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from _activations cimport sigmoid, tanh_
from _blas cimport gemm
from _common cimport column_sums, gemm_rows, gemm_weight_grad


cdef void _forward_tile(floating* gates, floating* h, floating* c,
                        const floating* w_hh_tile, const floating* bias,
                        Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                        Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                        Py_ssize_t u0, Py_ssize_t u1, bint training) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, G4 = 4 * H, j, u, dst
    cdef floating* g
    cdef floating* c_prev
    cdef floating* c_new
    cdef floating* h_new
    cdef const floating* b = bias + 4 * u0
    cdef floating gi, gf, gg, go, cv
    # gates[off:off+n, 4u0:4u1] += h_prev[off:off+n, :] @ W_hh_tile (H x 4ub)
    gemm(False, False, <int>n, <int>(4 * ub), <int>H, 1, h + off * H, <int>H,
         w_hh_tile, <int>(4 * ub), 1, gates + off * G4 + 4 * u0, <int>G4)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        g = gates + (off + j) * G4 + 4 * u0
        c_prev = c + (off + j) * H + u0
        c_new = c + dst * H + u0
        h_new = h + dst * H + u0
        for u in range(ub):
            gi = sigmoid(g[u] + b[u])
            gf = sigmoid(g[ub + u] + b[ub + u])
            gg = tanh_(g[2 * ub + u] + b[2 * ub + u])
            go = sigmoid(g[3 * ub + u] + b[3 * ub + u])
            cv = gf * c_prev[u] + gi * gg
            c_new[u] = cv
            h_new[u] = go * tanh_(cv)
            if training:
                g[u] = gi
                g[ub + u] = gf
                g[2 * ub + u] = gg
                g[3 * ub + u] = go


def forward(const floating[:, ::1] x,            # IN  (N, I) packed inputs
            const floating[:, ::1] w_ih_t,       # IN  (I, 4H) permuted W_ih^T
            const floating[::1] w_hh_tiles,      # IN  tile k: (H, 4*ub_k) at H*4*u0
            const floating[::1] bias,            # IN  (4H,) permuted b_ih + b_hh
            const Py_ssize_t[::1] counts,        # IN  (S,) active rows per step
            const Py_ssize_t[::1] offsets,       # IN  (S+1,) packed row offsets
            const Py_ssize_t[::1] tiles,         # IN  (ntiles+1,) hidden-unit tile bounds
            floating[:, ::1] h,                  # IN/OUT (N+B, H) initial states placed, all states out
            floating[:, ::1] c,                  # IN/OUT (N+B, H)
            floating[:, ::1] gates,              # OUT (N, 4H) activated gates (if training)
            bint training, int nthreads):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1
    cdef Py_ssize_t s, k, n_next, off_next
    cdef floating* gp
    cdef floating* hp
    cdef floating* cp
    cdef const floating* wp
    cdef const floating* bp
    if N == 0:
        return
    gp = &gates[0, 0]
    hp = &h[0, 0]
    cp = &c[0, 0]
    wp = &w_hh_tiles[0]
    bp = &bias[0]
    with nogil:
        gemm_rows(nthreads, <int>N, <int>(4 * H), <int>I, &x[0, 0], <int>I,
                  &w_ih_t[0, 0], <int>(4 * H), gp, <int>(4 * H))
        with parallel(num_threads=nthreads):
            for s in range(S):
                n_next = counts[s + 1] if s + 1 < S else 0
                off_next = offsets[s + 1]
                for k in prange(ntiles, schedule='static'):
                    _forward_tile(gp, hp, cp, wp + H * 4 * tiles[k], bp, counts[s],
                                  n_next, offsets[s], off_next, N, H,
                                  tiles[k], tiles[k + 1], training)


cdef void _backward_tile(floating* dgates, floating* dh, floating* dc,
                         const floating* gates, const floating* h, const floating* c,
                         const floating* dy, const floating* w_hh_tile,
                         Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                         Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                         Py_ssize_t u0, Py_ssize_t u1, bint has_dy) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, G4 = 4 * H, j, u, dst
    cdef const floating* g
    cdef floating* dg
    cdef const floating* c_prev
    cdef const floating* c_new
    cdef floating* dh_row
    cdef floating* dc_row
    cdef const floating* dy_row
    cdef floating gi, gf, gg, go, tc, dhv, dcv
    # Gradient arriving through the recurrence from step s+1, for the rows
    # that go on: dh[0:n_next, u0:u1] = dgates[s+1] @ W_hh[:, u0:u1].  Rows
    # that end at step s keep dh_n, placed in dh before the loop.
    gemm(False, False, <int>n_next, <int>ub, <int>G4, 1, dgates + off_next * G4, <int>G4,
         w_hh_tile, <int>ub, 0, dh + u0, <int>H)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        g = gates + (off + j) * G4 + 4 * u0
        dg = dgates + (off + j) * G4 + 4 * u0
        c_prev = c + (off + j) * H + u0
        c_new = c + dst * H + u0
        dh_row = dh + j * H + u0
        dc_row = dc + j * H + u0
        if has_dy:
            dy_row = dy + (off + j) * H + u0
            for u in range(ub):
                dh_row[u] += dy_row[u]
        for u in range(ub):
            gi = g[u]
            gf = g[ub + u]
            gg = g[2 * ub + u]
            go = g[3 * ub + u]
            tc = tanh_(c_new[u])
            dhv = dh_row[u]
            dcv = dc_row[u] + dhv * go * (1 - tc * tc)
            dg[u] = dcv * gg * gi * (1 - gi)
            dg[ub + u] = dcv * c_prev[u] * gf * (1 - gf)
            dg[2 * ub + u] = dcv * gi * (1 - gg * gg)
            dg[3 * ub + u] = dhv * tc * go * (1 - go)
            dc_row[u] = dcv * gf


def backward(const floating[:, ::1] x,           # IN  (N, I) packed inputs
             const floating[:, ::1] w_ih,        # IN  (4H, I) permuted W_ih
             const floating[::1] w_hh_tiles,     # IN  tile k: (4H, ub_k) = W_hh[:, u0:u1] at 4H*u0
             const floating[:, ::1] h,           # IN  (N+B, H) states from forward
             const floating[:, ::1] c,           # IN  (N+B, H)
             const floating[:, ::1] gates,       # IN  (N, 4H) activated gates
             const floating[:, ::1] dy,          # IN  (N, H) packed dL/dy (ignored unless has_dy)
             const Py_ssize_t[::1] counts,       # IN  (S,)
             const Py_ssize_t[::1] offsets,      # IN  (S+1,)
             const Py_ssize_t[::1] tiles,        # IN  (ntiles+1,)
             floating[:, ::1] dh,                # IN/OUT (B, H) dL/dh_n in, dL/dh0 out
             floating[:, ::1] dc,                # IN/OUT (B, H) dL/dc_n in, dL/dc0 out
             floating[:, ::1] dgates,            # OUT (N, 4H) gate pre-activation gradients
             floating[:, ::1] dx,                # OUT (N, I)
             floating[:, ::1] dw_ih,             # OUT (4H, I) permuted
             floating[:, ::1] dw_hh,             # OUT (4H, H) permuted
             floating[::1] db,                   # OUT (4H,) permuted
             bint has_dy, int nthreads):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1, G4 = 4 * H
    cdef Py_ssize_t s, k, n_next, off_next
    cdef floating* dgp
    cdef floating* dhp = &dh[0, 0]
    cdef floating* dcp = &dc[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* dyp = NULL
    if N == 0:
        dw_ih[:, :] = 0
        dw_hh[:, :] = 0
        db[:] = 0
        return
    dgp = &dgates[0, 0]
    if has_dy:
        dyp = &dy[0, 0]
    with nogil:
        with parallel(num_threads=nthreads):
            for s in range(S - 1, -1, -1):
                n_next = counts[s + 1] if s + 1 < S else 0
                off_next = offsets[s + 1]
                for k in prange(ntiles, schedule='static'):
                    _backward_tile(dgp, dhp, dcp, &gates[0, 0], &h[0, 0], &c[0, 0], dyp,
                                   wp + G4 * tiles[k], counts[s], n_next, offsets[s],
                                   off_next, N, H, tiles[k], tiles[k + 1], has_dy)
        # dL/dh0 for the rows active at step 0 (the others keep dh_n).
        for k in prange(ntiles, num_threads=nthreads, schedule='static'):
            gemm(False, False, <int>counts[0], <int>(tiles[k + 1] - tiles[k]), <int>G4, 1,
                 dgp, <int>G4, wp + G4 * tiles[k], <int>(tiles[k + 1] - tiles[k]), 0,
                 dhp + tiles[k], <int>H)
        gemm_rows(nthreads, <int>N, <int>I, <int>G4, dgp, <int>G4, &w_ih[0, 0], <int>I,
                  &dx[0, 0], <int>I)
        gemm_weight_grad(nthreads, <int>G4, <int>I, <int>N, dgp, <int>G4, &x[0, 0], <int>I,
                         &dw_ih[0, 0], <int>I)
        gemm_weight_grad(nthreads, <int>G4, <int>H, <int>N, dgp, <int>G4, &h[0, 0], <int>H,
                         &dw_hh[0, 0], <int>H)
        column_sums(nthreads, <int>N, <int>G4, dgp, <int>G4, &db[0])
