"""``LSTM``, ``GRU``, ``RNN``: drop-in replacements for ``torch.nn``'s, on the
rnnkernels kernels.

Each is a ``torch.nn.RNNBase`` (the base of torch.nn's own three), built by
its constructor, so the arguments, defaults, parameter names and shapes,
``state_dict`` keys, initialisation and ``repr`` are torch.nn's. They are
deliberately not subclasses of ``torch.nn.LSTM``/``GRU``/``RNN``: Dynamo
refuses to trace those, while it traces these into two opaque operators per
layer and direction (``rnnkernels/torch/_ops.py``; plain eager calls skip
their dispatch).

``forward`` takes and returns what torch.nn's takes and returns: a batched
``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or unbatched ``(T, I)``
tensor, or a ``PackedSequence`` (its ``data`` handed to the kernels' packed
entry as it lies), with optional ``h0`` (``(h0, c0)`` for the LSTM). Inputs on
another device run torch.nn's own implementation of the same module; on the
CPU, float32 and float64 run the kernels and any other dtype is a TypeError.
"""
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from ._ops import recurrent

__all__ = ["LSTM", "GRU", "RNN"]

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _needs_grad(tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _Recurrent(torch.nn.RNNBase):
    """What the three share: the layer loop over the kernels."""

    _kind = None          # "lstm", "gru", "rnn"
    _torch_module = None  # torch.nn's class, whose forward runs off the CPU

    # ------------------------------------------------------------- forward
    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if data.device.type != "cpu":
            return self._torch_module.forward(self, input, hx)
        if data.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"{type(self).__name__}: input: expected dtype torch.float32 or torch.float64 "
                            f"on the CPU (the rnnkernels kernels' dtypes), got {data.dtype}")
        for name in self._flat_weights_names:
            p = getattr(self, name)
            if p.dtype != data.dtype or p.device.type != "cpu":
                raise TypeError(f"{type(self).__name__}: {name}: expected a CPU {data.dtype} parameter "
                                f"(the input's dtype), got {p.dtype} on {p.device}; "
                                "convert the module with .to(dtype) first")
        D = 2 if self.bidirectional else 1
        P = self.proj_size if self.proj_size > 0 else self.hidden_size
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            B = int(batch_sizes[0])
            hx = self._initial(hx, B, P, x, D)
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
                hx = self._unbatched_states(hx)
            elif hx is not None:
                self._batched_states(hx)
            sorted_indices = unsorted_indices = None
            batch_sizes = None
            B = input.size(0) if self.batch_first else input.size(1)
            hx = self._initial(hx, B, P, input, D)
            self.check_forward_args(input, hx, None)
            x = input.transpose(0, 1) if self.batch_first else input
            T = x.size(0)
            x = x.contiguous().reshape(T * B, x.size(2))   # one copy at most (batch_first)
            batch_sizes = torch.full((T,), B, dtype=torch.int64)
        if packed:
            self.check_forward_args(x, hx, batch_sizes)
        y, finals = self._layers(x, batch_sizes, hx, D, P)
        if packed:
            return PackedSequence(y, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(finals, unsorted_indices)
        y = y.reshape(T, B, y.size(1))
        if self.batch_first:
            y = y.transpose(0, 1)
        if not batched:
            y = y.squeeze(0 if self.batch_first else 1)
            finals = self._squeeze_states(finals)
        return y, finals

    def _layers(self, x, batch_sizes, hx, D, P):
        """Every layer and direction over packed rows x (N, I); hx already in
        the packed order. Returns y (N, D*P) and the final states."""
        h0 = hx[0] if self._kind == "lstm" else hx
        c0 = hx[1] if self._kind == "lstm" else None
        hs, cs = [], []
        empty = x.new_empty(0)
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
                b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
                w_hr = getattr(self, "weight_hr" + sfx) if self.proj_size > 0 else None
                hk = h0[k]
                ck = c0[k] if c0 is not None else empty
                training = _needs_grad((x, hk, ck, w_ih, w_hh, b_ih, b_hh, w_hr))
                out = recurrent(self._kind, x, batch_sizes, hk, ck, w_ih, w_hh, b_ih, b_hh, w_hr,
                                bool(d), nonlinearity, training)
                outs.append(out[0])
                hs.append(out[1])
                if c0 is not None:
                    cs.append(out[2])
            x = outs[0] if D == 1 else torch.cat(outs, 1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n = torch.stack(hs, 0)
        return x, ((h_n, torch.stack(cs, 0)) if c0 is not None else h_n)

    # ----------------------------------------------------- initial states
    def _initial(self, hx, B, P, like, D):
        if hx is not None:
            return hx
        zeros = lambda size: torch.zeros(self.num_layers * D, B, size, dtype=like.dtype,  # noqa: E731
                                         device=like.device)
        return (zeros(P), zeros(self.hidden_size)) if self._kind == "lstm" else zeros(P)

    def _unbatched_states(self, hx):
        if hx is None:
            return None
        if hx.dim() != 2:
            raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
        return hx.unsqueeze(1)

    def _batched_states(self, hx):
        if hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")

    def _squeeze_states(self, finals):
        return finals.squeeze(1)


class LSTM(_Recurrent):
    """``torch.nn.LSTM`` (same arguments, parameters and calls) on the rnnkernels
    kernels; ``proj_size`` is the kernels' projection (``w_hr``)."""

    _kind = "lstm"
    _torch_module = torch.nn.LSTM
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def _unbatched_states(self, hx):
        if hx is None:
            return None
        if hx[0].dim() != 2 or hx[1].dim() != 2:
            raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                               f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        return hx[0].unsqueeze(1), hx[1].unsqueeze(1)

    def _batched_states(self, hx):
        if hx[0].dim() != 3 or hx[1].dim() != 3:
            raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                               f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")

    def _squeeze_states(self, finals):
        return finals[0].squeeze(1), finals[1].squeeze(1)


class GRU(_Recurrent):
    """``torch.nn.GRU`` (same arguments, parameters and calls) on the rnnkernels kernels."""

    _kind = "gru"
    _torch_module = torch.nn.GRU

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


class RNN(_Recurrent):
    """``torch.nn.RNN`` (same arguments, including ``nonlinearity`` 'tanh' or
    'relu', parameters and calls) on the rnnkernels kernels."""

    _kind = "rnn"
    _torch_module = torch.nn.RNN

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:  # torch.nn.RNN's positional order: nonlinearity is the fourth
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)
