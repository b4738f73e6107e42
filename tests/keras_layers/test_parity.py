"""rnnkernels.keras against keras.layers with the same weights, TensorFlow backend:
outputs, final states and the gradients (tf.GradientTape) of the inputs, the initial
states and every weight, float64 and float32, eager and inside tf.function."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers.keras_parity import TOL, pair, right_padded_mask, run  # noqa: E402
from rnnkernels.keras import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: E402

CELLS = {
    "lstm": (LSTM, keras.layers.LSTM, {}),
    "gru": (GRU, keras.layers.GRU, {}),
    "gru_reset_before": (GRU, keras.layers.GRU, {"reset_after": False}),
    "rnn_tanh": (SimpleRNN, keras.layers.SimpleRNN, {}),
    "rnn_relu": (SimpleRNN, keras.layers.SimpleRNN, {"activation": "relu"}),
}
N_STATES = {"lstm": 2}


def assert_same(a, b, dtype, what):
    assert len(a) == len(b), what
    for k, (u, v) in enumerate(zip(a, b)):
        assert u.shape == v.shape, f"{what}[{k}]: {u.shape} vs {v.shape}"
        np.testing.assert_allclose(v, u, err_msg=f"{what}[{k}]", **TOL[dtype])


def assert_same_training_step(ours, theirs, x):
    """A training call of both layers (same seed, so the same masks): our layer ran on the
    kernels, and its outputs and every weight gradient equal Keras's in float64."""
    weights = lambda layer: layer.trainable_weights  # noqa: E731
    got, want = run(ours, x, weights, training=True), run(theirs, x, weights, training=True)
    assert ours.last_path == "rnnkernels"
    assert_same(want[0], got[0], "float64", "outputs")
    assert_same(want[1], got[1], "float64", "gradients")


def compare(cell, dtype, x_shape=(3, 7, 5), units=4, mask=None, initial=False, graph=False,
            training=False, expect="rnnkernels", seed=0, **config):
    ours_cls, theirs_cls, base = CELLS[cell]
    rng = np.random.default_rng(seed)
    theirs, ours = pair(keras, ours_cls, theirs_cls, x_shape, dtype, rng, units=units, **base, **config)
    x = rng.standard_normal(x_shape).astype(dtype)
    initial_state = None
    if initial:
        initial_state = [rng.standard_normal((x_shape[0], units)).astype(dtype)
                         for _ in range(N_STATES.get(cell, 1))]
    weights = lambda layer: layer.trainable_weights  # noqa: E731
    got = run(ours, x, weights, mask, initial_state, training, graph)
    want = run(theirs, x, weights, mask, initial_state, training, graph)
    if expect is not None:
        assert ours.last_path.startswith(expect), ours.last_path
    assert_same(want[0], got[0], dtype, "outputs")
    assert_same(want[1], got[1], dtype, "gradients")
    return ours


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("return_sequences,return_state,go_backwards",
                         [(False, False, False), (True, True, False), (True, True, True), (False, True, True)])
def test_outputs_states_and_gradients_match_keras(cell, dtype, return_sequences, return_state, go_backwards):
    compare(cell, dtype, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_right_padded_masks_run_on_the_kernels(cell, dtype, go_backwards):
    # lengths 7 (full), 4, 0 (empty: Keras outputs zeros, the states stay the initial ones), 1
    mask = right_padded_mask([7, 4, 0, 1], 7)
    compare(cell, dtype, x_shape=(4, 7, 5), mask=mask, initial=True, return_sequences=True,
            return_state=True, go_backwards=go_backwards)
    compare(cell, dtype, x_shape=(4, 7, 5), mask=mask, go_backwards=go_backwards)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_masks_inside_tf_function_choose_per_batch(cell):
    right = right_padded_mask([5, 2, 3], 5)
    holes = right.copy()
    holes[0, 1] = False
    compare(cell, "float64", x_shape=(3, 5, 2), mask=right, graph=True, return_sequences=True,
            return_state=True, expect="rnnkernels (right-padded masks) or keras")
    compare(cell, "float64", x_shape=(3, 5, 2), mask=holes, graph=True, return_sequences=True,
            expect="rnnkernels (right-padded masks) or keras")


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_initial_state_no_bias_odd_sizes(cell):
    compare(cell, "float64", x_shape=(1, 1, 1), units=1, initial=True, return_state=True)
    compare(cell, "float64", x_shape=(5, 11, 3), units=7, initial=True, return_sequences=True,
            return_state=True, use_bias=False)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_graph_mode_matches(cell):
    compare(cell, "float32", graph=True, return_sequences=True, return_state=True)
    compare(cell, "float32", graph=True, go_backwards=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_input_dropout_uses_keras_mask(cell):
    # the same seed draws the same dropout mask in both layers (Keras's cell caches one per call)
    ours_cls, theirs_cls, base = CELLS[cell]
    rng = np.random.default_rng(3)
    x_shape = (4, 6, 5)
    theirs, ours = pair(keras, ours_cls, theirs_cls, x_shape, "float64", rng, units=3, dropout=0.4, seed=11,
                        return_sequences=True, **base)
    x = rng.standard_normal(x_shape)
    assert_same_training_step(ours, theirs, x)
    # inference ignores dropout
    assert np.allclose(ours(x, training=False), theirs(x, training=False))


def test_simple_rnn_recurrent_dropout_runs_on_the_kernels():
    rng = np.random.default_rng(4)
    x_shape = (4, 6, 5)
    theirs, ours = pair(keras, SimpleRNN, keras.layers.SimpleRNN, x_shape, "float64", rng, units=3,
                        recurrent_dropout=0.3, dropout=0.2, seed=5, return_sequences=True)
    x = rng.standard_normal(x_shape)
    assert_same_training_step(ours, theirs, x)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_bidirectional_matches_keras(cell, merge_mode):
    ours_cls, theirs_cls, base = CELLS[cell]
    rng = np.random.default_rng(5)
    x_shape = (4, 6, 3)
    for return_sequences, mask in ((True, None), (False, None), (True, right_padded_mask([6, 3, 1, 0], 6)),
                                   (False, right_padded_mask([2, 6, 5, 4], 6))):
        config = dict(units=3, return_sequences=return_sequences, dtype="float64", **base)
        theirs = keras.layers.Bidirectional(theirs_cls(**config), merge_mode=merge_mode, dtype="float64")
        ours = Bidirectional(theirs_cls(**config), merge_mode=merge_mode, dtype="float64")  # converted
        theirs.build(x_shape)
        ours.build(x_shape)
        theirs.set_weights([w + 0.3 * rng.standard_normal(w.shape) for w in theirs.get_weights()])
        ours.set_weights(theirs.get_weights())
        x = rng.standard_normal(x_shape)
        weights = lambda layer: layer.trainable_weights  # noqa: E731
        got, want = run(ours, x, weights, mask), run(theirs, x, weights, mask)
        assert isinstance(ours.forward_layer, ours_cls) and isinstance(ours.backward_layer, ours_cls)
        assert ours.forward_layer.last_path == ours.backward_layer.last_path == "rnnkernels"
        assert_same(want[0], got[0], "float64", f"outputs rs={return_sequences} mask={mask is not None}")
        assert_same(want[1], got[1], "float64", f"gradients rs={return_sequences} mask={mask is not None}")


def test_bidirectional_with_our_layer_and_return_state():
    rng = np.random.default_rng(6)
    x_shape = (2, 5, 3)
    config = dict(return_sequences=True, return_state=True, dtype="float64")
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(4, **config), dtype="float64")
    ours = keras.layers.Bidirectional(LSTM(4, **config), dtype="float64")
    theirs.build(x_shape)
    ours.build(x_shape)
    theirs.set_weights([w + 0.3 * rng.standard_normal(w.shape) for w in theirs.get_weights()])
    ours.set_weights(theirs.get_weights())
    x = rng.standard_normal(x_shape)
    weights = lambda layer: layer.trainable_weights  # noqa: E731
    got, want = run(ours, x, weights), run(theirs, x, weights)
    assert len(got[0]) == 5
    assert_same(want[0], got[0], "float64", "outputs")
    assert_same(want[1], got[1], "float64", "gradients")


def test_stateful_carries_states_between_calls():
    rng = np.random.default_rng(8)
    x_shape = (2, 4, 3)
    theirs, ours = pair(keras, LSTM, keras.layers.LSTM, x_shape, "float64", rng, units=3, stateful=True,
                        return_sequences=True)
    for _ in range(3):
        x = rng.standard_normal(x_shape)
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-10, atol=1e-12)
    assert ours.last_path == "rnnkernels"
    ours.reset_state()
    theirs.reset_state()
    x = rng.standard_normal(x_shape)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_results_do_not_depend_on_the_thread_count(cell):
    import rnnkernels
    ours_cls, theirs_cls, base = CELLS[cell]
    rng = np.random.default_rng(9)
    _, ours = pair(keras, ours_cls, theirs_cls, (6, 9, 5), "float32", rng, units=13, return_sequences=True, **base)
    x = rng.standard_normal((6, 9, 5)).astype("float32")
    runs = []
    for n in (1, 2):
        with rnnkernels.num_threads(n):
            outs, grads = run(ours, x, lambda layer: layer.trainable_weights)
        runs.append(outs + grads)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
