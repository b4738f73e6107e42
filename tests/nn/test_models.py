"""Sequential: the seed example, determinism, Ctrl-C, callbacks, stateful training, bad input."""
import os
import re
import signal

import numpy as np
import pytest

import rnnkernels
from rnnkernels import callbacks as cbs
from rnnkernels.layers import GRU, LSTM, Dense, Dropout, Masking
from rnnkernels.models import Sequential


def _data(n=96, T=8, F=4, C=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    x = rng.normal(size=(n, T, F)).astype("float32")
    x[:, :, 0] += 3.0 * labels[:, None]
    return x, np.eye(C, dtype="float32")[labels], labels


def _seed_model(T=8, F=4, C=3, seed=1, units=16):
    model = Sequential(seed=seed)
    model.add(LSTM(units, input_shape=(T, F)))
    model.add(Dropout(0.2))
    model.add(Dense(8, activation="relu"))
    model.add(Dropout(0.2))
    model.add(Dense(C, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_seed_example_learns_and_evaluate_returns_loss_and_accuracy():
    x, y, _ = _data(160)
    model = _seed_model()
    history = model.fit(x[:128], y[:128], epochs=10, batch_size=8, validation_data=(x[128:], y[128:]),
                        verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(x[128:], y[128:], verbose=0)
    assert accuracy > 0.8 and loss < 0.7
    assert model.predict(x[:5]).shape == (5, 3)
    np.testing.assert_allclose(model.predict(x[:5]).sum(axis=1), 1, rtol=1e-5)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)


def test_same_seed_is_bitwise_repeatable_across_thread_counts():
    """A seed gives the same weights on 1 and 2 threads, and the 2-thread run
    really ran its kernels' time loops on 2 threads (a model big enough for
    two hidden-unit tiles: LSTM(128) at batch 32)."""
    from rnnkernels._core import threads as kernel_threads
    x, y, _ = _data(n=64, T=6)
    results = []
    for threads in (1, 2, 1):
        kernel_threads.reset_usage()
        with rnnkernels.num_threads(threads):
            model = _seed_model(T=6, units=128)
            model.fit(x, y, epochs=2, batch_size=32, verbose=0)
            results.append(model.get_weights())
        assert kernel_threads.usage()["max_time_loop_threads"] == threads
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    different = _seed_model(seed=2).get_weights()
    assert not np.array_equal(different[0], _seed_model(seed=1).get_weights()[0])


def test_sparse_targets_validation_split_and_history():
    x, _, labels = _data()
    model = Sequential([GRU(8, input_shape=(8, 4)), Dense(3, activation="softmax")], seed=0)
    model.compile("rmsprop", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, labels, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
    assert len(h.history["val_accuracy"]) == 2 and h.epoch == [0, 1]
    assert model.metrics[0].name == "accuracy"


def test_ctrl_c_stops_at_a_batch_boundary_and_reraises():
    x, y, _ = _data(128)
    model = _seed_model()

    class Interrupt(cbs.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    log = []

    class Record(cbs.Callback):
        def on_train_end(self, logs=None):
            log.append("end")

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[Interrupt(), Record()])
    assert model.optimizer.iterations == 3  # batches 0, 1, 2 completed, nothing half-applied
    assert log == []  # on_train_end is not run on interrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the model is consistent and usable
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])


def test_callbacks_early_stopping_reduce_lr_csv_terminate(tmp_path):
    x, y, _ = _data()
    model = _seed_model()
    model.optimizer.learning_rate = 0.0  # nothing improves
    csv_path = tmp_path / "log.csv"
    stop = cbs.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    reduce = cbs.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=1.0)
    h = model.fit(x, y, epochs=10, batch_size=32, verbose=0, shuffle=False,
                  callbacks=[stop, reduce, cbs.CSVLogger(csv_path)])
    assert len(h.history["loss"]) == 2 and stop.stopped_epoch == 1
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",")[0] == "epoch" and len(lines) == 3
    model2 = _seed_model()  # weights that went NaN (fit refuses NaN data up front)
    model2.build((None,) + x.shape[1:])
    weights = model2.get_weights()
    weights[0][0, 0] = np.nan
    model2.set_weights(weights)
    h = model2.fit(x, y, epochs=3, batch_size=32, verbose=0, shuffle=False,
                   callbacks=[cbs.TerminateOnNaN()])
    assert model2.optimizer.iterations == 1


def test_reduce_lr_lowers_learning_rate():
    x, y, _ = _data(32)
    model = _seed_model()
    model.optimizer.learning_rate = 0.0
    model.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[cbs.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=10.0,
                                               min_lr=0.0)])
    assert model.optimizer.learning_rate == 0.0  # 0 * 0.5 stays 0 (never below min_lr)
    model.optimizer.learning_rate = 0.1
    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[cbs.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=10.0)])
    assert model.optimizer.learning_rate == pytest.approx(0.05)


def test_stateful_truncated_bptt_matches_full_sequence_inference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 12, 2)).astype("float32")
    model = Sequential([LSTM(5, batch_size=4, input_shape=(None, 2), stateful=True, return_sequences=True),
                        Dense(1)], seed=0)
    model.compile("sgd", "mse")
    chunks = [model.predict(x[:, i:i + 4], batch_size=4) for i in range(0, 12, 4)]
    model.reset_states()
    whole = model.predict(x, batch_size=4)
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, rtol=1e-5, atol=1e-6)
    model.reset_states()
    for i in range(0, 12, 4):  # truncated BPTT: one chunk per batch, states carried
        model.fit(x[:, i:i + 4], x[:, i:i + 4, :1], batch_size=4, epochs=1, shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="batch"):
        model.predict(x[:3], batch_size=3)


def test_masking_model_trains_on_padded_sequences():
    x, y, _ = _data(64)
    x[::2, 5:] = 0.0
    model = Sequential([Masking(0.0, input_shape=(8, 4)), LSTM(8), Dense(3, activation="softmax")], seed=0)
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert len(model.train_on_batch(x[:16], y[:16])) == 2


@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: m.fit(x, y[:5], verbose=0), "targets"),
    (lambda m, x, y: m.fit(x, y[:, :2], verbose=0), "shape"),
    (lambda m, x, y: m.fit(x, y, batch_size=0, verbose=0), "batch_size"),
    (lambda m, x, y: m.fit(x, y, validation_split=1.5, verbose=0), "validation_split"),
    (lambda m, x, y: m.fit(x, y, lengths=np.full(len(x), 99), verbose=0), "lengths"),
    (lambda m, x, y: m.fit(x[:, :, :2], y, verbose=0), "input shape"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x,), verbose=0), "validation_data"),
    (lambda m, x, y: m.compile("adamax", "mse"), "optimizer"),
    (lambda m, x, y: m.compile("adam", "hinge"), "loss"),
    (lambda m, x, y: m.compile("adam", "mse", metrics=["f1"]), "metrics"),
])
def test_bad_input_gives_clear_errors(call, match):
    x, y, _ = _data(32)
    with pytest.raises(ValueError, match=match):
        call(_seed_model(), x, y)


def test_fit_before_compile_and_strings_as_data():
    x, y, _ = _data(8)
    with pytest.raises(ValueError, match="compile"):
        Sequential([LSTM(2, input_shape=(8, 4))]).fit(x, y)
    with pytest.raises(TypeError, match="dtype"):
        _seed_model().fit(np.array([["a"]]), y, verbose=0)


def test_ctrl_c_during_validation_completes_the_epoch_then_reraises():
    """The module docstring's account: the epoch whose validation is interrupted counts as
    completed (epoch-end callbacks run), on_train_end does not run, the handler is restored."""
    x, y, _ = _data(32)
    model = _seed_model()

    class ValBatches:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            if i == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return x[:8], y[:8]

    log = []

    class Record(cbs.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log.append(("epoch_end", epoch, sorted(logs)))

        def on_train_end(self, logs=None):
            log.append("train_end")

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_data=ValBatches(), callbacks=[Record()])
    assert log == [("epoch_end", 0, ["accuracy", "loss", "val_accuracy", "val_loss"])]
    assert model.epochs_trained == 1 and model.optimizer.iterations == 2
    assert model.history.epoch == [0] and len(model.history.history["val_loss"]) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("bad", [None, 42, b"model.rnk", 3.5, ["model.rnk"]])
def test_paths_of_the_wrong_type_are_type_errors_naming_filepath(bad, tmp_path):
    model = _seed_model()
    model.save(tmp_path / "m.rnk")
    name = type(bad).__name__
    for call in (lambda: rnnkernels.models.load_model(bad), lambda: model.save(bad),
                 lambda: model.save_weights(bad), lambda: model.load_weights(bad)):
        with pytest.raises(TypeError, match=f"filepath: expected a str or os.PathLike path, got {name}"):
            call()
    assert rnnkernels.models.load_model(tmp_path / "m.rnk").epochs_trained == 0  # PathLike is fine


@pytest.mark.parametrize("where", ["x", "y", "validation_data[0]", "validation_data[1]"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fit_refuses_non_finite_data_and_names_it(where, bad):
    x, y, _ = _data(32)
    xv, yv = x.copy(), y.copy()
    arrays = {"x": x, "y": y, "validation_data[0]": xv, "validation_data[1]": yv}
    arrays[where][3, 1] = bad  # sample 3
    model = _seed_model()
    before = [w.copy() for w in (model.get_weights() if model.built else [])]
    with pytest.raises(ValueError, match=rf"^{re.escape(where)}: expected finite values, got "
                                         rf"np\.float32\({bad}\) at sample 3.*\(\d+ non-finite value"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_data=(xv, yv))
    assert model.optimizer.iterations == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_non_finite_padding_past_the_lengths_is_fine():
    x, y, _ = _data(16)
    lengths = np.full(16, 8)
    lengths[2] = 5
    x[2, 5:] = np.nan  # never read: past the sequence's end
    model = _seed_model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, lengths=lengths)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    x[2, 4, 0] = np.nan  # inside it
    with pytest.raises(ValueError, match=r"^x: expected finite values, got np\.float32\(nan\) at "
                                         r"sample 2, index \(4, 0\)"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, lengths=lengths)


def test_evaluate_and_train_on_batch_refuse_non_finite_data_predict_passes_it_on():
    x, y, _ = _data(16)
    model = _seed_model()
    x[7, 0, 2] = np.nan
    for call in (lambda: model.evaluate(x, y, verbose=0), lambda: model.train_on_batch(x, y)):
        with pytest.raises(ValueError, match=r"^x: expected finite values, got np\.float32\(nan\) "
                                             r"at sample 7, index \(0, 2\)"):
            call()
    out = model.predict(x)  # inference: NaN in, NaN out for that sample only
    assert np.all(np.isnan(out[7])) and np.all(np.isfinite(np.delete(out, 7, axis=0)))


def test_the_first_trainable_layer_skips_its_input_gradient_and_training_is_unchanged(monkeypatch):
    """Nothing before the first LSTM learns (Masking has no weights): its backward
    asks the kernels for no dX; the second LSTM still gets its own.  The weights
    after training are bitwise those of a run that computes every dX."""
    from rnnkernels.layers import _kernels
    real = _kernels.lstm_backward
    asked = []

    def spy(*args, input_grad=True, **kw):
        asked.append(input_grad)
        return real(*args, input_grad=input_grad, **kw)

    def always(*args, input_grad=True, **kw):
        return real(*args, input_grad=True, **kw)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 6, 3)).astype("float32"), rng.integers(0, 2, 24)

    def train(backward):
        monkeypatch.setattr(_kernels, "lstm_backward", backward)
        model = Sequential([Masking(input_shape=(6, 3)), LSTM(5, return_sequences=True), LSTM(4),
                            Dense(2, activation="softmax")], seed=1)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return model

    skipped = train(spy)
    assert asked[:2] == [True, False] and set(asked) == {True, False}
    full = train(always)
    for a, b in zip(skipped.get_weights(), full.get_weights()):
        assert np.array_equal(a, b)
    assert all(l.needs_input_grad for l in skipped.layers)  # a direct backward() still returns dx
