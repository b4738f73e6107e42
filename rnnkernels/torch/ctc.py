"""``rnnkernels.torch.ctc_loss``: torch.nn.functional.ctc_loss's signature, the
compiled kernel, and the true gradient with respect to ``log_probs``.

PyTorch's own CTC backward returns ``exp(log_probs) - occupancy``, which is the
gradient only when ``log_probs`` come from a log_softmax (pytorch#52241): it
folds that log_softmax's backward into the CTC's.  This function's gradient is
``-occupancy``, the derivative of the loss it computes, whatever ``log_probs``
hold, so it passes ``torch.autograd.gradcheck``; after a ``log_softmax`` both
give the same gradient with respect to the logits.

The forward is the loss of ``log_probs`` as they are (no normalisation): the
kernel fuses a log-softmax, so the loss here is the kernel's minus each real
frame's ``logsumexp``, and the gradient the kernel's minus the softmax.
"""
import numpy as np

__all__ = ["ctc_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _torch():
    import torch
    return torch


def _lengths(torch, name, value, B):
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected an integer tensor or sequence, got dtype {value.dtype}")
        arr = value.detach().cpu().numpy()
    else:
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integers, got {arr.dtype}")
    arr = np.atleast_1d(arr).astype(np.int64)
    if arr.shape != (B,):
        raise ValueError(f"{name}: expected {B} lengths (one per sample), got shape {tuple(arr.shape)}")
    return arr


class _CTC:
    """The autograd Function (built on first use, so importing needs no torch)."""
    fn = None

    @classmethod
    def get(cls):
        if cls.fn is None:
            torch = _torch()

            class CTCFunction(torch.autograd.Function):
                @staticmethod
                def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank, zero_infinity):
                    from .. import ops
                    x = log_probs.detach().cpu().numpy()
                    losses, dlogits = ops.ctc_loss(x, targets, input_lengths, target_lengths, blank=blank)
                    # the kernel normalises each frame: undo that for the loss, and for the gradient
                    T = x.shape[0]
                    real = np.arange(T)[:, None] < input_lengths[None, :]  # (T, B)
                    m = x.max(axis=2, keepdims=True)
                    lse = m[..., 0] + np.log(np.exp(x - m).sum(axis=2))
                    possible = ~np.isinf(losses)  # nan stays nan
                    losses = np.where(possible, losses - np.where(real, lse, 0.0).sum(axis=0),
                                      0.0 if zero_infinity else np.inf).astype(x.dtype)
                    softmax = np.exp(x - lse[..., None])
                    grad = np.where((real & possible[None, :])[..., None], dlogits - softmax, 0.0).astype(x.dtype)
                    ctx.save_for_backward(torch.from_numpy(grad).to(log_probs.device))
                    return torch.from_numpy(losses).to(log_probs.device)

                @staticmethod
                @torch.autograd.function.once_differentiable
                def backward(ctx, grad_losses):
                    (grad,) = ctx.saved_tensors
                    return grad * grad_losses[None, :, None], None, None, None, None, None

            cls.fn = CTCFunction
        return cls.fn


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    """Drop-in for ``torch.nn.functional.ctc_loss`` (CPU tensors, float32/float64).

    log_probs (T, B, C) or unbatched (T, C); targets padded (B, S) or concatenated 1-D
    (unbatched: (S,)); input_lengths, target_lengths (B,) tensors or sequences (unbatched:
    a number).  reduction 'none' (B,), 'sum', or 'mean' (each loss divided by its target
    length, at least 1, then averaged), as PyTorch's.  Its gradient with respect to
    ``log_probs`` is the exact derivative of the returned loss (see the module docstring).
    """
    torch = _torch()
    if not isinstance(log_probs, torch.Tensor):
        raise TypeError(f"log_probs: expected a torch.Tensor, got {type(log_probs).__name__}")
    if log_probs.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"log_probs: expected dtype float32 or float64, got {log_probs.dtype}")
    if log_probs.device.type != "cpu":
        raise ValueError(f"log_probs: rnnkernels runs on the CPU, got a tensor on {log_probs.device}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(zero_infinity, bool):
        raise TypeError(f"zero_infinity: expected True or False, got {zero_infinity!r}")
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs: expected shape (T, B, C) or (T, C), got {tuple(log_probs.shape)}")
    B = log_probs.shape[1]
    if isinstance(targets, torch.Tensor):
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise TypeError(f"targets: expected an integer tensor, got dtype {targets.dtype}")
        targets = targets.detach().cpu().numpy()
    targets = np.asarray(targets)
    if unbatched and targets.ndim == 1:
        targets = targets[None, :]
    il = _lengths(torch, "input_lengths", input_lengths, B)
    tl = _lengths(torch, "target_lengths", target_lengths, B)
    losses = _CTC.get().apply(log_probs, targets, il, tl, int(blank), zero_infinity)
    if reduction == "none":
        return losses[0] if unbatched else losses
    if reduction == "sum":
        return losses.sum()
    divisor = torch.from_numpy(np.maximum(tl, 1)).to(losses.dtype)
    return (losses / divisor).mean()
