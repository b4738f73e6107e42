"""The torch backend's path onto the kernels: one ``torch.autograd.Function``.

Kept in this one file on purpose: ``rnnkernels.torch`` registers the kernels as a
``torch.library.custom_op`` (opaque to ``torch.compile``/``torch.export``); once both are
in one tree this adapter can call that op instead, and nothing else in
:mod:`rnnkernels.keras` changes.  Tensors cross as NumPy views (``Tensor.numpy()``, no
copy for CPU float32/float64); the kernels' cache lives on the autograd context, so it
goes when the graph does, and is kept only when a gradient can come (grad mode on and an
input that requires one).  Double backward (``create_graph=True``) raises a RuntimeError that says so.
"""
import numpy as np
import torch

from . import _compute


def _numpy(t):
    return None if t is None else t.detach().numpy()


def _tensor(a):
    a = np.asarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on (and would write through) read-only arrays
        a = np.array(a)
    return torch.from_numpy(a)


class _KerasRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, lengths, recurrent_mask, training, n_states, x, *params):
        states, (kernel, recurrent_kernel), bias = params[:n_states], params[n_states:n_states + 2], \
            (params[n_states + 2] if spec.use_bias else None)
        last, outputs, finals, cache = _compute.forward(
            spec, _numpy(x), [_numpy(s) for s in states], _numpy(kernel), _numpy(recurrent_kernel),
            _numpy(bias), lengths, recurrent_mask, training)
        ctx.cache, ctx.spec = cache, spec
        if last is finals[0]:  # two outputs, two tensors (no shared storage between them)
            last = last.copy()
        outs = [_tensor(last)] + ([_tensor(outputs)] if spec.return_sequences else [])
        return tuple(outs + [_tensor(s) for s in finals])

    @staticmethod
    def backward(ctx, *upstream):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError("rnnkernels.keras: double backward (create_graph=True through the "
                               "recurrent layer) is not supported; the kernels compute first derivatives")
        spec, cache = ctx.spec, ctx.cache
        if cache is None:  # not reachable: apply() records no graph when nothing needs a gradient
            raise RuntimeError("rnnkernels.keras: no forward cache for this backward")
        ups = [_numpy(g) for g in upstream]
        d_last, d_out = ups[0], (ups[1] if spec.return_sequences else None)
        d_states = ups[1 + spec.return_sequences:]
        dx, d_init, dk, dr, db = _compute.backward(cache, d_last, d_out, d_states)
        grads = [_tensor(dx)] + [_tensor(g) for g in d_init] + [_tensor(dk), _tensor(dr)]
        if spec.use_bias:
            grads.append(_tensor(db))
        return (None, None, None, None, None) + tuple(grads)


def call(spec, x, states, kernel, recurrent_kernel, bias, lengths=None, recurrent_mask=None):
    """Keras's ``(last_output, outputs, states)`` on the kernels (torch tensors in and out);
    ``lengths`` is an int64 NumPy ``(B,)`` or None, ``recurrent_mask`` a tensor or None."""
    mask = None if recurrent_mask is None else _numpy(recurrent_mask)
    params = list(states) + [kernel, recurrent_kernel] + ([bias] if bias is not None else [])
    # keep the cache only when a gradient may come (Keras's torch trainer evaluates under no_grad)
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in [x] + params)
    outs = _KerasRNN.apply(spec, lengths, mask, keep, len(states), x, *params)
    last = outs[0]
    outputs = outs[1] if spec.return_sequences else last.unsqueeze(1)
    return last, outputs, list(outs[1 + spec.return_sequences:])
