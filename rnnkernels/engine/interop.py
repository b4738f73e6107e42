"""Weights to and from PyTorch ``state_dict``s.

A stack of recurrent layers of one kind (LSTM, GRU or SimpleRNN, each optionally
wrapped in Bidirectional) corresponds to one ``torch.nn.LSTM`` / ``GRU`` /
``RNN`` with ``num_layers`` = the stack's depth: keys ``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``weight_hr_l{k}`` for
an ``LSTM(projection=P)``: torch's ``proj_size=P``) and the ``_reverse``
versions for the backward direction.  Peephole and LayerNorm layers have no
torch.nn equivalent and are refused; zoneout and recurrent dropout act in
training only and carry over.  Dense layers map to ``torch.nn.Linear``
(``weight (U, F)``, ``bias``) via :func:`dense_to_torch` / :func:`dense_from_torch`.

Keras's LSTM and SimpleRNN have one bias: exported as ``bias_ih`` with
``bias_hh`` zeros; imported as ``bias_ih + bias_hh``.  GRU needs
``reset_after=True`` (PyTorch's equations).  PyTorch modules must use
``batch_first=True`` to take the same ``(N, T, F)`` inputs.

Example::

    sd = to_torch_state_dict(model, as_tensors=True)
    torch_lstm = torch.nn.LSTM(F, 128, num_layers=1, batch_first=True)
    torch_lstm.load_state_dict(sd)
    load_torch_state_dict(model, torch_lstm.state_dict())
"""
import numpy as np

from ..layers.bidirectional import Bidirectional
from ..layers.core import Dense
from ..layers.recurrent import GRU, SimpleRNN, _Recurrent

__all__ = ["to_torch_state_dict", "load_torch_state_dict", "dense_to_torch", "dense_from_torch"]


def _stack(model_or_layers):
    layers = getattr(model_or_layers, "layers", model_or_layers)
    if isinstance(layers, (_Recurrent, Bidirectional)):
        layers = [layers]
    stack = [l for l in layers if isinstance(l, (_Recurrent, Bidirectional))]
    if not stack:
        raise ValueError("model_or_layers: expected a model or list with LSTM, GRU, SimpleRNN or "
                         "Bidirectional layers, found none")
    kinds = {type(l.forward_layer if isinstance(l, Bidirectional) else l) for l in stack}
    bidir = {isinstance(l, Bidirectional) for l in stack}
    if len(kinds) > 1 or len(bidir) > 1:
        raise ValueError("model_or_layers: a PyTorch module holds one kind of cell, all bidirectional "
                         f"or none; got {[type(l).__name__ for l in stack]}; pass a list of the layers "
                         "forming one stack")
    for l in stack:
        if not l.built:
            raise ValueError(f"{l.name}: build the layer before converting its weights")
        for d, _ in _directions(l):
            if isinstance(d, GRU) and not d.reset_after:
                raise ValueError(f"{d.name}: PyTorch's GRU has reset_after=True equations; this layer "
                                 "has reset_after=False")
            if isinstance(d, SimpleRNN) and d.activation not in ("tanh", "relu"):
                raise ValueError(f"{d.name}: activation {d.activation!r} has no PyTorch RNN equivalent")
            # zoneout and recurrent dropout act in training only: the weights carry over
            for variant in ("peephole", "layer_norm"):
                if getattr(d, variant, False):
                    raise ValueError(f"{d.name}: {variant}=True has no torch.nn equivalent (torch.nn.LSTM "
                                     "and GRU have neither peepholes nor LayerNorm)")
    if len({getattr(d, "projection", None) for l in stack for d, _ in _directions(l)}) > 1:
        raise ValueError("model_or_layers: a torch.nn.LSTM has one proj_size; the layers' projections differ")
    return stack


def _directions(layer):
    if isinstance(layer, Bidirectional):
        return [(layer.forward_layer, ""), (layer.backward_layer, "_reverse")]
    return [(layer, "")]


def to_torch_state_dict(model_or_layers, as_tensors=False):
    """State dict for the equivalent ``torch.nn.LSTM/GRU/RNN`` (NumPy arrays, or torch tensors
    with ``as_tensors=True``)."""
    out = {}
    for k, layer in enumerate(_stack(model_or_layers)):
        for d, suffix in _directions(layer):
            p = d.params
            G = d.gates * d.units
            out[f"weight_ih_l{k}{suffix}"] = p["w_ih"].copy()
            out[f"weight_hh_l{k}{suffix}"] = p["w_hh"].copy()
            if "w_hr" in p:  # proj_size
                out[f"weight_hr_l{k}{suffix}"] = p["w_hr"].copy()
            if d.use_bias:
                out[f"bias_ih_l{k}{suffix}"] = p["b_ih"].copy()
                out[f"bias_hh_l{k}{suffix}"] = p["b_hh"].copy() if "b_hh" in p else np.zeros(G, d.dtype)
    if as_tensors:
        import torch
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def _numpy(v, key):
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    v = np.asarray(v)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"state_dict[{key!r}]: expected a numeric tensor, got dtype {v.dtype}")
    return v


def load_torch_state_dict(model_or_layers, state_dict, strict=True):
    """Set the recurrent layers' weights from a PyTorch state dict (see :func:`to_torch_state_dict`).
    Every key and shape is checked before any weight changes; with ``strict`` unknown keys are errors."""
    stack = _stack(model_or_layers)
    updates, used = [], set()
    for k, layer in enumerate(stack):
        for d, suffix in _directions(layer):
            G, U, F, P = d.gates * d.units, d.units, d.input_shape[-1], d.output_units
            new = {}
            names = [("weight_ih", (G, F)), ("weight_hh", (G, P)), ("bias_ih", (G,)), ("bias_hh", (G,))]
            if P != U or getattr(d, "projection", None):
                names.append(("weight_hr", (P, U)))
            for name, shape in names:
                key = f"{name}_l{k}{suffix}"
                if key not in state_dict:
                    if name.startswith("bias") and not d.use_bias:
                        continue
                    raise ValueError(f"state_dict: missing key {key!r} for layer {d.name}")
                if name.startswith("bias") and not d.use_bias:
                    raise ValueError(f"state_dict: key {key!r} has a bias but layer {d.name} has use_bias=False")
                v = _numpy(state_dict[key], key)
                if v.shape != shape:
                    raise ValueError(f"state_dict[{key!r}]: expected shape {shape} for layer {d.name}, "
                                     f"got {v.shape}")
                new[name] = v.astype(d.dtype)
                used.add(key)
            params = {"w_ih": new["weight_ih"], "w_hh": new["weight_hh"]}
            if "weight_hr" in new:
                params["w_hr"] = new["weight_hr"]
            if d.use_bias:
                if "b_hh" in d.params:
                    params.update(b_ih=new["bias_ih"], b_hh=new["bias_hh"])
                else:
                    params["b_ih"] = (new["bias_ih"].astype(np.float64) + new["bias_hh"]).astype(d.dtype)
            updates.append((d, params))
    extra = sorted(set(state_dict) - used)
    if strict and extra:
        raise ValueError(f"state_dict: unexpected keys {extra} (pass strict=False to ignore them)")
    for d, params in updates:
        for name, v in params.items():
            d.params[name][...] = v


def dense_to_torch(layer, as_tensors=False):
    """``{'weight' (U, F), 'bias' (U,)}`` for ``torch.nn.Linear`` from a Dense layer."""
    if not isinstance(layer, Dense) or not layer.built:
        raise ValueError(f"layer: expected a built Dense layer, got {layer!r}")
    out = {"weight": layer.params["kernel"].T.copy()}
    if layer.use_bias:
        out["bias"] = layer.params["bias"].copy()
    if as_tensors:
        import torch
        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def dense_from_torch(layer, state_dict):
    """Set a Dense layer from a ``torch.nn.Linear`` state dict."""
    weights = [_numpy(state_dict["weight"], "weight").T]
    if layer.use_bias:
        weights.append(_numpy(state_dict["bias"], "bias"))
    layer.set_weights(weights)
