"""losses.CTC in the Keras-style API: values and gradients, lengths after subsampling
(FrameStack), training a small recogniser, saving."""
import numpy as np
import pytest

from rnnkernels import layers, losses, ops
from rnnkernels.models import Sequential, load_model
from rnnkernels.optimizers import Adam


def _labels(rng, B, S, C):
    y = np.full((B, S), -1, np.int64)
    for b in range(B):
        n = rng.integers(0, S + 1)
        y[b, :n] = rng.integers(1, C, n)
    return y


def test_value_and_gradient_from_logits_and_probabilities():
    rng = np.random.default_rng(0)
    B, T, C, S = 3, 9, 5, 3
    z = rng.standard_normal((B, T, C))
    y = _labels(rng, B, S, C)
    lengths = np.array([9, 7, 6])
    loss = losses.CTC(from_logits=True)
    value, grad = loss.value_and_grad(y, z, lengths=lengths, sample_weight=np.array([1.0, 2.0, 0.5]))
    per, dz = ops.ctc_loss(z.transpose(1, 0, 2).copy(), np.where(y < 0, 0, y), lengths,
                           (y >= 0).sum(1))
    assert value == pytest.approx(np.sum(np.array([1.0, 2.0, 0.5]) * per) / B)
    np.testing.assert_allclose(grad, (dz * np.array([1.0, 2.0, 0.5])[None, :, None] / B).transpose(1, 0, 2))
    # probabilities: the derivative of the value, by central differences
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    prob_loss = losses.CTC()
    v, g = prob_loss.value_and_grad(y, p, lengths=lengths)
    assert v == pytest.approx(loss.value_and_grad(y, z, lengths=lengths)[0])
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 3, 2), (2, 5, 4), (0, 8, 1), (2, 7, 3)]:
        pp, pm = p.copy(), p.copy()
        pp[idx] += eps
        pm[idx] -= eps
        num = (prob_loss.value_and_grad(y, pp, lengths=lengths)[0]
               - prob_loss.value_and_grad(y, pm, lengths=lengths)[0]) / (2 * eps)
        assert g[idx] == pytest.approx(num, rel=1e-5, abs=1e-8)


def test_lengths_from_a_mask_and_label_errors():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, 6, 4))
    y = np.array([[1, 2, -1], [3, -1, -1]])
    loss = losses.CTC(from_logits=True)
    mask = (np.arange(6) < np.array([[6], [4]])).astype(float)
    assert loss.value_and_grad(y, z, mask)[0] == pytest.approx(
        loss.value_and_grad(y, z, lengths=np.array([6, 4]))[0])
    with pytest.raises(ValueError, match="blank"):
        loss(np.array([[0, 2, -1], [3, -1, -1]]), z)
    with pytest.raises(ValueError, match="-1 padding"):
        loss(np.array([[1, -1, 2], [3, -1, -1]]), z)
    with pytest.raises(ValueError, match="B, T, C"):
        loss(y, z[:, 0])
    assert losses.get("ctc").name == "ctc"
    assert losses.get(losses.serialize(losses.CTC(zero_infinity=True))).zero_infinity


def test_frame_stack_shapes_lengths_and_adjoint():
    rng = np.random.default_rng(2)
    layer = layers.FrameStack(3)
    x = rng.standard_normal((2, 7, 4)).astype(np.float32)
    lengths = np.array([7, 4])
    y = layer(x, lengths=lengths)
    assert y.shape == (2, 3, 12) and layer.output_lengths(lengths).tolist() == [3, 2]
    np.testing.assert_array_equal(y[0, 2, :4], x[0, 6])
    assert np.all(y[0, 2, 4:] == 0) and np.all(y[1, 1, 4:] == 0)  # past each length: zeros
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g)
    assert dx.shape == x.shape and np.all(dx[1, 4:] == 0)
    assert np.sum(y * g) == pytest.approx(np.sum(x * dx), rel=1e-5)
    with pytest.raises(ValueError, match="stride"):
        layers.FrameStack(0)


def _toy(rng, n, T=16, F=6, C=4):
    """Each frame's features say its label (blank between); an easy task CTC must learn."""
    x = np.zeros((n, T, F), np.float32)
    y = np.full((n, 3), -1, np.int64)
    lengths = np.zeros(n, np.int64)
    for i in range(n):
        k = rng.integers(1, 4)
        labels = rng.integers(1, C, k)
        y[i, :k] = labels
        t = 0
        for lab in labels:
            x[i, t:t + 3, lab] = 1.0
            t += 5
        lengths[i] = min(T, t + rng.integers(0, 2))
    x += 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    return x, y, lengths


def test_a_small_recogniser_learns_and_saves(tmp_path):
    rng = np.random.default_rng(3)
    x, y, lengths = _toy(rng, 96)
    model = Sequential(seed=0)
    model.add(layers.Bidirectional(layers.GRU(12, return_sequences=True), input_shape=(None, 6)))
    model.add(layers.FrameStack(2))
    model.add(layers.Dense(4, activation="softmax"))
    model.compile(optimizer=Adam(learning_rate=0.02), loss="ctc")
    first = model.evaluate(x, y, lengths=lengths, verbose=0)
    model.fit(x, y, lengths=lengths, epochs=20, batch_size=16, verbose=0)
    last = model.evaluate(x, y, lengths=lengths, verbose=0)
    assert last < 0.2 * first
    # the loss uses the subsampled lengths: ceil(lengths / 2) frames per sample
    out = model.predict(x[:4], lengths=lengths[:4])
    z = np.log(out)
    per = ops.ctc_loss(z.transpose(1, 0, 2).copy(), np.where(y[:4] < 0, 0, y[:4]), -(-lengths[:4] // 2),
                       (y[:4] >= 0).sum(1), training=False)[0]
    assert model.evaluate(x[:4], y[:4], lengths=lengths[:4], verbose=0) == pytest.approx(per.mean(), rel=1e-4)
    path = tmp_path / "ctc.keras"
    model.save(path)
    again = load_model(path)
    assert isinstance(again.loss, losses.CTC)
    np.testing.assert_array_equal(again.predict(x[:4], lengths=lengths[:4]), out)
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, lengths=lengths, epochs=1, class_weight={1: 2.0}, verbose=0)
