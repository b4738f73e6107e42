"""Faults that lost or misreported work: a learning-rate schedule yielding NaN, a negative
or an overflowing rate; a validation_split that leaves nothing to validate on; a bad
sparse label in the last batch; x changed in place between forward and backward."""
import math

import numpy as np
import pytest

from rnnkernels import callbacks as cbs, ops, optimizers, reference
from rnnkernels.layers import GRU, LSTM, Dense
from rnnkernels.models import Sequential


def _model(loss="categorical_crossentropy", lr=0.01):
    m = Sequential([LSTM(3, input_shape=(4, 2)), Dense(3, activation="softmax")], seed=0)
    m.compile(optimizers.SGD(learning_rate=lr), loss)
    return m


def _xy(n=8, sparse=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4, 2)).astype("float32")
    ids = np.arange(n) % 3
    return x, (ids if sparse else np.eye(3, dtype="float32")[ids])


def _unchanged(m, before):
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [math.nan, -0.01, math.inf])
def test_a_schedule_giving_nan_negative_or_inf_fails_before_the_weights_change(value):
    x, y = _xy()
    m = _model(lr=lambda step: 0.01 if step < 2 else value)
    m.build((None, 4, 2))
    m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)  # steps 0 and 1: fine
    before = m.get_weights()
    with pytest.raises(ValueError, match=rf"learning_rate: the schedule .* gave {value} at step 2; expected a "
                                         r"finite, non-negative number"):
        m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    _unchanged(m, before)
    assert m.optimizer.iterations == 2 and all(np.isfinite(w).all() for w in m.get_weights())


def test_schedules_are_checked_when_made_and_when_used():
    with pytest.raises(ValueError, match=r"values\[1\]: expected a non-negative finite number, got -0.1"):
        optimizers.PiecewiseConstantDecay([2], [0.1, -0.1])
    with pytest.raises(ValueError, match=r"values\[0\]: expected a non-negative finite number, got nan"):
        optimizers.PiecewiseConstantDecay([2], [math.nan, 0.1])
    # a valid schedule whose value overflows float64 after enough steps
    growing = optimizers.ExponentialDecay(0.1, decay_steps=1, decay_rate=1e10)
    opt = optimizers.SGD(learning_rate=growing)
    opt.iterations = 40
    with pytest.raises(ValueError, match=r"failed at step 40 \(OverflowError"):
        opt.current_learning_rate()
    opt.learning_rate = lambda step: "fast"
    with pytest.raises(ValueError, match=r"gave 'fast' at step 40; expected a number"):
        opt.current_learning_rate()


def test_learning_rate_scheduler_giving_nan_is_a_clear_error():
    x, y = _xy()
    m = _model()
    m.build((None, 4, 2))
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"LearningRateScheduler: the schedule gave nan for epoch 0"):
        m.fit(x, y, epochs=1, verbose=0, callbacks=[cbs.LearningRateScheduler(lambda e, lr: float("nan"))])
    _unchanged(m, before)


@pytest.mark.parametrize("n, split, left", [(1, 0.5, "leaves 0 for validation and 1 for training"),
                                            (5, 0.1, "leaves 0 for validation and 5 for training"),
                                            (3, 0.99, "leaves 2 for validation and 1 for training")])
def test_validation_split_that_leaves_no_sample_is_an_error(n, split, left):
    x, y = _xy(n)
    m = _model()
    if "0 for validation" in left:
        with pytest.raises(ValueError, match=rf"validation_split: {split} of {n} samples {left}; each needs"):
            m.fit(x, y, validation_split=split, epochs=1, verbose=0)
        assert m.optimizer.iterations == 0
    else:  # both sides non-empty: trains and reports a real val_loss
        h = m.fit(x, y, validation_split=split, epochs=1, verbose=0)
        assert h.history["val_loss"][0] > 0


def test_validation_split_leaving_no_training_sample_is_an_error():
    x, y = _xy(2)
    m = _model()
    m.build((None, 4, 2))
    # floor(2 * 0.5) = 1 held out, 1 left: fine; one sample cannot be split at all
    m.fit(x, y, validation_split=0.5, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"leaves 0 for validation and 1 for training"):
        m.fit(x[:1], y[:1], validation_split=0.5, epochs=1, verbose=0)


@pytest.mark.parametrize("bad, pattern", [(3, r"expected class ids in \[0, 2\], got 3 for sample 7 \(1 samples"),
                                          (-1, r"expected class ids in \[0, 2\], got -1 for sample 7"),
                                          (1.5, r"expected integer class ids, got \[1.5\] for sample 7")])
def test_a_bad_sparse_label_in_the_last_batch_fails_before_the_first_step(bad, pattern):
    x, ids = _xy(8, sparse=True)
    y = ids.astype("float64")
    y[7] = bad
    m = _model("sparse_categorical_crossentropy")
    m.build((None, 4, 2))
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"^y: " + pattern):
        m.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)
    _unchanged(m, before)
    assert m.optimizer.iterations == 0
    with pytest.raises(ValueError, match=r"^validation_data\[1\]: " + pattern):
        m.fit(x, ids, validation_data=(x, y), batch_size=2, epochs=1, verbose=0)
    assert m.optimizer.iterations == 0
    with pytest.raises(ValueError, match=r"^y: " + pattern):
        m.evaluate(x, y, verbose=0)


_CELLS = {"lstm": 4, "gru": 3, "rnn": 1}


@pytest.mark.parametrize("impl", [ops, reference], ids=["ops", "reference"])
@pytest.mark.parametrize("kind", sorted(_CELLS))
def test_x_changed_in_place_after_forward_changes_no_gradient(impl, kind):
    """The cache keeps its own packed copy of x (the kernels gather x's rows into it at
    forward time), so overwriting x before backward changes nothing, at equal lengths as
    with lengths= (the issue found the two differed; PyTorch refuses the case instead)."""
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 3, 4, 7
    G = _CELLS[kind]
    x = rng.normal(size=(T, B, I))
    w_ih, w_hh = rng.normal(size=(G * H, I)) * 0.5, rng.normal(size=(G * H, H)) * 0.5
    forward, backward = getattr(impl, f"{kind}_forward"), getattr(impl, f"{kind}_backward")

    def grads(lengths, overwrite):
        xx = x.copy()
        kw = {} if lengths is None else {"lengths": lengths}
        out = forward(xx, w_ih, w_hh, None, None, **kw)
        if overwrite:
            xx[...] = 123.0
        return backward(out[-1], np.ones_like(out[0]))

    clean = grads(None, False)
    for lengths in (None, np.full(B, T), np.array([T, 2, 4])):
        got = grads(lengths, True)
        want = clean if lengths is None or (lengths == T).all() else grads(lengths, False)
        for name in ("w_ih", "w_hh", "x"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name}, lengths={lengths}")


def test_layer_input_changed_in_place_between_forward_and_backward():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    layer = GRU(5, return_sequences=True)
    layer.build((6, 4), np.random.default_rng(0), "float32")
    dy = rng.normal(size=(3, 6, 5)).astype("float32")
    for lengths in (None, np.array([6, 6, 6]), np.array([6, 3, 1])):
        layer.forward(x.copy(), training=True, lengths=lengths)
        dx_clean, g_clean = layer.backward(dy), {k: v.copy() for k, v in layer.grads.items()}
        xx = x.copy()
        layer.forward(xx, training=True, lengths=lengths)
        xx[...] = -7.0
        dx = layer.backward(dy)
        np.testing.assert_array_equal(dx, dx_clean)
        for k in g_clean:
            np.testing.assert_array_equal(layer.grads[k], g_clean[k], err_msg=k)
