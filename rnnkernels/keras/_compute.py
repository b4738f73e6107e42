"""Keras's recurrent loop, computed by :mod:`rnnkernels.ops`: NumPy in, NumPy out.

This is the backend-free half of :mod:`rnnkernels.keras`: the TensorFlow and torch
adapters (``_tf.py``, ``_torch.py``) hand it NumPy views of their tensors and give its
arrays back.  It reproduces exactly what ``keras.layers.LSTM/GRU/SimpleRNN``'s generic
loop (``keras.backend.rnn``) returns, ``(last_output, outputs, states)``:

* Layout.  Keras is batch-major ``(B, T, F)`` with weights ``kernel (F, G*U)``,
  ``recurrent_kernel (U, G*U)`` in its gate order (LSTM i,f,c,o; GRU z,r,h); the kernels
  are time-major with PyTorch's ``w_ih (G*U, F)`` in theirs (docs/kernel-abi.md).  The
  gate permutation is the cell table's (``_core.cells.CELLS[kind].keras_from_internal``,
  the same one rnnkernels.layers' get_weights/set_weights use).  Keras's LSTM and
  SimpleRNN have one bias (``b_ih``); its GRU with ``reset_after=True`` has ``(2, 3U)``
  (``b_ih``, ``b_hh``), with ``reset_after=False`` one ``(3U,)`` on the input side.
* Masks.  A right-padded mask is ``lengths``.  Keras carries the last valid output over
  masked steps (``zero_output_for_mask=False``) and starts from a zero output: a
  forward layer's outputs after a sequence's end repeat its final ``h`` (zeros for an
  empty sequence, whose states stay the initial ones), and ``last_output`` is that
  carried output.  Backward, the gradients of those copies are added to ``dh_n``.
  With ``zero_output_for_mask`` (Bidirectional sets it when returning sequences) masked
  steps output zeros instead, the kernels' own padding, and ``last_output`` is the output
  at the last time step.
* ``go_backwards``.  Keras flips the whole time axis (padding included) and returns the
  outputs in processing order: the kernels' ``reverse=True`` over each sequence's valid
  span, with the outputs flipped, is the same thing (padded steps come first and output
  zeros); ``last_output`` is the output at time 0.
"""
import numpy as np

from .. import ops
from .._core.cells import CELLS
from ..layers.recurrent import _reorder_gates

_FORWARD = {"lstm": ops.lstm_forward, "gru": ops.gru_forward, "rnn": ops.rnn_forward}
_BACKWARD = {"lstm": ops.lstm_backward, "gru": ops.gru_backward, "rnn": ops.rnn_backward}


class Spec:
    """What one layer computes: the cell and the options that shape the arrays."""
    __slots__ = ("kind", "units", "use_bias", "reset_after", "nonlinearity", "go_backwards",
                 "return_sequences", "zero_output_for_mask")

    def __init__(self, kind, units, use_bias, go_backwards, return_sequences, reset_after=True,
                 nonlinearity="tanh", zero_output_for_mask=False):
        if kind not in CELLS:
            raise ValueError(f"kind: expected one of {sorted(CELLS)}, got {kind!r}")
        self.kind, self.units, self.use_bias = kind, int(units), bool(use_bias)
        self.go_backwards, self.return_sequences = bool(go_backwards), bool(return_sequences)
        self.reset_after, self.nonlinearity = bool(reset_after), nonlinearity
        self.zero_output_for_mask = bool(zero_output_for_mask)

    @property
    def n_states(self):
        return len(CELLS[self.kind].states)

    @property
    def gru_two_biases(self):
        return self.kind == "gru" and self.reset_after


# ------------------------------------------------------------------ weights
def _perm(kind):
    return CELLS[kind].keras_from_internal


def _to_internal(a, kind, units, axis):
    perm = _perm(kind)
    return a if perm == tuple(range(len(perm))) else _reorder_gates(a, perm, units, axis)


def _to_keras(a, kind, units, axis):
    perm = _perm(kind)
    if perm == tuple(range(len(perm))):
        return a
    return _reorder_gates(a, tuple(int(p) for p in np.argsort(perm)), units, axis)


def torch_layout(spec, kernel, recurrent_kernel, bias):
    """Keras's weights as the kernels' ``(w_ih, w_hh, b_ih, b_hh)`` (views where the gate
    order agrees: ops copies what it needs)."""
    k, U = spec.kind, spec.units
    w_ih = _to_internal(kernel, k, U, 1).T
    w_hh = _to_internal(recurrent_kernel, k, U, 1).T
    b_ih = b_hh = None
    if spec.use_bias:
        if spec.gru_two_biases:
            b_ih, b_hh = _to_internal(bias[0], k, U, 0), _to_internal(bias[1], k, U, 0)
        else:
            b_ih = _to_internal(bias, k, U, 0)
    return w_ih, w_hh, b_ih, b_hh


def keras_layout_grads(spec, grads):
    """The kernels' weight gradients as Keras's ``(dkernel, drecurrent_kernel, dbias)``,
    C-contiguous (dbias None without a bias)."""
    k, U = spec.kind, spec.units
    dk = np.ascontiguousarray(_to_keras(grads["w_ih"].T, k, U, 1))
    dr = np.ascontiguousarray(_to_keras(grads["w_hh"].T, k, U, 1))
    db = None
    if spec.use_bias:
        if spec.gru_two_biases:
            db = np.stack([_to_keras(grads["b_ih"], k, U, 0), _to_keras(grads["b_hh"], k, U, 0)])
        else:
            db = np.ascontiguousarray(_to_keras(grads["b_ih"], k, U, 0))
    return dk, dr, db


# ------------------------------------------------------------------ masks
def lengths_if_right_padded(mask):
    """``(B,)`` int64 lengths when the boolean ``mask (B, T)`` is right-padded (every row
    ``[True]*L + [False]*(T-L)``), else None."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    mask = mask.astype(bool, copy=False)
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(mask.shape[1])[None, :] < lengths[:, None]):
        return None
    return lengths.astype(np.int64)


# ------------------------------------------------------------------ the loop
class Cache:
    """What :func:`backward` needs from :func:`forward` (the kernels' own cache)."""
    __slots__ = ("spec", "ops_cache", "lengths", "T")

    def __init__(self, spec, ops_cache, lengths, T):
        self.spec, self.ops_cache, self.lengths, self.T = spec, ops_cache, lengths, T


def _writable(a):
    return a if a.flags.writeable and a.flags.c_contiguous else np.array(a)


def forward(spec, x, states, kernel, recurrent_kernel, bias, lengths=None, recurrent_mask=None,
            training=True):
    """Keras's ``(last_output (B, P), outputs (B, T, P) or None, [h, (c)], cache)`` for the
    batch-major ``x (B, T, F)``; ``outputs`` only with ``spec.return_sequences`` (Keras's
    otherwise is ``last_output[:, None]``, which the adapters form); ``cache`` None unless
    ``training``."""
    x = np.asarray(x)
    T = x.shape[1]
    w_ih, w_hh, b_ih, b_hh = torch_layout(spec, kernel, recurrent_kernel, bias)
    kwargs = {"lengths": lengths, "reverse": spec.go_backwards, "training": bool(training),
              "recurrent_mask": recurrent_mask}
    if spec.kind == "gru":
        kwargs["reset_after"] = spec.reset_after
    elif spec.kind == "rnn":
        kwargs["nonlinearity"] = spec.nonlinearity
    result = _FORWARD[spec.kind](x.transpose(1, 0, 2), w_ih, w_hh, b_ih, b_hh, *states, **kwargs)
    y, finals, cache = result[0], list(result[1:-1]), result[-1]
    finals = [_writable(s) for s in finals]
    h_n = finals[0]
    nonempty = None if lengths is None else (lengths > 0)
    carry = lengths is not None and not spec.go_backwards and not spec.zero_output_for_mask
    if spec.go_backwards:
        last = np.array(y[0])   # the output at time 0, processed last (zeros for empty rows)
    elif lengths is not None and spec.zero_output_for_mask:
        last = np.array(y[T - 1])  # zeros where the sequence ended before the last step
    elif nonempty is None or nonempty.all():
        last = h_n
    else:
        last = np.where(nonempty[:, None], h_n, 0).astype(h_n.dtype)
    outputs = None
    if spec.return_sequences:
        yb = y.transpose(1, 0, 2)
        if spec.go_backwards:
            yb = yb[:, ::-1]
        outputs = np.ascontiguousarray(yb)
        if carry:
            carried = (np.arange(T)[None, :] >= lengths[:, None]) & nonempty[:, None]
            outputs[carried] = np.broadcast_to(h_n[:, None, :], outputs.shape)[carried]
    cache = Cache(spec, cache, lengths, T) if training else None
    return last, outputs, finals, cache


def backward(cache, d_last, d_outputs, d_states):
    """Gradients of :func:`forward`: ``(dx (B, T, F), [dh0, (dc0)], dkernel,
    drecurrent_kernel, dbias)`` from those of ``last_output``, ``outputs`` (None where
    absent or unused) and the final states (a list, entries None where unused)."""
    spec, lengths, T = cache.spec, cache.lengths, cache.T
    nonempty = None if lengths is None else (lengths > 0)
    carry = lengths is not None and not spec.go_backwards and not spec.zero_output_for_mask
    dh = d_states[0]
    dy = None
    if d_outputs is not None:
        d_outputs = np.asarray(d_outputs)
        dyb = d_outputs[:, ::-1] if spec.go_backwards else d_outputs
        dy = np.array(dyb.transpose(1, 0, 2), order="C")
        if carry:
            # the carried copies of h_n after each sequence's end
            carried = (np.arange(T)[None, :] >= lengths[:, None]) & nonempty[:, None]
            extra = (d_outputs * carried[:, :, None]).sum(axis=1)
            dh = extra if dh is None else dh + extra
    if d_last is not None:
        d_last = np.asarray(d_last)
        if spec.go_backwards or (lengths is not None and spec.zero_output_for_mask):
            # last_output is y[0] (go_backwards) or y[T-1]: padded entries are ignored
            if dy is None:
                dy = np.zeros((T,) + d_last.shape, d_last.dtype)
            dy[0 if spec.go_backwards else T - 1] += d_last
        else:
            if nonempty is not None:
                d_last = d_last * nonempty[:, None]
            dh = d_last if dh is None else dh + d_last
    rest = list(d_states[1:])
    grads = _BACKWARD[spec.kind](cache.ops_cache, dy, dh, *rest)
    dx = np.ascontiguousarray(grads["x"].transpose(1, 0, 2))
    d_initial = [grads["h0"]] + ([grads["c0"]] if spec.kind == "lstm" else [])
    return (dx, d_initial) + keras_layout_grads(spec, grads)
