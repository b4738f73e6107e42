"""The one import point for the recurrent kernels used by the layers.

Each kernel function comes from the compiled :mod:`rnnkernels.ops` when it
provides it, and otherwise from :mod:`rnnkernels.reference` (same signatures,
docs/kernel-abi.md).  The fallback is per function and resolved at call time,
so a kernel added to ``ops`` later is picked up without touching the layers.
"""
import importlib

_NAMES = ("lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
          "rnn_forward", "rnn_backward")
_resolved = {}


def _module(name):
    try:
        return importlib.import_module(f"rnnkernels.{name}")
    except ImportError:
        return None


def resolve(name):
    """The kernel function ``name`` (ops first, then reference)."""
    fn = _resolved.get(name)
    if fn is None:
        for module in (_module("ops"), _module("reference")):
            if module is not None and hasattr(module, name):
                fn = getattr(module, name)
                break
        else:
            raise ImportError(f"rnnkernels: no kernel {name!r} in rnnkernels.ops or rnnkernels.reference; "
                              "build the package (pip install -e .) or check the installation")
        _resolved[name] = fn
    return fn


def source(name):
    """Which module provides kernel ``name`` ('rnnkernels.ops' or 'rnnkernels.reference')."""
    return resolve(name).__module__


def _make(name):
    def call(*args, **kwargs):
        return resolve(name)(*args, **kwargs)
    call.__name__ = name
    call.__doc__ = f"Forwards to rnnkernels.ops.{name} (or rnnkernels.reference.{name})."
    return call


lstm_forward, lstm_backward, gru_forward, gru_backward, rnn_forward, rnn_backward = (
    _make(n) for n in _NAMES)
