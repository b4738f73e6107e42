"""``convert(module)``: torch.nn's recurrent modules inside a model replaced by
rnnkernels.torch's, in place."""
import torch

from .modules import GRU, LSTM, RNN

__all__ = ["convert"]

_REPLACEMENTS = {torch.nn.LSTM: LSTM, torch.nn.GRU: GRU, torch.nn.RNN: RNN}


def _replacement(old):
    cls = _REPLACEMENTS[type(old)]
    kwargs = dict(num_layers=old.num_layers, bias=old.bias, batch_first=old.batch_first,
                  dropout=old.dropout, bidirectional=old.bidirectional, device="meta")
    if cls is LSTM:
        kwargs["proj_size"] = old.proj_size
    if cls is RNN:
        kwargs["nonlinearity"] = old.nonlinearity
    new = cls(old.input_size, old.hidden_size, **kwargs)  # on "meta": no initialisation work
    for name in old._flat_weights_names:
        # the very Parameter objects: an optimizer built before convert keeps working
        setattr(new, name, getattr(old, name))
    for name, buf in old.named_buffers(recurse=False):
        new.register_buffer(name, buf)
    new._init_flat_weights()
    new.train(old.training)
    return new


def convert(module):
    """Replace every ``torch.nn.LSTM``, ``GRU`` and ``RNN`` inside ``module`` by
    ``rnnkernels.torch``'s (subclasses of those are left alone), in place,
    keeping the parameters themselves (the same ``Parameter`` objects, so an
    optimizer made before still works) and each module's train/eval mode.
    Returns ``module``, or its replacement when ``module`` itself is one of
    the three. Hooks registered on a replaced module are not carried over."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if type(module) in _REPLACEMENTS:
        return _replacement(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _REPLACEMENTS:
                setattr(parent, name, _replacement(child))
    return module
