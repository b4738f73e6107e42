"""What the kernels do not compute runs Keras's own loop: Keras's numbers, and the layer
says so (``last_path``)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers.keras_parity import flatten, pair  # noqa: E402
from rnnkernels.keras import GRU, LSTM, SimpleRNN  # noqa: E402

CASES = [
    (LSTM, keras.layers.LSTM, dict(activation="relu"), "activation 'relu'"),
    (LSTM, keras.layers.LSTM, dict(recurrent_activation="hard_sigmoid"), "recurrent_activation"),
    (GRU, keras.layers.GRU, dict(activation="softsign"), "activation 'softsign'"),
    (SimpleRNN, keras.layers.SimpleRNN, dict(activation="sigmoid"), "activation 'sigmoid'"),
    (SimpleRNN, keras.layers.SimpleRNN, dict(activation=None), "activation"),
    (LSTM, keras.layers.LSTM, dict(unroll=True), "unroll=True"),
    (GRU, keras.layers.GRU, dict(unroll=True, reset_after=False), "unroll=True"),
]


def outputs_and_grads(layer, x, mask=None, training=False):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outs = flatten(layer(x, mask=mask, training=training))
        loss = sum(tf.reduce_sum(o * o) for o in outs)
    return [o.numpy() for o in outs] + [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)]


@pytest.mark.parametrize("ours_cls,theirs_cls,config,why", CASES, ids=[c[3] for c in CASES])
def test_unsupported_arguments_run_keras(ours_cls, theirs_cls, config, why):
    rng = np.random.default_rng(0)
    theirs, ours = pair(keras, ours_cls, theirs_cls, (2, 5, 3), "float32", rng, units=4, return_sequences=True,
                        return_state=True, **config)
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    got, want = outputs_and_grads(ours, x), outputs_and_grads(theirs, x)
    assert ours.last_path.startswith("keras: ") and why in ours.last_path, ours.last_path
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_mask_that_is_not_right_padded_runs_keras():
    rng = np.random.default_rng(1)
    theirs, ours = pair(keras, LSTM, keras.layers.LSTM, (3, 6, 2), "float64", rng, units=3, return_sequences=True)
    x = rng.standard_normal((3, 6, 2))
    mask = np.ones((3, 6), bool)
    mask[:, :2] = False  # left padding (pad_sequences' default)
    got, want = outputs_and_grads(ours, x, mask), outputs_and_grads(theirs, x, mask)
    assert ours.last_path == "keras: the mask is not right-padded"
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("cls,theirs_cls", [(LSTM, keras.layers.LSTM), (GRU, keras.layers.GRU)])
def test_recurrent_dropout_in_training_runs_keras_and_inference_runs_the_kernels(cls, theirs_cls):
    rng = np.random.default_rng(2)
    theirs, ours = pair(keras, cls, theirs_cls, (3, 5, 2), "float64", rng, units=3, recurrent_dropout=0.3,
                        dropout=0.2, seed=9)
    x = rng.standard_normal((3, 5, 2))
    got, want = outputs_and_grads(ours, x, training=True), outputs_and_grads(theirs, x, training=True)
    assert ours.last_path.startswith("keras: recurrent_dropout"), ours.last_path
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), rtol=1e-10, atol=1e-12)
    assert ours.last_path == "rnnkernels"


def test_float16_runs_keras():
    rng = np.random.default_rng(3)
    theirs, ours = pair(keras, GRU, keras.layers.GRU, (2, 4, 3), "float16", rng, units=2)
    x = rng.standard_normal((2, 4, 3)).astype("float16")
    np.testing.assert_array_equal(ours(x), theirs(x))
    assert ours.last_path.startswith("keras: dtype float16")


def test_layers_never_ask_for_xla():
    assert not LSTM(3).supports_jit and not GRU(3).supports_jit and not SimpleRNN(3).supports_jit
