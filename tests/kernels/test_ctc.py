"""The CTC loss: the reference by central differences, ops against the reference
and against PyTorch (through log_softmax), bad input, threads, fuzzing."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkernels
from rnnkernels import ops, reference

EXAMPLES = int(os.environ.get("RNNKERNELS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RNNKERNELS_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow])


def case(T, B, C, S, seed=0, blank=0, dtype=np.float64, repeats=False, scale=1.0):
    """Random logits and targets; every sample feasible unless its lengths say otherwise."""
    rng = np.random.default_rng(seed)
    z = (scale * rng.standard_normal((T, B, C))).astype(dtype)
    others = [c for c in range(C) if c != blank]
    targets = rng.choice(others, size=(B, S)) if S else np.zeros((B, 0), np.int64)
    if repeats and S >= 2:
        targets[:, 1] = targets[:, 0]
    target_lengths = rng.integers(0, S + 1, B)
    need = np.array([n + sum(targets[b, i] == targets[b, i - 1] for i in range(1, n))
                     for b, n in enumerate(target_lengths)])
    input_lengths = np.array([rng.integers(min(m, T), T + 1) if m <= T else T for m in need])
    return z, targets, input_lengths, target_lengths


def concatenated(targets, target_lengths):
    return np.concatenate([targets[b, :n] for b, n in enumerate(target_lengths)]).astype(np.int64)


# ------------------------------------------------------------------ reference
def test_reference_gradient_by_central_differences():
    z, tg, il, tl = case(6, 3, 4, 3, seed=1, repeats=True)
    tl[:] = [3, 2, 0]
    il[:] = [6, 5, 4]
    losses, dz = reference.ctc_loss(z, tg, il, tl)
    assert np.all(np.isfinite(losses))
    eps = 1e-6
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        num[idx] = (reference.ctc_loss(zp, tg, il, tl)[0].sum() - reference.ctc_loss(zm, tg, il, tl)[0].sum()) / (2 * eps)
    np.testing.assert_allclose(dz, num, atol=1e-8, rtol=1e-6)
    assert np.all(dz[5:, 1] == 0) and np.all(dz[4:, 2] == 0)  # past each input length


def test_reference_small_cases_by_hand():
    # one frame, one label: P = softmax(z)[label]
    z = np.log(np.array([[[0.2, 0.5, 0.3]]]))
    losses, dz = reference.ctc_loss(z, [[1]], [1], [1])
    assert losses[0] == pytest.approx(-np.log(0.5))
    np.testing.assert_allclose(dz[0, 0], [0.2, 0.5 - 1, 0.3])
    # empty target: P = prod_t softmax(z)[t, blank]
    z = np.log(np.array([[[0.6, 0.4]], [[0.9, 0.1]]]))
    assert reference.ctc_loss(z, np.zeros((1, 0), np.int64), [2], [0])[0][0] == pytest.approx(-np.log(0.54))
    # repeated labels need a blank between them: "1 1" in 2 frames is impossible, in 3 it is one path
    z = np.zeros((3, 1, 2))
    assert reference.ctc_loss(z[:2], [[1, 1]], [2], [2])[0][0] == np.inf
    assert reference.ctc_loss(z, [[1, 1]], [3], [2])[0][0] == pytest.approx(3 * np.log(2))


# ------------------------------------------------------------- ops vs reference
CASES = [  # T, B, C, S, blank, repeats
    (1, 1, 2, 1, 0, False), (7, 3, 5, 3, 0, True), (13, 5, 7, 4, 3, True), (20, 2, 11, 6, 10, False),
    (31, 7, 3, 9, 1, True), (5, 4, 2, 0, 0, False), (17, 1, 29, 8, 0, True),
]


@pytest.mark.parametrize("T,B,C,S,blank,repeats", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ops_matches_reference(T, B, C, S, blank, repeats, dtype, threads):
    z, tg, il, tl = case(T, B, C, S, seed=T * B, blank=blank, dtype=dtype, repeats=repeats)
    want_l, want_g = reference.ctc_loss(z, tg, il, tl, blank=blank)
    got_l, got_g = ops.ctc_loss(z, tg, il, tl, blank=blank)
    assert got_l.dtype == dtype and got_g.dtype == dtype and got_g.shape == z.shape
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got_l, want_l, **tol)
    np.testing.assert_allclose(got_g, want_g, **tol)
    # the concatenated form gives the same numbers
    c_l, c_g = ops.ctc_loss(z, concatenated(tg, tl), il, tl, blank=blank)
    np.testing.assert_array_equal(c_l, got_l)
    np.testing.assert_array_equal(c_g, got_g)
    inference, none = ops.ctc_loss(z, tg, il, tl, blank=blank, training=False)
    assert none is None
    np.testing.assert_array_equal(inference, got_l)


def test_minimum_frames_impossible_and_zero_infinity():
    C = 4
    z = np.random.default_rng(3).standard_normal((6, 4, C))
    tg = np.array([[1, 1, 2], [1, 2, 3], [2, 2, 2], [1, 2, 3]])
    tl = np.array([3, 3, 3, 3])
    # minimum frames: 4 for "1 1 2", 3 for "1 2 3", 5 for "2 2 2"; the last sample has one too few
    il = np.array([4, 3, 5, 2])
    for impl in (reference, ops):
        losses, dz = impl.ctc_loss(z, tg, il, tl)
        assert np.all(np.isfinite(losses[:3])) and losses[3] == np.inf
        assert np.all(dz[:, 3] == 0)
        losses0, dz0 = impl.ctc_loss(z, tg, il, tl, zero_infinity=True)
        assert losses0[3] == 0 and np.all(dz0[:, 3] == 0)
        np.testing.assert_array_equal(losses0[:3], losses[:3])
    np.testing.assert_allclose(ops.ctc_loss(z, tg, il, tl)[1], reference.ctc_loss(z, tg, il, tl)[1], atol=1e-12)


def test_zero_frames_and_zero_samples():
    z = np.zeros((3, 2, 3))
    losses, dz = ops.ctc_loss(z, [[1], [1]], [0, 0], [0, 1])
    assert losses.tolist() == [0.0, np.inf] and np.all(dz == 0)
    losses, dz = ops.ctc_loss(np.zeros((3, 0, 3)), np.zeros((0, 2), np.int64), np.zeros(0, int), np.zeros(0, int))
    assert losses.shape == (0,) and dz.shape == (3, 0, 3)


def test_peaked_logits_stay_finite():
    """Log space: an alignment of probability e^-3000 is a finite loss, not inf."""
    z, tg, il, tl = case(40, 3, 6, 5, seed=4, scale=60.0)
    for dtype in (np.float64, np.float32):
        want = reference.ctc_loss(z.astype(dtype), tg, il, tl)[0]
        got = ops.ctc_loss(z.astype(dtype), tg, il, tl)[0]
        assert np.all(np.isfinite(got)) and want.max() > 100
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_nan_logits_give_nan_not_a_number():
    z, tg, il, tl = case(8, 3, 5, 3, seed=10)
    tl[:], il[:] = 2, 8
    for dtype in (np.float32, np.float64):
        bad = z.astype(dtype)
        bad[3, 1, 2] = np.nan
        losses, grad = ops.ctc_loss(bad, tg, il, tl)
        assert np.isnan(losses[1]) and np.all(np.isfinite(losses[[0, 2]]))
        assert np.isnan(grad[:, 1]).all() and np.isfinite(grad[:, [0, 2]]).all()
        want = reference.ctc_loss(bad, tg, il, tl)[0]
        np.testing.assert_allclose(losses[[0, 2]], want[[0, 2]], rtol=1e-5)
        assert np.isnan(want[1])
        bad[3, 1, 2] = np.inf
        assert np.isnan(ops.ctc_loss(bad, tg, il, tl)[0][1])
        bad[3, 1, 2] = -np.inf  # a class ruled out in one frame is fine
        assert np.isfinite(ops.ctc_loss(bad, tg, il, tl)[0]).all()


def test_one_and_two_threads_are_bitwise_equal():
    for dtype in (np.float32, np.float64):
        z, tg, il, tl = case(50, 9, 13, 12, seed=5, dtype=dtype, repeats=True)
        with rnnkernels.num_threads(1):
            a = ops.ctc_loss(z, tg, il, tl)
        with rnnkernels.num_threads(2):
            b = ops.ctc_loss(z, tg, il, tl)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_input_is_not_modified_and_layouts_agree():
    z, tg, il, tl = case(9, 4, 5, 3, seed=6)
    keep = z.copy()
    want = ops.ctc_loss(z, tg, il, tl)
    np.testing.assert_array_equal(z, keep)
    strided = np.zeros((9, 4, 10))
    strided[..., ::2] = z
    got = ops.ctc_loss(strided[..., ::2], tg.astype(np.int32), il.astype(np.int32), tl.tolist())
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("impl", [ops, reference], ids=["ops", "reference"])
def test_bad_input_is_a_clear_error(impl):
    z = np.zeros((5, 2, 4))
    tg, il, tl = np.array([[1, 2], [3, 0]]), np.array([5, 5]), np.array([2, 1])
    with pytest.raises(ValueError, match="blank"):
        impl.ctc_loss(z, np.array([[1, 0], [3, 0]]), il, tl)  # label 0 == blank inside the length
    with pytest.raises(ValueError, match="targets"):
        impl.ctc_loss(z, np.array([[1, 4], [3, 0]]), il, tl)  # out of range
    with pytest.raises(ValueError, match="targets"):
        impl.ctc_loss(z, np.array([[1, -1], [3, 0]]), il, tl)
    with pytest.raises(ValueError, match="input_lengths"):
        impl.ctc_loss(z, tg, [6, 5], tl)
    with pytest.raises(ValueError, match="input_lengths"):
        impl.ctc_loss(z, tg, [-1, 5], tl)
    with pytest.raises(ValueError, match="input_lengths"):
        impl.ctc_loss(z, tg, [5, 5, 5], tl)
    with pytest.raises(ValueError, match="target_lengths"):
        impl.ctc_loss(z, tg, il, [3, 1])
    with pytest.raises(ValueError, match="target_lengths"):
        impl.ctc_loss(z, tg, il, [-1, 1])
    with pytest.raises(ValueError, match="targets"):
        impl.ctc_loss(z, np.array([1, 2]), il, tl)  # concatenated: 2 labels, lengths sum to 3
    with pytest.raises(ValueError, match="targets"):
        impl.ctc_loss(z, np.zeros((3, 2), np.int64) + 1, il, tl)
    with pytest.raises(TypeError, match="targets"):
        impl.ctc_loss(z, tg.astype(float), il, tl)
    with pytest.raises(TypeError, match="input_lengths"):
        impl.ctc_loss(z, tg, np.array([5.0, 5.0]), tl)
    with pytest.raises(TypeError, match="logits"):
        impl.ctc_loss(z.astype(np.int64), tg, il, tl)
    with pytest.raises(ValueError, match="logits"):
        impl.ctc_loss(z[0], tg, il, tl)
    with pytest.raises(ValueError, match="blank"):
        impl.ctc_loss(z, tg, il, tl, blank=4)
    with pytest.raises(TypeError, match="zero_infinity"):
        impl.ctc_loss(z, tg, il, tl, zero_infinity="yes")
    # padding past a sample's target length is ignored, whatever it holds
    a = impl.ctc_loss(z, np.array([[1, 2], [3, -1]]), il, tl)
    b = impl.ctc_loss(z, np.array([[1, 2], [3, 99]]), il, tl)
    np.testing.assert_array_equal(a[0], b[0])


# -------------------------------------------------------------------- fuzzing
@FUZZ
@given(T=st.integers(1, 25), B=st.integers(1, 6), C=st.integers(2, 9), S=st.integers(0, 8),
       seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]),
       blank_last=st.booleans(), zero_infinity=st.booleans(), concat=st.booleans())
def test_fuzz_ops_against_reference(T, B, C, S, seed, dtype, blank_last, zero_infinity, concat):
    rng = np.random.default_rng(seed)
    blank = C - 1 if blank_last else 0
    z = (2 * rng.standard_normal((T, B, C))).astype(dtype)
    others = [c for c in range(C) if c != blank]
    tg = rng.choice(others, size=(B, S)) if S else np.zeros((B, 0), np.int64)
    tl = rng.integers(0, S + 1, B)
    il = rng.integers(0, T + 1, B)  # impossible samples included
    targets = concatenated(tg, tl) if concat else tg
    want = reference.ctc_loss(z, targets, il, tl, blank=blank, zero_infinity=zero_infinity)
    got = ops.ctc_loss(z, targets, il, tl, blank=blank, zero_infinity=zero_infinity)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=5e-5, atol=5e-5)
    np.testing.assert_array_equal(np.isinf(got[0]), np.isinf(want[0]))
    finite = np.isfinite(want[0])
    np.testing.assert_allclose(got[0][finite], want[0][finite], **tol)
    np.testing.assert_allclose(got[1], want[1], **tol)


# -------------------------------------------------------------------- PyTorch
TORCH_CASES = {  # name: (T, B, C, S, blank, repeats, seed)
    "plain": (30, 6, 8, 7, 0, False, 1),
    "repeats": (25, 5, 4, 8, 0, True, 2),
    "blank_last": (19, 4, 6, 5, 5, True, 3),
    "blank_middle": (23, 7, 9, 6, 4, False, 4),
    "empty_targets": (10, 3, 5, 0, 0, False, 5),
    "one_frame": (1, 3, 3, 1, 0, False, 6),
    "odd_sizes": (37, 11, 29, 13, 0, True, 7),
}


def _torch_ctc(torch, z, targets, il, tl, blank, zero_infinity):
    zt = torch.tensor(z, requires_grad=True)
    losses = torch.nn.functional.ctc_loss(zt.log_softmax(2), torch.tensor(targets), torch.tensor(il),
                                          torch.tensor(tl), blank=blank, reduction="none",
                                          zero_infinity=zero_infinity)
    losses.sum().backward()
    return losses.detach().numpy(), zt.grad.numpy()


@pytest.mark.parametrize("concat", [False, True], ids=["padded", "concatenated"])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch_in_float64(name, concat):
    torch = pytest.importorskip("torch")
    T, B, C, S, blank, repeats, seed = TORCH_CASES[name]
    z, tg, il, tl = case(T, B, C, S, seed=seed, blank=blank, repeats=repeats)
    targets = concatenated(tg, tl) if concat else tg
    want_l, want_g = _torch_ctc(torch, z, targets, il, tl, blank, False)
    got_l, got_g = ops.ctc_loss(z, targets, il, tl, blank=blank)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("concat", [False, True], ids=["padded", "concatenated"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_targets_match_torch(zero_infinity, concat):
    torch = pytest.importorskip("torch")
    z, tg, il, tl = case(12, 5, 6, 6, seed=8, repeats=True)
    tl[:] = 6
    il[:] = [12, 5, 7, 12, 3]  # samples 1 and 4 too short for 6 labels (and a repeat)
    targets = concatenated(tg, tl) if concat else tg
    want_l, want_g = _torch_ctc(torch, z, targets, il, tl, 0, zero_infinity)
    got_l, got_g = ops.ctc_loss(z, targets, il, tl, zero_infinity=zero_infinity)
    np.testing.assert_array_equal(np.isinf(got_l), np.isinf(want_l))
    assert np.isinf(got_l).any() != zero_infinity
    np.testing.assert_allclose(got_l, want_l, rtol=1e-9, atol=1e-9)
    possible = np.isfinite(want_l) if not zero_infinity else np.ones(5, bool)
    if not zero_infinity:
        # torch's gradient of an infinite loss is not defined (nan); ours is zero
        assert np.all(got_g[:, ~np.isfinite(want_l)] == 0)
        kept = concatenated(tg[possible], tl[possible]) if concat else tg[possible]
        torch_g = _torch_ctc(torch, z[:, possible], kept, il[possible], tl[possible], 0, False)[1]
        np.testing.assert_allclose(got_g[:, possible], torch_g, rtol=1e-9, atol=1e-9)
    else:
        np.testing.assert_allclose(got_g, want_g, rtol=1e-9, atol=1e-9)


def test_matches_torch_in_float32():
    torch = pytest.importorskip("torch")
    z, tg, il, tl = case(60, 8, 12, 15, seed=9, dtype=np.float32, repeats=True)
    want_l, want_g = _torch_ctc(torch, z, tg, il, tl, 0, False)
    got_l, got_g = ops.ctc_loss(z, tg, il, tl)
    np.testing.assert_allclose(got_l, want_l, rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=2e-5)
