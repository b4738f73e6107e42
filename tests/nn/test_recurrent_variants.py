"""The recurrent layers' variants (projection, peephole, LayerNorm, zoneout,
recurrent dropout in the kernel): gradients through a model by central
differences, Keras-layout weights and saving, inference semantics, the
PyTorch projection through interop, and one kernel call per forward."""
import numpy as np
import pytest

from rnnkernels import ops
from rnnkernels._core import threads as kernel_threads
from rnnkernels._core.blas import pin_blas
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, Masking, SimpleRNN
from rnnkernels.models import Sequential, load_model

VARIANTS = {
    "lstm_projection": lambda **kw: LSTM(5, projection=3, **kw),
    "lstm_peephole": lambda **kw: LSTM(5, peephole=True, **kw),
    "lstm_projection_peephole": lambda **kw: LSTM(5, projection=3, peephole=True, **kw),
    "lstm_layer_norm": lambda **kw: LSTM(5, layer_norm=True, **kw),
    "gru_layer_norm": lambda **kw: GRU(5, layer_norm=True, **kw),
    "lstm_zoneout": lambda **kw: LSTM(5, zoneout=(0.3, 0.2), **kw),
    "gru_zoneout": lambda **kw: GRU(5, zoneout=0.3, **kw),
    "lstm_recurrent_dropout": lambda **kw: LSTM(5, recurrent_dropout=0.3, **kw),
    "lstm_projection_recurrent_dropout": lambda **kw: LSTM(5, projection=3, recurrent_dropout=0.3, **kw),
    "gru_recurrent_dropout": lambda **kw: GRU(5, recurrent_dropout=0.3, **kw),
    "gru_reset_before_recurrent_dropout": lambda **kw: GRU(5, reset_after=False, recurrent_dropout=0.3, **kw),
    "rnn_recurrent_dropout": lambda **kw: SimpleRNN(5, recurrent_dropout=0.3, **kw),
}


def _model(make, bidirectional=False, T=6, F=3):
    rnn = make(return_sequences=False)
    layers = [Masking(input_shape=(T, F)), Bidirectional(rnn) if bidirectional else rnn,
              Dense(4, activation="softmax")]
    model = Sequential(layers, seed=1, dtype="float64")
    model.compile("sgd", "categorical_crossentropy")
    return model


def _data(n=5, T=6, F=3, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, F))
    x[1, 4:] = 0.0  # padding the Masking layer turns into lengths
    x[3, 2:] = 0.0
    return x, np.eye(4)[rng.integers(0, 4, n)]


def _loss(model, x, y):
    out, lens = model._forward(x, True, None, np.random.default_rng(7))  # the same masks each time
    return model._loss(y, out, lens, True)[0]


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_through_a_model_by_central_differences(name, bidirectional):
    model = _model(VARIANTS[name], bidirectional)
    x, y = _data()
    with pin_blas(1):
        out, lens = model._forward(x, True, None, np.random.default_rng(7))
        grad = model.layers[-1].backward_from_logits(model._loss(y, out, lens, True)[1])
        for layer in reversed(model.layers[:-1]):
            grad = layer.backward(grad)
        pick, eps, checked = np.random.default_rng(3), 1e-6, 0
        for p, g in zip(model.trainable_params(), [g.copy() for g in model._trainable_grads()]):
            for _ in range(2):
                i = tuple(pick.integers(0, s) for s in p.shape)
                old = p[i]
                p[i] = old + eps
                up = _loss(model, x, y)
                p[i] = old - eps
                down = _loss(model, x, y)
                p[i] = old
                num = (up - down) / (2 * eps)
                assert abs(num - g[i]) <= 1e-6 * max(1.0, abs(num)), (name, p.shape, i, num, g[i])
                checked += 1
    assert checked >= 2 * 5


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_keras_weights_config_and_saving_round_trip(name, tmp_path):
    model = _model(VARIANTS[name])
    x, _ = _data()
    layer = model.layers[1]
    weights = layer.get_weights()
    assert [w.shape for w in weights] == [tuple(s) for s in layer.weight_shapes()]
    twin = _model(VARIANTS[name])
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))
    path = tmp_path / "m.rnk"
    model.save(path)
    loaded = load_model(path)
    assert loaded.layers[1].get_config() == layer.get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_variant_weights_come_after_keras_three():
    layer = LSTM(4, projection=2, peephole=True)
    layer.build((5, 3), np.random.default_rng(0), "float64")
    shapes = [w.shape for w in layer.get_weights()]
    assert shapes == [(3, 16), (2, 16), (16,), (4, 2), (4,), (4,), (4,)]
    norm = GRU(4, layer_norm=True)
    norm.build((5, 3), np.random.default_rng(0), "float64")
    assert [w.shape for w in norm.get_weights()] == [(3, 12), (4, 12), (2, 12), (12,), (12,)]
    g = norm.get_weights()
    np.testing.assert_array_equal(g[3], 1.0)  # LayerNorm gains start at one


def test_zoneout_inference_is_the_expectation_and_training_draws_masks():
    layer = GRU(4, zoneout=0.4, return_sequences=True)
    layer.build((6, 3), np.random.default_rng(0), "float64")
    x = np.random.default_rng(1).normal(size=(2, 6, 3))
    p = layer.params
    want = ops.gru_forward(x.transpose(1, 0, 2), p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], zoneout=0.4,
                           training=False)[0].transpose(1, 0, 2)
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-13)
    layer.rng = np.random.default_rng(5)
    a = layer.forward(x, training=True)
    layer.rng = np.random.default_rng(5)
    np.testing.assert_array_equal(layer.forward(x, training=True), a)  # seeded
    assert not np.allclose(a, want)


def test_recurrent_dropout_is_one_kernel_call_and_keras_semantics():
    """h_{t-1} is masked before the recurrent product only; the GRU's mix
    z * h_{t-1} reads the unmasked state, as Keras's GRU does."""
    layer = GRU(3, recurrent_dropout=0.5, return_sequences=True)
    layer.build((4, 2), np.random.default_rng(0), "float64")
    layer.rng = np.random.default_rng(0)
    x = np.random.default_rng(10).normal(size=(6, 4, 2))
    kernel_threads.reset_usage()
    y = layer.forward(x, training=True)
    assert kernel_threads.usage()["calls"] == 1   # not one call per sequence
    m = layer._rec_mask
    k, rk, b = layer.get_weights()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((6, 3))
    for t in range(4):
        xz, xr, xh = np.split(x[:, t] @ k + b[0], 3, axis=1)
        hz, hr, hh = np.split((h * m) @ rk + b[1], 3, axis=1)
        z, r = sig(xz + hz), sig(xr + hr)
        h = z * h + (1 - z) * np.tanh(xh + r * hh)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_projection_lstm_matches_torch_through_interop():
    torch = pytest.importorskip("torch")
    from rnnkernels.engine.interop import load_torch_state_dict, to_torch_state_dict
    model = Sequential([LSTM(6, projection=4, return_sequences=True, input_shape=(5, 3))], seed=0,
                       dtype="float64")
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    module = torch.nn.LSTM(3, 6, proj_size=4, batch_first=True, dtype=torch.float64)
    module.load_state_dict(to_torch_state_dict(model, as_tensors=True))
    np.testing.assert_allclose(module(torch.tensor(x))[0].detach().numpy(), model.predict(x), rtol=1e-12)
    other = torch.nn.LSTM(3, 6, proj_size=4, batch_first=True, dtype=torch.float64)
    load_torch_state_dict(model, other.state_dict())
    np.testing.assert_allclose(other(torch.tensor(x))[0].detach().numpy(), model.predict(x), rtol=1e-12)


def test_variants_without_a_torch_twin_refuse_interop():
    from rnnkernels.engine.interop import to_torch_state_dict
    for layer in (LSTM(3, peephole=True, input_shape=(4, 2)), GRU(3, layer_norm=True, input_shape=(4, 2))):
        model = Sequential([layer], seed=0)
        with pytest.raises(ValueError, match="no torch.nn equivalent"):
            to_torch_state_dict(model)


@pytest.mark.parametrize("make, match", [
    (lambda: LSTM(4, layer_norm=True, peephole=True), "layer_norm, peephole: LSTM cannot combine"),
    (lambda: LSTM(4, projection=2, zoneout=0.1), "projection, zoneout"),
    (lambda: GRU(4, layer_norm=True, reset_after=False), "reset_after=True"),
    (lambda: LSTM(4, projection=0), "projection: expected a positive integer"),
    (lambda: LSTM(4, zoneout=1.0), r"zoneout: expected a float in \[0, 1\)"),
    (lambda: LSTM(4, zoneout=(0.1, 0.2, 0.3)), r"zoneout: expected a rate or a pair"),
])
def test_bad_variant_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
