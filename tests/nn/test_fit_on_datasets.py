"""fit / evaluate / predict on a Keras-style dataset (len() batches, [i] -> (x, y[, sample_weight]),
optional on_epoch_begin / on_epoch_end), as keras.utils.PyDataset."""
import numpy as np
import pytest

from rnnkernels import callbacks as cbs
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, Dropout, GlobalAveragePooling1D
from rnnkernels.models import Sequential

N, T, F, C, BS = 12, 9, 3, 3, 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    x = rng.normal(size=(N, T, F)).astype("float32")
    x[:, :, 0] += labels[:, None]
    lengths = np.array([9, 3, 5, 2, 7, 4, 4, 6, 2, 8, 3, 5])  # batch maxima 9, 7, 8
    for i, length in enumerate(lengths):
        x[i, length:] = 0.0
    weights = np.linspace(0.0, 2.0, N).astype("float32")
    return x, labels, lengths, weights


def _model(seed=1, input_shape=(None, F)):
    first = dict(input_shape=input_shape) if input_shape else {}
    m = Sequential([Bidirectional(GRU(4, return_sequences=True), **first), GlobalAveragePooling1D(),
                    Dropout(0.3), Dense(C, activation="softmax")], seed=seed)
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return m


class Batches:
    """Fixed batches of the arrays; records what fit asks for.  ``batch_size`` keys each
    row's dropout masks by its index in the arrays (keyed_random.dataset_sample_ids)."""
    batch_size = BS

    def __init__(self, x, y, weights=None, lengths=None, ragged=False, hooks=True):
        self.x, self.y, self.weights, self.lengths, self.ragged = x, y, weights, lengths, ragged
        self.log = []
        if not hooks:
            self.on_epoch_begin = self.on_epoch_end = None

    def __len__(self):
        return -(-len(self.y) // BS)

    def __getitem__(self, i):
        self.log.append(i)
        sl = slice(i * BS, (i + 1) * BS)
        x = self.x[sl]
        if self.ragged:
            x = [x[j, :n] for j, n in enumerate(self.lengths[sl])]
        batch = (x, self.y[sl])
        return batch if self.weights is None else batch + (self.weights[sl],)

    def on_epoch_begin(self):
        self.log.append("begin")

    def on_epoch_end(self):
        self.log.append("end")


def _same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


def test_dataset_trains_exactly_as_the_same_arrays():
    x, y, lengths, w = _data()
    # ragged batches (lists of (T_i, F) arrays) keep their lengths: same as arrays with lengths=
    a, b = _model(), _model()
    ha = a.fit(x, y, lengths=lengths, sample_weight=w, batch_size=BS, epochs=3, shuffle=False, verbose=0)
    hb = b.fit(Batches(x, y, w, lengths, ragged=True), epochs=3, shuffle=False, verbose=0)
    assert _same_weights(a, b) and ha.history == hb.history
    # class_weight applies to (x, y) batches
    a, b = _model(), _model()
    a.fit(x, y, class_weight={1: 3.0}, batch_size=BS, epochs=2, shuffle=False, verbose=0)
    b.fit(Batches(x, y), class_weight={1: 3.0}, epochs=2, shuffle=False, verbose=0)
    assert _same_weights(a, b)
    # evaluate and predict walk the batches in order
    ds = Batches(x, y, w, lengths, ragged=True)
    np.testing.assert_array_equal(b.evaluate(ds, verbose=0),
                                  b.evaluate(x, y, lengths=lengths, sample_weight=w, batch_size=BS, verbose=0))
    assert ds.log == ["begin", 0, 1, 2, "end"]
    np.testing.assert_array_equal(b.predict(Batches(x, y, lengths=lengths, ragged=True)),
                                  b.predict(x, lengths=lengths, batch_size=BS))
    assert b.predict(Batches(x, y)).shape == (N, C)


def test_shuffle_visits_each_batch_once_in_a_new_seeded_order_and_hooks_wrap_each_epoch():
    x, y, _, _ = _data()
    ds = Batches(x, y, hooks=True)

    class Spy(cbs.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            ds.log.append(f"cb-begin-{epoch}")

        def on_epoch_end(self, epoch, logs=None):
            ds.log.append(f"cb-end-{epoch}")

    val = Batches(x[:8], y[:8])
    h = _model().fit(ds, epochs=3, verbose=0, callbacks=[Spy()], validation_data=val)
    epochs = [ds.log[ds.log.index(f"cb-begin-{e}"):ds.log.index(f"cb-end-{e}") + 1] for e in range(3)]
    orders = []
    for e, log in enumerate(epochs):
        assert log[:2] == [f"cb-begin-{e}", "begin"] and log[-2:] == ["end", f"cb-end-{e}"]
        orders.append(log[2:-2])
        assert sorted(orders[-1]) == [0, 1, 2]
    assert len({tuple(o) for o in orders}) > 1  # a new order per epoch
    expected = [list(np.random.default_rng([1, 1, e]).permutation(3)) for e in range(3)]
    assert orders == expected  # the model's (seed, epoch) generator, so a seed repeats them
    assert val.log == ["begin", 0, 1, "end"] * 3  # validation passes in order, hooks around each
    assert len(h.history["val_loss"]) == 3 and "val_accuracy" in h.history


def test_unbuilt_model_builds_from_the_first_batch_and_hooks_are_optional():
    x, y, _, _ = _data()
    m = _model(input_shape=None)
    assert not m.built
    m.fit(Batches(x, y, hooks=False), epochs=1, verbose=0)
    assert m.built and m.input_shape == (None, T, F)


def test_stop_training_inside_an_epoch_skips_on_epoch_end():
    x, y, _, _ = _data()
    ds = Batches(x, y)

    class Stop(cbs.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    _model().fit(ds, epochs=3, shuffle=False, verbose=0, callbacks=[Stop()])
    assert ds.log == ["begin", 0, 1]


def test_progress_bar_counts_samples(capsys):
    x, y, _, _ = _data()
    _model().fit(Batches(x, y), epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 2/2" in err and f"{N}/{N}" in err


@pytest.mark.parametrize("kwargs, needles", [
    (dict(batch_size=4), ["batch_size: expected None when x is a dataset", "got 4"]),
    (dict(y=np.zeros(N)), ["y: expected None when x is a dataset", "shape (12,)"]),
    (dict(sample_weight=np.ones(N)), ["sample_weight: expected None", "third element"]),
    (dict(lengths=np.ones(N, int)), ["lengths: expected None", "list of (T_i, F) arrays"]),
    (dict(validation_split=0.2), ["validation_split: expected 0 (no split) when x is a dataset", "validation_data", "got 0.2"]),
    (dict(class_weight={5: 1.0}), ["class_weight", "got key 5"]),
])
def test_array_arguments_with_a_dataset_are_refused(kwargs, needles):
    x, y, _, _ = _data()
    model = _model()
    before = model.get_weights()
    with pytest.raises(ValueError) as info:
        model.fit(Batches(x, y), verbose=0, **kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_bad_datasets_and_batches_give_clear_errors():
    x, y, _, w = _data()
    model = _model()

    class Items(Batches):
        def __init__(self, items, n=3):
            super().__init__(x, y)
            self.items, self.n = items, n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.items(i)

    with pytest.raises(ValueError, match=r"x: expected a dataset with at least one batch \(len >= 1\), got len 0"):
        model.fit(Items(lambda i: (x, y), n=0), verbose=0)
    with pytest.raises(ValueError, match=r"x\[0\]: expected a batch \(x, y\) or \(x, y, sample_weight\), "
                                         r"got ndarray"):
        model.fit(Items(lambda i: x[:4]), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=r"x\[0\]: .* got a tuple of length 4"):
        model.fit(Items(lambda i: (x[:4], y[:4], w[:4], w[:4])), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=r"x\[2\]\[1\]: expected 4 targets"):
        model.fit(Items(lambda i: (x[:4], y[:4 if i < 2 else 3])), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=r"x\[0\]\[2\]: expected finite weights >= 0"):
        model.fit(Items(lambda i: (x[:4], y[:4], -w[1:5])), shuffle=False, verbose=0)
    nan_x = x[:4].copy()
    nan_x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"x\[1\]\[0\]: expected finite values, got np\.float32\(nan\) at "
                                         r"sample 1, index \(2, 0\)"):
        model.fit(Items(lambda i: (nan_x if i == 1 else x[:4], y[:4])), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="class_weight: cannot be combined with sample weights.*x\\[0\\]"):
        model.fit(Items(lambda i: (x[:4], y[:4], w[:4])), class_weight={0: 2.0}, shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="batch_size: expected None when x is a dataset"):
        model.evaluate(Batches(x, y), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="lengths: expected None when x is a dataset"):
        model.predict(Batches(x, y), lengths=np.ones(N, int))
    with pytest.raises(ValueError, match=r"validation_data\[0\]\[1\]: expected 4 targets"):
        model.fit(Batches(x, y), validation_data=Items(lambda i: (x[:4], y[:2])), verbose=0)
    seq = Sequential([LSTM(2, return_sequences=True, input_shape=(None, F)), Dense(1)], seed=0)
    seq.compile("sgd", "mse")
    with pytest.raises(ValueError, match="outputs of different shapes"):
        seq.predict(Items(lambda i: x[:4, :3 + i]))


def test_a_keras_py_dataset_trains_as_the_same_arrays():
    keras = pytest.importorskip("keras")  # imported here only: TensorFlow is slow to load
    x, y, _, w = _data()

    class KerasBatches(keras.utils.PyDataset):
        batch_size = BS  # rows keyed by their index in the arrays, as Batches

        def __init__(self):
            super().__init__()
            self.ends = 0

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[i * BS:(i + 1) * BS], y[i * BS:(i + 1) * BS], w[i * BS:(i + 1) * BS]

        def on_epoch_end(self):
            self.ends += 1

    a, b, ds = _model(), _model(), KerasBatches()
    a.fit(x, y, sample_weight=w, batch_size=BS, epochs=2, shuffle=False, verbose=0)
    b.fit(ds, epochs=2, shuffle=False, verbose=0)
    assert _same_weights(a, b) and ds.ends == 2
