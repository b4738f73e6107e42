"""ModelCheckpoint(save_freq=N): batch-level saving as Keras 3 ({epoch}/{batch} placeholders,
the count across epochs and fit calls, save_best_only on batch logs), atomic files; Keras's own
file names for the same run, from a subprocess."""
import json
import os

import numpy as np
import pytest

from rnnkernels import callbacks as cbs
from rnnkernels.layers import LSTM, Dense
from rnnkernels.models import Sequential, load_model
from rnnkernels.optimizers import SGD

from helpers.keras_worker import run_keras_worker


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5, 3)).astype("float32")
    x[:, :, 0] += labels[:, None]
    return x, labels


def _model():
    m = Sequential([LSTM(4, input_shape=(5, 3)), Dense(3, activation="softmax")], seed=2)
    m.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


class Snapshots(cbs.Callback):
    """The weights after every batch, keyed by the optimizer's step count."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_train_batch_end(self, batch, logs=None):
        self.weights[self.model.optimizer.iterations] = self.model.get_weights()


def test_every_n_batches_across_epochs_and_fit_calls(tmp_path):
    x, y = _data()  # 5 batches of 8 per epoch
    model, snaps = _model(), Snapshots()
    ckpt = cbs.ModelCheckpoint(str(tmp_path / "m-e{epoch}-b{batch}.rnk"), save_freq=3)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ckpt, snaps])
    # global batches 3, 6, 9: epoch 1 batch 3, epoch 2 batches 1 and 4 (both 1-based); no epoch-end file
    assert sorted(os.listdir(tmp_path)) == ["m-e1-b3.rnk", "m-e2-b1.rnk", "m-e2-b4.rnk"]
    for name, steps, epochs in (("m-e1-b3.rnk", 3, 0), ("m-e2-b1.rnk", 6, 1), ("m-e2-b4.rnk", 9, 1)):
        saved = load_model(tmp_path / name)
        assert saved.optimizer.iterations == steps and saved.epochs_trained == epochs
        for a, b in zip(saved.get_weights(), snaps.weights[steps]):
            np.testing.assert_array_equal(a, b)
    # the count goes on in the next fit call (as Keras): one batch since the last save, so 2 more
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[ckpt])
    assert "m-e1-b2.rnk" in os.listdir(tmp_path) and load_model(tmp_path / "m-e1-b2.rnk").optimizer.iterations == 12


def test_batch_level_save_best_only_and_a_missing_monitor(tmp_path):
    x, y = _data()
    losses = []

    class Losses(cbs.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])

    best = cbs.ModelCheckpoint(str(tmp_path / "best-{epoch}-{batch}.rnk"), monitor="loss",
                               save_best_only=True, save_freq=2, save_weights_only=True)
    _model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[best, Losses()])
    # expected: at every 2nd batch, save when the running loss beats the best so far
    expected, low = [], None
    for k in range(2, 11, 2):
        if low is None or losses[k - 1] < low:
            low = losses[k - 1]
            expected.append(f"best-{(k - 1) // 5 + 1}-{(k - 1) % 5 + 1}.rnk")
    assert sorted(os.listdir(tmp_path)) == sorted(expected) and best.best == low
    # val_loss is never in batch logs: Keras warns and saves anyway
    for f in os.listdir(tmp_path):
        os.remove(tmp_path / f)
    missing = cbs.ModelCheckpoint(str(tmp_path / "v-{batch}.rnk"), save_best_only=True, save_freq=2)
    with pytest.warns(UserWarning, match="'val_loss' in the logs.*saving anyway"):
        _model().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[missing])
    assert sorted(os.listdir(tmp_path)) == ["v-2.rnk", "v-4.rnk"]
    # and so at epoch end without validation data (the epoch-level rule is the same)
    with pytest.warns(UserWarning, match="saving anyway"):
        _model().fit(x, y, batch_size=8, epochs=1, verbose=0,
                     callbacks=[cbs.ModelCheckpoint(str(tmp_path / "e{epoch}.rnk"), save_best_only=True)])
    assert "e1.rnk" in os.listdir(tmp_path)


def test_batch_saves_are_atomic_and_create_directories(tmp_path, monkeypatch):
    x, y = _data(16)
    model = _model()
    path = tmp_path / "ckpt" / "{epoch}" / "m.rnk"
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cbs.ModelCheckpoint(path, save_freq=1)])
    target = tmp_path / "ckpt" / "1" / "m.rnk"
    before = target.read_bytes()
    assert load_model(target).optimizer.iterations == 2
    calls = []
    real = np.lib.format.write_array

    def fail_in_the_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) > 8:  # the first save (8 arrays) completes, the second fails inside
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_in_the_second_save)
    with pytest.raises(OSError, match="disk full"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cbs.ModelCheckpoint(path, save_freq=1)])
    monkeypatch.undo()
    assert load_model(target).optimizer.iterations == 3  # the first batch's file, complete
    assert target.read_bytes() != before
    assert os.listdir(target.parent) == ["m.rnk"]  # no temporary file left


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(save_freq=0), ValueError, "save_freq: expected 'epoch' or a positive integer"),
    (dict(save_freq=-5), ValueError, "got -5"),
    (dict(save_freq=True), ValueError, "got True"),
    (dict(save_freq="batch"), ValueError, "got 'batch'"),
    (dict(save_freq=2.0), ValueError, "got 2.0"),
    (dict(filepath=None), TypeError, "filepath: expected a str or os.PathLike path, got NoneType"),
])
def test_bad_arguments(kwargs, error, needle, tmp_path):
    kwargs.setdefault("filepath", str(tmp_path / "m.rnk"))
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        cbs.ModelCheckpoint(**kwargs)


def test_placeholders_that_cannot_be_filled_name_the_filepath(tmp_path):
    x, y = _data(16)
    for pattern, freq in (("m-{batch}.rnk", "epoch"), ("m-{val_loss:.2f}.rnk", 1)):
        with pytest.raises(ValueError, match=r"filepath: cannot format .*KeyError"):
            _model().fit(x, y, batch_size=8, verbose=0,
                         callbacks=[cbs.ModelCheckpoint(str(tmp_path / pattern), save_freq=freq)])
    assert os.listdir(tmp_path) == []


KERAS_WORKER = r'''
folder = sys.argv[2]
m = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(3, activation="softmax")])
m.set_weights([d[f"w{i}"] for i in range(5)])
m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
          metrics=["accuracy"])
checkpoints = [
    keras.callbacks.ModelCheckpoint(os.path.join(folder, "every3-e{epoch}-b{batch}.weights.h5"), save_freq=3,
                                    save_weights_only=True),
    keras.callbacks.ModelCheckpoint(os.path.join(folder, "best-e{epoch}-b{batch}.weights.h5"), save_freq=2,
                                    monitor="loss", mode="min", save_best_only=True, save_weights_only=True),
]
# Keras 3.15 sets monitor_op only at the first epoch end, so batch-level save_best_only fails in
# epoch 1 ('NoneType' object is not callable) unless it is set up front.
checkpoints[1]._set_monitor_op()
m.fit(d["x"], d["y"], batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=checkpoints)
print(json.dumps(sorted(os.listdir(folder))))
'''


def test_same_files_as_keras(tmp_path):
    """The same run in Keras 3 (same weights, no shuffling, so the same running losses) writes
    files under the same names: which batches, which epoch and batch numbers, which are best."""
    x, y = _data()
    model = _model()
    np.savez(tmp_path / "in.npz", x=x, y=y, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    (tmp_path / "keras").mkdir()
    out = run_keras_worker(KERAS_WORKER, tmp_path / "in.npz", tmp_path / "keras")
    theirs = json.loads(out.strip().splitlines()[-1])
    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[
        cbs.ModelCheckpoint(str(ours_dir / "every3-e{epoch}-b{batch}.weights.h5"), save_freq=3,
                            save_weights_only=True),
        cbs.ModelCheckpoint(str(ours_dir / "best-e{epoch}-b{batch}.weights.h5"), save_freq=2, monitor="loss",
                            mode="min", save_best_only=True, save_weights_only=True)])
    assert sorted(os.listdir(ours_dir)) == theirs
    assert "every3-e2-b1.weights.h5" in theirs and any(n.startswith("best-") for n in theirs)
