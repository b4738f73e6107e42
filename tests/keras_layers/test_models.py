"""Our layers in real Keras models, TensorFlow backend: model.fit (inside its tf.function
graph) follows the keras.layers model step for step, masks through Masking, .keras files
and weights round trips."""
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import rnnkernels.keras as rk  # noqa: E402
from rnnkernels.keras import _tf, GRU, LSTM, Bidirectional, SimpleRNN  # noqa: E402


def seed_like_model(rnn, timesteps=9, features=4, classes=3, masking=False, seed=0):
    """The seed program's model, small."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((timesteps, features))]
    if masking:
        layers.append(keras.layers.Masking(0.0))
    layers += [rnn, keras.layers.Dropout(0.2), keras.layers.Dense(8, activation="relu"),
               keras.layers.Dropout(0.2), keras.layers.Dense(classes, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=48, timesteps=9, features=4, classes=3, seed=0, right_pad=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, timesteps, features)).astype("float32") + y[:, None, None]
    if right_pad:
        lengths = rng.integers(1, timesteps + 1, n)
        x[np.arange(timesteps)[None, :] >= lengths[:, None]] = 0.0
    return x, np.eye(classes, dtype="float32")[y]


FIT_CASES = [(LSTM, keras.layers.LSTM, False, False), (LSTM, keras.layers.LSTM, False, True),
             (GRU, keras.layers.GRU, True, False), (GRU, keras.layers.GRU, True, True),
             (SimpleRNN, keras.layers.SimpleRNN, False, True)]


@pytest.mark.parametrize("ours_cls,theirs_cls,bidirectional,masking", FIT_CASES,
                         ids=[f"{c[0].__name__}{'-bidirectional' if c[2] else ''}{'-masked' if c[3] else ''}"
                              for c in FIT_CASES])
def test_fit_follows_keras(ours_cls, theirs_cls, bidirectional, masking):
    x, y = data(right_pad=masking)
    if bidirectional:
        ours, theirs = Bidirectional(ours_cls(5)), keras.layers.Bidirectional(theirs_cls(5))
    else:
        ours, theirs = ours_cls(6), theirs_cls(6)
    ours, theirs = seed_like_model(ours, masking=masking), seed_like_model(theirs, masking=masking)
    theirs.set_weights(ours.get_weights())
    keras.utils.set_random_seed(1)
    h_ours = ours.fit(x, y, epochs=3, batch_size=16, validation_data=(x[:16], y[:16]), verbose=0).history
    keras.utils.set_random_seed(1)
    h_theirs = theirs.fit(x, y, epochs=3, batch_size=16, validation_data=(x[:16], y[:16]), verbose=0).history
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=1e-4, err_msg=key)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert len(_tf.store) == 0  # every training forward's cache went to its gradient


def test_seed_program_with_only_the_import_changed():
    """The seed program verbatim (Keras's Sequential, input_shape= on the first layer)."""
    from keras.models import Sequential
    from keras.layers import Dense, Dropout
    from rnnkernels.keras import LSTM
    x, y = data(n=64, timesteps=12, features=5)
    model = Sequential()
    model.add(LSTM(16, input_shape=(12, 5)))
    model.add(Dropout(0.2))
    model.add(Dense(8, activation='relu'))
    model.add(Dropout(0.2))
    model.add(Dense(3, activation='softmax'))
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(x, y, epochs=4, batch_size=32, validation_data=(x[:16], y[:16]), verbose=0)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert model.layers[0].last_path == "rnnkernels"
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert 0.0 <= accuracy <= 1.0 and np.isfinite(loss)


def test_keras_file_round_trip(tmp_path):
    x, y = data()
    model = seed_like_model(LSTM(6, return_sequences=False))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is LSTM
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    # and with Bidirectional(GRU)
    model = seed_like_model(Bidirectional(GRU(4, reset_after=False)))
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is Bidirectional and type(loaded.layers[0].forward_layer) is GRU
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_weights_move_both_ways_with_keras_layers(tmp_path):
    x, _ = data()
    ours = seed_like_model(LSTM(6))
    theirs = seed_like_model(keras.layers.LSTM(6), seed=5)
    names = lambda m: [re.sub(r"_\d+", "", w.path) for w in m.weights]  # noqa: E731
    assert names(ours) == names(theirs)
    path = str(tmp_path / "w.weights.h5")
    theirs.save_weights(path)
    ours.load_weights(path)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # and back: a model of ours saved, its weights loaded into keras.layers'
    ours.layers[0].set_weights([w * 1.5 for w in ours.layers[0].get_weights()])
    ours.save(str(tmp_path / "ours.keras"))
    back = seed_like_model(keras.layers.LSTM(6))
    back.set_weights(keras.saving.load_model(str(tmp_path / "ours.keras")).get_weights())
    np.testing.assert_allclose(back.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_inference_keeps_no_cache_and_gradients_of_it_recompute():
    rng = np.random.default_rng(0)
    layer = LSTM(3, dtype="float64")
    x = tf.constant(rng.standard_normal((2, 4, 3)))
    layer(x, training=False)
    assert len(_tf.store) == 0
    with tf.GradientTape() as tape:  # a saliency map through an inference-mode call
        tape.watch(x)
        out = layer(x, training=False)
    g = tape.gradient(out, x)
    ref = keras.layers.LSTM(3, dtype="float64")
    ref.build(x.shape)
    ref.set_weights(layer.get_weights())
    with tf.GradientTape() as tape:
        tape.watch(x)
        out_ref = ref(x, training=False)
    np.testing.assert_allclose(g, tape.gradient(out_ref, x), rtol=1e-10, atol=1e-12)
    # a training forward whose gradient never comes: kept (bounded), dropped oldest first
    for _ in range(3):
        layer(x, training=True)
    assert len(_tf.store) == 3
    old = _tf.STORE_ENTRIES
    try:
        _tf.STORE_ENTRIES = 2
        layer(x, training=True)
        assert len(_tf.store) == 2
    finally:
        _tf.STORE_ENTRIES = old
        while len(_tf.store):
            _tf.store.pop(next(iter(_tf.store._items)))


@pytest.mark.parametrize("functional", [False, True])
def test_convert_swaps_keras_layers_and_keeps_weights(tmp_path, functional):
    x, y = data()
    keras.utils.set_random_seed(3)
    if functional:
        inputs = keras.Input((9, 4))
        h = keras.layers.Masking(0.0)(inputs)
        h = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(h)
        h = keras.layers.SimpleRNN(4)(h)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    else:
        model = keras.Sequential([keras.Input((9, 4)), keras.layers.LSTM(6, return_sequences=True),
                                  keras.layers.GRU(5), keras.layers.Dense(3, activation="softmax")])
    path = str(tmp_path / "keras.keras")
    model.save(path)
    converted = rk.convert(keras.saving.load_model(path))
    kinds = {type(l) for l in converted.layers}
    assert not kinds & {keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN, keras.layers.Bidirectional}
    assert kinds & {LSTM, GRU, SimpleRNN, Bidirectional}
    np.testing.assert_allclose(converted.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    rnn = [l for l in converted.layers if isinstance(l, (LSTM, GRU, SimpleRNN))]
    assert all(l.last_path.startswith("rnnkernels") for l in rnn)
    converted.compile(optimizer="adam", loss="categorical_crossentropy")
    converted.fit(x, y, epochs=1, batch_size=16, verbose=0)
    with pytest.raises(TypeError, match="model: expected a keras.Model"):
        rk.convert(keras.layers.LSTM(3))


def test_fit_runs_every_kernel_call_on_one_thread_of_ours(monkeypatch):
    """TensorFlow calls numpy_functions from any of its inter-op threads; libgomp keeps an
    OpenMP pool per calling thread, and more OpenMP threads than CPUs make its barriers
    sleep. So the adapter runs every kernel call on its one worker thread."""
    from rnnkernels.keras import _compute
    import threading

    seen = []
    for name in ("forward", "backward"):
        real = getattr(_compute, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(threading.current_thread())
            return _real(*args, **kwargs)

        monkeypatch.setattr(_compute, name, spy)
    model = seed_like_model(Bidirectional(LSTM(5, return_sequences=False)))
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    model.evaluate(x, y, verbose=0)
    assert len(seen) > 12
    assert {t.name.split("_")[0] for t in seen} == {"rnnkernels-tf"}
    assert len(set(seen)) == 1
