"""Weights permuted so that each hidden-unit tile's gates are contiguous
columns, and packed into the GEMM kernel's panels (src/_smallgemm.h).

The kernels split the hidden units into fixed tiles (tuning.unit_tile); a
tile's recurrent product and point updates run on one thread per step.  Its
gate columns must therefore be contiguous: the tile permutation reorders
PyTorch's ``[i | f | g | o]`` blocks into ``[i f g o of tile 0 | of tile 1 |
...]``.  Forward reads W_hh^T's column blocks (one a tile, a GRU's in two:
its n product may run apart), backward W_hh's column blocks over the units h
has (the projection's P, else H); a projecting LSTM also packs W_hr both
ways.  The LayerNorm cells run on whole rows: one tile, no permutation.
"""
import functools

import numpy as np

from . import threads as _threads
from . import isa as _isa
from . import openmp as _openmp
from . import tuning as _tuning
from .tuning import kernels as _kernels
from .memory import empty as _aligned_empty


def _layout():
    return _openmp.load("_layout")


_NO_ROWS = np.empty(0, dtype=np.intp)
_NO_ROWS.flags.writeable = False


@functools.lru_cache(maxsize=64)
def tiles_of(H, ub):
    """Tile bounds 0, ub, 2*ub, ..., H (read-only, shared between calls)."""
    tiles = np.array(list(range(0, H, ub)) + [H], dtype=np.intp)
    tiles.flags.writeable = False
    return tiles


def _gather_rows(w, rows):
    """w[rows] into an aligned buffer, one memcpy per row."""
    out = _aligned_empty((len(rows), w.shape[1]), w.dtype)
    _layout().take_rows(w, rows, out, _threads.kernel_threads())
    return out


def _dtype_name(dtype):
    return "float32" if dtype.char == "f" else "float64"  # not dtype.name: a slow property


@functools.lru_cache(maxsize=256)
def _starts(isa_name, dtype_name, k, bounds_key):
    # isa_name keys the cache: the panel width follows the build's vectors
    return _isa.module(isa_name).block_starts(dtype_name, k, np.array(bounds_key, dtype=np.intp))


def pack_blocks(w, bounds, row_blocks, rows=None, nthreads=1):
    """The blocks W[b0:b1].T (row_blocks) or W[:, b0:b1] for consecutive
    bounds, W = w[rows] (w itself without rows), each in the GEMM kernel's
    packed panel layout, one after the other; returns (packed, starts), the
    kernels finding block j at starts[j]."""
    k = w.shape[1] if row_blocks else w.shape[0]
    starts = _starts(_tuning.active(), _dtype_name(w.dtype), k, tuple(int(b) for b in bounds))
    out = _aligned_empty(int(starts[-1]), w.dtype)
    _kernels().pack_blocks(np.ascontiguousarray(w), _NO_ROWS if rows is None else rows, bounds, starts,
                           row_blocks, out, nthreads)
    return out, starts


@functools.lru_cache(maxsize=64)
def tile_permutation(H, gates, ub, split_gru):
    """Gate columns in tile order (each tile's gates contiguous), its inverse,
    whether it is the identity (one gate, or one tile), and the row bounds of
    the forward weight blocks in that order: one block per tile, or with
    ``split_gru`` two (r z, then n)."""
    tiles = tiles_of(H, ub)
    colmap = np.array([c for u0, u1 in zip(tiles[:-1], tiles[1:])
                       for g in range(gates) for c in range(g * H + u0, g * H + u1)], dtype=np.intp)
    inverse = np.argsort(colmap)
    split = [2, 1] if split_gru else [gates]
    bounds = [0]
    for u0, u1 in zip(tiles[:-1], tiles[1:]):
        for part in split:
            bounds.append(bounds[-1] + part * (u1 - u0))
    bounds = np.array(bounds, dtype=np.intp)
    for a in (colmap, inverse, bounds):
        a.flags.writeable = False
    return colmap, inverse, bool(np.array_equal(colmap, np.arange(colmap.size))), bounds


@functools.lru_cache(maxsize=64)
def _gate_bounds_of(tiles_key, gates):
    out = np.array([gates * u for u in tiles_key], dtype=np.intp)
    out.flags.writeable = False
    return out


def _gate_bounds(tiles, gates):
    """The gate-column bounds of the tiles: gates * (0, ub, 2 ub, ..., H)."""
    return _gate_bounds_of(tuple(int(u) for u in tiles), gates)


class Weights:
    """The weights in the forms one call's kernels read.

    ``ub``: units per tile (H for the LayerNorm cells: one tile); ``pub``:
    outputs per projection tile; ``backward``: what a training call's
    backward pass will need, prepared here at forward time (so changing the
    weights in place before backward changes nothing): "tiles", "gate_split"
    (a GRU before the reset reaches W_hn through r * h: W_hh's backward tiles
    without its n rows, and of those rows alone), or None (inference)."""

    def __init__(self, w_ih, w_hh, gates, ub, backward, split_gru=False, w_hr=None, pub=None, input_in_step=False):
        GH, P = w_hh.shape
        H = GH // gates
        I, dtype = w_ih.shape[1], w_ih.dtype
        self.ub = ub
        self.colmap, self._inverse, self.identity, bounds = tile_permutation(H, gates, ub, split_gru)
        self.tiles = tiles = tiles_of(H, ub)
        self.ptiles = tiles_of(P, pub) if w_hr is not None else None
        # (I, G*H) for the input projection pass; none where the input side runs inside the steps
        self.w_ih_t = _aligned_empty((0 if input_in_step else I, GH), dtype)
        self.w_ih = _aligned_empty((GH if backward else 0, I), dtype)   # (G*H, I) for dX
        threads = _threads.kernel_threads()
        _kernels().permute_input_weights(w_ih, self.colmap, self.w_ih_t, self.w_ih, threads)
        # with the input side inside the steps, block k: (I, G*ub) = W_ih[colmap][G*u0:G*u1].T
        self.w_ih_fwd = self.w_ih_fwd_starts = None
        if input_in_step:
            self.w_ih_fwd, self.w_ih_fwd_starts = pack_blocks(w_ih, _gate_bounds(tiles, gates), True, self.colmap,
                                                              threads)
        # forward block k: (P, G*ub) = W_hh[colmap][G*u0:G*u1].T
        self.w_fwd, self.w_fwd_starts = pack_blocks(w_hh, bounds, True, self.colmap, threads)
        # backward block k: (G*H, ub) = W_hh[colmap][:, u0:u1], over the units h has
        self.w_bwd = self.w_bwd_n = self.w_bwd_starts = None
        hbounds = self.ptiles if w_hr is not None else tiles
        if backward == "tiles":
            self.w_bwd, self.w_bwd_starts = pack_blocks(w_hh, hbounds, False, self.colmap, threads)
        elif backward == "gate_split":
            is_n = (self.colmap // H) == 2
            w_p = w_hh[self.colmap]
            (self.w_bwd, self.w_bwd_starts), (self.w_bwd_n, _) = [
                pack_blocks(w_p * keep[:, None], hbounds, False, nthreads=threads) for keep in (~is_n, is_n)]
        # the projection: forward block q (H, pb) = W_hr[q].T; backward block k (P, ub) = W_hr[:, tile k]
        self.w_hr_fwd = self.w_hr_fwd_starts = self.w_hr_bwd = self.w_hr_bwd_starts = None
        if w_hr is not None:
            self.w_hr_fwd, self.w_hr_fwd_starts = pack_blocks(w_hr, self.ptiles, True, nthreads=threads)
            if backward:
                self.w_hr_bwd, self.w_hr_bwd_starts = pack_blocks(w_hr, tiles, False, nthreads=threads)

    def permute(self, v):
        return np.ascontiguousarray(v[..., self.colmap]) if v.ndim == 1 else v[self.colmap]

    def unpermute(self, v):
        """Rows of a (G*H, ...) gradient back in PyTorch's gate order (a new
        array: the LSTM passes one bias gradient for both biases)."""
        if v.ndim == 1:
            return np.take(v, self._inverse)
        if self.identity:  # one gate, or one tile: v is fresh and already in order
            return v
        return _gather_rows(v, self._inverse)

    def permute_triple(self, vectors):
        """Three (H,) vectors (the peephole weights) in tile order: tile k holds
        [a, b, c] of its units (3 * ub values at 3 * u0)."""
        colmap3 = tile_permutation(vectors[0].shape[0], 3, self.ub, False)[0]
        return np.ascontiguousarray(np.concatenate(vectors)[colmap3])

    def unpermute_triple(self, v):
        H = v.shape[0] // 3
        inverse3 = tile_permutation(H, 3, self.ub, False)[1]
        u = np.take(v, inverse3)
        return u[:H].copy(), u[H:2 * H].copy(), u[2 * H:].copy()
