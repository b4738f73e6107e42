"""sample_weight and class_weight in fit / evaluate / train_on_batch / test_on_batch: Keras 3's
"sum_over_batch_size" reduction, checked by hand, by exact identities, and against Keras itself
(run in a subprocess, from the same initial weights)."""
import json

import numpy as np
import pytest

from rnnkernels import losses
from rnnkernels.layers import LSTM, Dense, Masking
from rnnkernels.models import Sequential
from rnnkernels.optimizers import SGD

from helpers.keras_worker import run_keras_worker


def _data(n=10, T=5, F=3, C=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    x = rng.normal(size=(n, T, F)).astype("float32")
    x[:, :, 0] += labels[:, None]
    return x, labels


def _model(C=3, T=5, F=3, loss="sparse_categorical_crossentropy", lr=0.1, seed=4):
    m = Sequential([LSTM(4, input_shape=(T, F)), Dense(C, activation="softmax")], seed=seed)
    m.compile(SGD(learning_rate=lr), loss, metrics=["accuracy"])
    return m


def _sequence_model(seed=5):
    m = Sequential([Masking(0.0, input_shape=(5, 3)), LSTM(4, return_sequences=True),
                    Dense(2, activation="softmax")], seed=seed)
    m.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


SW = np.array([1, 2, 0, 0.5, 3, 1, 0, 2, 1, 4], "float32")


def _per_sample_losses(model, x, labels):
    p = model.predict(x).astype(np.float64)
    return -np.log(p[np.arange(len(labels)), labels]), p.argmax(axis=1) == labels


# --- the reduction, by hand -------------------------------------------------------------------------

def test_evaluate_weighted_loss_is_sum_over_batch_size_and_accuracy_is_unweighted():
    x, labels = _data()
    model = _model()
    loss, acc = model.evaluate(x, labels, sample_weight=SW, batch_size=4, verbose=0)
    per, correct = _per_sample_losses(model, x, labels)
    # batches of 4, 4, 2: sum(w * l) / batch size, then the mean weighted by batch size
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    expected = sum(np.sum(SW[b] * per[b]) / len(per[b]) * len(per[b]) for b in batches) / 10
    assert loss == pytest.approx(expected, rel=1e-5)
    assert loss != pytest.approx(np.mean(per), rel=1e-3)  # the weights did change it
    assert acc == pytest.approx(np.mean(correct))  # metrics= are not weighted (as Keras)
    # a zero weight keeps the sample in the divisor
    w = np.zeros(10, "float32")
    w[0] = 1
    assert model.evaluate(x, labels, sample_weight=w, batch_size=10, verbose=0)[0] == \
        pytest.approx(per[0] / 10, rel=1e-5)
    assert model.evaluate(x, labels, sample_weight=np.zeros(10), verbose=0)[0] == 0.0
    # (N, 1) weights are (N,) weights; ones are no weights
    assert model.evaluate(x, labels, sample_weight=SW[:, None], batch_size=4, verbose=0)[0] == loss
    np.testing.assert_allclose(model.evaluate(x, labels, sample_weight=np.ones(10), verbose=0),
                               model.evaluate(x, labels, verbose=0), rtol=1e-6)


def test_weighted_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3))
    y = np.eye(3)[[0, 2, 1, 1]]
    w = np.array([0.5, 0.0, 2.0, 1.0])
    for loss in (losses.CategoricalCrossentropy(from_logits=True),
                 losses.BinaryCrossentropy(from_logits=True), losses.MeanSquaredError()):
        value, grad = loss.value_and_grad(y, z, sample_weight=w)
        per = np.array([loss(y[i:i + 1], z[i:i + 1]) for i in range(4)])
        assert value == pytest.approx(np.sum(w * per) / 4, rel=1e-12)
        numeric = np.zeros_like(z)
        for idx in np.ndindex(z.shape):
            dz = np.zeros_like(z)
            dz[idx] = 1e-6
            numeric[idx] = (loss(y, z + dz, sample_weight=w) - loss(y, z - dz, sample_weight=w)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_padding_mask_and_sample_weight_combine_as_keras():
    """Sequence outputs: sum(w * mask * loss) / number of real steps."""
    x, _ = _data(6)
    x[1, 3:] = 0.0
    x[4, 1:] = 0.0
    steps = np.random.default_rng(2).integers(0, 2, (6, 5))
    model = _sequence_model()
    p = model.predict(x).astype(np.float64)
    per = -np.log(np.take_along_axis(p, steps[..., None], -1)[..., 0])
    mask = np.ones((6, 5))
    mask[1, 3:] = mask[4, 1:] = 0
    for w in (SW[:6], np.arange(30, dtype="float32").reshape(6, 5) / 10):
        w2 = np.broadcast_to(w[:, None] if w.ndim == 1 else w, (6, 5))
        loss = model.evaluate(x, steps, sample_weight=w, batch_size=6, verbose=0)[0]
        assert loss == pytest.approx(np.sum(w2 * mask * per) / mask.sum(), rel=1e-5)


# --- exact identities -------------------------------------------------------------------------------

def test_sample_weight_two_equals_twice_the_learning_rate_bitwise():
    """With plain SGD, weights of 2 double every gradient exactly (a power of two)."""
    x, labels = _data(32, seed=3)
    a, b = _model(lr=0.05), _model(lr=0.1)
    ha = a.fit(x, labels, batch_size=8, epochs=2, verbose=0, sample_weight=np.full(32, 2.0))
    hb = b.fit(x, labels, batch_size=8, epochs=2, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history["accuracy"] == hb.history["accuracy"]
    np.testing.assert_allclose(ha.history["loss"], 2 * np.array(hb.history["loss"]), rtol=1e-6)


def test_class_weight_equals_the_matching_sample_weight_bitwise():
    x, labels = _data(24, seed=5)
    onehot = np.eye(3, dtype="float32")[labels]
    class_weight = {0: 0.5, 2: 3.0}  # class 1 is missing: weight 1
    per_sample = np.array([class_weight.get(c, 1.0) for c in labels])
    for loss, y in (("sparse_categorical_crossentropy", labels), ("categorical_crossentropy", onehot)):
        a, b = _model(loss=loss), _model(loss=loss)
        ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0, class_weight=class_weight,
                   validation_split=0.25)
        hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0, sample_weight=per_sample,
                   validation_split=0.25)
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
        assert ha.history["loss"] == hb.history["loss"]
        # class weights are for training only; a split keeps sample weights with their samples
        unweighted = b.evaluate(x[18:], y[18:], verbose=0)[0]
        assert ha.history["val_loss"][-1] == pytest.approx(unweighted, rel=1e-6)
        assert hb.history["val_loss"][-1] == pytest.approx(
            b.evaluate(x[18:], y[18:], sample_weight=per_sample[18:], verbose=0)[0], rel=1e-6)
    # one sigmoid unit: classes 0 and 1 from round(y)
    m = Sequential([LSTM(3, input_shape=(5, 3)), Dense(1, activation="sigmoid")], seed=0)
    m.compile("sgd", "binary_crossentropy")
    yb = (labels == 1).astype("float32")[:, None]
    w = m._class_weight_to_sample_weight({1: 4.0}, yb)
    np.testing.assert_array_equal(w, np.where(labels == 1, 4.0, 1.0))


def test_validation_data_with_sample_weights_and_train_on_batch():
    x, labels = _data(16, seed=6)
    model = _model()
    h = model.fit(x[:8], labels[:8], epochs=1, batch_size=8, verbose=0,
                  validation_data=(x[8:], labels[8:], SW[:8]))
    assert h.history["val_loss"][0] == pytest.approx(
        model.evaluate(x[8:], labels[8:], sample_weight=SW[:8], verbose=0)[0], rel=1e-6)
    assert h.history["val_accuracy"][0] == model.evaluate(x[8:], labels[8:], verbose=0)[1]
    before = model.evaluate(x[:8], labels[:8], sample_weight=SW[:8], verbose=0)
    assert model.test_on_batch(x[:8], labels[:8], sample_weight=SW[:8]) == before
    loss, acc = model.train_on_batch(x[:8], labels[:8], sample_weight=SW[:8])
    assert loss == pytest.approx(before[0], rel=1e-6) and acc == before[1]  # values before the step
    zero = _model()
    w0 = zero.get_weights()
    assert zero.train_on_batch(x[:8], labels[:8], sample_weight=np.zeros(8))[0] == 0.0
    for a, b in zip(w0, zero.get_weights()):  # zero loss, zero gradient, no change with SGD
        np.testing.assert_array_equal(a, b)


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, needles", [
    (dict(sample_weight=np.ones(9)), ValueError, ["sample_weight", "(10,)", "(9,)"]),
    (dict(sample_weight=np.ones((10, 2))), ValueError, ["sample_weight", "(10, 2)"]),
    (dict(sample_weight=np.r_[np.ones(9), -1.0]), ValueError, ["sample_weight", ">= 0", "-1.0", "index 9"]),
    (dict(sample_weight=np.r_[np.nan, np.ones(9)]), ValueError, ["sample_weight", "finite", "nan"]),
    (dict(sample_weight=np.r_[np.inf, np.ones(9)]), ValueError, ["sample_weight", "finite", "inf"]),
    (dict(sample_weight=np.full(10, 1e39)), ValueError, ["sample_weight", "overflows float32"]),
    (dict(sample_weight=np.array(["a"] * 10)), TypeError, ["sample_weight", "numeric"]),
    (dict(class_weight={0: 1.0, 3: 2.0}), ValueError, ["class_weight", "0..2", "got key 3"]),
    (dict(class_weight={-1: 1.0}), ValueError, ["class_weight", "got key -1"]),
    (dict(class_weight={"0": 1.0}), ValueError, ["class_weight", "got key '0'"]),
    (dict(class_weight={0: -2.0}), ValueError, ["class_weight[0]", ">= 0", "-2.0"]),
    (dict(class_weight={0: float("nan")}), ValueError, ["class_weight[0]", "finite"]),
    (dict(class_weight=[1.0, 2.0, 3.0]), TypeError, ["class_weight", "dict", "list"]),
    (dict(class_weight={0: 2.0}, sample_weight=np.ones(10)), ValueError, ["class_weight", "sample_weight"]),
    (dict(validation_data=(np.zeros((2, 5, 3)), np.zeros(2), np.ones(3))), ValueError,
     ["validation_data[2]", "(2,)", "(3,)"]),
    (dict(validation_data=(1, 2, 3, 4)), ValueError, ["validation_data", "tuple of length 4"]),
])
def test_bad_weights_give_clear_errors(kwargs, error, needles):
    x, labels = _data()
    model = _model()
    w0 = model.get_weights()
    with pytest.raises(error) as info:
        model.fit(x, labels, verbose=0, **kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    for a, b in zip(w0, model.get_weights()):  # refused before any training
        np.testing.assert_array_equal(a, b)


def test_bad_weights_in_evaluate_and_on_batch():
    x, labels = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"sample_weight: expected one weight per sample, shape \(10,\)"):
        model.evaluate(x, labels, sample_weight=np.ones(4), verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        model.test_on_batch(x, labels, sample_weight=-np.ones(10))
    with pytest.raises(ValueError, match="class_weight"):
        model.train_on_batch(x, labels, class_weight={7: 1.0})
    regression = Sequential([LSTM(2, input_shape=(5, 3)), Dense(1)], seed=0)
    regression.compile("sgd", "mse")
    with pytest.raises(ValueError, match="class_weight: only for classification losses.*mean_squared_error"):
        regression.fit(x, np.zeros((10, 1)), class_weight={0: 1.0}, verbose=0)


# --- against Keras -----------------------------------------------------------------------------------

KERAS_WORKER = r'''
out = {}

def classifier(n_weights_key, loss, C):
    m = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4),
                          keras.layers.Dense(C, activation="softmax")])
    m.set_weights([d[f"{n_weights_key}{i}"] for i in range(3 + 2)])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=loss, metrics=["accuracy"])
    return m

def weights(m):
    return [np.asarray(w).tolist() for w in m.get_weights()]

sp = "sparse_categorical_crossentropy"
m = classifier("w", sp, 3)
out["evaluate"] = m.evaluate(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, verbose=0)
out["test_on_batch"] = m.test_on_batch(d["x"], d["y"], sample_weight=d["sw"])
out["train_on_batch"] = m.train_on_batch(d["x"], d["y"], sample_weight=d["sw"])
out["train_on_batch_weights"] = weights(m)

m = classifier("w", sp, 3)
h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=2, shuffle=False, verbose=0,
          validation_data=(d["xv"], d["yv"], d["swv"]))
out["fit_history"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
out["fit_weights"] = weights(m)

m = classifier("w", sp, 3)
h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=1, shuffle=False, verbose=0,
          validation_split=0.3)
out["split_history"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}

cw = {0: 0.5, 2: 3.0}
m = classifier("w", "categorical_crossentropy", 3)
h = m.fit(d["x"], d["onehot"], class_weight=cw, batch_size=4, epochs=2, shuffle=False, verbose=0)
out["class_weight_history"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
out["class_weight_weights"] = weights(m)
m = classifier("w", sp, 3)
out["class_weight_train_on_batch"] = m.train_on_batch(d["x"], d["y"], class_weight=cw)
out["class_weight_train_on_batch_weights"] = weights(m)

# sequence outputs, padding (Masking) and one weight per step
m = keras.Sequential([keras.Input((5, 3)), keras.layers.Masking(0.0),
                      keras.layers.LSTM(4, return_sequences=True),
                      keras.layers.Dense(2, activation="softmax")])
m.set_weights([d[f"s{i}"] for i in range(5)])
m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=sp, metrics=["accuracy"])
out["seq_evaluate"] = m.evaluate(d["xs"], d["ys"], sample_weight=d["sws"], batch_size=6, verbose=0)
out["seq_train_on_batch"] = m.train_on_batch(d["xs"], d["ys"], sample_weight=d["sws"])
out["seq_train_on_batch_weights"] = weights(m)
# weighted_metrics: weighted by sample / class / per-step weights, "weighted_" only on a clash
m = classifier("w", sp, 3)
m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=sp, metrics=["accuracy"],
          weighted_metrics=["accuracy"])
h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=2, shuffle=False, verbose=0,
          validation_data=(d["xv"], d["yv"], d["swv"]))
out["wm_fit_history"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
out["wm_evaluate"] = {k: float(v) for k, v in m.evaluate(d["x"], d["y"], sample_weight=d["sw"],
                                                          batch_size=4, verbose=0, return_dict=True).items()}
m = classifier("w", "categorical_crossentropy", 3)
m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy",
          weighted_metrics=["accuracy"])
h = m.fit(d["x"], d["onehot"], class_weight=cw, batch_size=4, epochs=2, shuffle=False, verbose=0)
out["wm_class_weight_history"] = {k: [float(v) for v in vs] for k, vs in h.history.items()}
m = keras.Sequential([keras.Input((5, 3)), keras.layers.Masking(0.0),
                      keras.layers.LSTM(4, return_sequences=True),
                      keras.layers.Dense(2, activation="softmax")])
m.set_weights([d[f"s{i}"] for i in range(5)])
m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss=sp, metrics=["accuracy"],
          weighted_metrics=["accuracy"])
out["wm_seq_evaluate"] = {k: float(v) for k, v in m.evaluate(
    d["xs"], d["ys"], sample_weight=d["sws"], batch_size=6, verbose=0, return_dict=True).items()}
out["keras"] = keras.__version__ + " / " + keras.backend.backend()
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
'''


def _keras_inputs():
    x, labels = _data(10)
    xv, yv = _data(6, seed=9)
    xs, _ = _data(6, seed=7)
    xs[1, 3:] = 0.0
    xs[4, 1:] = 0.0
    ys = np.random.default_rng(8).integers(0, 2, (6, 5))
    sws = (np.arange(30, dtype="float32").reshape(6, 5) % 7) / 3
    d = dict(x=x, y=labels, onehot=np.eye(3, dtype="float32")[labels], sw=SW, xv=xv, yv=yv,
             swv=np.array([2, 0, 1, 1, 3, 0.5], "float32"), xs=xs, ys=ys, sws=sws)
    d.update({f"w{i}": w for i, w in enumerate(_model().get_weights())})
    d.update({f"s{i}": w for i, w in enumerate(_sequence_model().get_weights())})
    return d


@pytest.fixture(scope="module")
def keras_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras")
    d = _keras_inputs()
    np.savez(tmp / "in.npz", **d)
    run_keras_worker(KERAS_WORKER, tmp / "in.npz", tmp / "out.json")
    return d, json.loads((tmp / "out.json").read_text())


def _close(ours, theirs, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64),
                               rtol=rtol, atol=atol)


def _close_weights(model, theirs):
    for a, b in zip(model.get_weights(), theirs):
        _close(a, b)


def _close_logs(ours, theirs):
    assert set(ours) == set(theirs)
    _close([ours[key] for key in sorted(ours)], [theirs[key] for key in sorted(ours)])


def _close_history(history, theirs):
    assert set(history.history) == set(theirs)
    for k in theirs:
        _close(history.history[k], theirs[k])


def test_against_keras_evaluate_and_on_batch(keras_results):
    d, k = keras_results
    m = _model()
    _close(m.evaluate(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, verbose=0), k["evaluate"])
    _close(m.test_on_batch(d["x"], d["y"], sample_weight=d["sw"]), k["test_on_batch"])
    _close(m.train_on_batch(d["x"], d["y"], sample_weight=d["sw"]), k["train_on_batch"])
    _close_weights(m, k["train_on_batch_weights"])


def test_against_keras_fit_with_sample_weights_and_weighted_validation(keras_results):
    d, k = keras_results
    m = _model()
    h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=2, shuffle=False, verbose=0,
              validation_data=(d["xv"], d["yv"], d["swv"]))
    _close_history(h, k["fit_history"])
    _close_weights(m, k["fit_weights"])
    m = _model()
    h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=1, shuffle=False, verbose=0,
              validation_split=0.3)
    _close_history(h, k["split_history"])


def test_against_keras_class_weight(keras_results):
    d, k = keras_results
    m = _model(loss="categorical_crossentropy")
    h = m.fit(d["x"], d["onehot"], class_weight={0: 0.5, 2: 3.0}, batch_size=4, epochs=2, shuffle=False,
              verbose=0)
    _close_history(h, k["class_weight_history"])
    _close_weights(m, k["class_weight_weights"])
    m = _model()
    _close(m.train_on_batch(d["x"], d["y"], class_weight={0: 0.5, 2: 3.0}), k["class_weight_train_on_batch"])
    _close_weights(m, k["class_weight_train_on_batch_weights"])


def test_against_keras_masked_sequences_with_per_step_weights(keras_results):
    d, k = keras_results
    m = _sequence_model()
    _close(m.evaluate(d["xs"], d["ys"], sample_weight=d["sws"], batch_size=6, verbose=0), k["seq_evaluate"])
    _close(m.train_on_batch(d["xs"], d["ys"], sample_weight=d["sws"]), k["seq_train_on_batch"])
    _close_weights(m, k["seq_train_on_batch_weights"])


def test_against_keras_weighted_metrics(keras_results):
    d, k = keras_results
    m = _model()
    m.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"],
              weighted_metrics=["accuracy"])
    h = m.fit(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, epochs=2, shuffle=False, verbose=0,
              validation_data=(d["xv"], d["yv"], d["swv"]))
    assert set(h.history) == {"loss", "accuracy", "weighted_accuracy", "val_loss", "val_accuracy",
                              "val_weighted_accuracy"}
    _close_history(h, k["wm_fit_history"])
    _close_logs(m.evaluate(d["x"], d["y"], sample_weight=d["sw"], batch_size=4, verbose=0,
                           return_dict=True), k["wm_evaluate"])
    m = _model(loss="categorical_crossentropy")
    m.compile(SGD(learning_rate=0.1), "categorical_crossentropy", weighted_metrics=["accuracy"])
    h = m.fit(d["x"], d["onehot"], class_weight={0: 0.5, 2: 3.0}, batch_size=4, epochs=2, shuffle=False,
              verbose=0)
    _close_history(h, k["wm_class_weight_history"])
    m = _sequence_model()
    m.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"],
              weighted_metrics=["accuracy"])
    # (Keras's list form repeats "accuracy" here, flattening its compile_metrics; the dict is exact)
    _close_logs(m.evaluate(d["xs"], d["ys"], sample_weight=d["sws"], batch_size=6, verbose=0,
                           return_dict=True), k["wm_seq_evaluate"])


def test_weighted_metrics_by_hand_and_through_save_and_load(tmp_path):
    x, labels = _data()
    model = _model()
    model.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy"], weighted_metrics=["accuracy", "sparse_categorical_accuracy"])
    assert model.metrics_names == ["loss", "accuracy", "weighted_accuracy", "sparse_categorical_accuracy"]
    loss, acc, wacc, wsparse = model.evaluate(x, labels, sample_weight=SW, batch_size=4, verbose=0)
    _, correct = _per_sample_losses(model, x, labels)
    assert acc == pytest.approx(np.mean(correct))
    assert wacc == pytest.approx(np.sum(SW * correct) / np.sum(SW)) == wsparse
    assert wacc != pytest.approx(acc)  # this draw: the weights change it
    # no weights: a weighted metric is the plain one
    assert model.evaluate(x, labels, verbose=0)[1:3] == pytest.approx([acc, acc])
    path = tmp_path / "m.rnk"
    model.save(path)
    from rnnkernels.models import load_model
    loaded = load_model(path)
    assert loaded.metrics_names == model.metrics_names
    assert loaded.evaluate(x, labels, sample_weight=SW, batch_size=4, verbose=0) == pytest.approx(
        [loss, acc, wacc, wsparse])
    with pytest.raises(ValueError, match=r"^weighted_metrics: expected one of .* got 'f1'"):
        model.compile("sgd", "sparse_categorical_crossentropy", weighted_metrics=["f1"])


def test_a_metric_instance_given_as_weighted_is_the_one_updated():
    from rnnkernels import metrics
    x, labels = _data()
    mine = metrics.SparseCategoricalAccuracy(name="mine")
    shared = metrics.SparseCategoricalAccuracy(name="both")
    model = _model()
    model.compile(SGD(learning_rate=0.1), "sparse_categorical_crossentropy", metrics=["accuracy", shared],
                  weighted_metrics=[mine, shared])
    assert model.metrics_names == ["loss", "accuracy", "both", "mine", "weighted_both"]
    logs = model.evaluate(x, labels, sample_weight=SW, verbose=0, return_dict=True)
    assert mine.result() == logs["mine"] == logs["weighted_both"] != logs["both"] == shared.result()


def test_metric_instances_keep_their_name_and_threshold_through_save_and_load(tmp_path):
    from rnnkernels import metrics
    from rnnkernels.models import load_model
    m = Sequential([LSTM(3, input_shape=(5, 3)), Dense(1, activation="sigmoid")], seed=0)
    m.compile("sgd", "binary_crossentropy", metrics=[metrics.BinaryAccuracy(name="strict", threshold=0.7)],
              weighted_metrics=["accuracy", metrics.BinaryAccuracy(name="lenient", threshold=0.2)])
    x, labels = _data(8)
    y = (labels > 0).astype("float32")[:, None]
    m.save(tmp_path / "m.rnk")
    loaded = load_model(tmp_path / "m.rnk")
    assert loaded.metrics_names == ["loss", "strict", "accuracy", "lenient"]
    assert [getattr(k, "threshold", None) for k in loaded.metrics] == [0.7, 0.5, 0.2]
    assert loaded.evaluate(x, y, sample_weight=SW[:8], verbose=0) == \
        m.evaluate(x, y, sample_weight=SW[:8], verbose=0)

    class Mine(metrics.BinaryAccuracy):
        pass

    m.compile("sgd", "binary_crossentropy", metrics=[Mine(name="mine")])
    with pytest.raises(ValueError, match=r"metrics: cannot save the custom metric Mine \('mine'\); "
                                         r"save with include_optimizer=False"):
        m.save(tmp_path / "custom.rnk")
    assert not (tmp_path / "custom.rnk").exists()
    m.save(tmp_path / "custom.rnk", include_optimizer=False)
    assert load_model(tmp_path / "custom.rnk").optimizer is None
