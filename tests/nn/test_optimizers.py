"""Optimizers against their textbook update rules, clipping, schedules and state."""
import math

import numpy as np
import pytest

from rnnkernels import activations, losses, optimizers as opt


def _run(optimizer, steps=3):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(steps)]
    p = w.copy()
    for g in grads:
        optimizer.apply_gradients([p], [g.copy()])
    return w, grads, p


def test_adam_matches_keras_rule():
    w, grads, p = _run(opt.Adam(0.1))
    m = v = 0
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.1 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(p, w, rtol=1e-12)


def test_sgd_momentum_nesterov_rmsprop_adagrad_adamw():
    w, grads, p = _run(opt.SGD(0.1, momentum=0.9, nesterov=True))
    v = 0
    for g in grads:
        v = 0.9 * v - 0.1 * g
        w = w + 0.9 * v - 0.1 * g
    np.testing.assert_allclose(p, w, rtol=1e-12)
    w, grads, p = _run(opt.RMSprop(0.01))
    v = 0
    for g in grads:
        v = 0.9 * v + 0.1 * g * g
        w = w - 0.01 * g / np.sqrt(v + 1e-7)
    np.testing.assert_allclose(p, w, rtol=1e-12)
    w, grads, p = _run(opt.Adagrad(0.1))
    acc = 0.1
    for g in grads:
        acc = acc + g * g
        w = w - 0.1 * g / np.sqrt(acc + 1e-7)
    np.testing.assert_allclose(p, w, rtol=1e-12)
    w, grads, p = _run(opt.AdamW(0.1, weight_decay=0.5), steps=1)
    w = w * (1 - 0.05)
    w = w - 0.1 * math.sqrt(0.001) / 0.1 * (0.1 * grads[0]) / (np.sqrt(0.001 * grads[0] ** 2) + 1e-7)
    np.testing.assert_allclose(p, w, rtol=1e-10)


def test_clipping():
    g = np.array([3.0, 4.0])
    p = np.zeros(2)
    opt.SGD(1.0, clipnorm=1.0).apply_gradients([p], [g])
    np.testing.assert_allclose(p, [-0.6, -0.8])
    p = np.zeros(2)
    opt.SGD(1.0, clipvalue=3.5).apply_gradients([p], [g])
    np.testing.assert_allclose(p, [-3.0, -3.5])
    p, q = np.zeros(2), np.zeros(1)
    opt.SGD(1.0, global_clipnorm=6.5).apply_gradients([p, q], [g, np.array([12.0])])
    np.testing.assert_allclose(np.r_[p, q], -np.r_[g, 12.0] / 2)
    with pytest.raises(ValueError, match="at most one"):
        opt.SGD(clipnorm=1.0, clipvalue=1.0)


def test_schedules():
    s = opt.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [s(0), s(9), s(10), s(25)] == [0.1, 0.1, 0.05, 0.025]
    s = opt.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [s(0), s(2), s(3), s(5), s(6)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    s = opt.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert s(0) == 1.0 and s(10) == pytest.approx(0.1) and s(5) == pytest.approx(0.55)
    o = opt.SGD(s)
    p = np.zeros(1)
    o.apply_gradients([p], [np.ones(1)])
    assert o.current_learning_rate() == pytest.approx(s(1))
    again = opt.get({"class_name": "SGD", "config": o.get_config()})
    assert isinstance(again.learning_rate, opt.CosineDecay)


def test_state_round_trip_and_errors():
    o = opt.Adam(0.1)
    p = np.zeros(2)
    o.apply_gradients([p], [np.ones(2)])
    it, arrays = o.get_state()
    o2 = opt.Adam(0.1)
    o2.set_state(it, arrays, [p])
    q = p.copy()
    o.apply_gradients([p], [np.ones(2)])
    o2.apply_gradients([q], [np.ones(2)])
    np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="grads\\[0\\]"):
        o.apply_gradients([p], [np.ones(3)])
    with pytest.raises(ValueError, match="learning_rate"):
        opt.Adam(-1)
    with pytest.raises(ValueError, match="optimizer"):
        opt.get("adamax")


def test_fused_cross_entropy_is_stable_and_matches_probabilities():
    z = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    value, dz = losses.CategoricalCrossentropy().from_logits_value_and_grad(y, z)
    assert np.isfinite(value) and value == pytest.approx((1000 + activations.log_softmax(z)[1, 2] * -1) / 2)
    p = activations.softmax(z)
    np.testing.assert_allclose(dz, (p - y) / 2)
    v2 = losses.CategoricalCrossentropy()(y[1:], p[1:])
    assert v2 == pytest.approx(-activations.log_softmax(z)[1, 2])
