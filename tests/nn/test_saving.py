"""Save/load: round trip, exact resume from a checkpoint, atomic writes, corrupt files."""
import os
import zipfile

import numpy as np
import pytest

from rnnkernels import callbacks as cbs
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, Dropout, Masking
from rnnkernels.models import Sequential, load_model


def _data(n=64):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6, 3)).astype("float32")
    x[:, :, 0] += labels[:, None]
    return x, np.eye(3, dtype="float32")[labels]


def _model():
    m = Sequential([Masking(input_shape=(6, 3)), Bidirectional(GRU(4, return_sequences=True)),
                    LSTM(5, dropout=0.1), Dropout(0.2), Dense(3, activation="softmax")], seed=3)
    m.compile("adam", "categorical_crossentropy", ["accuracy"])
    return m


def test_round_trip_keeps_predictions_config_and_optimizer(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "m.rnk"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert loaded.optimizer.iterations == model.optimizer.iterations == 4
    assert loaded.epochs_trained == 1 and loaded.seed == 3
    with zipfile.ZipFile(path) as zf:  # documented, pickle-free layout
        assert "rnnkernels.json" in zf.namelist()
        assert all(n == "rnnkernels.json" or n.endswith(".npy") for n in zf.namelist())
    assert [p.name for p in tmp_path.iterdir()] == ["m.rnk"]  # no temp files left


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    first = _model()
    ckpt = str(tmp_path / "ckpt-{epoch:02d}.rnk")
    first.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cbs.ModelCheckpoint(ckpt, monitor="loss")])
    resumed = load_model(tmp_path / "ckpt-02.rnk")
    resumed.fit(x, y, epochs=4, batch_size=16, verbose=0, initial_epoch=resumed.epochs_trained)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_best_only_and_weights_only(tmp_path):
    x, y = _data(32)
    model = _model()
    model.optimizer.learning_rate = 0.0
    cb = cbs.ModelCheckpoint(str(tmp_path / "best.rnk"), monitor="loss", save_best_only=True,
                             save_weights_only=True)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False, callbacks=[cb])
    other = _model()
    other.load_weights(tmp_path / "best.rnk")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights only"):
        load_model(tmp_path / "best.rnk")


def test_truncated_or_corrupt_files_raise_value_error(tmp_path):
    model = _model()
    path = tmp_path / "m.rnk"
    model.save(path)
    data = path.read_bytes()
    for name, content in [("truncated", data[: len(data) // 2]), ("empty", b""),
                          ("garbage", b"not a zip file at all"),
                          ("flipped", data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="not a valid rnnkernels"):
            load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.rnk")
    # weights of another architecture: refused before anything changes
    other = Sequential([LSTM(2, input_shape=(6, 3)), Dense(3)])
    before = other.get_weights()
    with pytest.raises(ValueError):
        other.load_weights(path)
    for a, b in zip(before, other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.rnk"
    model.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.rnk"]


def test_saved_states_stay_with_their_layer(tmp_path):
    """A stateful layer without states (reset, or never run) must not receive
    the next layer's states on load."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    model = Sequential([LSTM(4, batch_size=2, input_shape=(None, 3), stateful=True, return_sequences=True),
                        GRU(6, stateful=True), Dense(1)], seed=0)
    model.compile("sgd", "mse")
    model.predict(x, batch_size=2)
    model.layers[0].reset_states()
    assert model.layers[0].states is None and model.layers[1].states is not None
    model.save(tmp_path / "m.rnk")
    loaded = load_model(tmp_path / "m.rnk")
    assert loaded.layers[0].states is None
    np.testing.assert_array_equal(loaded.layers[1].states[0], model.layers[1].states[0])
    np.testing.assert_allclose(loaded.predict(x, batch_size=2), model.predict(x, batch_size=2), rtol=1e-6)


def test_loads_states_saved_as_one_flat_list(tmp_path):
    """Files written before states were grouped per layer still load."""
    from rnnkernels.engine import saving as _serialization
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    model = Sequential([LSTM(4, batch_size=2, input_shape=(None, 3), stateful=True), Dense(1)], seed=0)
    model.compile("sgd", "mse")
    model.predict(x, batch_size=2)
    arrays = {f"weights/{i}": layer.get_weights() for i, layer in enumerate(model.layers)}
    arrays["states"] = list(model.layers[0].states)
    _serialization.write_archive(tmp_path / "old.rnk", _serialization.model_header(model, "rnnkernels.model", False),
                                 arrays)
    loaded = load_model(tmp_path / "old.rnk")
    for got, want in zip(loaded.layers[0].states, model.layers[0].states):
        np.testing.assert_array_equal(got, want)


def test_saving_onto_a_directory_names_it(tmp_path):
    model = Sequential([Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="is a directory; expected a file name"):
        model.save(tmp_path)
    assert os.listdir(tmp_path) == []  # no temporary file left behind
