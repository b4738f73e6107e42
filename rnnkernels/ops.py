"""Compiled forward/backward kernels for RNN, LSTM and GRU.

Same signatures and semantics as :mod:`rnnkernels.reference` (see
docs/kernel-abi.md).  This module is the Python half of the layering: it
validates arguments and allocates every buffer; :mod:`rnnkernels._core`
plans the packed layout (``plan``) and permutes the weights into the
kernels' tiles (``weights``); the compiled modules only compute.
"""
import numpy as np

from ._core import threads as _threads, tuning as _tuning
from ._core.blas import pin_blas as _pin_blas
from ._core.memory import empty as _aligned_empty, scratch as _scratch, zeros as _aligned_zeros
from ._core.plan import NO_ROWS as _NO_ROWS, plan as _plan
from ._core.weights import Weights as _Weights

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



class _Cache:
    """What backward needs; opaque to callers."""

    def __init__(self, kind, **fields):
        self.kind = kind
        self.__dict__.update(fields)


def _kernel_threads(plan, gates, H, tiles, I):
    """(merged GEMMs, time loop) thread counts for one call, with the kernels'
    BLAS held to one thread (its calls run inside our OpenMP regions)."""
    _pin_blas(1, which="kernels")
    return _tuning.threads_for(plan, gates, H, tiles, I)


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
        self.weights = _Weights(self.w_ih, self.w_hh, gates, _tuning.unit_tile(self.H), backward)
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
    for an empty batch (a zeroing pass is a full write of the gradient)."""
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
    from ._core import _lstm
    training = _flag("training", training)
    p = _Prepared("lstm", 4, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                  "tiles" if training else None)
    c0 = _state("c0", c0, p.dtype, p.B, p.H)
    cbuf = p.plan.state_buffer(c0, p.H)
    # Inference keeps no gates: reuse the scratch buffer (no fresh pages).
    gates = (_aligned_empty if training else _scratch)((p.plan.N, 4 * p.H), p.dtype)
    y = p.plan.output_buffer(p.H, p.dtype)
    if p.plan.N:
        nthreads, step_threads = _kernel_threads(p.plan, 4, p.H, p.tiles, p.I)
        team = _lstm.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, p.bias_sum(4),
                             p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, cbuf, gates,
                             y, p.plan.rows, p.plan.padding, nthreads, step_threads)
        _threads.note_call("lstm_forward", nthreads, team)
    c_n = p.plan.final(cbuf)
    y, h_n, cache = _outputs(p, y, training, "lstm", c=cbuf, gates=gates)
    return y, h_n, c_n, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None):
    """Gradients of an LSTM forward pass; returns a dict with keys
    x, h0, c0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from ._core import _lstm
    cache, plan, (dy, dy_rows), dh = _backward_setup(cache, "lstm", dy, dh_n)
    H, I, dtype = cache.H, cache.I, cache.dtype
    dc = plan.to_sorted(_state("dc_n", dc_n, dtype, plan.B, H))
    dgates = _scratch((plan.N, 4 * H), dtype)
    dx = plan.input_grad_buffer(I, dtype)
    dw_ih = _weight_grad((4 * H, I), dtype, plan.N)
    dw_hh = _weight_grad((4 * H, H), dtype, plan.N)
    db = np.zeros(4 * H, dtype)
    if plan.N:
        nthreads, step_threads = _kernel_threads(plan, 4, H, cache.weights.tiles, I)
        team = _lstm.backward(cache.x, cache.weights.w_ih, cache.weights.w_hh_bwd, cache.h,
                              cache.c, cache.gates, dy, dy_rows, plan.counts, plan.offsets,
                              cache.weights.tiles, dh, dc, dgates, dx, plan.rows, plan.padding, dw_ih, dw_hh, db,
                              nthreads, step_threads, _tuning.wgrad_pieces(plan.N))
        _threads.note_call("lstm_backward", nthreads, team)
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
    from ._core import _rnn
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    training = _flag("training", training)
    p = _Prepared("rnn", 1, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse,
                  "tiles" if training else None)
    relu = nonlinearity == "relu"
    pre = _scratch((p.plan.N, p.H), p.dtype)  # never kept: backward reads h
    y = p.plan.output_buffer(p.H, p.dtype)
    if p.plan.N:
        nthreads, step_threads = _kernel_threads(p.plan, 1, p.H, p.tiles, p.I)
        team = _rnn.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, p.bias_sum(1),
                            p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, pre, y, p.plan.rows,
                            p.plan.padding, relu, nthreads, step_threads)
        _threads.note_call("rnn_forward", nthreads, team)
    return _outputs(p, y, training, "rnn", relu=relu)


def rnn_backward(cache, dy, dh_n=None):
    """Gradients of an RNN forward pass; returns a dict with keys
    x, h0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from ._core import _rnn
    cache, plan, (dy, dy_rows), dh = _backward_setup(cache, "rnn", dy, dh_n)
    H, I, dtype = cache.H, cache.I, cache.dtype
    dpre = _scratch((plan.N, H), dtype)
    dx = plan.input_grad_buffer(I, dtype)
    dw_ih = _weight_grad((H, I), dtype, plan.N)
    dw_hh = _weight_grad((H, H), dtype, plan.N)
    db = np.zeros(H, dtype)
    if plan.N:
        nthreads, step_threads = _kernel_threads(plan, 1, H, cache.weights.tiles, I)
        team = _rnn.backward(cache.x, cache.weights.w_ih, cache.weights.w_hh_bwd, cache.h, dy, dy_rows,
                             plan.counts, plan.offsets, cache.weights.tiles, dh, dpre, dx, plan.rows,
                             plan.padding, dw_ih, dw_hh, db, cache.relu, nthreads, step_threads, _tuning.wgrad_pieces(plan.N))
        _threads.note_call("rnn_backward", nthreads, team)
    return _grads(cache, dx, dh, dw_ih, dw_hh, db, db)


# ----------------------------------------------------------------------- GRU
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                reset_after=True, training=True):
    """GRU over a time-major batch; see docs/kernel-abi.md.

    Returns ``y (T, B, H), h_n (B, H), cache`` (cache None unless training).
    """
    from ._core import _gru
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
        nthreads, step_threads = _kernel_threads(p.plan, 3, p.H, p.tiles, p.I)
        team = _gru.forward(*p.inputs(), p.weights.w_ih_t, p.weights.w_hh_fwd, bias, b_hn,
                            p.plan.counts, p.plan.offsets, p.tiles, p.hbuf, gates, aux, gh,
                            y, p.plan.rows, p.plan.padding, bool(reset_after), nthreads, step_threads)
        _threads.note_call("gru_forward", nthreads, team)
    return _outputs(p, y, training, "gru", gates=gates, aux=aux, reset_after=bool(reset_after))


def gru_backward(cache, dy, dh_n=None):
    """Gradients of a GRU forward pass; returns a dict with keys
    x, h0, w_ih, w_hh, b_ih, b_hh (biases None where they were None)."""
    from ._core import _gru
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
        nthreads, step_threads = _kernel_threads(plan, 3, H, w.tiles, I)
        team = _gru.backward(cache.x, w.w_ih, w_hh_tiles, w_hn_tiles, cache.h, cache.gates,
                             cache.aux, dy, dy_rows, plan.counts, plan.offsets, w.tiles, dh,
                             _aligned_empty((plan.B, H), dtype), dgx, dgh if reset_after else dgx,
                             dx, plan.rows, plan.padding, dw_ih, dw_hh, dw_hn, db_ih, db_hh, reset_after,
                             nthreads, step_threads, _tuning.wgrad_pieces(plan.N))
        _threads.note_call("gru_backward", nthreads, team)
    if not reset_after:
        n_rows = w.colmap >= 2 * H  # W_hn's rows take their gradient from r*h
        dw_hh[n_rows] = dw_hn[n_rows]
        db_hh = db_ih
    return _grads(cache, dx, dh, dw_ih, dw_hh, db_ih, db_hh)
