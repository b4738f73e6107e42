"""Readable NumPy reference for the recurrent kernels: the oracle.

Same functions, signatures and semantics as :mod:`rnnkernels.ops`
(docs/kernel-abi.md); it shares no code with it, so each checks the other, and
this one is itself checked by central differences (tests/test_reference.py)
and against PyTorch (tests/test_torch.py).  Written to be read, not to be
fast: one explicit loop over time steps, vectorised over the batch.

Notation (PyTorch's layout and gate order, time-major)::

    x    (T, B, I)   inputs               y    (T, B, H)   outputs (= h after each step)
    h, c (B, H)      hidden / cell state  w_ih (G*H, I)    w_hh (G*H, H)
    b_ih, b_hh (G*H,)                     G = 4 (LSTM: i f g o), 3 (GRU: r z n), 1 (RNN)

Variable lengths.  Step ``s`` (s = 0 .. T-1) advances only the sequences
still running (``s < lengths[b]``); sequence ``b`` reads time ``t = s``, or
``t = lengths[b] - 1 - s`` when ``reverse`` (it runs back over its own valid
span, like the reverse direction of PyTorch's packed bidirectional RNN).
Sequences that have ended keep their state, which is therefore ``h_n`` at
the end, and their ``y`` stays zero.  Backward walks the same steps in
reverse order, so every step below comes as a forward/backward pair.
"""
import numpy as np
from scipy.special import expit as sigmoid  # 1 / (1 + exp(-a)), no overflow for huge |a|

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
           "rnn_forward", "rnn_backward"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NONLINEARITIES = ("tanh", "relu")


# ------------------------------------------------------------------ validation
def _as_array(name, a, expected):
    """``a`` as a real numeric ndarray; TypeError naming ``name`` otherwise."""
    if not isinstance(a, (np.ndarray, list, tuple)) and not hasattr(a, "__array__"):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array ({expected}), got dtype {a.dtype}")
    return a


def _check_x(x):
    x = _as_array("x", x, "an array of shape (T, B, I)")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x: expected dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x: expected 3 dimensions (T, B, I), got shape {x.shape}")
    if x.shape[2] < 1:
        raise ValueError(f"x: expected input size I >= 1, got shape {x.shape}")
    return x


def _check_shaped(name, a, shape, dtype):
    """``a`` converted to ``dtype``, which must have exactly ``shape``."""
    a = _as_array(name, a, f"an array of shape {shape}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a.astype(dtype, copy=False)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _check_lengths(lengths, T, B):
    """``lengths`` as int64 (B,) in [0, T]; None means every sequence runs all T steps."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    arr = _as_array("lengths", lengths, f"integers of shape ({B},)")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise TypeError(f"lengths: expected integers, got non-integral values of dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence), got {arr.shape}")
    arr = arr.astype(np.int64)
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [0, {T}] (T={T}), "
                         f"got min {arr.min()} and max {arr.max()}")
    return arr


class _Problem:
    """The validated arguments of one forward call, all in the dtype of ``x``.

    A missing bias becomes zeros for the arithmetic (``has_b_ih``/``has_b_hh``
    remember that its gradient must be reported as None).
    """

    def __init__(self, cell, G, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
        self.cell, self.G = cell, G
        self.x = x = _check_x(x)
        self.T, self.B, self.I = T, B, I = x.shape
        self.dtype = dtype = x.dtype
        w_hh = _as_array("w_hh", w_hh, f"an array of shape ({G}*H, H)")
        if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != G * w_hh.shape[1]:
            raise ValueError(f"w_hh: expected shape ({G}*H, H) for {cell} ({G} gates), got {w_hh.shape}")
        self.H = H = w_hh.shape[1]
        # Copies, so that updating the weights in place before backward cannot change it.
        self.w_hh = w_hh.astype(dtype)
        self.w_ih = _check_shaped("w_ih", w_ih, (G * H, I), dtype).copy()
        self.has_b_ih, self.has_b_hh = b_ih is not None, b_hh is not None
        zeros = np.zeros(G * H, dtype)
        self.b_ih = zeros if b_ih is None else _check_shaped("b_ih", b_ih, (G * H,), dtype)
        self.b_hh = zeros if b_hh is None else _check_shaped("b_hh", b_hh, (G * H,), dtype)
        self.lengths = _check_lengths(lengths, T, B)
        self.reverse = _check_flag("reverse", reverse)

    def state(self, name, s):
        """Initial state (B, H); None means zeros."""
        if s is None:
            return np.zeros((self.B, self.H), self.dtype)
        return _check_shaped(name, s, (self.B, self.H), self.dtype)

    def steps(self):
        """For each step s: (rows, times), the running sequences and the time each reads."""
        for s in range(self.T):
            rows = np.flatnonzero(s < self.lengths)
            times = self.lengths[rows] - 1 - s if self.reverse else np.full(rows.size, s)
            yield rows, times


# -------------------------------------------------------- the loop over time
def _scan(problem, cell_step, initial, training, **options):
    """Run ``cell_step`` over time.  ``initial`` is a tuple of states (B, H)
    (h first).  Returns y (T, B, H), the final states and the tape (what
    backward needs at each step; None when not training)."""
    p = problem
    states = [s.copy() for s in initial]
    y = np.zeros((p.T, p.B, p.H), p.dtype)
    tape = [] if training else None
    for rows, times in p.steps():
        x_t = p.x[times, rows]                       # (N, I), N running sequences
        new, kept = cell_step(p, x_t, *(s[rows] for s in states), **options)
        for s, s_new in zip(states, new):
            s[rows] = s_new
        y[times, rows] = new[0]
        if training:
            tape.append((rows, times, kept))
    return y, states, tape


def _scan_backward(cache, cell_step_backward, dy, dfinal):
    """Backpropagate through the tape of ``_scan``.  ``dfinal`` are the
    gradients of the final states (h first).  Returns the gradient dict."""
    p = cache["problem"]
    dy = np.zeros((p.T, p.B, p.H), p.dtype) if dy is None else _check_shaped(
        "dy", dy, (p.T, p.B, p.H), p.dtype)
    dstates = [_check_shaped(name, d, (p.B, p.H), p.dtype).copy() if d is not None
               else np.zeros((p.B, p.H), p.dtype) for name, d in dfinal]
    grads = {"x": np.zeros_like(p.x),
             "w_ih": np.zeros_like(p.w_ih), "w_hh": np.zeros_like(p.w_hh),
             "b_ih": np.zeros_like(p.b_ih), "b_hh": np.zeros_like(p.b_hh)}
    for rows, times, kept in reversed(cache["tape"]):
        dstates[0][rows] += dy[times, rows]          # y at this step is the new h
        dx_t, dprev = cell_step_backward(p, kept, *(d[rows] for d in dstates), grads=grads,
                                         **cache["options"])
        grads["x"][times, rows] = dx_t
        for d, d_prev in zip(dstates, dprev):
            d[rows] = d_prev
    for name, d in zip(cache["state_names"], dstates):
        grads[name] = d                              # states nobody updated pass straight through
    if not p.has_b_ih:
        grads["b_ih"] = None
    if not p.has_b_hh:
        grads["b_hh"] = None
    return grads


def _make_cache(kind, problem, tape, state_names, **options):
    return {"kind": kind, "problem": problem, "tape": tape, "state_names": state_names,
            "options": options}


def _check_cache(cache, kind):
    if cache is None:
        raise ValueError(f"cache: got None; run {kind}_forward with training=True "
                         "to keep what backward needs")
    if not isinstance(cache, dict) or cache.get("kind") != kind or "tape" not in cache:
        got = f"a cache from {cache['kind']}_forward" if isinstance(cache, dict) and "kind" in cache \
            else type(cache).__name__
        raise TypeError(f"cache: expected the cache returned by reference.{kind}_forward, got {got}")
    return cache


def _accumulate(grads, which, da, inputs, rows=slice(None)):
    """dW_which[rows] += da^T inputs;  db_which[rows] += sum over sequences of da.

    ``da`` (N, len(rows)) is the gradient of the projection
    W_which[rows] inputs + b_which[rows], with ``which`` "ih" or "hh".
    """
    grads["w_" + which][rows] += da.T @ inputs
    grads["b_" + which][rows] += da.sum(axis=0)


# ------------------------------------------------------------------------ LSTM
def _lstm_step(p, x, h, c):
    """One LSTM step for N running sequences: x (N, I), h, c (N, H).

    a = W_ih x + b_ih + W_hh h + b_hh                     (N, 4H)
    i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
    c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c')
    """
    H = p.H
    a = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:4 * H])
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c
    return (h_new, c_new), (x, h, c, i, f, g, o, tanh_c)


def _lstm_step_backward(p, kept, dh_new, dc_new, grads):
    """Given dL/dh', dL/dc' (N, H): accumulate weight gradients, return dx, (dh, dc)."""
    x, h, c, i, f, g, o, tanh_c = kept
    do = dh_new * tanh_c
    dc_new = dc_new + dh_new * o * (1 - tanh_c ** 2)   # c' reaches the loss directly and via h'
    di = dc_new * g
    dg = dc_new * i
    df = dc_new * c
    dc = dc_new * f
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)],
                        axis=1)                       # (N, 4H), same for both projections
    _accumulate(grads, "ih", da, x)
    _accumulate(grads, "hh", da, h)
    dx = da @ p.w_ih
    dh = da @ p.w_hh
    return dx, (dh, dc)


def lstm_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, c0=None, lengths=None, reverse=False,
                 training=True):
    """LSTM over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (4H, I); w_hh (4H, H); b_ih, b_hh (4H,) or None;
    h0, c0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None.
    Returns y (T, B, H), h_n (B, H), c_n (B, H), cache (None unless training).
    """
    p = _Problem("lstm", 4, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    initial = (p.state("h0", h0), p.state("c0", c0))
    training = _check_flag("training", training)
    y, (h_n, c_n), tape = _scan(p, _lstm_step, initial, training)
    cache = _make_cache("lstm", p, tape, ("h0", "c0")) if training else None
    return y, h_n, c_n, cache


def lstm_backward(cache, dy, dh_n=None, dc_n=None):
    """Gradients of lstm_forward given dy (T, B, H), dh_n, dc_n (B, H) (None = zeros).

    Returns {x, h0, c0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None).
    """
    cache = _check_cache(cache, "lstm")
    return _scan_backward(cache, _lstm_step_backward, dy, (("dh_n", dh_n), ("dc_n", dc_n)))


# ------------------------------------------------------------------------- GRU
def _gru_step(p, x, h, reset_after):
    """One GRU step for N running sequences: x (N, I), h (N, H).

    a_x = W_ih x + b_ih,  a_h = W_hh h + b_hh                       (N, 3H)
    r = σ(a_x_r + a_h_r);  z = σ(a_x_z + a_h_z)
    reset_after:   n = tanh(a_x_n + r ⊙ a_h_n)
    reset before:  n = tanh(a_x_n + W_hn (r ⊙ h) + b_hn)
    h' = (1 - z) ⊙ n + z ⊙ h
    """
    H = p.H
    a_x = x @ p.w_ih.T + p.b_ih
    a_h = h @ p.w_hh[:2 * H].T + p.b_hh[:2 * H]     # r and z rows
    r = sigmoid(a_x[:, :H] + a_h[:, :H])
    z = sigmoid(a_x[:, H:2 * H] + a_h[:, H:])
    w_hn, b_hn = p.w_hh[2 * H:], p.b_hh[2 * H:]
    if reset_after:
        hn = h @ w_hn.T + b_hn                        # W_hn h + b_hn
        n = np.tanh(a_x[:, 2 * H:] + r * hn)
    else:
        hn = (r * h) @ w_hn.T + b_hn                  # W_hn (r ⊙ h) + b_hn
        n = np.tanh(a_x[:, 2 * H:] + hn)
    h_new = (1 - z) * n + z * h
    return (h_new,), (x, h, r, z, n, hn)


def _gru_step_backward(p, kept, dh_new, grads, reset_after):
    """Given dL/dh' (N, H): accumulate weight gradients, return dx, (dh,)."""
    H = p.H
    x, h, r, z, n, hn = kept
    w_hn = p.w_hh[2 * H:]
    dn = dh_new * (1 - z)
    dz = dh_new * (h - n)
    dh = dh_new * z                                   # the direct path h -> h'
    dan = dn * (1 - n ** 2)                           # gradient of n's tanh argument
    if reset_after:
        dr = dan * hn
        dhn = dan * r                                 # gradient of W_hn h + b_hn
    else:
        dhn = dan                                     # gradient of W_hn (r ⊙ h) + b_hn
        drh = dhn @ w_hn                              # gradient of r ⊙ h
        dr = drh * h
        dh = dh + drh * r
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    da_x = np.concatenate([dar, daz, dan], axis=1)    # (N, 3H) gradient of W_ih x + b_ih
    da_rz = np.concatenate([dar, daz], axis=1)        # (N, 2H) gradient of W_hh[:2H] h + b_hh[:2H]
    _accumulate(grads, "ih", da_x, x)
    _accumulate(grads, "hh", da_rz, h, rows=slice(0, 2 * H))
    _accumulate(grads, "hh", dhn, h if reset_after else r * h, rows=slice(2 * H, 3 * H))
    dx = da_x @ p.w_ih
    dh = dh + da_rz @ p.w_hh[:2 * H]
    if reset_after:
        dh = dh + dhn @ w_hn
    return dx, (dh,)


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                reset_after=True, training=True):
    """GRU over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None;
    h0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None.
    Returns y (T, B, H), h_n (B, H), cache (None unless training).
    """
    reset_after = _check_flag("reset_after", reset_after)
    p = _Problem("gru", 3, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    initial = (p.state("h0", h0),)
    training = _check_flag("training", training)
    y, (h_n,), tape = _scan(p, _gru_step, initial, training, reset_after=reset_after)
    cache = _make_cache("gru", p, tape, ("h0",), reset_after=reset_after) if training else None
    return y, h_n, cache


def gru_backward(cache, dy, dh_n=None):
    """Gradients of gru_forward given dy (T, B, H), dh_n (B, H) (None = zeros).

    Returns {x, h0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None).
    """
    cache = _check_cache(cache, "gru")
    return _scan_backward(cache, _gru_step_backward, dy, (("dh_n", dh_n),))


# ------------------------------------------------------------------------- RNN
def _rnn_step(p, x, h, nonlinearity):
    """One Elman step for N running sequences: x (N, I), h (N, H).

    a = W_ih x + b_ih + W_hh h + b_hh;  h' = tanh(a) or relu(a)     (N, H)
    """
    a = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh
    h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)  # maximum keeps NaN
    return (h_new,), (x, h, h_new)


def _rnn_step_backward(p, kept, dh_new, grads, nonlinearity):
    """Given dL/dh' (N, H): accumulate weight gradients, return dx, (dh,)."""
    x, h, h_new = kept
    if nonlinearity == "tanh":
        da = dh_new * (1 - h_new ** 2)
    else:
        da = dh_new * (h_new > 0)                     # relu'(0) = 0, as PyTorch
    _accumulate(grads, "ih", da, x)
    _accumulate(grads, "hh", da, h)
    dx = da @ p.w_ih
    dh = da @ p.w_hh
    return dx, (dh,)


def rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, reverse=False,
                nonlinearity="tanh", training=True):
    """Vanilla (Elman) RNN over a time-major batch (docs/kernel-abi.md).

    x (T, B, I); w_ih (H, I); w_hh (H, H); b_ih, b_hh (H,) or None;
    h0 (B, H) or None (zeros); lengths (B,) ints in [0, T] or None;
    nonlinearity 'tanh' or 'relu'.
    Returns y (T, B, H), h_n (B, H), cache (None unless training).
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    p = _Problem("rnn", 1, x, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    initial = (p.state("h0", h0),)
    training = _check_flag("training", training)
    y, (h_n,), tape = _scan(p, _rnn_step, initial, training, nonlinearity=nonlinearity)
    cache = _make_cache("rnn", p, tape, ("h0",), nonlinearity=nonlinearity) if training else None
    return y, h_n, cache


def rnn_backward(cache, dy, dh_n=None):
    """Gradients of rnn_forward given dy (T, B, H), dh_n (B, H) (None = zeros).

    Returns {x, h0, w_ih, w_hh, b_ih, b_hh} (biases None where they were None).
    """
    cache = _check_cache(cache, "rnn")
    return _scan_backward(cache, _rnn_step_backward, dy, (("dh_n", dh_n),))
