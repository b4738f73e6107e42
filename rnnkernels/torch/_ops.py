"""The kernels as PyTorch operators: ``rnnkernels::recurrent_forward`` and
``rnnkernels::recurrent_backward`` (``torch.library.custom_op``), one layer and
direction of an LSTM, GRU or RNN over a PackedSequence-layout batch.

A padded time-major batch ``(T, B, I)`` is the packed layout with every batch
size B (``data`` its ``(T*B, I)`` view), so one operator serves both. The
forward operator returns the outputs and, for a training call, the arrays the
backward pass needs (``ops.workspace``: packed inputs, state buffers, gates):
real tensors that ``register_fake`` describes, so the operators are functional
and ``torch.compile``/``torch.export`` see two opaque calls. The backward
operator rebuilds the cache from them (``ops.cache_from_workspace``).

Tensors cross to NumPy and back without copies (``Tensor.numpy()`` and
``torch.from_numpy`` share memory); ops copies a non-contiguous input once.
Gradients of the gradients are not computed: the backward operator's own
backward raises.
"""
import weakref
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import ops
from .._core import memory

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_EMPTY_SHAPE = (0,)


def _np(t):
    """A CPU tensor's memory as a NumPy array (no copy)."""
    return t.detach().numpy()


def _tensor(a):
    """A NumPy result as a tensor sharing its memory (read-only ones copied:
    torch tensors are always writable)."""
    if not a.flags.writeable:
        try:
            a.flags.writeable = True
        except ValueError:
            a = a.copy()
    return torch.from_numpy(a)


# The forward calls' packed weights, reused by their backward calls: a pure
# cache (the rebuilt cache is bitwise the same, tests/kernels/test_workspace.py),
# keyed by the address of the call's state buffer and valid while that buffer
# lives (a weak reference removes the entry) and the weight tensors are the
# same memory at the same version (any in-place change bumps it).
_PACKED = {}
# No lock: single dict operations are atomic under the GIL, and a lock taken here
# could be re-entered by a weak-reference callback that garbage collection runs
# on the same thread in the middle of an update (a deadlock).


def _weights_key(*tensors):
    return tuple(None if t is None else (t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in tensors)


def _remember_packing(cache, states, w_ih, w_hh, w_hr):
    address = states.ctypes.data

    def forget(ref, address=address):
        # runs as the state buffer dies, before its memory can serve another
        # call; removes only this buffer's own entry
        entry = _PACKED.get(address)
        if entry is not None and entry[0] is ref:
            _PACKED.pop(address, None)

    _PACKED[address] = (weakref.ref(states, forget), _weights_key(w_ih, w_hh, w_hr), ops.packed_weights(cache))


def _recall_packing(ws_h, w_ih, w_hh, w_hr):
    entry = _PACKED.get(ws_h.data_ptr())
    if entry is None or entry[0]() is None or entry[1] != _weights_key(w_ih, w_hh, w_hr):
        return None
    return entry[2]


def _empty(dtype):
    return torch.empty(_EMPTY_SHAPE, dtype=dtype)


def _sizes(kind, data, h0, w_hh, w_hr):
    N, I = data.shape
    B, P = h0.shape
    H = w_hh.shape[0] // _GATES[kind]
    return N, B, I, H, P


def _forward_impl(kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, nonlinearity,
                  training):
    x, bs = _np(data), _np(batch_sizes)
    arg = lambda t: None if t is None else _np(t)  # noqa: E731
    weights = (_np(w_ih), _np(w_hh), arg(b_ih), arg(b_hh))
    if kind == "lstm":
        y, h_n, c_n, cache = ops.lstm_forward_packed(x, bs, *weights, _np(h0), _np(c0), reverse=reverse,
                                                     training=training, w_hr=arg(w_hr))
    elif kind == "gru":
        y, h_n, cache = ops.gru_forward_packed(x, bs, *weights, _np(h0), reverse=reverse, training=training)
        c_n = None
    else:
        y, h_n, cache = ops.rnn_forward_packed(x, bs, *weights, _np(h0), reverse=reverse,
                                               nonlinearity=nonlinearity, training=training)
        c_n = None
    dtype = data.dtype
    ws = ops.workspace(cache) if cache is not None else (None,) * len(ops.WORKSPACE)
    if cache is not None:
        _remember_packing(cache, ws[1], w_ih, w_hh, w_hr)
    if cache is not None and np.may_share_memory(y, ws[1]):
        y = memory.copy(y)  # y is a view of the state buffer; an operator's outputs may not alias
    out = [_tensor(y), _tensor(h_n), _empty(dtype) if c_n is None else _tensor(c_n)]
    out += [_empty(dtype) if a is None else _tensor(a) for a in ws]
    return tuple(out)


@torch.library.custom_op("rnnkernels::recurrent_forward", mutates_args=(), device_types="cpu")
def recurrent_forward(kind: str, data: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor,
                      w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
                      reverse: bool, nonlinearity: str, training: bool
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer and direction: returns ``y (N, P), h_n (B, P), c_n (B, H)``
    (empty unless LSTM) and the workspace (``ops.WORKSPACE``; empty tensors
    where the cell keeps none or ``training`` is False)."""
    return _forward_impl(kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                         nonlinearity, training)


@recurrent_forward.register_fake
def _(kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, nonlinearity, training):
    N, B, I, H, P = _sizes(kind, data, h0, w_hh, w_hr)
    new = lambda shape: data.new_empty(_EMPTY_SHAPE if shape is None else shape)  # noqa: E731
    out = [new((N, P)), new((B, P)), new((B, H) if kind == "lstm" else None)]
    shapes = ops.workspace_shapes(kind, N, B, I, H, P, w_hr is not None)
    out += [new(s if training else None) for s in shapes]
    return tuple(out)


@torch.library.custom_op("rnnkernels::recurrent_backward", mutates_args=(), device_types="cpu")
def recurrent_backward(kind: str, batch_sizes: Tensor, w_ih: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
                       ws_x: Tensor, ws_h: Tensor, ws_c: Tensor, ws_gates: Tensor, ws_aux: Tensor,
                       ws_m: Tensor, dy: Tensor, dh_n: Tensor, dc_n: Tensor, reverse: bool, nonlinearity: str,
                       has_b_ih: bool, has_b_hh: bool, input_grad: bool = True
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients ``dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr`` of one
    forward call (empty tensors where that input was absent, and dx empty
    without ``input_grad``: a first layer's inputs need none, and dX is a GEMM)."""
    return _backward_impl(kind, batch_sizes, w_ih, w_hh, w_hr, ws_x, ws_h, ws_c, ws_gates, ws_aux, ws_m, dy,
                          dh_n, dc_n, reverse, nonlinearity, has_b_ih, has_b_hh, input_grad)


def _backward_impl(kind, batch_sizes, w_ih, w_hh, w_hr, ws_x, ws_h, ws_c, ws_gates, ws_aux, ws_m, dy, dh_n, dc_n,
                   reverse, nonlinearity, has_b_ih, has_b_hh, input_grad):
    ws = [None if t.dim() == 1 and t.numel() == 0 else _np(t)
          for t in (ws_x, ws_h, ws_c, ws_gates, ws_aux, ws_m)]
    arg = lambda t: None if t is None else _np(t)  # noqa: E731
    cache = ops.cache_from_workspace(kind, tuple(ws), _np(batch_sizes), _np(w_ih), _np(w_hh), arg(w_hr),
                                     reverse, has_b_ih, has_b_hh, nonlinearity,
                                     packed=_recall_packing(ws_h, w_ih, w_hh, w_hr))
    if kind == "lstm":
        g = ops.lstm_backward(cache, _np(dy), _np(dh_n), _np(dc_n), input_grad=input_grad)
    elif kind == "gru":
        g = ops.gru_backward(cache, _np(dy), _np(dh_n), input_grad=input_grad)
    else:
        g = ops.rnn_backward(cache, _np(dy), _np(dh_n), input_grad=input_grad)
    dtype = ws_x.dtype
    return tuple(_empty(dtype) if g.get(k) is None else _tensor(g[k])
                 for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"))


@recurrent_backward.register_fake
def _(kind, batch_sizes, w_ih, w_hh, w_hr, ws_x, ws_h, ws_c, ws_gates, ws_aux, ws_m, dy, dh_n, dc_n,
      reverse, nonlinearity, has_b_ih, has_b_hh, input_grad=True):
    new = lambda shape: ws_x.new_empty(shape)  # noqa: E731
    B = dh_n.shape[0]
    H = w_hh.shape[0] // _GATES[kind]
    return (new(ws_x.shape if input_grad else _EMPTY_SHAPE), new(dh_n.shape), new((B, H) if kind == "lstm" else _EMPTY_SHAPE),
            new(w_ih.shape), new(w_hh.shape), new(w_hh.shape[:1] if has_b_ih else _EMPTY_SHAPE),
            new(w_hh.shape[:1] if has_b_hh else _EMPTY_SHAPE),
            new(_EMPTY_SHAPE if w_hr is None else w_hr.shape))


# ------------------------------------------------------------------ autograd
def _setup_forward(ctx, inputs, output):
    kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, nonlinearity, training = inputs
    ctx.kind, ctx.reverse, ctx.nonlinearity, ctx.training = kind, reverse, nonlinearity, training
    ctx.has_b_ih, ctx.has_b_hh, ctx.has_w_hr = b_ih is not None, b_hh is not None, w_hr is not None
    ctx.save_for_backward(batch_sizes, w_ih, w_hh, w_hr, *output[3:])
    ctx.mark_non_differentiable(*output[3:])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for unused outputs or the workspace


def _backward_forward(ctx, dy, dh_n, dc_n, *_workspace_grads):
    if not ctx.training:
        raise RuntimeError("rnnkernels::recurrent_forward: called with training=False, it kept nothing "
                           "for backward; call it with training=True to differentiate it")
    batch_sizes, w_ih, w_hh, w_hr, *ws = ctx.saved_tensors
    x_ws, h_ws = ws[0], ws[1]
    B = h_ws.shape[0] - x_ws.shape[0]  # the state buffer is (N + B, P); no data-dependent read
    H = w_hh.shape[0] // _GATES[ctx.kind]
    if dy is None:
        dy = x_ws.new_zeros((x_ws.shape[0], h_ws.shape[1]))
    if dh_n is None:
        dh_n = x_ws.new_zeros((B, h_ws.shape[1]))
    if ctx.kind != "lstm":
        dc_n = x_ws.new_empty(_EMPTY_SHAPE)
    elif dc_n is None:
        dc_n = x_ws.new_zeros((B, H))
    args = (ctx.kind, batch_sizes, w_ih, w_hh, w_hr, *ws, dy.contiguous(), dh_n.contiguous(), dc_n.contiguous(),
            ctx.reverse, ctx.nonlinearity, ctx.has_b_ih, ctx.has_b_hh, ctx.needs_input_grad[1])
    # the operator while tracing, and under create_graph=True (its backward raises the clear error)
    eager = not torch.is_grad_enabled() and _plain_eager((batch_sizes, w_ih, w_hh, w_hr, *ws, dy, dh_n, dc_n))
    g = (_backward_impl if eager else recurrent_backward)(*args)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = g
    return (None, dx if ctx.needs_input_grad[1] else None, None, dh0, dc0 if ctx.kind == "lstm" else None, dw_ih, dw_hh,
            db_ih if ctx.has_b_ih else None, db_hh if ctx.has_b_hh else None,
            dw_hr if ctx.has_w_hr else None, None, None, None)


recurrent_forward.register_autograd(_backward_forward, setup_context=_setup_forward)


def _setup_backward(ctx, inputs, output):
    pass


def _no_double_backward(ctx, *grads):
    raise RuntimeError("rnnkernels.torch: double backward (gradients of gradients, e.g. "
                       "create_graph=True) is not supported by the rnnkernels recurrent kernels; "
                       "use torch.nn's LSTM/GRU/RNN for higher-order derivatives")


recurrent_backward.register_autograd(_no_double_backward, setup_context=_setup_backward)


# ---------------------------------------------------------------- eager calls
# In eager mode the operators' dispatch (custom_op's Python wrapper, its
# autograd kernel, the redispatch to the implementation) costs about 0.2 ms a
# call: a tenth of a small layer's forward.  A call on plain CPU tensors outside
# any tracing therefore runs the same implementations under one
# torch.autograd.Function, with the same autograd formula (_setup_forward,
# _backward_forward).  torch.compile, torch.export, fake and functional tensors,
# dispatch and function modes and functorch transforms get the operators.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _plain_eager(tensors):
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled()
            or torch._C._functorch.maybe_current_level() is not None):
        return False
    return all(t is None or type(t) in _PLAIN_TYPES for t in tensors)


class _EagerForward(torch.autograd.Function):
    """``recurrent_forward`` for plain eager calls (see above)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_impl(*inputs)
        _setup_forward(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward_forward(ctx, *grads)


def recurrent(kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, nonlinearity, training):
    """``recurrent_forward``, differentiable, as the modules call it: the
    operator, or in plain eager mode the same computation without its dispatch."""
    args = (kind, data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, nonlinearity, training)
    if _plain_eager((data, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)):
        return _EagerForward.apply(*args)
    return recurrent_forward(*args)
