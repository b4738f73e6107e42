"""Layers: Keras weight layouts against an independent NumPy computation of Keras's
equations, gradients of whole models by central differences (float64), masking, and
Bidirectional's return_state / initial_state / stateful paths (against Keras when installed)."""
import threading
import time

import numpy as np
import pytest

import rnnkernels
from helpers.environment import package_env
from rnnkernels._core.blas import pin_blas
from rnnkernels.layers import (GRU, LSTM, Activation, BatchNormalization, Bidirectional, Dense,
                               Dropout, GlobalAveragePooling1D, GlobalMaxPooling1D, LayerNormalization,
                               Masking, SimpleRNN)
from rnnkernels.models import Sequential


def sig(z):
    return 1 / (1 + np.exp(-z))


def keras_rnn(kind, x, weights, lengths=None, go_backwards=False, reset_after=True, activation=np.tanh):
    """Keras's recurrences, written from Keras's docs with Keras's gate orders and masking
    (a masked step keeps the state; masked outputs repeat the previous output)."""
    kernel, rec = weights[0], weights[1]
    bias = weights[2] if len(weights) > 2 else None
    N, T, _ = x.shape
    U = rec.shape[0]
    mask = np.ones((N, T), bool) if lengths is None else np.arange(T)[None] < np.asarray(lengths)[:, None]
    if go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    h = np.zeros((N, U))
    c = np.zeros((N, U))
    out = np.zeros((N, T, U))
    prev_out = np.zeros((N, U))
    for t in range(T):
        xt = x[:, t]
        if kind == "lstm":
            z = xt @ kernel + h @ rec + (0 if bias is None else bias)
            i, f, g, o = sig(z[:, :U]), sig(z[:, U:2 * U]), np.tanh(z[:, 2 * U:3 * U]), sig(z[:, 3 * U:])
            c_new = f * c + i * g
            h_new = o * np.tanh(c_new)
        elif kind == "gru":
            if reset_after:
                bi, br = (bias[0], bias[1]) if bias is not None else (0, 0)
                xz = xt @ kernel + bi
                hz = h @ rec + br
                zg = sig(xz[:, :U] + hz[:, :U])
                r = sig(xz[:, U:2 * U] + hz[:, U:2 * U])
                hh = np.tanh(xz[:, 2 * U:] + r * hz[:, 2 * U:])
            else:
                b = 0 if bias is None else bias
                xz = xt @ kernel + b
                zg = sig(xz[:, :U] + h @ rec[:, :U])
                r = sig(xz[:, U:2 * U] + h @ rec[:, U:2 * U])
                hh = np.tanh(xz[:, 2 * U:] + (r * h) @ rec[:, 2 * U:])
            h_new = zg * h + (1 - zg) * hh
            c_new = c
        else:
            h_new = activation(xt @ kernel + h @ rec + (0 if bias is None else bias))
            c_new = c
        m = mask[:, t:t + 1]
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        prev_out = np.where(m, h_new, prev_out)
        out[:, t] = prev_out
    return out, h, mask


CASES = [("lstm", LSTM, {}), ("gru", GRU, {}), ("gru", GRU, {"reset_after": False}),
         ("rnn", SimpleRNN, {}), ("rnn", SimpleRNN, {"activation": "relu"})]


@pytest.mark.parametrize("kind,cls,kw", CASES)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_keras_layout_matches_numpy_keras_equations(kind, cls, kw, go_backwards):
    rng = np.random.default_rng(1)
    N, T, F, U = 4, 6, 3, 5
    layer = cls(U, return_sequences=True, go_backwards=go_backwards, **kw)
    layer.build((T, F), rng, "float64")
    weights = [rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()]
    layer.set_weights(weights)
    for w, got in zip(weights, layer.get_weights()):
        np.testing.assert_array_equal(w, got)
    x = rng.normal(size=(N, T, F))
    lengths = np.array([6, 3, 0, 5])
    act = np.tanh if kw.get("activation", "tanh") == "tanh" else (lambda z: np.maximum(z, 0))
    ref, ref_h, mask = keras_rnn(kind, x, weights, lengths, go_backwards, kw.get("reset_after", True), act)
    y = layer.forward(x, lengths=lengths)
    np.testing.assert_allclose(y[mask], ref[mask], rtol=1e-10, atol=1e-12)
    layer.return_sequences = False
    np.testing.assert_allclose(layer.forward(x, lengths=lengths), ref_h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_matches_numpy_keras(merge_mode, return_sequences):
    rng = np.random.default_rng(2)
    N, T, F, U = 3, 5, 2, 4
    layer = Bidirectional(LSTM(U, return_sequences=return_sequences), merge_mode=merge_mode,
                          input_shape=(T, F))
    layer.build((T, F), rng, "float64")
    w = [rng.normal(scale=0.5, size=s) for s in layer.weight_shapes()]
    layer.set_weights(w)
    x = rng.normal(size=(N, T, F))
    lengths = np.array([5, 2, 4])
    fo, fh, mask = keras_rnn("lstm", x, w[:3], lengths)
    # Keras's backward layer: go_backwards over the masked sequence, outputs re-reversed
    bo, bh, _ = keras_rnn("lstm", x, w[3:], lengths, go_backwards=True)
    bo = bo[:, ::-1]
    a, b = (fo, bo) if return_sequences else (fh, bh)
    expected = {"concat": np.concatenate([a, b], -1), "sum": a + b, "mul": a * b, "ave": (a + b) / 2}[merge_mode]
    y = layer.forward(x, lengths=lengths)
    if return_sequences:
        y, expected = y[mask], expected[mask]
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    assert layer.count_params() == 2 * (4 * U * (F + U + 1))


def test_lstm_defaults_are_keras():
    rng = np.random.default_rng(0)
    layer = LSTM(8)
    layer.build((5, 3), rng, "float64")
    kernel, rec, bias = layer.get_weights()
    np.testing.assert_array_equal(bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])
    limit = np.sqrt(6 / (3 + 32))
    assert np.abs(kernel).max() <= limit
    np.testing.assert_allclose(rec @ rec.T, np.eye(8), atol=1e-12)  # orthogonal rows
    gru = GRU(4)
    gru.build((5, 3), rng, "float64")
    assert [w.shape for w in gru.get_weights()] == [(3, 12), (4, 12), (2, 12)]
    gru = _built(GRU(4, reset_after=False), (2, 3))
    assert [w.shape for w in gru.get_weights()] == [(3, 12), (4, 12), (12,)]


def _built(layer, shape):
    layer.build(shape, np.random.default_rng(0), "float64")
    return layer


def test_masking_gives_lengths_and_zeroes_padding():
    x = np.ones((3, 5, 2))
    x[0, 3:] = 0
    x[1, :] = 0
    m = _built(Masking(0.0), (5, 2))
    y = m.forward(x)
    np.testing.assert_array_equal(m.output_lengths(None), [3, 0, 5])
    assert y[0, 3:].sum() == 0
    x[2, 1] = 0
    with pytest.warns(UserWarning, match="treated as data"):
        m.forward(x)


def _model_loss(model, x, y, lengths, seed=7):
    out, lens = model._forward(x, True, lengths, np.random.default_rng(seed))
    return model._loss(y, out, lens, True)[0]


def _gradcheck(model, x, y, lengths=None, n_checks=3, tol=1e-6):
    """Compare the model's backward pass with central differences of its loss."""
    with pin_blas(1):
        _gradcheck_inner(model, x, y, lengths, n_checks, tol)


def _gradcheck_inner(model, x, y, lengths, n_checks, tol):
    model.optimizer.learning_rate = 0.0
    rng = np.random.default_rng(7)
    out, lens = model._forward(x, True, lengths, rng)
    _, grad, _ = model._loss(y, out, lens, True)
    layers = model.layers
    if model._fused():
        grad = layers[-1].backward_from_logits(grad)
        layers = layers[:-1]
    for layer in reversed(layers):
        grad = layer.backward(grad)
    params, grads = model.trainable_params(), [g.copy() for g in model._trainable_grads()]
    pick = np.random.default_rng(3)
    eps = 1e-6
    for p, g in zip(params, grads):
        for _ in range(n_checks):
            i = tuple(pick.integers(0, s) for s in p.shape)
            old = p[i]
            p[i] = old + eps
            up = _model_loss(model, x, y, lengths)
            p[i] = old - eps
            down = _model_loss(model, x, y, lengths)
            p[i] = old
            num = (up - down) / (2 * eps)
            assert abs(num - g[i]) <= tol * max(1.0, abs(num)), (p.shape, i, num, g[i])


def _compiled(layers, loss="categorical_crossentropy"):
    model = Sequential(layers, seed=0, dtype="float64")
    model.compile("sgd", loss)
    return model


@pytest.mark.parametrize("make", [
    lambda: [LSTM(4, input_shape=(5, 3), dropout=0.3), Dropout(0.3), Dense(3, activation="softmax")],
    lambda: [GRU(4, input_shape=(5, 3), return_sequences=True), GRU(3, reset_after=False, go_backwards=True),
             Dense(3, activation="softmax")],
    lambda: [SimpleRNN(4, input_shape=(5, 3), return_sequences=True), LayerNormalization(),
             GlobalAveragePooling1D(), Dense(6, activation="tanh"), Dense(3, activation="softmax")],
    lambda: [Masking(input_shape=(5, 3)), Bidirectional(LSTM(3, return_sequences=True), merge_mode="mul"),
             Bidirectional(GRU(2)), Dense(3, activation="softmax")],
    lambda: [Masking(input_shape=(5, 3)), Bidirectional(SimpleRNN(3, return_sequences=True), merge_mode="ave"),
             BatchNormalization(), GlobalMaxPooling1D(), Dense(3), Activation("softmax")],
    lambda: [LSTM(4, input_shape=(5, 3), recurrent_dropout=0.4, return_sequences=True),
             Dense(3, activation="softmax")],
])
def test_model_gradients_by_central_differences(make):
    rng = np.random.default_rng(5)
    model = _compiled(make())
    x = rng.normal(size=(4, 5, 3))
    x[1, 3:] = 0.0  # padding seen by Masking
    x[2, 1:] = 0.0
    out_shape = model.layers[-1].output_shape
    y = np.eye(3)[rng.integers(0, 3, size=(4,) + out_shape[:-1])]
    _gradcheck(model, x, y)


@pytest.mark.parametrize("loss,act", [("binary_crossentropy", "sigmoid"), ("mse", "linear"),
                                      ("mae", "tanh"), ("sparse_categorical_crossentropy", "softmax")])
def test_loss_gradients_with_lengths(loss, act):
    rng = np.random.default_rng(6)
    model = _compiled([GRU(4, input_shape=(6, 2), return_sequences=True), Dense(3, activation=act)], loss)
    x = rng.normal(size=(3, 6, 2))
    lengths = np.array([6, 2, 4])
    if loss.startswith("sparse"):
        y = rng.integers(0, 3, size=(3, 6))
    else:
        y = (rng.random((3, 6, 3)) > 0.5).astype(float)
    _gradcheck(model, x, y, lengths=lengths)


def test_lengths_make_padding_irrelevant():
    rng = np.random.default_rng(8)
    model = _compiled([LSTM(4, input_shape=(None, 3)), Dense(2, activation="softmax")])
    x = rng.normal(size=(2, 7, 3))
    lengths = np.array([7, 4])
    p1 = model.predict(x, lengths=lengths)
    x2 = x.copy()
    x2[1, 4:] = 1e3
    np.testing.assert_array_equal(model.predict(x2, lengths=lengths), p1)
    np.testing.assert_allclose(model.predict(x[1:, :4]), p1[1:], rtol=1e-12)
    ragged = [x[0], x[1, :4]]
    np.testing.assert_allclose(model.predict(ragged), p1, rtol=1e-12)


def test_stateful_carries_states_until_reset():
    rng = np.random.default_rng(9)
    layer = _built(LSTM(3, stateful=True, return_sequences=True), (None, 2))
    x = rng.normal(size=(2, 8, 2))
    full = _built(LSTM(3, return_sequences=True), (8, 2))
    full.set_weights(layer.get_weights())
    whole = full.forward(x)
    parts = np.concatenate([layer.forward(x[:, :4]), layer.forward(x[:, 4:])], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    layer.reset_states()
    np.testing.assert_allclose(layer.forward(x[:, :4]), whole[:, :4], rtol=1e-12)
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(x[:1, :4])


def test_recurrent_dropout_matches_masked_numpy():
    rng = np.random.default_rng(10)
    layer = _built(SimpleRNN(3, recurrent_dropout=0.5, return_sequences=True), (4, 2))
    layer.rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 2))
    y = layer.forward(x, training=True)
    m = layer._rec_mask
    k, r, b = layer.get_weights()
    h = np.zeros((2, 3))
    for t in range(4):
        h = np.tanh(x[:, t] @ k + (h * m) @ r + b)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="units"):
        LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(3, dropout=1.5)
    with pytest.raises(ValueError, match="activation"):
        LSTM(3, activation="relu")
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(2), merge_mode="max")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Dense(3, kernel_regularizer="l2")
    layer = _built(LSTM(2), (3, 4))
    with pytest.raises(ValueError, match=r"weights\[1\]: expected shape \(2, 8\)"):
        layer.set_weights([np.zeros((4, 8)), np.zeros((3, 8)), np.zeros(8)])
    with pytest.raises(ValueError, match="expected input shape"):
        layer.forward(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="training=True"):
        layer.forward(np.zeros((2, 3, 4)))
        layer.backward(np.zeros((2, 2)))


def test_against_keras():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    x[1, 4:] = 0
    for ours, theirs in [
            (LSTM(5, return_sequences=True), keras.layers.LSTM(5, return_sequences=True)),
            (GRU(5), keras.layers.GRU(5)),
            (GRU(5, reset_after=False), keras.layers.GRU(5, reset_after=False)),
            (SimpleRNN(5, go_backwards=True, return_sequences=True),
             keras.layers.SimpleRNN(5, go_backwards=True, return_sequences=True)),
            (Bidirectional(LSTM(3)), keras.layers.Bidirectional(keras.layers.LSTM(3)))]:
        theirs(x)
        ours.build((6, 4), rng, "float32")
        ours.set_weights(theirs.get_weights())
        np.testing.assert_allclose(ours.forward(x), np.asarray(theirs(x)), rtol=2e-5, atol=2e-6)


# Bidirectional with return_state / initial_state / stateful --------------------------------

BIDIR_CELLS = [("lstm", LSTM, 2), ("gru", GRU, 1), ("rnn", SimpleRNN, 1)]


def _bidir(cls, U, input_shape, merge_mode="concat", seed=0, dtype="float64", **kw):
    """A built Bidirectional(cls(U, **kw)) with random weights."""
    layer = Bidirectional(cls(U, **kw), merge_mode=merge_mode)
    layer.build(input_shape, np.random.default_rng(seed), dtype)
    rng = np.random.default_rng(seed + 100)
    layer.set_weights([rng.normal(scale=0.5, size=s) for s in layer.weight_shapes()])
    return layer


def _direction(layer, which, **kw):
    """A standalone layer with the weights of one of ``layer``'s directions."""
    d = getattr(layer, which + "_layer")
    single = type(d)(d.units, **kw)
    single.build(layer.input_shape, np.random.default_rng(0), layer.dtype)
    single.set_weights(d.get_weights())
    return single


@pytest.mark.parametrize("kind,cls,n", BIDIR_CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_return_state_is_output_then_forward_then_backward_states(kind, cls, n,
                                                                                return_sequences):
    rng = np.random.default_rng(12)
    B, T, F, U = 3, 5, 2, 4
    layer = _bidir(cls, U, (T, F), return_state=True, return_sequences=return_sequences)
    x = rng.normal(size=(B, T, F))
    lengths = np.array([5, 2, 4])
    init = [rng.normal(size=(B, U)) for _ in range(2 * n)]
    out = layer.forward(x, lengths=lengths, initial_state=init)
    assert isinstance(out, list) and len(out) == 1 + 2 * n
    fwd = _direction(layer, "forward", return_state=True, return_sequences=return_sequences)
    bwd = _direction(layer, "backward", return_state=True, return_sequences=return_sequences,
                     go_backwards=True)
    f = fwd.forward(x, lengths=lengths, initial_state=init[:n])
    b = bwd.forward(x, lengths=lengths, initial_state=init[n:])
    for got, want in zip(out[1:], f[1:] + b[1:]):
        assert got.shape == (B, U)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if return_sequences:
        # the backward layer alone returns processing order; Bidirectional re-aligns it
        mask = np.arange(T)[None] < lengths[:, None]
        bo = b[0][:, ::-1]
        np.testing.assert_allclose(out[0][mask], np.concatenate([f[0], bo], -1)[mask], rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_allclose(out[0], np.concatenate([f[1], b[1]], -1), rtol=1e-12)
    # the initial states matter: zeros give a different result
    zero = layer.forward(x, lengths=lengths)
    assert not np.allclose(zero[1], out[1])


def _numeric_grad(f, a, i, eps=1e-6):
    old = a[i]
    a[i] = old + eps
    up = f()
    a[i] = old - eps
    down = f()
    a[i] = old
    return (up - down) / (2 * eps)


def _check_bidir_grads(layer, run, x, init, dy, n_checks=3, tol=1e-6):
    """``run()`` -> the layer's outputs (list) for the current ``x``, ``init`` and parameters;
    the loss is ``sum(dy[k] * out[k])``, so ``dy`` is its gradient with respect to the outputs.
    Compares ``backward``'s parameter, input and initial-state gradients with central differences."""
    def loss():
        return sum(float(np.sum(d * o)) for d, o in zip(dy, run(False)) if d is not None)

    with pin_blas(1):
        run(True)
        dx = layer.backward(dy if layer.return_state else dy[0])
        grads = {k: g.copy() for k, g in layer.grads.items()}
        state_grads = [g.copy() for g in layer.state_grads]
        pick = np.random.default_rng(4)
        targets = [(layer.params[k], grads[k]) for k in layer.params] + [(x, dx)]
        targets += list(zip(init, state_grads))
        assert len(state_grads) == layer.n_states
        for a, g in targets:
            assert g.shape == a.shape
            for _ in range(n_checks):
                i = tuple(pick.integers(0, s) for s in a.shape)
                num = _numeric_grad(loss, a, i)
                assert abs(num - g[i]) <= tol * max(1.0, abs(num)), (a.shape, i, num, g[i])


@pytest.mark.parametrize("kind,cls,n", BIDIR_CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("merge_mode", ["concat", "mul"])
def test_bidirectional_state_gradients_by_central_differences(kind, cls, n, return_sequences, merge_mode):
    """Gradients reaching the returned states (a later layer using them) flow back into the
    parameters, the input and the initial states."""
    rng = np.random.default_rng(13)
    B, T, F, U = 3, 4, 2, 3
    layer = _bidir(cls, U, (T, F), merge_mode=merge_mode, return_state=True,
                   return_sequences=return_sequences)
    x = rng.normal(size=(B, T, F))
    lengths = np.array([4, 1, 3])
    init = [rng.normal(scale=0.5, size=(B, U)) for _ in range(2 * n)]

    def run(training):
        return layer.forward(x, training=training, lengths=lengths, initial_state=init)

    out = run(False)
    dy = [rng.normal(size=o.shape) for o in out]
    _check_bidir_grads(layer, run, x, init, dy)
    # None entries are zeros: only the backward direction's h reaches the loss
    dy_b = [None] * (1 + n) + [dy[1 + n]] + [None] * (n - 1)
    _check_bidir_grads(layer, run, x, init, dy_b)


@pytest.mark.parametrize("kind,cls,n", BIDIR_CELLS)
def test_bidirectional_stateful_gradients_by_central_differences(kind, cls, n):
    """Truncated BPTT: a stateful batch's gradients reach the carried states (state_grads)."""
    rng = np.random.default_rng(14)
    B, T, F, U = 2, 3, 2, 3
    layer = _bidir(cls, U, (None, F), stateful=True, return_sequences=True)
    x = rng.normal(size=(B, 2 * T, F))
    layer.forward(x[:, :T], training=True)
    carried = [s.copy() for s in layer.states]
    x2 = x[:, T:].copy()

    def run(training):
        layer.reset_states(carried)
        return [layer.forward(x2, training=training)]

    dy = [rng.normal(size=run(False)[0].shape)]
    _check_bidir_grads(layer, run, x2, carried, dy)


@pytest.mark.parametrize("kind,cls,n", BIDIR_CELLS)
def test_bidirectional_stateful_carries_both_directions_until_reset(kind, cls, n):
    rng = np.random.default_rng(15)
    B, T, F, U = 2, 8, 2, 3
    layer = _bidir(cls, U, (None, F), stateful=True, return_sequences=True, merge_mode="concat")
    assert layer.stateful and layer.states is None and layer.n_states == 2 * n
    x = rng.normal(size=(B, T, F))
    fwd = _direction(layer, "forward", stateful=True, return_sequences=True)
    bwd = _direction(layer, "backward", stateful=True, return_sequences=True, go_backwards=True)
    whole = _direction(layer, "forward", return_sequences=True).forward(x)
    first = None
    for k, sl in enumerate((slice(0, 3), slice(3, 6), slice(6, 8))):
        y = layer.forward(x[:, sl])
        first = y if first is None else first
        np.testing.assert_allclose(y[..., :U], fwd.forward(x[:, sl]), rtol=1e-12, atol=1e-14)
        # Keras: the backward direction starts each batch where it ended the previous one
        np.testing.assert_allclose(y[..., U:], bwd.forward(x[:, sl])[:, ::-1], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(y[..., :U], whole[:, sl], rtol=1e-12, atol=1e-14)
        assert len(layer.states) == 2 * n
        for got, want in zip(layer.states, fwd.states + bwd.states):
            np.testing.assert_array_equal(got, want)
    layer.reset_states()
    assert layer.states is None
    np.testing.assert_allclose(layer.forward(x[:, :3]), first, rtol=1e-12)
    with pytest.raises(ValueError, match="batch size"):
        layer.forward(x[:1, :3])
    # reset_states(states) sets both directions: forward's, then backward's
    states = [rng.normal(size=(B, U)) for _ in range(2 * n)]
    layer.reset_states(states)
    y = layer.forward(x[:, :3])
    fwd.reset_states(states[:n])
    bwd.reset_states(states[n:])
    np.testing.assert_allclose(y[..., :U], fwd.forward(x[:, :3]), rtol=1e-12)
    np.testing.assert_allclose(y[..., U:], bwd.forward(x[:, :3])[:, ::-1], rtol=1e-12)


def test_bidirectional_stateful_model_saves_and_fits(tmp_path):
    from rnnkernels.models import load_model
    rng = np.random.default_rng(16)
    model = Sequential([Bidirectional(LSTM(3, stateful=True), input_shape=(None, 2), batch_size=4),
                        Dense(2, activation="softmax")], seed=0, dtype="float64")
    model.compile("adam", "categorical_crossentropy")
    x = rng.normal(size=(4, 6, 2))
    y = np.eye(2)[rng.integers(0, 2, size=4)]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    states = model.layers[0].states
    assert len(states) == 4 and all(np.abs(s).max() > 0 for s in states)
    model.save(tmp_path / "m.rnnk")
    loaded = load_model(tmp_path / "m.rnnk")
    assert loaded.layers[0].stateful
    for got, want in zip(loaded.layers[0].states, states):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.predict(x, batch_size=4), model.predict(x, batch_size=4))
    with pytest.raises(ValueError, match="batch_size=4"):
        model.predict(x[:2])


def test_bidirectional_config_round_trip_keeps_return_state_and_stateful():
    layer = Bidirectional(GRU(3, return_state=True, stateful=True, return_sequences=True), merge_mode="sum")
    copy = Bidirectional.from_config(layer.get_config())
    assert (copy.return_state, copy.stateful, copy.return_sequences) == (True, True, True)
    assert copy.merge_mode == "sum"
    assert copy.backward_layer.go_backwards and copy.backward_layer.stateful
    assert copy.n_states == 2


def test_bidirectional_bad_states_and_layers():
    layer = _bidir(LSTM, 3, (4, 2), return_state=True)
    x = np.zeros((2, 4, 2))
    with pytest.raises(ValueError, match=r"initial_state: expected a list of 4 arrays \(forward h, "
                                         r"forward c, backward h, backward c\), got 2 arrays"):
        layer.forward(x, initial_state=[np.zeros((2, 3))] * 2)
    with pytest.raises(ValueError, match=r"initial_state\[2\]: expected shape \(2, 3\), got \(1, 3\)"):
        layer.forward(x, initial_state=[np.zeros((2, 3))] * 2 + [np.zeros((1, 3)), np.zeros((2, 3))])
    with pytest.raises(TypeError, match=r"initial_state\[0\]: expected a numeric array"):
        layer.forward(x, initial_state=[np.array([["a"] * 3] * 2)] + [np.zeros((2, 3))] * 3)
    layer.forward(x, training=True)
    with pytest.raises(ValueError, match=r"dy: expected a list of 5 gradients .* got ndarray"):
        layer.backward(np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"states: expected a list of 4 arrays"):
        layer.reset_states([np.zeros((2, 3))])
    with pytest.raises(ValueError, match="go_backwards=False"):
        Bidirectional(LSTM(3, go_backwards=True))
    with pytest.raises(ValueError, match="backward_layer: expected go_backwards=True"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3))
    with pytest.raises(ValueError, match="backward_layer: expected stateful=True as layer, got False"):
        Bidirectional(LSTM(3, stateful=True), backward_layer=LSTM(3, go_backwards=True))
    with pytest.raises(ValueError, match="backward_layer: expected return_state=False as layer, got True"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3, go_backwards=True, return_state=True))
    with pytest.raises(ValueError, match="backward_layer: expected the type of layer, LSTM, got GRU"):
        Bidirectional(LSTM(3), backward_layer=GRU(3, go_backwards=True))
    with pytest.raises(TypeError, match="unexpected keyword"):
        Bidirectional(LSTM(3), stateful=True)  # as Keras: stateful belongs to the wrapped layer
    with pytest.raises(ValueError, match="return_state=True gives several outputs"):
        Sequential([Bidirectional(LSTM(3, return_state=True), input_shape=(4, 2))])


def test_bidirectional_states_against_keras():
    """return_state (with initial_state and a mask) and stateful, against Keras with the same weights."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(17)
    B, T, F, U = 3, 6, 4, 5
    x = rng.normal(size=(B, T, F)).astype("float32")
    lengths = np.array([6, 3, 5])
    mask = np.arange(T)[None] < lengths[:, None]
    tol = dict(rtol=2e-5, atol=2e-6)
    for ours_cls, theirs_cls, n in [(LSTM, keras.layers.LSTM, 2), (GRU, keras.layers.GRU, 1),
                                    (SimpleRNN, keras.layers.SimpleRNN, 1)]:
        for return_sequences in (True, False):
            inner = theirs_cls(U, return_state=True, return_sequences=return_sequences)
            theirs = keras.layers.Bidirectional(inner, merge_mode="ave")
            ours = Bidirectional(ours_cls(U, return_state=True, return_sequences=return_sequences),
                                 merge_mode="ave")
            init = [rng.normal(size=(B, U)).astype("float32") for _ in range(2 * n)]
            want = theirs(x, initial_state=init, mask=mask)
            ours.build((T, F), rng, "float32")
            ours.set_weights(theirs.get_weights())
            got = ours.forward(x, lengths=lengths, initial_state=init)
            assert len(got) == len(want) == 1 + 2 * n
            for g, w in zip(got, want):
                w = np.asarray(w)
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, **tol)
    for ours_cls, theirs_cls in [(LSTM, keras.layers.LSTM), (GRU, keras.layers.GRU)]:
        theirs = keras.layers.Bidirectional(theirs_cls(U, stateful=True, return_sequences=True))
        ours = Bidirectional(ours_cls(U, stateful=True, return_sequences=True))
        theirs(x[:, :2])
        ours.build((None, F), rng, "float32")
        ours.set_weights(theirs.get_weights())
        theirs.reset_states()
        for sl in (slice(0, 2), slice(2, 5), slice(5, 6), "reset", slice(0, 3)):
            if sl == "reset":
                theirs.reset_states()
                ours.reset_states()
                continue
            np.testing.assert_allclose(ours.forward(x[:, sl]), np.asarray(theirs(x[:, sl])), **tol)
            for g, w in zip(ours.states, theirs.states):
                np.testing.assert_allclose(g, np.asarray(w), **tol)


def _record_direction_threads(monkeypatch, cls):
    """The names of the threads that run ``cls``'s recurrences from now on (a set)."""
    seen = set()
    original = cls._core_forward

    def recording(self, *args, **kwargs):
        seen.add(threading.current_thread().name.split("_")[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_core_forward", recording)
    return seen


@pytest.mark.parametrize("cls,n", [(LSTM, 2), (GRU, 1)])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_directions_run_at_once_with_the_results_of_one_after_the_other(
        cls, n, return_sequences, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7, 3)).astype("float32")
    lengths = np.array([7, 3, 5, 1, 6])
    seen = _record_direction_threads(monkeypatch, cls)
    results, dout = {}, None
    for threads in (1, 2, 3):
        layer = Bidirectional(cls(4, return_sequences=return_sequences, return_state=True),
                              input_shape=(7, 3))
        layer.build((7, 3), np.random.default_rng(0))
        with rnnkernels.num_threads(threads):
            out = layer.forward(x, training=True, lengths=lengths)
            if dout is None:  # the same output gradients at every thread count
                dout = [rng.normal(size=o.shape).astype("float32") for o in out]
            dx = layer.backward(dout)
        results[threads] = out + [dx] + layer.state_grads + [g for g in layer.grads.values()]
        assert seen == ({"MainThread"} if threads == 1 else {"MainThread", "rnnkernels-direction"})
        seen.clear()
    for threads in (2, 3):
        assert all(np.array_equal(a, b) for a, b in zip(results[1], results[threads]))
    # with dropout the masks come from one generator in a fixed order: one direction at a time
    layer = Bidirectional(cls(4, dropout=0.5), input_shape=(7, 3))
    layer.build((7, 3), np.random.default_rng(0))
    layer.rng = np.random.default_rng(1)
    seen.clear()
    with rnnkernels.num_threads(2):
        layer.forward(x, training=True)
    assert seen == {"MainThread"}


def test_bidirectional_error_in_one_direction_waits_for_the_other_and_propagates(monkeypatch):
    layer = Bidirectional(LSTM(4), input_shape=(7, 3))
    layer.build((7, 3), np.random.default_rng(0))
    finished = []
    original = LSTM._core_forward

    def slow_or_failing(self, x_tm, lengths, reverse, *args):
        if reverse:
            raise RuntimeError("backward direction failed")
        time.sleep(0.05)
        finished.append(True)
        return original(self, x_tm, lengths, reverse, *args)

    monkeypatch.setattr(LSTM, "_core_forward", slow_or_failing)
    with rnnkernels.num_threads(2), pytest.raises(RuntimeError, match="backward direction failed"):
        layer.forward(np.zeros((2, 7, 3), "float32"))
    assert finished == [True]  # the other direction was waited for, not left running


def test_bidirectional_in_a_forked_child_after_the_parent_used_both_threads():
    import multiprocessing
    layer = Bidirectional(GRU(4), input_shape=(5, 3))
    layer.build((5, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    with rnnkernels.num_threads(2):
        want = layer.forward(x)  # the parent's worker thread now exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # the child inherits the pool object, not its thread
        got = pool.apply_async(_forward_two_threads, (layer, x)).get(timeout=60)
    assert np.array_equal(got, want)


def _forward_two_threads(layer, x):
    with rnnkernels.num_threads(2):
        return layer.forward(x)


def test_bidirectional_in_a_forked_child_release_memory_returns():
    import multiprocessing
    layer = Bidirectional(GRU(4), input_shape=(5, 3))
    layer.build((5, 3), np.random.default_rng(0))
    with rnnkernels.num_threads(2):
        layer.forward(np.ones((2, 5, 3), "float32"))  # the parent's worker now exists
    with multiprocessing.get_context("fork").Pool(1) as pool:  # it hung here before
        assert pool.apply_async(rnnkernels.release_memory).get(timeout=60) is None


def test_bidirectional_runs_both_directions_itself_when_the_worker_is_busy(monkeypatch):
    from rnnkernels._core import pair
    seen = _record_direction_threads(monkeypatch, LSTM)
    layer = Bidirectional(LSTM(4), input_shape=(5, 3))
    layer.build((5, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(3, 5, 3)).astype("float32")
    with rnnkernels.num_threads(2):
        want = layer.forward(x)
        assert seen == {"MainThread", "rnnkernels-direction"}
        seen.clear()
        with pair._pool_free:  # another thread's layer holds the worker
            got = layer.forward(x)
    assert seen == {"MainThread"} and np.array_equal(got, want)


def test_bidirectional_during_interpreter_shutdown(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, threading, time, numpy as np, rnnkernels\n"
        "from rnnkernels.layers import LSTM, Bidirectional\n"
        "from rnnkernels.models import Sequential\n"
        "m = Sequential([Bidirectional(LSTM(8))])\n"
        "x = np.random.rand(4, 5, 3).astype('float32')\n"
        "m.predict(x)\n"
        "def late():\n"
        "    time.sleep(0.5)  # the main thread has returned: executors are shut down\n"
        "    print('late predict', m.predict(x).shape, flush=True)\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: (rnnkernels.release_memory(), print('atexit release ok')))\n")
    env = package_env(OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["late predict (4, 16)", "atexit release ok"]


def test_bidirectional_worker_direction_runs_under_the_callers_errstate(monkeypatch):
    seen = []
    original = LSTM._core_forward

    def recording(self, *args, **kwargs):
        seen.append((threading.current_thread().name.split("_")[0], np.geterr()["over"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LSTM, "_core_forward", recording)
    layer = Bidirectional(LSTM(4), input_shape=(5, 3))
    layer.build((5, 3), np.random.default_rng(0))
    with rnnkernels.num_threads(2), np.errstate(over="raise"):
        layer.forward(np.ones((2, 5, 3), "float32"))
    assert sorted(seen) == [("MainThread", "raise"), ("rnnkernels-direction", "raise")]
