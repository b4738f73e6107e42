"""Long sequences: T = 5,000 steps train without overflow, and gradient clipping keeps the
loss and the weights finite.  (Cost: a few seconds; the kernels' work is T * B * H^2.)"""
import numpy as np
import pytest

from rnnkernels.callbacks import Callback
from rnnkernels.layers import GRU, LSTM, Dense
from rnnkernels.models import Sequential
from rnnkernels.optimizers import SGD, Adam

T, B, F = 5000, 4, 3


def _data(n, per_step=False):
    """Inputs of scale 3 (gates pushed towards saturation) and targets that sum over the whole
    sequence, so the weight gradients accumulate over all 5,000 steps and are large."""
    rng = np.random.default_rng(0)
    x = (3 * rng.normal(size=(n, T, F))).astype("float32")
    if per_step:
        return x, np.cumsum(x[..., :1], axis=1) / np.sqrt(np.arange(1, T + 1))[:, None]
    return x, x[:, :, :1].sum(axis=1) / 10


class _UpdateRecorder(Callback):
    """Per batch: the largest raw (unclipped) gradient norm and the largest weight change."""

    def __init__(self):
        super().__init__()
        self.grad_norms, self.step_norms = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._before = [p.copy() for p in self.model.trainable_params()]

    def on_train_batch_end(self, batch, logs=None):
        params = self.model.trainable_params()
        self.grad_norms.append(max(float(np.linalg.norm(g)) for g in self.model._trainable_grads()))
        self.step_norms.append(max(float(np.linalg.norm(p - b)) for p, b in zip(params, self._before)))


def _assert_finite_model(model, history):
    assert np.isfinite(history.history["loss"]).all(), history.history
    for w in model.get_weights():
        assert np.isfinite(w).all()


def _input_gradients(layer, x):
    """dloss/dx of one recurrent layer for a loss on its last output: (B, T, F)."""
    out = layer.forward(x, training=True)
    return layer.backward(np.ones_like(out))


def test_lstm_5000_steps_sgd_clipnorm_bounds_every_update():
    lr, clipnorm = 0.5, 0.1
    x, y = _data(2 * B)
    model = Sequential([LSTM(8, input_shape=(T, F)), Dense(1)], seed=0)
    model.compile(SGD(learning_rate=lr, clipnorm=clipnorm), "mse")
    recorder = _UpdateRecorder()
    history = model.fit(x, y, batch_size=B, epochs=2, verbose=0, callbacks=[recorder])
    _assert_finite_model(model, history)
    assert len(recorder.step_norms) == 4
    # Clipping was needed (raw gradients over 5,000 steps are large) and it held: plain SGD
    # moves each parameter array by lr * min(|g|, clipnorm) at most.
    assert max(recorder.grad_norms) > 10 * clipnorm, recorder.grad_norms
    assert max(recorder.step_norms) <= lr * clipnorm * (1 + 1e-4), recorder.step_norms

    dx = _input_gradients(model.layers[0], x[:B])
    assert dx.shape == (B, T, F) and np.isfinite(dx).all()
    assert np.abs(dx[:, -1]).max() > 0  # the gradient reaches the input
    assert np.isfinite(dx[:, :100]).all()  # ... and at the earliest steps it is finite (it vanishes)


def test_gru_5000_steps_per_step_targets_adam_clipnorm():
    x, y = _data(2 * B, per_step=True)
    model = Sequential([GRU(8, return_sequences=True, input_shape=(T, F)), Dense(1)], seed=1)
    model.compile(Adam(learning_rate=0.01, clipnorm=1.0), "mse")
    history = model.fit(x, y, batch_size=B, epochs=3, verbose=0)
    _assert_finite_model(model, history)
    assert history.history["loss"][-1] < history.history["loss"][0]  # it learns, not just survives
    dx = _input_gradients(model.layers[0], x[:B])
    assert np.isfinite(dx).all()
    assert np.abs(dx[:, 0]).max() > 0  # per-step outputs: the first step has its own gradient


@pytest.mark.parametrize("cell", [LSTM, GRU])
def test_float64_5000_steps_match_float32(cell):
    """No accumulation drift: float32 and float64 predictions over 5,000 steps agree."""
    x, _ = _data(B)
    preds = []
    for dtype in ("float32", "float64"):
        model = Sequential([cell(8, input_shape=(T, F)), Dense(1)], seed=2, dtype=dtype)
        preds.append(model.predict(x.astype(dtype)))
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-3, atol=1e-4)
