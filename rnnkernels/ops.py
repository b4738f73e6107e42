"""Compiled forward/backward kernels for RNN, LSTM and GRU.

Same signatures and semantics as :mod:`rnnkernels.reference` (see
docs/kernel-abi.md).  This module is the Python half of the layering: it
validates arguments, sorts and packs variable-length batches, permutes the
weights into the kernels' tile layout and allocates every buffer; the Cython
modules (``_lstm``, ``_gru``, ``_rnn``) only compute, and ``_layout`` only
moves rows between the two layouts.

Packing: sequences are sorted by length (longest first) and step ``s`` keeps
only the ``counts[s]`` sequences still running, as PyTorch's PackedSequence
does, so work follows ``sum(lengths)`` rather than ``T * B``.  A reversed
sequence is packed back to front, so the kernels always run forward in time.
"""
import contextlib
import functools
import os

import numpy as np

from . import _config
from ._memory import copy as _aligned_copy, empty as _aligned_empty, zeros as _aligned_zeros
from ._memory import scratch as _scratch


def _layout():
    """The compiled row copies (imported on first use, like the kernels)."""
    from . import _layout as layout
    return layout

_FLOAT_DTYPES = (np.float32, np.float64)


# ---------------------------------------------------------------- validation
def _input(x):
    if not hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        raise TypeError(f"x: expected an array of shape (T, B, I), got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x: expected 3 dimensions (T, B, I), got shape {x.shape}")
    if x.shape[2] < 1:
        raise ValueError(f"x: expected input size I >= 1, got shape {x.shape}")
    return x


def _array(name, a, dtype, shape, allow_none=False):
    """Convert ``a`` to a C-contiguous array of ``dtype`` with exactly ``shape``."""
    if a is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: expected an array of shape {shape}, got None")
    if not hasattr(a, "__array__") and not isinstance(a, (list, tuple)):
        raise TypeError(f"{name}: expected an array of shape {shape}, got {type(a).__name__}")
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def _weights(w_ih, w_hh, b_ih, b_hh, gates, cell, x):
    dtype = x.dtype
    I = x.shape[2]
    for name, w in (("w_ih", w_ih), ("w_hh", w_hh)):
        if w is None or not hasattr(w, "shape") and not isinstance(w, (list, tuple)):
            raise TypeError(f"{name}: expected a 2-D array, got {type(w).__name__}")
    w_hh = np.asarray(w_hh)
    if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ValueError(f"w_hh: expected shape ({gates}*H, H) for {cell} "
                         f"({gates} gates), got {w_hh.shape}")
    H = w_hh.shape[1]
    w_ih = _array("w_ih", w_ih, dtype, (gates * H, I))
    w_hh = _array("w_hh", w_hh, dtype, (gates * H, H))
    b_ih = _array("b_ih", b_ih, dtype, (gates * H,), allow_none=True)
    b_hh = _array("b_hh", b_hh, dtype, (gates * H,), allow_none=True)
    return w_ih, w_hh, b_ih, b_hh, H


def _state(name, s, dtype, B, H):
    if s is None:
        return np.zeros((B, H), dtype)
    return _array(name, s, dtype, (B, H))


def _lengths(lengths, T, B):
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise TypeError(f"lengths: expected integers, got non-integral values of dtype {arr.dtype}")
    elif arr.dtype.kind == "b":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an integer array of shape ({B},), got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)  # their range: _layout.longest_first


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _cache_for(cache, kind):
    if cache is None:
        raise ValueError(f"cache: got None; run {kind}_forward with training=True "
                         "to keep what backward needs")
    if not isinstance(cache, _Cache) or cache.kind != kind:
        raise TypeError(f"cache: expected the cache returned by ops.{kind}_forward, "
                        f"got {type(cache).__name__}"
                        + (f" from {cache.kind}_forward" if isinstance(cache, _Cache) else ""))
    return cache


def _grad(name, g, plan, dtype, H):
    """Validate an output gradient (T, B, H); return it as (T*B, H) rows and
    the row of each packed row (empty when the rows are the packed ones), for
    the kernels to read in place."""
    if g is None:
        return np.empty((0, H), dtype), _NO_ROWS
    g = _array(name, g, dtype, (plan.T, plan.B, H)).reshape(plan.T * plan.B, H)
    return g, plan.rows


_NO_ROWS = np.empty(0, dtype=np.intp)
_NO_ROWS.flags.writeable = False


# ------------------------------------------------------------------- packing
class _Plan:
    """How a (T, B) batch with given lengths maps to the kernels' packed rows."""

    def __init__(self, T, B, lengths, reverse, sorted_lengths=None):
        self.T, self.B = T, B
        if lengths is None:
            lengths = np.full(B, T, dtype=np.int64)
        # Longest first; stable so equal lengths keep their order.  With the
        # sequences already longest first (in_order), the initial and final
        # states need no gathers.
        self.order, self.S, self.N, self.in_order = sorted_lengths or _layout().longest_first(lengths, T)
        S, N = self.S, self.N
        # The common case (all full length, forward) needs no gathers at all.
        self.identity = S == T and N == T * B and not reverse and self.in_order
        self.counts = np.empty(S, dtype=np.intp)
        self.offsets = np.empty(S + 1, dtype=np.intp)
        # padded (t, b), flattened, that packed row p comes from; and the
        # padded rows that no packed row fills
        self.padded_of_packed = np.empty(0 if self.identity else N, dtype=np.intp)
        self.padding = np.empty(T * B - N, dtype=np.intp)
        _layout().plan_rows(lengths, self.order, self.counts, self.offsets,
                            self.padded_of_packed, self.padding, T, reverse)
        self.n_first = int(self.counts[0]) if S else 0

    @property
    def rows(self):
        """Row of the caller's (T*B, F) arrays for each packed row, or an empty
        index when they are the same rows (the kernels' convention)."""
        return _NO_ROWS if self.identity else self.padded_of_packed

    def output_buffer(self, H, dtype):
        """(T*B, H) outputs for the kernels to write in place (they zero the
        padding rows themselves; with no packed row at all they never run,
        so the buffer comes zeroed); (0, H) when y is a view of the state
        buffer."""
        if self.identity:
            return np.empty((0, H), dtype)
        return (_aligned_empty if self.N else _aligned_zeros)((self.T * self.B, H), dtype)

    def input_grad_buffer(self, I, dtype):
        """dL/dx as (T*B, I) rows: the kernels write the packed rows through
        ``rows`` and zero the padding (zeroed here when there are no packed rows)."""
        return (_aligned_empty if self.N else _aligned_zeros)((self.T * self.B, I), dtype)

    def state_buffer(self, init, H):
        """(N + B, H) state buffer with the initial states placed (see _lstm.pyx)."""
        buf = _aligned_empty((self.N + self.B, H), init.dtype)
        if not self.in_order:
            init = init[self.order]
        buf[: self.n_first] = init[: self.n_first]
        buf[self.N + self.n_first:] = init[self.n_first:]
        return buf

    def outputs(self, buf, y):
        """y (T, B, H): the kernels' output buffer, or with equal lengths a
        view of their state buffer."""
        H = buf.shape[1]
        if self.identity:
            return buf[self.B:].reshape(self.T, self.B, H)
        return y.reshape(self.T, self.B, H)

    def final(self, buf):
        if self.in_order:
            return buf[self.N:].copy()
        out = np.empty((self.B, buf.shape[1]), buf.dtype)
        out[self.order] = buf[self.N:]
        return out

    def to_sorted(self, a):
        """A new aligned array of a's rows, longest sequence first."""
        return _aligned_copy(a if self.in_order else a[self.order])

    def from_sorted(self, a):
        """a's rows back in the caller's order (a itself when already in it:
        only ever called on buffers made for this call)."""
        if self.in_order:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out


def _plan(T, B, lengths, reverse):
    """The plan for a batch; equal lengths (the common case) come from a cache,
    their plan depending on (T, B, reverse) alone: building one took 190 us of
    a small LSTM's forward call, measured inside a training loop, where the
    kernels have just evicted the interpreter's data from the caches."""
    if lengths is None:
        return _equal_plan(T, B, reverse)
    sorted_lengths = _layout().longest_first(lengths, T)  # checks the range too
    if B and sorted_lengths[2] == T * B:  # every sequence T long
        return _equal_plan(T, B, reverse)
    return _Plan(T, B, lengths, reverse, sorted_lengths)


@functools.lru_cache(maxsize=16)
def _equal_plan(T, B, reverse):
    plan = _Plan(T, B, None, reverse)
    for a in vars(plan).values():
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return plan


# CPUs of this machine: the tile width and the weight-gradient pieces follow it
# (never a call's thread count).
_CPUS = os.cpu_count() or 1


def _unit_tile(H):
    """Hidden units per tile: 64, unless that leaves fewer tiles than the
    machine has CPUs (the time loop runs at most one thread per tile) and H
    is at most 256.  On the 2-core Zen 5, 64-unit tiles at H = 128 (one tile
    per thread instead of two, each gate update over twice the units)
    trained the small LSTM in 0.81-0.91x the time of 32-unit tiles, the GRU
    in 0.88x and the RNN in 0.92x (alternating processes, 2026-12-02); at
    H = 256 they tie.  Depends on H and the machine only, so that every
    thread count gives the same GEMM shapes and bitwise-identical results."""
    forced = int(os.environ.get("RNNKERNELS_UNIT_TILE", 0))
    if forced:
        return forced
    return 64 if H > 256 or H // 64 >= _CPUS else 32


@functools.lru_cache(maxsize=64)
def _tiles_of(H, ub):
    """Tile bounds 0, ub, 2*ub, ..., H (read-only, shared between calls)."""
    tiles = np.array(list(range(0, H, ub)) + [H], dtype=np.intp)
    tiles.flags.writeable = False
    return tiles


def _gather_rows(w, rows):
    """w[rows] into an aligned buffer, one memcpy per row."""
    out = _aligned_empty((len(rows), w.shape[1]), w.dtype)
    _layout().take_rows(w, rows, out, _config.get_num_threads())
    return out


def _dtype_name(dtype):
    return "float32" if dtype.char == "f" else "float64"  # dtype.name costs 2.7 us a call


def _pack_blocks(w, bounds, row_blocks, rows=None, nthreads=1):
    """The weight tiles W[b0:b1].T (row_blocks) or W[:, b0:b1] for consecutive
    bounds, W = w[rows] (w itself without rows), each in the GEMM kernel's
    packed panel layout (see _smallgemm.h); the kernels find block k with
    ``tile_start`` (_common.pxd), which adds up the same sizes."""
    layout = _layout()
    k = w.shape[1] if row_blocks else w.shape[0]
    out = _aligned_empty(layout.blocks_values(_dtype_name(w.dtype), k, bounds), w.dtype)
    layout.pack_blocks(w, _NO_ROWS if rows is None else rows, bounds, row_blocks, out, nthreads)
    return out


@functools.lru_cache(maxsize=64)
def _tile_permutation(H, gates, ub):
    """Gate columns in tile order (each tile's gates contiguous), its inverse,
    whether it is the identity (one gate, or one tile), and the row bounds of
    the forward weight blocks in that order: one block per tile, a GRU's in
    two (r z, then n: its n product may run apart, see _gru.pyx)."""
    tiles = _tiles_of(H, ub)
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


class _Weights:
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
        self.tiles = tiles = _tiles_of(H, ub)
        self.w_ih_t = _aligned_empty((I, G), dtype)     # (I, G*H) for the input projection
        self.w_ih = _aligned_empty((G if backward else 0, I), dtype)   # (G*H, I) for dX
        threads = _config.get_num_threads()
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


class _Cache:
    """What backward needs; opaque to callers."""

    def __init__(self, kind, **fields):
        self.kind = kind
        self.__dict__.update(fields)


# ----------------------------------------------------------- BLAS threading

# Recurrent flops per step and thread below which another thread costs more
# than it brings: each step ends in a barrier, and on a busy machine a thread
# that has lost its core turns every barrier into a scheduler round trip.
_MIN_FLOPS_PER_THREAD = 500_000


# The same for the merged GEMMs, which have one fork/join per GEMM.
_MIN_MERGED_FLOPS_PER_THREAD = 4_000_000



def _wgrad_pieces(k):
    """Pieces of the k = sum(lengths) rows that each weight-gradient GEMM is
    summed over (see _common.weight_grads): one per CPU of this machine, each
    at least 256 rows (one of the kernel's k chunks), at most 16 (each piece
    keeps a buffer the size of the gradients).  The pieces are added in a
    fixed order, so the count depends on the shape and the machine only,
    never on a call's thread count: results stay bitwise identical for any
    thread count."""
    return max(1, min(_CPUS, 16, k // 256))


def _threads_for(plan, gates, H, tiles, I=0):
    """Thread counts for one call: (merged GEMMs, time loop), each the
    configured count but no more than its work keeps busy (and for the time
    loop, no more than there are tiles).  The work split never depends on
    either, so neither do the results."""
    nthreads = _config.get_num_threads()
    step_flops = 2 * plan.n_first * gates * H * H
    merged_flops = 2 * plan.N * gates * H * (I + H)
    step = min(nthreads, len(tiles) - 1, max(1, step_flops // _MIN_FLOPS_PER_THREAD))
    merged = min(nthreads, max(1, merged_flops // _MIN_MERGED_FLOPS_PER_THREAD))
    return int(merged), int(step)


_kernel_blas = None


def _kernels_blas():
    """threadpoolctl controllers of the BLAS that scipy.linalg.cython_blas
    (and so every kernel) calls: SciPy's OpenBLAS when it can be told apart,
    else every BLAS loaded."""
    global _kernel_blas
    if _kernel_blas is None:
        import scipy.linalg.cython_blas  # noqa: F401  (make sure it is loaded)
        from threadpoolctl import ThreadpoolController
        libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        scipy_libs = [lib for lib in libs if "scipy" in os.path.basename(os.path.dirname(lib.filepath))
                      or "scipy_openblas-" in os.path.basename(lib.filepath)]
        _kernel_blas = scipy_libs or libs
    return _kernel_blas


@contextlib.contextmanager
def _kernel_threads(nthreads):
    """Keep the kernels' BLAS single-threaded: every BLAS call already runs
    inside our own OpenMP regions, and a multi-threaded OpenBLAS would fight
    them for the cores.  The setting is left in place rather than restored
    after each call: switching OpenBLAS's thread count back and forth wakes its
    thread pool, which then spins and steals the cores from the next call.
    Only SciPy's OpenBLAS is touched (NumPy's, used by ``@``, is separate)."""
    for lib in _kernels_blas():
        if lib.get_num_threads() != 1:  # a ctypes call, about a microsecond
            lib.set_num_threads(1)
    yield nthreads


# Inference's packed inputs: a scratch slot of their own (the kernels' other
# scratch buffers use slots 0 and 1), needed at the same time as those.
_XP_SLOT = 2


class _Prepared:
    """Validated arguments of a forward call, packed and permuted for the kernels."""

    def __init__(self, cell, gates, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                 backward="tiles"):
        self.x = x = _input(x)
        self.dtype = x.dtype
        self.T, self.B, self.I = x.shape
        self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.H = _weights(
            w_ih, w_hh, b_ih, b_hh, gates, cell, x)
        self.h0 = _state("h0", h0, self.dtype, self.B, self.H)
        self.plan = _plan(self.T, self.B, _lengths(lengths, self.T, self.B),
                          _flag("reverse", reverse))
        self.weights = _Weights(self.w_ih, self.w_hh, gates, _unit_tile(self.H), backward)
        self.tiles = self.weights.tiles
        # The kernels read x's rows in place and gather them into xp, the
        # packed inputs that backward reads (a scratch buffer for inference);
        # with equal lengths the rows are already packed.
        self.x_rows = np.ascontiguousarray(x).reshape(self.T * self.B, self.I)
        if self.plan.identity:
            self.xp = self.x_rows
        else:
            self.xp = (_aligned_empty((self.plan.N, self.I), self.dtype) if backward else
                       _scratch((self.plan.N, self.I), self.dtype, slot=_XP_SLOT))
        self.hbuf = self.plan.state_buffer(self.h0, self.H)

    def inputs(self):
        """The kernels' first three arguments: x's rows, the packed row map, and
        the packed copy to fill ((0, I) when x's rows are the packed ones)."""
        if self.plan.identity:
            return self.x_rows, _NO_ROWS, np.empty((0, self.I), self.dtype)
        return self.x_rows, self.plan.padded_of_packed, self.xp

    def bias_sum(self, gates):
        """b_ih + b_hh (missing biases count as zero), in the tile permutation."""
        bias = np.zeros(gates * self.H, self.dtype)
        for b in (self.b_ih, self.b_hh):
            if b is not None:
                bias += b
        return self.weights.permute(bias)

    def cache(self, kind, **fields):
        return _Cache(kind, plan=self.plan, weights=self.weights, x=self.xp, h=self.hbuf,
                      H=self.H, I=self.I, dtype=self.dtype, has_b_ih=self.b_ih is not None,
                      has_b_hh=self.b_hh is not None, **fields)


def _weight_grad(shape, dtype, n_rows):
    """Buffer for a weight gradient: the kernels' merged GEMMs overwrite all of
    it (beta = 0) when there is at least one packed row, so it is zeroed only
    for an empty batch (a zeroing pass cost 30 us of a small LSTM step)."""
    return (_aligned_empty if n_rows else _aligned_zeros)(shape, dtype)


def _backward_setup(cache, kind, dy, dh_n):
    cache = _cache_for(cache, kind)
    plan, H, dtype = cache.plan, cache.H, cache.dtype
    dy_rows = _grad("dy", dy, plan, dtype, H)
    dh = plan.to_sorted(_state("dh_n", dh_n, dtype, plan.B, H))
    return cache, plan, dy_rows, dh


def _grads(cache, dx, dh, dw_ih, dw_hh, db_ih, db_hh):
    """Un-permute kernel gradients into the public dict."""
    plan, w = cache.plan, cache.weights
    return {
        "x": dx.reshape(plan.T, plan.B, cache.I),
        "h0": plan.from_sorted(dh),
        "w_ih": w.unpermute(dw_ih),
        "w_hh": w.unpermute(dw_hh),
        "b_ih": w.unpermute(db_ih) if cache.has_b_ih else None,
        "b_hh": w.unpermute(db_hh) if cache.has_b_hh else None,
    }


def _outputs(p, y, training, kind, **fields):
    y = p.plan.outputs(p.hbuf, y)
    h_n = p.plan.final(p.hbuf)
    if not training:
        return y, h_n, None
    y.flags.writeable = False  # may be a view of the state buffer that backward reads
    return y, h_n, p.cache(kind, **fields)


# ---------------------------------------------------------------------- LSTM
def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, c0=None, lengths=None,
                 reverse=False, training=True):
    """LSTM over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), c_n (B, H), cache`` (cache None unless training).
    """
    from . import _lstm
    training = _flag("training", training)
    p = _Prepared("lstm", 4, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                  "tiles" if training else None)
    c0 = _state("c0", c0, p.dtype, p.B, p.H)
    cbuf = p.plan.state_buffer(c0, p.H)
    # Inference keeps no gates: reuse the scratch buffer (no fresh pages).
    gates = (_aligned_empty if training else _scratch)((p.plan.N, 4 * p.H), p.dtype)
    y = p.plan.output_buffer(p.H, p.dtype)
    if p.plan.N:
        with _kernel_threads(_threads_for(p.plan, 4, p.H, p.tiles, p.I)) as (nthreads, step_threads):
            _lstm.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, p.bias_sum(4),
                          p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, cbuf, gates,
                          y, p.plan.rows, p.plan.padding, nthreads, step_threads)
    c_n = p.plan.final(cbuf)
    y, h_n, cache = _outputs(p, y, training, "lstm", c=cbuf, gates=gates)
    return y, h_n, c_n, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None):
    """Gradients of an LSTM forward pass; returns a dict with keys
    x, h0, c0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from . import _lstm
    cache, plan, (dy, dy_rows), dh = _backward_setup(cache, "lstm", dy, dh_n)
    H, I, dtype = cache.H, cache.I, cache.dtype
    dc = plan.to_sorted(_state("dc_n", dc_n, dtype, plan.B, H))
    dgates = _scratch((plan.N, 4 * H), dtype)
    dx = plan.input_grad_buffer(I, dtype)
    dw_ih = _weight_grad((4 * H, I), dtype, plan.N)
    dw_hh = _weight_grad((4 * H, H), dtype, plan.N)
    db = np.zeros(4 * H, dtype)
    if plan.N:
        with _kernel_threads(_threads_for(plan, 4, H, cache.weights.tiles, I)) as (nthreads, step_threads):
            _lstm.backward(cache.x, cache.weights.w_ih, cache.weights.w_hh_bwd, cache.h,
                           cache.c, cache.gates, dy, dy_rows, plan.counts, plan.offsets,
                           cache.weights.tiles, dh, dc, dgates, dx, plan.rows, plan.padding, dw_ih, dw_hh, db,
                           nthreads, step_threads, _wgrad_pieces(plan.N))
    grads = _grads(cache, dx, dh, dw_ih, dw_hh, db, db)
    grads["c0"] = plan.from_sorted(dc)
    return grads


# ----------------------------------------------------------------------- RNN
_NONLINEARITIES = ("tanh", "relu")


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                nonlinearity="tanh", training=True):
    """Vanilla (Elman) RNN over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), cache`` (cache None unless training).
    """
    from . import _rnn
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    training = _flag("training", training)
    p = _Prepared("rnn", 1, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                  "tiles" if training else None)
    relu = nonlinearity == "relu"
    pre = _scratch((p.plan.N, p.H), p.dtype)  # never kept: backward reads h
    y = p.plan.output_buffer(p.H, p.dtype)
    if p.plan.N:
        with _kernel_threads(_threads_for(p.plan, 1, p.H, p.tiles, p.I)) as (nthreads, step_threads):
            _rnn.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, p.bias_sum(1),
                         p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, pre, y, p.plan.rows,
                         p.plan.padding, relu, nthreads, step_threads)
    return _outputs(p, y, training, "rnn", relu=relu)


def rnn_backward(cache, dy, dh_n=None):
    """Gradients of an RNN forward pass; returns a dict with keys
    x, h0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from . import _rnn
    cache, plan, (dy, dy_rows), dh = _backward_setup(cache, "rnn", dy, dh_n)
    H, I, dtype = cache.H, cache.I, cache.dtype
    dpre = _scratch((plan.N, H), dtype)
    dx = plan.input_grad_buffer(I, dtype)
    dw_ih = _weight_grad((H, I), dtype, plan.N)
    dw_hh = _weight_grad((H, H), dtype, plan.N)
    db = np.zeros(H, dtype)
    if plan.N:
        with _kernel_threads(_threads_for(plan, 1, H, cache.weights.tiles, I)) as (nthreads, step_threads):
            _rnn.backward(cache.x, cache.weights.w_ih, cache.weights.w_hh_bwd, cache.h, dy, dy_rows,
                          plan.counts, plan.offsets, cache.weights.tiles, dh, dpre, dx, plan.rows,
                          plan.padding, dw_ih, dw_hh, db, cache.relu, nthreads, step_threads, _wgrad_pieces(plan.N))
    return _grads(cache, dx, dh, dw_ih, dw_hh, db, db)


# ----------------------------------------------------------------------- GRU
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                reset_after=True, training=True):
    """GRU over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), cache`` (cache None unless training).
    """
    from . import _gru
    reset_after = _flag("reset_after", reset_after)
    training = _flag("training", training)
    p = _Prepared("gru", 3, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                  ("tiles" if reset_after else "gate_split") if training else None)
    H, N = p.H, p.plan.N
    # r and z (and, before the reset, n) take b_ih + b_hh; after the reset,
    # b_hn sits inside r * (W_hn h + b_hn) and is passed apart.
    b_h = np.zeros(3 * H, p.dtype) if p.b_hh is None else p.b_hh.copy()
    b_hn = np.zeros(H, p.dtype)
    if reset_after:
        b_hn[:] = b_h[2 * H:]
        b_h[2 * H:] = 0
    bias = p.weights.permute(b_h if p.b_ih is None else p.b_ih + b_h)
    gates = _aligned_empty((N, 3 * H), p.dtype)
    aux = _aligned_empty((N, H), p.dtype)
    gh = _aligned_empty((p.B, 3 * H), p.dtype)
    y = p.plan.output_buffer(H, p.dtype)
    if N:
        with _kernel_threads(_threads_for(p.plan, 3, p.H, p.tiles, p.I)) as (nthreads, step_threads):
            _gru.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, bias, b_hn,
                         p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, gates, aux, gh,
                         y, p.plan.rows, p.plan.padding, bool(reset_after), nthreads, step_threads)
    return _outputs(p, y, training, "gru", gates=gates, aux=aux, reset_after=bool(reset_after))


def gru_backward(cache, dy, dh_n=None):
    """Gradients of a GRU forward pass; returns a dict with keys
    x, h0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from . import _gru
    cache, plan, (dy, dy_rows), dh = _backward_setup(cache, "gru", dy, dh_n)
    H, I, dtype, N, w = cache.H, cache.I, cache.dtype, plan.N, cache.weights
    reset_after = cache.reset_after
    G3 = 3 * H
    dw_ih = _weight_grad((G3, I), dtype, N)
    dw_hh = _weight_grad((G3, H), dtype, N)
    db_ih = np.zeros(G3, dtype)
    db_hh = np.zeros(G3, dtype)
    dx = plan.input_grad_buffer(I, dtype)
    if reset_after:
        w_hh_tiles, w_hn_tiles = w.w_hh_bwd, np.zeros(1, dtype)
        dgx = _scratch((N, G3), dtype, slot=0)
        dgh = _scratch((2 * plan.B, G3), dtype, slot=1)  # two-step ring (see _gru.pyx)
        dw_hn = np.zeros((1, 1), dtype)
    else:
        w_hh_tiles, w_hn_tiles = w.w_hh_bwd, w.w_hn_bwd
        dgx = _scratch((N, G3), dtype, slot=0)
        dgx[:] = 0  # r columns are read (times zero) before they are written
        dgh = np.empty((0, G3), dtype)
        dw_hn = _weight_grad((G3, H), dtype, N)
    if N:
        with _kernel_threads(_threads_for(plan, 3, H, w.tiles, I)) as (nthreads, step_threads):
            _gru.backward(cache.x, w.w_ih, w_hh_tiles, w_hn_tiles, cache.h, cache.gates,
                          cache.aux, dy, dy_rows, plan.counts, plan.offsets, w.tiles, dh,
                          _aligned_empty((plan.B, H), dtype), dgx, dgh if reset_after else dgx,
                          dx, plan.rows, plan.padding, dw_ih, dw_hh, dw_hn, db_ih, db_hh, reset_after,
                          nthreads, step_threads, _wgrad_pieces(plan.N))
    if not reset_after:
        n_rows = w.colmap >= 2 * H  # W_hn's rows take their gradient from r*h
        dw_hh[n_rows] = dw_hn[n_rows]
        db_hh = db_ih
    return _grads(cache, dx, dh, dw_ih, dw_hh, db_ih, db_hh)
