"""rnnkernels from PyTorch: drop-in functions on torch tensors (CPU).

- :func:`ctc_loss`: ``torch.nn.functional.ctc_loss``'s signature, on the compiled
  kernel, with the true gradient with respect to ``log_probs``.
"""
from .ctc import ctc_loss

__all__ = ["ctc_loss"]
