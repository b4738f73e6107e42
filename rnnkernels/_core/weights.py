"""Weights permuted so that each hidden-unit tile's gates are contiguous
columns, and packed into the GEMM kernel's panels (see src/_smallgemm.h).

The kernels split the hidden units into fixed tiles (tuning.unit_tile); a
tile's recurrent product and gate update run on one thread per step.  Its
gate columns must therefore be contiguous: the tile permutation reorders
PyTorch's ``[i | f | g | o]`` blocks into ``[i f g o of tile 0 | of tile 1 |
...]``.
"""
import functools

import numpy as np

from . import threads as _threads
from .memory import empty as _aligned_empty
from .plan import NO_ROWS, _layout

@functools.lru_cache(maxsize=64)
def tiles_of(H, ub):
    """Tile bounds 0, ub, 2*ub, ..., H (read-only, shared between calls)."""
    tiles = np.array(list(range(0, H, ub)) + [H], dtype=np.intp)
    tiles.flags.writeable = False
    return tiles


def _gather_rows(w, rows):
    """w[rows] into an aligned buffer, one memcpy per row."""
    out = _aligned_empty((len(rows), w.shape[1]), w.dtype)
    _layout().take_rows(w, rows, out, _threads.get_num_threads())
    return out


def _dtype_name(dtype):
    return "float32" if dtype.char == "f" else "float64"  # not dtype.name: a slow property


def _pack_blocks(w, bounds, row_blocks, rows=None, nthreads=1):
    """The weight tiles W[b0:b1].T (row_blocks) or W[:, b0:b1] for consecutive
    bounds, W = w[rows] (w itself without rows), each in the GEMM kernel's
    packed panel layout (see _smallgemm.h); the kernels find block k with
    ``tile_start`` (_common.pxd), which adds up the same sizes."""
    layout = _layout()
    k = w.shape[1] if row_blocks else w.shape[0]
    out = _aligned_empty(layout.blocks_values(_dtype_name(w.dtype), k, bounds), w.dtype)
    layout.pack_blocks(w, NO_ROWS if rows is None else rows, bounds, row_blocks, out, nthreads)
    return out


@functools.lru_cache(maxsize=64)
def _tile_permutation(H, gates, ub):
    """Gate columns in tile order (each tile's gates contiguous), its inverse,
    whether it is the identity (one gate, or one tile), and the row bounds of
    the forward weight blocks in that order: one block per tile, a GRU's in
    two (r z, then n: its n product may run apart, see _gru.pyx)."""
    tiles = tiles_of(H, ub)
    colmap = np.array([c for u0, u1 in zip(tiles[:-1], tiles[1:])
                       for g in range(gates) for c in range(g * H + u0, g * H + u1)], dtype=np.intp)
    inverse = np.argsort(colmap)
    split = [2, 1] if gates == 3 else [gates]
    bounds = [0]
    for u0, u1 in zip(tiles[:-1], tiles[1:]):
        for part in split:
            bounds.append(bounds[-1] + part * (u1 - u0))
    bounds = np.array(bounds, dtype=np.intp)
    for a in (colmap, inverse, bounds):
        a.flags.writeable = False
    return colmap, inverse, bool(np.array_equal(colmap, np.arange(colmap.size))), bounds


class Weights:
    """Weights permuted so that each tile's gates are contiguous columns, in
    the forms the kernels read.  ``backward`` says what a training call's
    backward pass will need, prepared here at forward time (so changing the
    weights in place before backward changes nothing): "tiles" (the
    backward tiles of W_hh), "gate_split" (those of W_hh without gate n's
    rows, and of those rows alone: a GRU before the reset reaches W_hn
    through r*h), or None (inference: no copies for backward at all)."""

    def __init__(self, w_ih, w_hh, gates, ub, backward):
        G, H = w_hh.shape
        I, dtype = w_ih.shape[1], w_ih.dtype
        self.colmap, self._inverse, self.identity, bounds = _tile_permutation(H, gates, ub)
        self.tiles = tiles = tiles_of(H, ub)
        self.w_ih_t = _aligned_empty((I, G), dtype)     # (I, G*H) for the input projection
        self.w_ih = _aligned_empty((G if backward else 0, I), dtype)   # (G*H, I) for dX
        threads = _threads.get_num_threads()
        _layout().permute_input_weights(w_ih, self.colmap, self.w_ih_t, self.w_ih, threads)
        # forward tile k: (H, G*ub) = W_hh[colmap][G*u0:G*u1].T (a GRU's in two blocks)
        self.w_hh_fwd = _pack_blocks(w_hh, bounds, True, self.colmap, threads)
        # backward tile k: (G*H, ub) = W_hh[colmap][:, u0:u1]
        self.w_hh_bwd = self.w_hn_bwd = None
        if backward == "tiles":
            self.w_hh_bwd = _pack_blocks(w_hh, tiles, False, self.colmap, threads)
        elif backward == "gate_split":
            is_n = (self.colmap // H) == 2
            w_hh_p = w_hh[self.colmap]
            self.w_hh_bwd, self.w_hn_bwd = [_pack_blocks(w_hh_p * keep[:, None], tiles, False, nthreads=threads)
                                            for keep in (~is_n, is_n)]

    def permute(self, v):
        return np.ascontiguousarray(v[..., self.colmap]) if v.ndim == 1 else v[self.colmap]

    def unpermute(self, v):
        """Rows of a (G*H, ...) gradient back in PyTorch's gate order (a new
        array: LSTM passes one bias gradient for both biases)."""
        if v.ndim == 1:
            return np.take(v, self._inverse)
        if self.identity:  # one gate, or one tile: v is fresh and already in order
            return v
        return _gather_rows(v, self._inverse)

