"""GRU forward and backward-through-time kernels, both forms:

reset_after=True (PyTorch, Keras default):  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
reset_after=False (Keras reset_after=False): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)

Same packed layout, state buffers and hidden-unit tiles as _lstm.pyx (read its
header first); a tile's gate columns are r, z, n for its units.

reset_after=True: the recurrent product of a step goes to a scratch buffer
(W_hn h must stay apart from W_in x), one barrier per step.  Backward has two
gate gradients per row, input side (r z n) and recurrent side (r z, n scaled
by r).  Only the input side is kept for all rows; the recurrent side, which
the time loop needs one step later, lives in a two-step ring, and after the
loop the input side's n columns are scaled by r in place to give it for the
weight gradients.  That saves an (N, 3H) buffer, which put GRU training's
peak memory above PyTorch's.

reset_after=False needs r of every unit before W_hn (r*h), so each step runs
in two phases with a barrier between them, forward and backward.  Backward
reaches the n rows (and, for the carry, the r z rows) of W_hh through tiles
in which the other gates' rows are zero, so every product stays one GEMM.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid

from _blas cimport packed_gemm, packed_size
from _cells cimport (gru_bwd, gru_fwd, gru_rb_bwd1, gru_rb_bwd2, gru_rb_fwd1,
                     gru_rb_fwd2, prefetch_rows, rk_barrier)
from _common cimport (rk_team_size, add_dy_rows, checked_packed, checked_padding, checked_pieces, checked_rows,
                     gemm_rows, merged_backward, prefetch_dy_rows, store_y_row,
                     sum_rows, tile_start, weight_grads, zero_rows)


cdef Py_ssize_t _forward_tile_start(const Py_ssize_t* tiles, Py_ssize_t k, Py_ssize_t H,
                                    const floating* like) noexcept nogil:
    """Start of forward tile k: each tile is its r z columns (H x 2ub) packed,
    then its n columns (H x ub) packed, so that reset_after=False can run the
    n product apart (it multiplies r*h, not h) whatever ub is."""
    cdef Py_ssize_t j, ub, start = 0
    for j in range(k):
        ub = tiles[j + 1] - tiles[j]
        start += packed_size(like, H, 2 * ub) + packed_size(like, H, ub)
    return start


cdef void _forward_tile(floating* gates, floating* aux, floating* gh, floating* h,
                        floating* y, const Py_ssize_t* y_rows, const floating* w_tile, const floating* bias, const floating* b_hn,
                        Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                        Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                        Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=True: gh = h_prev @ W_hh_tile, then the fused update."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j, dst
    # The tile's rows of the next step (see _lstm.pyx's forward).
    prefetch_rows(gates + off_next * G3 + 3 * u0, n_next, G3, 3 * ub, True)
    prefetch_rows(aux + off_next * H + u0, n_next, H, ub, True)
    packed_gemm(n, 2 * ub, H, h + off * H, H, w_tile, gh + 3 * u0, G3, False)
    packed_gemm(n, ub, H, h + off * H, H, w_tile + packed_size(w_tile, H, 2 * ub),
                gh + 3 * u0 + 2 * ub, G3, False)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        gru_fwd(ub, gates + (off + j) * G3 + 3 * u0, gh + j * G3 + 3 * u0, bias + 3 * u0,
                b_hn + u0, h + (off + j) * H + u0, aux + (off + j) * H + u0, h + dst * H + u0)
        store_y_row(u0, ub, h + dst * H + u0, y, y_rows, off + j, H)


cdef void _forward_tile_rz(floating* gates, floating* rh, const floating* h,
                           const floating* w_tile, const floating* bias,
                           Py_ssize_t n, Py_ssize_t off, Py_ssize_t H,
                           Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=False, phase 1: r and z, and r*h for phase 2."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j
    packed_gemm(n, 2 * ub, H, h + off * H, H, w_tile, gates + off * G3 + 3 * u0, G3, True)
    for j in range(n):
        gru_rb_fwd1(ub, gates + (off + j) * G3 + 3 * u0, bias + 3 * u0,
                    h + (off + j) * H + u0, rh + (off + j) * H + u0)


cdef void _forward_tile_n(floating* gates, const floating* rh, floating* h,
                          floating* y, const Py_ssize_t* y_rows, const floating* w_tile, const floating* bias,
                          Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                          Py_ssize_t off_next, Py_ssize_t N, Py_ssize_t H,
                          Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=False, phase 2: n from W_hn (r*h), and the new state."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j, dst
    prefetch_rows(gates + off_next * G3 + 3 * u0, n_next, G3, 3 * ub, True)
    packed_gemm(n, ub, H, rh + off * H, H, w_tile + packed_size(w_tile, H, 2 * ub),
                gates + off * G3 + 3 * u0 + 2 * ub, G3, True)
    for j in range(n):
        dst = off_next + j if j < n_next else N + j
        gru_rb_fwd2(ub, gates + (off + j) * G3 + 3 * u0, bias + 3 * u0,
                    h + (off + j) * H + u0, h + dst * H + u0)
        store_y_row(u0, ub, h + dst * H + u0, y, y_rows, off + j, H)


def forward(const floating[:, ::1] x,            # IN  (R, I) inputs, as in _lstm.forward
            const Py_ssize_t[::1] x_rows,        # IN  (N,) or (0,)
            floating[:, ::1] xp,                 # OUT (N, I) or (0, I)
            const floating[:, ::1] w_ih_t,       # IN  (I, 3H) permuted W_ih^T
            const floating[::1] w_hh_tiles,      # IN  tile k: (H, 2*ub_k) r z, then (H, ub_k) n, packed
            const floating[::1] bias,            # IN  (3H,) permuted r, z: b_i+b_h; n: b_in (+ b_hn if not reset_after)
            const floating[::1] b_hn,            # IN  (H,) b_hn (reset_after; zeros otherwise)
            const Py_ssize_t[::1] counts,        # IN  (S,)
            const Py_ssize_t[::1] offsets,       # IN  (S+1,)
            const Py_ssize_t[::1] tiles,         # IN  (ntiles+1,)
            floating[:, ::1] h,                  # IN/OUT (N+B, H) initial states placed, all states out
            floating[:, ::1] gates,              # OUT (N, 3H) r, z, n
            floating[:, ::1] aux,                # OUT (N, H) W_hn h + b_hn (reset_after) or r*h
            floating[:, ::1] gh,                 # scratch (B, 3H)
            floating[:, ::1] y,                  # OUT (T*B, H) or (0, H), as in _lstm.forward
            const Py_ssize_t[::1] y_rows,        # IN  (N,) or (0,)
            const Py_ssize_t[::1] padding,       # IN  (T*B - N,) rows of y set to zero
            bint reset_after, int nthreads, int step_threads):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1
    cdef Py_ssize_t s, k
    if N == 0:
        return 0
    cdef floating* gp = &gates[0, 0]
    cdef floating* ap = &aux[0, 0]
    cdef floating* ghp = &gh[0, 0]
    cdef floating* hp = &h[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* bp = &bias[0]
    cdef const floating* bhp = &b_hn[0]
    cdef floating* yp = &y[0, 0] if y.shape[0] else NULL
    cdef const Py_ssize_t* yrp = checked_rows(y_rows, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* pad = checked_padding(padding, N, y.shape[0], "y") if y.shape[0] else NULL
    cdef const Py_ssize_t* xrp = checked_rows(x_rows, N, x.shape[0], "x")
    cdef floating* xpp = checked_packed(xp, N, I, xrp != NULL)
    cdef int team[1]
    team[0] = 0
    with nogil:
        zero_rows(nthreads, yp, H, H, pad, padding.shape[0])
        gemm_rows(nthreads, <int>N, <int>(3 * H), <int>I, &x[0, 0], <int>I, xrp, xpp,
                  &w_ih_t[0, 0], <int>(3 * H), gp, <int>(3 * H), NULL)
        with parallel(num_threads=step_threads):
            if threadid() == 0:
                team[0] = rk_team_size()
            for s in range(S):
                if reset_after:
                    for k in prange(ntiles, schedule='static'):
                        _forward_tile(gp, ap, ghp, hp, yp, yrp, wp + _forward_tile_start(&tiles[0], k, H, wp), bp, bhp,
                                      counts[s], counts[s + 1] if s + 1 < S else 0,
                                      offsets[s], offsets[s + 1], N, H, tiles[k], tiles[k + 1])
                else:
                    for k in prange(ntiles, schedule='static'):
                        _forward_tile_rz(gp, ap, hp, wp + _forward_tile_start(&tiles[0], k, H, wp), bp, counts[s],
                                         offsets[s], H, tiles[k], tiles[k + 1])
                    rk_barrier()
                    for k in prange(ntiles, schedule='static'):
                        _forward_tile_n(gp, ap, hp, yp, yrp, wp + _forward_tile_start(&tiles[0], k, H, wp), bp, counts[s],
                                        counts[s + 1] if s + 1 < S else 0, offsets[s],
                                        offsets[s + 1], N, H, tiles[k], tiles[k + 1])
                rk_barrier()
    return team[0]


cdef void _backward_tile(floating* dgx, floating* dgh_next, floating* dgh, floating* dh,
                         floating* db_ih, floating* db_hh,
                         const floating* gates, const floating* aux, const floating* h,
                         const floating* dy, const Py_ssize_t* dy_rows, const floating* w_tile,
                         Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t n_prev, Py_ssize_t off,
                         Py_ssize_t off_next, Py_ssize_t off_prev, Py_ssize_t H,
                         Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=True.  dh holds the carry d*z from step s+1 (or dh_n for rows
    ending here); add the recurrent term dgh[s+1] @ W_hh[:, u0:u1], then dy.
    dgh_next and dgh are the ring's rows of steps s+1 and s."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j
    # What the tile reads and writes at the previous step (the next one here).
    prefetch_rows(gates + off_prev * G3 + 3 * u0, n_prev, G3, 3 * ub, False)
    prefetch_rows(dgx + off_prev * G3 + 3 * u0, n_prev, G3, 3 * ub, True)
    prefetch_rows(aux + off_prev * H + u0, n_prev, H, ub, False)
    if dy != NULL:
        prefetch_dy_rows(dy + u0, dy_rows, off_prev, n_prev, H, ub)
    packed_gemm(n_next, ub, G3, dgh_next, G3, w_tile, dh + u0, H, True)
    if dy != NULL:
        add_dy_rows(n, ub, dy + u0, dy_rows, off, H, dh + u0, H)
    for j in range(n):
        gru_bwd(ub, gates + (off + j) * G3 + 3 * u0, aux + (off + j) * H + u0,
                h + (off + j) * H + u0, dh + j * H + u0, dgx + (off + j) * G3 + 3 * u0,
                dgh + j * G3 + 3 * u0)
    sum_rows(n, 3 * ub, dgx + off * G3 + 3 * u0, G3, db_ih + 3 * u0)
    sum_rows(n, 3 * ub, dgh + 3 * u0, G3, db_hh + 3 * u0)


cdef void _backward_tile_zn(floating* dg, floating* dh, const floating* gates,
                            const floating* h, const floating* dy, const Py_ssize_t* dy_rows,
                            const floating* w_rz_tile,
                            Py_ssize_t n, Py_ssize_t n_next, Py_ssize_t off,
                            Py_ssize_t off_next, Py_ssize_t H,
                            Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=False, phase 1: carry + dg[s+1]'s r z part @ W_hh, dy; z and n grads."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j
    packed_gemm(n_next, ub, G3, dg + off_next * G3, G3, w_rz_tile, dh + u0, H, True)
    if dy != NULL:
        add_dy_rows(n, ub, dy + u0, dy_rows, off, H, dh + u0, H)
    for j in range(n):
        gru_rb_bwd1(ub, gates + (off + j) * G3 + 3 * u0, h + (off + j) * H + u0,
                    dh + j * H + u0, dg + (off + j) * G3 + 3 * u0)


cdef void _backward_tile_r(floating* dg, floating* dh, floating* drh, floating* db,
                           const floating* gates,
                           const floating* h, const floating* w_n_tile,
                           Py_ssize_t n, Py_ssize_t n_prev, Py_ssize_t off, Py_ssize_t off_prev,
                           Py_ssize_t H, Py_ssize_t u0, Py_ssize_t u1) noexcept nogil:
    """reset_after=False, phase 2: drh = dn @ W_hn[:, u0:u1]; r grads and the carry."""
    cdef Py_ssize_t ub = u1 - u0, G3 = 3 * H, j
    prefetch_rows(gates + off_prev * G3 + 3 * u0, n_prev, G3, 3 * ub, False)
    prefetch_rows(dg + off_prev * G3 + 3 * u0, n_prev, G3, 3 * ub, True)
    packed_gemm(n, ub, G3, dg + off * G3, G3, w_n_tile, drh + u0, H, False)
    for j in range(n):
        gru_rb_bwd2(ub, gates + (off + j) * G3 + 3 * u0, h + (off + j) * H + u0,
                    drh + j * H + u0, dh + j * H + u0, dg + (off + j) * G3 + 3 * u0)
    sum_rows(n, 3 * ub, dg + off * G3 + 3 * u0, G3, db + 3 * u0)  # the row is complete now


cdef void _scale_n_by_r(floating* dg, const floating* gates, const Py_ssize_t* tiles,
                        Py_ssize_t ntiles) noexcept nogil:
    """One row: each tile's n gradients times its r (dn -> dn * r)."""
    cdef Py_ssize_t k, u, u0, ub
    for k in range(ntiles):
        u0 = tiles[k]
        ub = tiles[k + 1] - u0
        for u in range(ub):
            dg[3 * u0 + 2 * ub + u] = dg[3 * u0 + 2 * ub + u] * gates[3 * u0 + u]


def backward(const floating[:, ::1] x,           # IN  (N, I) packed inputs (as in _lstm.backward)
             const floating[:, ::1] w_ih,        # IN  (3H, I) permuted W_ih
             const floating[::1] w_hh_tiles,     # IN  tile k: (3H, ub_k) = W_hh_p[:, u0:u1] packed (n rows zero if not reset_after)
             const floating[::1] w_hn_tiles,     # IN  same with only n rows (not reset_after; else unused)
             const floating[:, ::1] h,           # IN  (N+B, H) states from forward
             const floating[:, ::1] gates,       # IN  (N, 3H) r, z, n
             const floating[:, ::1] aux,         # IN  (N, H) from forward
             const floating[:, ::1] dy,          # IN  (R, H) dL/dy, or (0, H) for none
             const Py_ssize_t[::1] dy_rows,      # IN  (N,) row of dy for each packed row, or (0,): packed
             const Py_ssize_t[::1] counts,       # IN  (S,)
             const Py_ssize_t[::1] offsets,      # IN  (S+1,)
             const Py_ssize_t[::1] tiles,        # IN  (ntiles+1,)
             floating[:, ::1] dh,                # IN/OUT (B, H) dL/dh_n in, dL/dh0 out
             floating[:, ::1] drh,               # scratch (B, H)
             floating[:, ::1] dgx,               # OUT (N, 3H) input-side gate gradients (zeroed if not reset_after)
             floating[:, ::1] dgh,               # scratch (2B, 3H) recurrent side, two-step ring (reset_after only)
             floating[:, ::1] dx,                # OUT (R, I), as in _lstm.backward
             const Py_ssize_t[::1] dx_rows,      # IN  (N,) or (0,)
             const Py_ssize_t[::1] padding,      # IN  (R - N,) rows of dx set to zero
             floating[:, ::1] dw_ih,             # OUT (3H, I) permuted
             floating[:, ::1] dw_hh,             # OUT (3H, H) permuted: dgh^T h_prev (reset_after) or dgx^T h_prev
             floating[:, ::1] dw_hn,             # OUT (3H, H) dgx^T (r*h) (not reset_after; its n rows are W_hn's)
             floating[::1] db_ih,                # OUT (3H,), zeros in
             floating[::1] db_hh,                # OUT (3H,), zeros in (reset_after only)
             bint reset_after, int nthreads, int step_threads,
             int wgrad_pieces):
    cdef Py_ssize_t S = counts.shape[0], N = gates.shape[0], H = h.shape[1]
    cdef Py_ssize_t I = x.shape[1], ntiles = tiles.shape[0] - 1, G3 = 3 * H
    cdef Py_ssize_t s, k
    checked_pieces(wgrad_pieces)
    if N == 0:
        return 0
    cdef floating* dgxp = &dgx[0, 0]
    cdef floating* dghp = &dgh[0, 0] if reset_after else dgxp
    cdef Py_ssize_t B = dh.shape[0], i
    cdef floating* dhp = &dh[0, 0]
    cdef floating* drhp = &drh[0, 0]
    cdef const floating* wp = &w_hh_tiles[0]
    cdef const floating* wnp = &w_hn_tiles[0] if not reset_after else NULL
    cdef const floating* dyp = &dy[0, 0] if dy.shape[0] else NULL
    cdef const Py_ssize_t* dyrp = checked_rows(dy_rows, N, dy.shape[0], "dy") if dy.shape[0] else NULL
    cdef const floating* gp = &gates[0, 0]
    cdef const floating* ap = &aux[0, 0]
    cdef const floating* hp = &h[0, 0]
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
                if reset_after:
                    for k in prange(ntiles, schedule='static'):
                        _backward_tile(dgxp, dghp + ((s + 1) % 2) * B * G3, dghp + (s % 2) * B * G3,
                                       dhp, &db_ih[0], &db_hh[0], gp, ap, hp, dyp, dyrp,
                                       wp + tile_start(<floating*>NULL, &tiles[0], k, G3, 1),
                                       counts[s], counts[s + 1] if s + 1 < S else 0,
                                       counts[s - 1] if s > 0 else 0, offsets[s], offsets[s + 1],
                                       offsets[s - 1] if s > 0 else 0, H, tiles[k], tiles[k + 1])
                else:
                    for k in prange(ntiles, schedule='static'):
                        _backward_tile_zn(dgxp, dhp, gp, hp, dyp, dyrp,
                                          wp + tile_start(<floating*>NULL, &tiles[0], k, G3, 1),
                                          counts[s], counts[s + 1] if s + 1 < S else 0,
                                          offsets[s], offsets[s + 1], H, tiles[k], tiles[k + 1])
                    rk_barrier()
                    for k in prange(ntiles, schedule='static'):
                        _backward_tile_r(dgxp, dhp, drhp, &db_ih[0], gp, hp,
                                         wnp + tile_start(<floating*>NULL, &tiles[0], k, G3, 1),
                                         counts[s], counts[s - 1] if s > 0 else 0, offsets[s],
                                         offsets[s - 1] if s > 0 else 0, H, tiles[k], tiles[k + 1])
                rk_barrier()
            # dL/dh0 for the rows active at step 0: carry + recurrent term.
            for k in prange(ntiles, schedule='static'):
                packed_gemm(counts[0], tiles[k + 1] - tiles[k], G3, dghp, G3,
                            wp + tile_start(<floating*>NULL, &tiles[0], k, G3, 1), dhp + tiles[k], H, True)
        if reset_after:
            # Input side first (dX, dW_ih), then dgx becomes the recurrent
            # side in place (n columns times r) for dW_hh.
            gemm_rows(nthreads, <int>N, <int>I, <int>G3, dgxp, <int>G3, NULL, NULL, &w_ih[0, 0], <int>I,
                      &dx[0, 0], <int>I, dxrp)
            weight_grads(nthreads, wgrad_pieces, <int>G3, <int>N, dgxp, <int>G3, <int>I, &x[0, 0], <int>I,
                         &dw_ih[0, 0], <int>I, 0, <floating*>NULL, 0, <floating*>NULL, 0)
            for i in prange(N, num_threads=nthreads, schedule='static'):
                _scale_n_by_r(dgxp + i * G3, gp + i * G3, &tiles[0], ntiles)
            weight_grads(nthreads, wgrad_pieces, <int>G3, <int>N, dgxp, <int>G3, <int>H, hp, <int>H,
                         &dw_hh[0, 0], <int>H, 0, <floating*>NULL, 0, <floating*>NULL, 0)
        else:
            merged_backward(nthreads, wgrad_pieces, <int>N, <int>I, <int>H, <int>G3, dgxp, &x[0, 0],
                            &w_ih[0, 0], hp, &dx[0, 0], dxrp, &dw_ih[0, 0], &dw_hh[0, 0])
            # W_hn multiplies r*h, not h: its rows' gradient comes from r*h.
            weight_grads(nthreads, wgrad_pieces, <int>G3, <int>N, dgxp, <int>G3, <int>H, ap, <int>H,
                         &dw_hn[0, 0], <int>H, 0, <floating*>NULL, 0, <floating*>NULL, 0)
    return team[0]
