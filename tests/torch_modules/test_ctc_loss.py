"""rnnkernels.torch.ctc_loss: PyTorch's signature, the true gradient (gradcheck), and
PyTorch's logit gradients through log_softmax."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnkernels.torch import ctc_loss  # noqa: E402


def _case(T=15, B=4, C=6, S=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, C, generator=g, dtype=dtype)
    targets = torch.randint(1, C, (B, S), generator=g)
    targets[0, 1] = targets[0, 0]  # a repeat
    input_lengths = torch.tensor([T, T - 2, T - 5, 7][:B])
    target_lengths = torch.tensor([S, S - 1, 0, 3][:B])
    return logits, targets, input_lengths, target_lengths


def test_gradcheck_with_raw_log_probs():
    """Unnormalised inputs: PyTorch's own backward fails this, ours passes."""
    logits, targets, il, tl = _case(T=6, B=3, C=4, S=3)
    x = logits.clone().requires_grad_(True)
    for reduction in ("none", "sum", "mean"):
        assert torch.autograd.gradcheck(
            lambda v: ctc_loss(v, targets, il, tl, reduction=reduction), (x,), eps=1e-6, atol=1e-7)
    with pytest.raises(Exception):
        assert torch.autograd.gradcheck(
            lambda v: torch.nn.functional.ctc_loss(v, targets, il, tl, reduction="sum"), (x,),
            eps=1e-6, atol=1e-7, raise_exception=True)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("blank", [0, 5])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_same_loss_and_logit_gradient_as_torch_after_log_softmax(reduction, blank, zero_infinity):
    logits, targets, il, tl = _case()
    if blank:
        targets = torch.where(targets == blank, torch.zeros_like(targets), targets)
    il = il.clone()
    if zero_infinity:
        il[3] = 2  # impossible for 3 labels
    results = []
    for fn in (ctc_loss, torch.nn.functional.ctc_loss):
        x = logits.clone().requires_grad_(True)
        loss = fn(x.log_softmax(2), targets, il, tl, blank=blank, reduction=reduction,
                  zero_infinity=zero_infinity)
        (loss if loss.dim() == 0 else loss.sum()).backward()
        results.append((loss.detach().numpy(), x.grad.numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-9, atol=1e-9)


def test_raw_loss_equals_torch_forward_and_concatenated_targets():
    logits, targets, il, tl = _case(seed=3)
    want = torch.nn.functional.ctc_loss(logits, targets, il, tl, reduction="none")
    got = ctc_loss(logits, targets, il, tl, reduction="none")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)
    flat = torch.cat([targets[b, :n] for b, n in enumerate(tl.tolist())])
    np.testing.assert_allclose(ctc_loss(logits, flat, il.tolist(), tl.tolist(), reduction="none").numpy(),
                               want.numpy(), rtol=1e-10)


def test_unbatched_float32_and_errors():
    logits, targets, il, tl = _case(dtype=torch.float32)
    one = ctc_loss(logits[:, 0].log_softmax(1), targets[0], int(il[0]), int(tl[0]), reduction="none")
    ref = torch.nn.functional.ctc_loss(logits[:, 0].log_softmax(1), targets[0], il[:1], tl[:1],
                                       reduction="none")
    assert one.dim() == 0 and float(one) == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(logits, targets, il, tl, reduction="avg")
    with pytest.raises(TypeError, match="log_probs"):
        ctc_loss(logits.numpy(), targets, il, tl)
    with pytest.raises(ValueError, match="input_lengths"):
        ctc_loss(logits, targets, il[:2], tl)
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(logits, targets, il, tl, blank=1)
