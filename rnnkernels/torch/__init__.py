"""rnnkernels for PyTorch users: ``LSTM``, ``GRU`` and ``RNN`` with exactly
``torch.nn``'s arguments, parameters, inputs and outputs, computed on the
rnnkernels kernels (CPU, float32/float64), and ``convert(model)``, which swaps
them in for torch.nn's inside a model; ``ctc_loss`` with
``torch.nn.functional.ctc_loss``'s signature and the true gradient with
respect to ``log_probs``. See docs/torch.md and docs/asr.md.

Needs PyTorch (``pip install "rnnkernels[torch]"``).
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("rnnkernels.torch needs PyTorch: pip install 'rnnkernels[torch]'") from e

from .convert import convert
from .ctc import ctc_loss
from .modules import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "convert", "ctc_loss"]
