"""Vanilla RNN (tanh or relu) forward and backward-through-time kernels.

Same packed layout, state buffers and hidden-unit tiles as _lstm.pyx (read its
header first); with one gate the tile permutation is the identity.  Backward
needs no saved gates: the activation's derivative is read off the output
(1 - h^2 for tanh, h > 0 for relu).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid

from _blas cimport packed_gemm
from _cells cimport prefetch_rows, rk_barrier, rnn_bwd, rnn_fwd
from _common cimport (rk_team_size, add_dy_rows, checked_packed, checked_padding, checked_pieces, checked_rows,
                     gemm_rows, merged_backward, prefetch_dy_rows, store_y_row, sum_rows,
                     tile_start, zero_rows)


cdef void _forward_tile(floating* pre, floating* h, floating* y, const Py_ssize_t* y_rows,
                        const floating* w_hh_tile,
                        const floating* bias, Py_ssize_t n, Py_ssize_t n_next,
                        Py_ssize_t off, Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                        Py_ssize_t u0, Py_ssize_t u1, int relu) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, j, dst
    # The tile's rows of the next step (see _lstm.pyx's forward).
    prefetch_rows(pre + off_next * H + u0, n_next, H, ub, True)
    packed_gemm(n, ub, H, h + off * H, H, w_hh_tile, pre + off * H + u0, H, True)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        rnn_fwd(ub, pre + (off + j) * H + u0, bias + u0, h + dst * H + u0, relu)
        store_y_row(u0, ub, h + dst * H + u0, y, y_rows, off + j, H)


def forward(const floating[:, ::1] x,            # IN  (R, I) inputs, as in _lstm.forward
            const Py_ssize_t[::1] x_rows,        # IN  (N,) or (0,)
            floating[:, ::1] xp,                 # OUT (N, I) or (0, I)
            const floating[:, ::1] w_ih_t,       # IN  (I, H) W_ih^T
            const floating[::1] w_hh_tiles,      # IN  tile k: (H, ub_k) packed, at tile_start
            const floating[::1] bias,            # IN  (H,) b_ih + b_hh
            const Py_ssize_t[::1] counts,        # IN  (S,) active rows per step
            const Py_ssize_t[::1] offsets,       # IN  (S+1,) packed row offsets
            const Py_ssize_t[::1] tiles,         # IN  (ntiles+1,) hidden-unit tile bounds
            floating[:, ::1] h,                  # IN/OUT (N+B, H) initial states placed, all states out
            floating[:, ::1] pre,                # OUT (N, H) scratch pre-activations
            floating[:, ::1] y,                  # OUT (T*B, H) or (0, H), as in _lstm.forward
            const Py_ssize_t[::1] y_rows,        # IN  (N,) or (0,)
            const Py_ssize_t[::1] padding,       # IN  (T*B - N,) rows of y set to zero
            bint relu, int nthreads, int step_threads):
    cdef Py_ssize_t S = counts.shape[0], N = pre.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1
    cdef Py_ssize_t s, k
    if N == 0:
        return 0
    cdef floating* pp = &pre[0, 0]
    cdef floating* hp = &h[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* bp = &bias[0]
    cdef floating* yp = &y[0, 0] if y.shape[0] else NULL
    cdef const Py_ssize_t* yrp = checked_rows(y_rows, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* pad = checked_padding(padding, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* xrp = checked_rows(x_rows, N, x.shape[0], "x")
    cdef floating* xpp = checked_packed(xp, N, I, xrp != NULL)
    cdef int team[1]
    team[0] = 0
    with nogil:
        zero_rows(nthreads, yp, H, H, pad, padding.shape[0])
        gemm_rows(nthreads, <int>N, <int>H, <int>I, &x[0, 0], <int>I, xrp, xpp, &w_ih_t[0, 0], <int>H,
                  pp, <int>H, NULL)
        with parallel(num_threads=step_threads):
            if threadid() == 0:
                team[0] = rk_team_size()
            for s in range(S):
                for k in prange(ntiles, schedule='static'):
                    _forward_tile(pp, hp, yp, yrp, wp + tile_start(<floating*>NULL, &tiles[0], k, H, 1), bp, counts[s],
                                  counts[s + 1] if s + 1 < S else 0, offsets[s],
                                  offsets[s + 1], N, H, tiles[k], tiles[k + 1], relu)
                rk_barrier()
    return team[0]


cdef void _backward_tile(floating* dpre, floating* dh, floating* db, const floating* h,
                         const floating* dy, const Py_ssize_t* dy_rows, const floating* w_hh_tile,
                         Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t n_prev, Py_ssize_t off,
                         Py_ssize_t off_next, Py_ssize_t off_prev, Py_ssize_t N, Py_ssize_t H,
                         Py_ssize_t u0, Py_ssize_t u1, int relu) noexcept nogil:
    cdef Py_ssize_t ub = u1 - u0, j, dst
    # What the tile reads and writes at the previous step (the next one here).
    prefetch_rows(dpre + off_prev * H + u0, n_prev, H, ub, True)
    if dy != NULL:
        prefetch_dy_rows(dy + u0, dy_rows, off_prev, n_prev, H, ub)
    # dh[0:n_next, u0:u1] = dpre[s+1] @ W_hh[:, u0:u1]; rows ending at s keep dh_n.
    packed_gemm(n_next, ub, H, dpre + off_next * H, H, w_hh_tile, dh + u0, H, False)
    if dy != NULL:
        add_dy_rows(n, ub, dy + u0, dy_rows, off, H, dh + u0, H)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        rnn_bwd(ub, h + dst * H + u0, dh + j * H + u0, dpre + (off + j) * H + u0, relu)
    sum_rows(n, ub, dpre + off * H + u0, H, db + u0)


def backward(const floating[:, ::1] x,           # IN  (N, I) packed inputs (as in _lstm.backward)
             const floating[:, ::1] w_ih,        # IN  (H, I)
             const floating[::1] w_hh_tiles,     # IN  tile k: (H, ub_k) = W_hh[:, u0:u1] packed, at tile_start
             const floating[:, ::1] h,           # IN  (N+B, H) states from forward
             const floating[:, ::1] dy,          # IN  (R, H) dL/dy, or (0, H) for none
             const Py_ssize_t[::1] dy_rows,      # IN  (N,) row of dy for each packed row, or (0,): packed
             const Py_ssize_t[::1] counts,       # IN  (S,)
             const Py_ssize_t[::1] offsets,      # IN  (S+1,)
             const Py_ssize_t[::1] tiles,        # IN  (ntiles+1,)
             floating[:, ::1] dh,                # IN/OUT (B, H) dL/dh_n in, dL/dh0 out
             floating[:, ::1] dpre,              # OUT (N, H) pre-activation gradients
             floating[:, ::1] dx,                # OUT (R, I), as in _lstm.backward
             const Py_ssize_t[::1] dx_rows,      # IN  (N,) or (0,)
             const Py_ssize_t[::1] padding,      # IN  (R - N,) rows of dx set to zero
             floating[:, ::1] dw_ih,             # OUT (H, I)
             floating[:, ::1] dw_hh,             # OUT (H, H)
             floating[::1] db,                   # OUT (H,), zeros in
             bint relu, int nthreads, int step_threads,
             int wgrad_pieces):
    cdef Py_ssize_t S = counts.shape[0], N = dpre.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1
    cdef Py_ssize_t s, k
    checked_pieces(wgrad_pieces)
    if N == 0:
        return 0
    cdef floating* dpp = &dpre[0, 0]
    cdef floating* dhp = &dh[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* dyp = &dy[0, 0] if dy.shape[0] else NULL
    cdef const Py_ssize_t* dyrp = checked_rows(dy_rows, N, dy.shape[0], "dy") if dy.shape[0] else NULL
    cdef const Py_ssize_t* dxrp = checked_rows(dx_rows, N, dx.shape[0], "dx")
    cdef const Py_ssize_t* pad = checked_padding(padding, N, dx.shape[0], "dx")
    cdef int team[1]
    team[0] = 0
    with nogil:
        zero_rows(nthreads, &dx[0, 0], I, I, pad, padding.shape[0])
        with parallel(num_threads=step_threads):
            if threadid() == 0:
                team[0] = rk_team_size()
            for s in range(S - 1, -1, -1):
                for k in prange(ntiles, schedule='static'):
                    _backward_tile(dpp, dhp, &db[0], &h[0, 0], dyp, dyrp,
                                   wp + tile_start(<floating*>NULL, &tiles[0], k, H, 1), counts[s],
                                   counts[s + 1] if s + 1 < S else 0,
                                   counts[s - 1] if s > 0 else 0, offsets[s], offsets[s + 1],
                                   offsets[s - 1] if s > 0 else 0, N, H, tiles[k], tiles[k + 1], relu)
                rk_barrier()
            for k in prange(ntiles, schedule='static'):
                packed_gemm(counts[0], tiles[k + 1] - tiles[k], H, dpp, H,
                            wp + tile_start(<floating*>NULL, &tiles[0], k, H, 1), dhp + tiles[k], H, False)
        merged_backward(nthreads, wgrad_pieces, <int>N, <int>I, <int>H, <int>H, dpp, &x[0, 0],
                        &w_ih[0, 0], &h[0, 0], &dx[0, 0], dxrp, &dw_ih[0, 0], &dw_hh[0, 0])
    return team[0]
