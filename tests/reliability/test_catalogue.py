"""One catalogue of bad and borderline inputs across ops, the layers, the models, files and
the command line.  Each row is (id, input, call, expected, message regex[, see, defect]):
the call must raise the expected exception with a message naming the argument, return a
result that passes the row's check (``Ok``), or, on the command line, exit with the given
status and one line on stderr, no traceback (``Exits``).

Rows whose subject an existing test covers in depth name it in ``see`` and stay cheap here.
Rows with ``defect`` describe behaviour that is wrong today: they run as strict xfail (so the
suite stays green, and the row fails loudly once the code is fixed: then drop ``defect``).

``python tests/reliability/test_catalogue.py`` prints the table of docs/reliability.md with the outcomes
observed now.
"""
import contextlib
import functools
import io
import os
import re
import sys
import tempfile
from typing import Callable, NamedTuple, Optional

import numpy as np
import pytest

# tests/ (the helpers package) when run as a script; pytest adds it itself (pyproject.toml)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rnnkernels import cli, ops  # noqa: E402
from rnnkernels import callbacks as cbs  # noqa: E402
from rnnkernels.layers import LSTM, Bidirectional, Dense, Dropout  # noqa: E402
from rnnkernels.models import Sequential, load_model  # noqa: E402

from helpers.cells import make_case, run  # noqa: E402


# ----------------------------------------------------------------------------- row types
class Ok(NamedTuple):
    """A correct result is expected: ``check(result)`` asserts it; ``says`` is for the table."""
    check: Callable
    says: str


class Exits(NamedTuple):
    """Command line: this exit status and exactly one line on stderr, no traceback."""
    status: int


class Case(NamedTuple):
    id: str
    given: str                      # the input, in words (table column)
    call: Callable                  # call(ctx) -> result
    expected: object                # exception type, Ok or Exits
    match: Optional[str] = None     # regex searched in the message / the stderr line
    see: str = ""                   # existing test covering the subject in depth
    defect: str = ""                # wrong today: what it should do instead


class Fixtures:
    """Files the rows need, made on first use in one temporary folder."""

    def __init__(self, root):
        self.root = str(root)

    def path(self, name):
        return os.path.join(self.root, name)

    def _write(self, name, content):
        with open(self.path(name), "wb") as fh:
            fh.write(content)
        return self.path(name)

    @functools.cached_property
    def model_file(self):
        m = _model()
        m.save(self.path("model.rnk"))
        return self.path("model.rnk")

    @functools.cached_property
    def weights_file(self):
        _model().save_weights(self.path("weights.rnk"))
        return self.path("weights.rnk")

    @functools.cached_property
    def truncated(self):
        data = open(self.model_file, "rb").read()
        return self._write("truncated.rnk", data[: len(data) // 2])

    @functools.cached_property
    def garbage(self):
        return self._write("garbage.rnk", b"this is not a model file at all")

    @functools.cached_property
    def empty_file(self):
        return self._write("empty.rnk", b"")

    @functools.cached_property
    def bitflip(self):
        data = bytearray(open(self.model_file, "rb").read())
        data[200] ^= 0xFF
        return self._write("bitflip.rnk", bytes(data))

    @functools.cached_property
    def empty_dir(self):
        os.makedirs(self.path("empty_dir"), exist_ok=True)
        return self.path("empty_dir")

    @functools.cached_property
    def corrupt_wav(self):
        return self._write("3_zed_0.wav", b"RIFF\x24\x00\x00\x00WAVEjunk-not-audio")

    @functools.cached_property
    def good_wav(self):
        import soundfile
        t = np.arange(4000) / 8000
        soundfile.write(self.path("4_zed_0.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
        return self.path("4_zed_0.wav")

    # --- hostile model files (issue 22): valid zip CRCs, so the loader's own checks answer
    def _hostile(self, name, **change):
        from helpers.archives import rewrite
        return str(rewrite(self.model_file, self.path(name), **change))

    @functools.cached_property
    def units_6000(self):
        def change(h):
            h["model"]["layers"][0]["config"]["units"] = 6000
        return self._hostile("units6000.rnk", change_header=change)

    @functools.cached_property
    def huge_npy(self):
        from helpers.archives import npy_claiming
        return self._hostile("huge.rnk", replace={"arrays/weights/0/0000.npy": npy_claiming(
            (1 << 20, 1 << 20), data=b"\0" * 64)})

    @functools.cached_property
    def deflate_bomb(self):
        """64 MiB of zeros deflated to 64 kB, in place of a (2, 12) kernel."""
        import zipfile
        from helpers.archives import entries, npy_claiming
        items, name = entries(self.model_file), "arrays/weights/0/0000.npy"
        with zipfile.ZipFile(self.path("bomb.rnk"), "w") as zf:
            for entry, data in items.items():
                if entry != name:
                    zf.writestr(entry, data)
            zf.writestr(name, npy_claiming((1 << 24,)) + bytes(4 << 24), zipfile.ZIP_DEFLATED)
        return self.path("bomb.rnk")

    def _header_text(self, name, edit):
        from helpers.archives import header
        import json as _json
        return self._hostile(name, header_text=edit(_json.dumps(header(self.model_file))))

    @functools.cached_property
    def deep_json(self):
        return self._header_text("deep.rnk", lambda t: t[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")

    @functools.cached_property
    def infinity(self):
        return self._header_text("inf.rnk", lambda t: t.replace('"dropout": 0.0', '"dropout": Infinity', 1))

    @functools.cached_property
    def absurd_units(self):
        def change(h):
            h["model"]["layers"][0]["config"]["units"] = 10 ** 30
        return self._hostile("absurd.rnk", change_header=change)

    @functools.cached_property
    def fewer_shapes(self):
        def change(h):
            h["model"]["built_input_shapes"].pop()
        return self._hostile("fewer.rnk", change_header=change)

    @functools.cached_property
    def fewer_layers(self):
        def change(h):
            h["model"]["layers"].pop()
            h["model"]["built_input_shapes"].pop()
        return self._hostile("fewerlayers.rnk", change_header=change)

    @functools.cached_property
    def bad_state(self):
        from helpers.archives import npy_bytes, rewrite
        m = Sequential([LSTM(4, batch_size=2, input_shape=(None, 3), stateful=True), Dense(1)], seed=0)
        m.compile("sgd", "mse")
        m.predict(np.ones((2, 5, 3), "float32"), batch_size=2)
        m.save(self.path("stateful.rnk"))
        return str(rewrite(self.path("stateful.rnk"), self.path("badstate.rnk"),
                           replace={"arrays/states/0/0000.npy": npy_bytes(np.zeros((2, 5), "float32"))}))

    @functools.cached_property
    def fifo(self):
        os.mkfifo(self.path("pipe.rnk"))
        return self.path("pipe.rnk")

    @functools.cached_property
    def audio_fifo(self):
        os.mkfifo(self.path("pipe.wav"))
        return self.path("pipe.wav")

    @functools.cached_property
    def audio_model(self):
        """An untrained audio classifier file (what `rnnkernels train --save` writes)."""
        from rnnkernels.audio.recipes import DEFAULT_FEATURES, AudioClassifier, build_model
        model = build_model(DEFAULT_FEATURES.n_features, 3, hidden=2, bidirectional=False)
        AudioClassifier(model, DEFAULT_FEATURES, ["a", "b", "c"]).save(self.path("audio.rnk"))
        return self.path("audio.rnk")


# ----------------------------------------------------------------------------- helpers
def _model(units=3, T=4, F=2, classes=2):
    m = Sequential([LSTM(units, input_shape=(T, F)), Dense(classes, activation="softmax")], seed=0)
    m.compile("adam", "categorical_crossentropy")
    return m


def _xy(n=4, T=4, F=2, classes=2, fill=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, T, F)).astype("float32") if fill is None else np.full((n, T, F), fill, "float32")
    return x, np.eye(classes, dtype="float32")[np.arange(n) % classes]


def _lstm(**change):
    """ops.lstm_forward on a small case (T=3, B=2, I=4, H=5) with some arguments replaced."""
    case = make_case("lstm", 3, 2, 4, 5)
    kw = dict(x=case["x"], w_ih=case["w_ih"], w_hh=case["w_hh"], b_ih=case["b_ih"],
              b_hh=case["b_hh"], h0=case["h0"], c0=case["c0"])
    kw.update(change)
    return ops.lstm_forward(**kw)


def _rnn(**change):
    case = make_case("rnn_tanh", 3, 2, 4, 5)
    kw = dict(x=case["x"], w_ih=case["w_ih"], w_hh=case["w_hh"], b_ih=case["b_ih"], b_hh=case["b_hh"])
    kw.update(change)
    return ops.rnn_forward(**kw)


def _gru_cache(**change):
    case = make_case("gru", 3, 2, 4, 5)
    return ops.gru_forward(case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"], **change)[2]


def _cli(*argv):
    """cli.main in-process; returns (status, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main([str(a) for a in argv])
    return status, err.getvalue()


def _layouts_match_contiguous():
    case = make_case("gru", 5, 3, 4, 6, lengths=np.array([5, 0, 3]))
    want = run(ops, "gru", case)
    odd = dict(case)
    odd["x"] = np.asfortranarray(case["x"])
    big = np.zeros((18, 12))
    big[:, ::3] = case["w_ih"]
    odd["w_ih"] = big[:, ::3]                    # strided view
    odd["w_hh"] = case["w_hh"].copy()
    odd["w_hh"].flags.writeable = False         # read-only
    got = run(ops, "gru", odd)
    return got, want


def _check_layouts(res):
    got, want = res
    for k in want:
        if k != "cache":
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _readonly_x():
    case = make_case("lstm", 3, 2, 4, 5)
    x = case["x"].copy()
    x.flags.writeable = False
    before = x.copy()
    out = run(ops, "lstm", dict(case, x=x))
    return x, before, out, run(ops, "lstm", case)


def _check_readonly(res):
    x, before, out, want = res
    assert not x.flags.writeable
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out["y"], want["y"])
    np.testing.assert_array_equal(out["d_x"], want["d_x"])


def _empty(T, B):
    case = make_case("lstm", T, B, 4, 5)
    return case, run(ops, "lstm", case)


def _check_empty(res):
    case, out = res
    T, B = case["x"].shape[:2]
    assert out["y"].shape == (T, B, 5) and out["d_x"].shape == (T, B, 4)
    np.testing.assert_array_equal(out["h_n"], case["h0"])
    np.testing.assert_array_equal(out["c_n"], case["c0"])
    np.testing.assert_array_equal(out["d_h0"], case["dh_n"])  # nothing in between


def _nan_in_one_sequence():
    case = make_case("lstm", 4, 3, 4, 5)
    clean = run(ops, "lstm", case)
    x = case["x"].copy()
    x[1, 0, 2] = np.nan
    return clean, run(ops, "lstm", dict(case, x=x))


def _check_nan(res):
    clean, dirty = res
    assert np.isnan(dirty["y"][1:, 0]).all() and np.isnan(dirty["h_n"][0]).all()
    np.testing.assert_array_equal(dirty["y"][:, 1:], clean["y"][:, 1:])  # others untouched
    np.testing.assert_array_equal(dirty["d_x"][:, 1:], clean["d_x"][:, 1:])


def _huge_x():
    case = make_case("lstm", 4, 3, 4, 5, dtype=np.float32)
    case["x"] = np.where(case["x"] > 0, 1e30, -1e30).astype(np.float32)
    return run(ops, "lstm", case)


def _check_huge(out):
    for k in ("y", "h_n", "c_n", "d_x", "d_w_ih", "d_w_hh", "d_h0"):
        assert np.isfinite(out[k]).all(), k
    assert np.abs(out["y"]).max() <= 1.0


def _padded_dy_ignored():
    case = make_case("rnn_tanh", 4, 2, 3, 5, lengths=np.array([2, 4]))
    clean = run(ops, "rnn_tanh", case)
    dy = case["dy"].copy()
    dy[2:, 0] = np.nan  # beyond sequence 0's length
    return clean, run(ops, "rnn_tanh", dict(case, dy=dy))


def _check_padded_dy(res):
    clean, got = res
    for k in ("d_x", "d_w_ih", "d_w_hh", "d_h0"):
        np.testing.assert_array_equal(got[k], clean[k], err_msg=k)


def _mixed_dtypes():
    case = make_case("rnn_tanh", 3, 2, 4, 5)
    y, h_n, _ = ops.rnn_forward(case["x"].astype(np.float32), case["w_ih"], case["w_hh"],
                                case["b_ih"], case["b_hh"])
    return y, h_n


def _layer(layer, T=3, F=4):
    layer.build((T, F), np.random.default_rng(0), "float32")
    return layer


def _lstm_backward_before_forward():
    return _layer(LSTM(2)).backward(np.zeros((2, 2), np.float32))


def _lstm_backward_after_inference():
    layer = _layer(LSTM(2))
    layer.forward(np.zeros((2, 3, 4), np.float32), training=False)
    return layer.backward(np.zeros((2, 2), np.float32))


def _lstm_backward_bad_dy():
    layer = _layer(LSTM(2, return_sequences=True))
    layer.forward(np.zeros((2, 3, 4), np.float32), training=True)
    return layer.backward(np.zeros((2, 3, 7), np.float32))


def _dense_backward_before_forward():
    return _layer(Dense(3), T=4, F=2).backward(np.zeros((2, 3), np.float32))


def _dense_backward_bad_dy():
    layer = Dense(3)
    layer.build((4,), np.random.default_rng(0), "float32")
    layer.forward(np.zeros((2, 4), np.float32), training=True)
    return layer.backward(np.zeros((2, 5), np.float32))


def _predict_unbuilt():
    return Sequential([LSTM(3), Dense(2)], seed=0).predict(np.ones((5, 4, 2), np.float32))


def _zero_steps():
    m = Sequential([LSTM(3, input_shape=(None, 2)), Dense(2)], seed=0)
    return m.predict(np.zeros((2, 0, 2))), m.predict(np.ones((2, 3, 2)), lengths=np.array([0, 0]))


def _check_zero_steps(res):
    empty, zero_lengths = res
    assert empty.shape == (2, 2)
    np.testing.assert_array_equal(empty, zero_lengths)


def _fit(m, x, y, **kw):
    kw.setdefault("verbose", 0)
    return m.fit(x, y, **kw)


def _nan_weights_terminate():
    m = _model()
    x, y = _xy(8)
    m.build((None,) + x.shape[1:])
    weights = m.get_weights()
    weights[0].flat[0] = np.nan  # weights that diverged
    m.set_weights(weights)
    history = _fit(m, x, y, batch_size=2, epochs=3, callbacks=[cbs.TerminateOnNaN()])
    return m, history


def _check_nan_terminate(res):
    m, history = res
    assert m.optimizer.iterations == 1 and m.stop_training
    assert np.isnan(history.history["loss"][0])


def _huge_inputs_fit():
    m = _model()
    x, y = _xy(8)
    x = np.where(x > 0, 1e30, -1e30).astype("float32")
    return m, _fit(m, x, y, batch_size=4, epochs=2)


def _check_huge_fit(res):
    m, history = res
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in m.get_weights())


def _ragged_list():
    m = Sequential([LSTM(3, input_shape=(None, 2)), Dense(2)], seed=0)
    seqs = [np.ones((4, 2)), np.ones((2, 2))]
    return m.predict(seqs), m.predict(np.ones((1, 2, 2)))


def _check_ragged(res):
    padded, alone = res
    assert padded.shape == (2, 2)
    np.testing.assert_allclose(padded[1], alone[0], rtol=1e-6)  # padding ignored


def _load_weights_other_architecture(ctx):
    other = Sequential([LSTM(5, input_shape=(4, 2)), Dense(2)], seed=1)
    before = other.get_weights()
    try:
        other.load_weights(ctx.model_file)
    finally:
        for a, b in zip(before, other.get_weights()):
            np.testing.assert_array_equal(a, b)  # nothing changed, whatever happened


# ----------------------------------------------------------------------------- the catalogue
def _isolated(code, *args):
    """Run a hostile case in a child process under a timeout (a crash or a hang fails the row)."""
    from helpers.isolated import run_python
    r = run_python(code, args=args, timeout=120)
    assert not r.timed_out, f"timed out: {r}"
    return r


_FORK = """
import os, numpy as np, rnnkernels
from rnnkernels import ops
rng = np.random.default_rng(0)
x = rng.standard_normal((20, 32, 64)).astype(np.float32)
w_ih, w_hh = (rng.standard_normal((1024, n)).astype(np.float32) * 0.1 for n in (64, 256))
rnnkernels.set_num_threads(2)
y = ops.lstm_forward(x, w_ih, w_hh, None, None)[0]
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(ops.lstm_forward(x, w_ih, w_hh, None, None)[0], y) else 3)
print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), rnnkernels.get_num_threads())
"""

_FIFO = """
import sys
from rnnkernels.models import load_model
from rnnkernels.audio import read_audio
for call in (lambda: load_model(sys.argv[1]), lambda: read_audio(sys.argv[2])):
    try:
        call()
    except ValueError as e:
        print(e)
"""


class _NanRate:
    """A learning-rate schedule that diverged."""

    def __call__(self, step):
        return float("nan")

    def __repr__(self):
        return "nan_rate"


def _schedule_nan():
    m = Sequential([LSTM(3, input_shape=(4, 2)), Dense(2, activation="softmax")], seed=0)
    m.compile(__import__("rnnkernels.optimizers").optimizers.SGD(learning_rate=_NanRate()),
              "categorical_crossentropy")
    return _fit(m, *_xy())


def _x_changed_after_forward():
    case = make_case("lstm", 4, 3, 5, 6, lengths=np.array([4, 4, 4]))
    grads = []
    for lengths in (None, case["lengths"]):
        x = case["x"].copy()
        y, _, _, cache = ops.lstm_forward(x, case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"], lengths=lengths)
        x[...] = 9.0
        grads.append(ops.lstm_backward(cache, case["dy"])["w_ih"])
    clean = ops.lstm_backward(ops.lstm_forward(case["x"], case["w_ih"], case["w_hh"], case["b_ih"],
                                               case["b_hh"])[3], case["dy"])["w_ih"]
    return grads, clean


def _check_x_changed(res):
    (equal, with_lengths), clean = res
    np.testing.assert_array_equal(equal, clean)
    np.testing.assert_array_equal(with_lengths, clean)


CASES = [
    # --- ops: shapes, dtypes, options -------------------------------------------------------
    Case("ops-x-2d", "lstm_forward x of shape (2, 4)", lambda c: _lstm(x=np.zeros((2, 4))),
         ValueError, r"^x: expected 3 dimensions", "tests/kernels/test_ops.py::test_lstm_forward_rejects"),
    Case("ops-x-int", "x of dtype int32", lambda c: _lstm(x=np.zeros((3, 2, 4), np.int32)),
         TypeError, r"^x: expected dtype float32 or float64, got int32"),
    Case("ops-x-float16", "x of dtype float16", lambda c: _lstm(x=np.zeros((3, 2, 4), np.float16)),
         TypeError, r"^x: expected dtype float32 or float64, got float16"),
    Case("ops-x-str", "x = 'text'", lambda c: _lstm(x="text"), TypeError, r"^x: expected an array"),
    Case("ops-x-I0", "x of shape (3, 2, 0) (no features)", lambda c: _lstm(x=np.zeros((3, 2, 0))),
         ValueError, r"^x: expected input size I >= 1"),
    Case("ops-w_ih-shape", "w_ih (20, 3) for I=4", lambda c: _lstm(w_ih=np.zeros((20, 3))),
         ValueError, r"^w_ih: expected shape \(20, 4\), got \(20, 3\)"),
    Case("ops-w_hh-gates", "w_hh (15, 5): not 4*H rows", lambda c: _lstm(w_hh=np.zeros((15, 5))),
         ValueError, r"^w_hh: expected shape \(4\*H, H\) for lstm \(4 gates\)"),
    Case("ops-w_hh-H0", "rnn_forward w_hh (0, 0) (H = 0)",
         lambda c: _rnn(w_ih=np.zeros((0, 4)), w_hh=np.zeros((0, 0))), ValueError, r"^w_hh: expected shape"),
    Case("ops-w_ih-none", "w_ih = None", lambda c: _lstm(w_ih=None), TypeError, r"^w_ih: expected a 2-D array"),
    Case("ops-w_ih-complex", "w_ih of dtype complex128", lambda c: _lstm(w_ih=np.zeros((20, 4), complex)),
         TypeError, r"^w_ih: expected a real numeric array"),
    Case("ops-b_ih-shape", "b_ih of shape (19,)", lambda c: _lstm(b_ih=np.zeros(19)),
         ValueError, r"^b_ih: expected shape \(20,\), got \(19,\)"),
    Case("ops-h0-shape", "h0 (3, 5) for B=2", lambda c: _lstm(h0=np.zeros((3, 5))),
         ValueError, r"^h0: expected shape \(2, 5\), got \(3, 5\)"),
    Case("ops-c0-shape", "c0 (2, 4) for H=5", lambda c: _lstm(c0=np.zeros((2, 4))),
         ValueError, r"^c0: expected shape \(2, 5\), got \(2, 4\)"),
    Case("ops-lengths-long", "lengths [4, 1] with T=3", lambda c: _lstm(lengths=[4, 1]),
         ValueError, r"^lengths: expected values in \[0, 3\]"),
    Case("ops-lengths-negative", "lengths [-1, 1]", lambda c: _lstm(lengths=[-1, 1]),
         ValueError, r"^lengths: expected values in \[0, 3\].*min -1"),
    Case("ops-lengths-count", "lengths [1, 2, 3] for B=2", lambda c: _lstm(lengths=[1, 2, 3]),
         ValueError, r"^lengths: expected shape \(2,\)"),
    Case("ops-lengths-fraction", "lengths [1.5, 1]", lambda c: _lstm(lengths=[1.5, 1]),
         TypeError, r"^lengths: expected integers"),
    Case("ops-lengths-bool", "lengths [True, False]", lambda c: _lstm(lengths=[True, False]),
         TypeError, r"^lengths: expected integers, got dtype bool"),
    Case("ops-reverse-int", "reverse=1 (not a bool)", lambda c: _lstm(reverse=1),
         TypeError, r"^reverse: expected True or False, got 1"),
    Case("ops-training-str", "training='yes'", lambda c: _lstm(training="yes"),
         TypeError, r"^training: expected True or False"),
    Case("ops-nonlinearity", "rnn_forward nonlinearity='sigmoid'", lambda c: _rnn(nonlinearity="sigmoid"),
         ValueError, r"^nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"),
    Case("ops-reset_after", "gru_forward reset_after='no'", lambda c: _gru_cache(reset_after="no"),
         TypeError, r"^reset_after: expected True or False"),
    # --- ops: layouts, empty dimensions, values ----------------------------------------------
    Case("ops-layouts", "Fortran-order x, strided w_ih, read-only w_hh, lengths with a 0",
         lambda c: _layouts_match_contiguous(),
         Ok(_check_layouts, "bitwise equal to the C-contiguous call"),
         see="tests/kernels/test_ops.py::test_any_memory_layout, tests/kernels/test_ops_fuzz.py"),
    Case("ops-readonly-x", "read-only x (forward and backward)", lambda c: _readonly_x(),
         Ok(_check_readonly, "accepted; x untouched; same y and dx as a writable x")),
    Case("ops-T0", "x of shape (0, 2, 4): no time steps", lambda c: _empty(0, 2),
         Ok(_check_empty, "y (0, 2, 5); h_n = h0, c_n = c0; dh0 = dh_n"),
         see="tests/kernels/test_ops.py::test_empty_batch_or_time"),
    Case("ops-B0", "x of shape (3, 0, 4): empty batch", lambda c: _empty(3, 0),
         Ok(_check_empty, "y (3, 0, 5); all gradients empty")),
    Case("ops-lengths-all-zero", "lengths [0, 0]",
         lambda c: _lstm(lengths=[0, 0], h0=np.ones((2, 5)), c0=np.full((2, 5), 2.0)),
         Ok(lambda r: bool((r[0] == 0).all() and (r[1] == 1).all() and (r[2] == 2).all()),
            "y all zero; h_n = h0, c_n = c0")),
    Case("ops-nan", "one NaN in x[1, sequence 0]", lambda c: _nan_in_one_sequence(),
         Ok(_check_nan, "NaN in sequence 0 from step 1 on; other sequences bitwise unchanged"),
         see="tests/kernels/test_ops.py::test_nan_propagates_inf_saturates"),
    Case("ops-huge", "float32 x = +-1e30", lambda c: _huge_x(),
         Ok(_check_huge, "saturates: |y| <= 1, every gradient finite")),
    Case("ops-padded-dy-nan", "dy NaN at padded steps (lengths [2, 4])", lambda c: _padded_dy_ignored(),
         Ok(_check_padded_dy, "ignored: gradients bitwise equal to a clean dy")),
    Case("ops-mixed-dtypes", "float32 x with float64 weights", lambda c: _mixed_dtypes(),
         Ok(lambda r: all(a.dtype == np.float32 for a in r),
            "computed in float32 (outputs follow x)")),
    # --- ops: backward -----------------------------------------------------------------------
    Case("ops-dy-shape", "gru_backward dy (3, 2, 4) for H=5",
         lambda c: ops.gru_backward(_gru_cache(), np.zeros((3, 2, 4))),
         ValueError, r"^dy: expected shape \(3, 2, 5\), got \(3, 2, 4\)",
         "tests/kernels/test_ops.py::test_backward_rejects_bad_gradients_and_caches"),
    Case("ops-dh_n-shape", "gru_backward dh_n (5, 2)",
         lambda c: ops.gru_backward(_gru_cache(), None, np.zeros((5, 2))),
         ValueError, r"^dh_n: expected shape \(2, 5\)"),
    Case("ops-backward-inference", "backward of a training=False forward (cache None)",
         lambda c: ops.gru_backward(_gru_cache(training=False), None),
         ValueError, r"^cache: got None; run gru_forward with training=True"),
    Case("ops-backward-wrong-cell", "lstm_backward given a GRU cache",
         lambda c: ops.lstm_backward(_gru_cache(), None), TypeError, r"^cache: .*from gru_forward"),
    Case("ops-backward-not-cache", "rnn_backward given a dict",
         lambda c: ops.rnn_backward({"h": 1}, None), TypeError, r"^cache: expected the cache"),
    # --- layers ------------------------------------------------------------------------------
    Case("layer-units-0", "LSTM(0)", lambda c: LSTM(0), ValueError, r"^units: expected a positive integer",
         "tests/nn/test_layers.py::test_bad_layer_arguments"),
    Case("layer-units-float", "LSTM(2.5)", lambda c: LSTM(2.5), ValueError, r"^units: .*got 2\.5"),
    Case("layer-dropout", "LSTM(3, dropout=1.5)", lambda c: LSTM(3, dropout=1.5), ValueError, r"^dropout: .*\[0, 1\)"),
    Case("layer-activation", "LSTM(3, activation='relu')", lambda c: LSTM(3, activation="relu"),
         ValueError, r"^activation: "),
    Case("layer-merge-mode", "Bidirectional(LSTM(2), merge_mode='max')",
         lambda c: Bidirectional(LSTM(2), merge_mode="max"), ValueError, r"^merge_mode: expected"),
    Case("layer-dropout-rate", "Dropout(-0.1)", lambda c: Dropout(-0.1), ValueError, r"^rate: expected a float in \[0, 1\)"),
    Case("layer-input-features", "built for (3, 4), given (2, 3, 5)",
         lambda c: _layer(LSTM(2)).forward(np.zeros((2, 3, 5))), ValueError,
         r"expected input shape \(batch,\) \+ \(3, 4\), got \(2, 3, 5\)"),
    Case("layer-input-2d", "LSTM given a 2-D input", lambda c: _layer(LSTM(2)).forward(np.zeros((3, 4))),
         ValueError, r"expected input with 3 dimensions"),
    Case("layer-input-str", "LSTM given strings", lambda c: _layer(LSTM(2)).forward(np.full((2, 3, 4), "a")),
         TypeError, r"expected a numeric input array"),
    Case("layer-backward-first", "LSTM.backward before any forward", lambda c: _lstm_backward_before_forward(),
         ValueError, r"backward needs a forward pass with training=True first"),
    Case("layer-backward-inference", "LSTM.backward after forward(training=False)",
         lambda c: _lstm_backward_after_inference(), ValueError, r"training=True"),
    Case("layer-backward-dy", "LSTM(return_sequences).backward dy (2, 3, 7) for units 2",
         lambda c: _lstm_backward_bad_dy(), ValueError, r"dy: expected shape \(3, 2, 2\)"),
    Case("layer-set-weights-count", "LSTM.set_weights with 2 of 3 arrays",
         lambda c: _layer(LSTM(2)).set_weights([np.zeros((4, 8)), np.zeros((2, 8))]),
         ValueError, r"expected a list of 3 arrays"),
    Case("layer-set-weights-shape", "LSTM.set_weights recurrent kernel (3, 8)",
         lambda c: _layer(LSTM(2)).set_weights([np.zeros((4, 8)), np.zeros((3, 8)), np.zeros(8)]),
         ValueError, r"weights\[1\]: expected shape \(2, 8\), got \(3, 8\)"),
    Case("layer-set-weights-unbuilt", "LSTM(2).set_weights before build", lambda c: LSTM(2).set_weights([]),
         ValueError, r"not built yet"),
    Case("layer-get-weights-unbuilt", "LSTM(2).get_weights before build", lambda c: LSTM(2).get_weights(),
         Ok(lambda r: r == [], "[] (as Keras)")),
    Case("layer-dense-backward-first", "Dense.backward before any forward",
         lambda c: _dense_backward_before_forward(), ValueError, r"backward needs a forward pass"),
    Case("layer-dense-backward-dy", "Dense(3).backward dy (2, 5)", lambda c: _dense_backward_bad_dy(),
         ValueError, r"dy: expected shape"),
    # --- models: order of calls -------------------------------------------------------------
    Case("model-fit-before-compile", "fit before compile",
         lambda c: Sequential([LSTM(2, input_shape=(4, 2))]).fit(*_xy()), ValueError,
         r"^model: call compile\(", "tests/nn/test_models.py::test_fit_before_compile_and_strings_as_data"),
    Case("model-evaluate-before-compile", "evaluate before compile",
         lambda c: Sequential([LSTM(2, input_shape=(4, 2))]).evaluate(*_xy(), verbose=0), ValueError,
         r"^model: call compile\("),
    Case("model-predict-before-build", "predict on a model without input_shape",
         lambda c: _predict_unbuilt(), Ok(lambda r: r.shape == (5, 2), "builds from the data (Keras): (5, 2)")),
    Case("model-build-no-shape", "build() with no input shape anywhere",
         lambda c: Sequential([LSTM(2)]).build(), ValueError, r"^input_shape: the model's input shape is unknown"),
    Case("model-no-layers", "predict on an empty Sequential",
         lambda c: Sequential().predict(np.zeros((2, 3, 4))), ValueError, r"^model: add layers"),
    # --- models: data -----------------------------------------------------------------------
    Case("model-evaluate-y-shape", "evaluate with targets (4, 3) for 2 classes",
         lambda c: _model().evaluate(_xy()[0], np.zeros((4, 3)), verbose=0), ValueError,
         r"^y: expected targets of shape \(N,\) \+ \(2,\)", "tests/nn/test_models.py::test_bad_input_gives_clear_errors"),
    Case("model-y-count", "fit with 3 targets for 4 samples", lambda c: _fit(_model(), _xy()[0], _xy()[1][:3]),
         ValueError, r"^y: expected 4 targets"),
    Case("model-x-features", "fit x (4, 4, 3) into input_shape (4, 2)",
         lambda c: _fit(_model(), np.zeros((4, 4, 3)), _xy()[1]), ValueError, r"expected input shape"),
    Case("model-x-str", "fit x of strings", lambda c: _fit(_model(), np.full((4, 4, 2), "a"), _xy()[1]),
         TypeError, r"^x: expected a numeric array"),
    Case("model-x-empty", "fit with 0 samples", lambda c: _fit(_model(), np.zeros((0, 4, 2)), np.zeros((0, 2))),
         ValueError, r"^x: expected at least one training sample"),
    Case("model-predict-empty", "predict with 0 samples", lambda c: _model().predict(np.zeros((0, 4, 2))),
         Ok(lambda r: r.shape == (0, 2), "empty (0, 2) array")),
    Case("model-T0", "predict x (2, 0, 2) on input_shape (None, 2)", lambda c: _zero_steps(),
         Ok(_check_zero_steps, "same as lengths [0, 0]: the initial state through the head")),
    Case("model-lengths-long", "fit lengths [9, ...] with T=4",
         lambda c: _fit(_model(), *_xy(), lengths=np.full(4, 9)), ValueError, r"^lengths: expected values in \[0, 4\]"),
    Case("model-lengths-float", "predict lengths [1.0, 2.0]",
         lambda c: _model().predict(np.ones((2, 4, 2)), lengths=np.array([1.0, 2.0])),
         ValueError, r"^lengths: expected an integer array"),
    Case("model-ragged-list", "predict on a list of (4, 2) and (2, 2) arrays", lambda c: _ragged_list(),
         Ok(_check_ragged, "padded with lengths; the short one equals it predicted alone")),
    Case("model-ragged-features", "predict on arrays (3, 4) and (2, 5)",
         lambda c: _model().predict([np.ones((3, 4)), np.ones((2, 5))]), ValueError, r"^x\[1\]: expected 4 features like x\[0\], got 5"),
    Case("model-sparse-range", "sparse labels [0, 7] for 2 classes",
         lambda c: (lambda m: (m.compile("adam", "sparse_categorical_crossentropy"),
                               _fit(m, _xy(2)[0], np.array([0, 7]))))(_model()),
         ValueError, r"^y: expected class ids in \[0, 1\], got 7 for sample 1"),
    Case("model-nan-inputs", "fit on NaN inputs", lambda c: _fit(_model(), *_xy(8, fill=np.nan)),
         ValueError, r"^x: expected finite values, got np\.float32\(nan\) at sample 0, index \(0, 0\)"),
    Case("model-inf-targets", "fit on an infinite target", lambda c: _fit(
             _model(), _xy(8)[0], np.where(np.arange(8) == 5, np.inf, 0.0)),
         ValueError, r"^y: expected finite values, got np\.float64\(inf\) at sample 5"),
    Case("model-nan-weights", "fit with a NaN weight, TerminateOnNaN", lambda c: _nan_weights_terminate(),
         Ok(_check_nan_terminate, "loss reported as nan; training stops after the first batch")),
    Case("model-huge-inputs", "fit on inputs +-1e30", lambda c: _huge_inputs_fit(),
         Ok(_check_huge_fit, "loss and weights stay finite (gates saturate)")),
    # --- models: arguments ------------------------------------------------------------------
    Case("model-epochs", "fit epochs=-1", lambda c: _fit(_model(), *_xy(), epochs=-1),
         ValueError, r"^epochs: expected a non-negative integer, got -1"),
    Case("model-batch-size", "fit batch_size=0", lambda c: _fit(_model(), *_xy(), batch_size=0),
         ValueError, r"^batch_size: expected a positive integer, got 0"),
    Case("model-callbacks", "fit callbacks=[print]", lambda c: _fit(_model(), *_xy(), callbacks=[print]),
         TypeError, r"^callbacks: expected Callback instances"),
    Case("model-dtype", "Sequential(dtype='float16')", lambda c: Sequential(dtype="float16"),
         TypeError, r"^dtype: expected 'float32' or 'float64'"),
    Case("model-seed", "Sequential(seed=-1)", lambda c: Sequential(seed=-1), ValueError, r"^seed: expected a non-negative"),
    Case("model-loss-missing", "compile('adam') without a loss", lambda c: Sequential().compile("adam"),
         ValueError, r"^loss: expected a loss name"),
    Case("model-set-weights-count", "set_weights with 4 of 5 arrays",
         lambda c: (lambda m: m.set_weights(m.get_weights()[:-1]))(_model()), ValueError,
         r"^weights: expected 5 arrays, got 4"),
    Case("model-set-weights-shape", "set_weights with kernel (3, 12) for (2, 12)",
         lambda c: (lambda m: m.set_weights([np.zeros((3, 12))] + m.get_weights()[1:]))(_model()),
         ValueError, r"^weights\[0\]: expected shape \(2, 12\), got \(3, 12\)"),
    # --- files ------------------------------------------------------------------------------
    Case("file-truncated", "load_model of a file cut in half", lambda c: load_model(c.truncated),
         ValueError, r"truncated\.rnk: not a valid rnnkernels file",
         "tests/nn/test_saving.py::test_truncated_or_corrupt_files_raise_value_error"),
    Case("file-garbage", "load_model of a text file", lambda c: load_model(c.garbage),
         ValueError, r"garbage\.rnk: not a valid rnnkernels file"),
    Case("file-empty", "load_model of an empty file", lambda c: load_model(c.empty_file),
         ValueError, r"empty\.rnk: not a valid rnnkernels file"),
    Case("file-bitflip", "load_model with one byte flipped", lambda c: load_model(c.bitflip),
         ValueError, r"bitflip\.rnk: not a valid rnnkernels file"),
    Case("file-missing", "load_model of a missing file", lambda c: load_model(c.path("missing.rnk")),
         FileNotFoundError, r"missing\.rnk"),
    Case("file-directory", "load_model of a directory", lambda c: load_model(c.empty_dir),
         ValueError, r"empty_dir': is a directory, expected a regular file"),
    Case("file-weights-only", "load_model of a save_weights file", lambda c: load_model(c.weights_file),
         ValueError, r"weights only"),
    Case("file-other-architecture", "load_weights of another architecture's file",
         lambda c: _load_weights_other_architecture(c), ValueError, r"model\.rnk: weights of layer 0 .*have shapes .*the model expects"),
    Case("file-save-no-folder", "save into a missing folder", lambda c: _model().save(c.path("no/m.rnk")),
         ValueError, r"^path: directory .*no' does not exist", "tests/nn/test_saving.py::test_failed_save_keeps_previous_file"),
    Case("file-audio-corrupt", "read_audio of a corrupt WAV",
         lambda c: __import__("rnnkernels.audio").audio.read_audio(c.corrupt_wav),
         ValueError, r"^audio file .*3_zed_0\.wav': cannot decode"),
    Case("file-audio-missing", "read_audio of a missing file",
         lambda c: __import__("rnnkernels.audio").audio.read_audio(c.path("none.wav")),
         FileNotFoundError, r"^audio file .*none\.wav': no such file"),
    Case("file-folder-missing", "load_audio_folder of a missing folder",
         lambda c: __import__("rnnkernels.audio.datasets").audio.datasets.load_audio_folder(c.path("nowhere")),
         FileNotFoundError, r"^data folder .*nowhere': no such directory"),
    Case("file-folder-empty", "load_audio_folder of an empty folder",
         lambda c: __import__("rnnkernels.audio.datasets").audio.datasets.load_audio_folder(c.empty_dir),
         ValueError, r"^data folder .*empty_dir': no audio files"),
    Case("file-not-audio-model", "AudioClassifier.load of a plain model file",
         lambda c: __import__("rnnkernels.audio.recipes").audio.recipes.AudioClassifier.load(c.model_file),
         ValueError, r"no audio\.json entry; not an audio classifier"),
    # --- command line -----------------------------------------------------------------------
    Case("cli-epochs-0", "rnnkernels train --epochs 0", lambda c: _cli("train", "--epochs", "0"),
         Exits(2), r"--epochs: .*positive integer, got '0'", "tests/cli/test_commands.py::test_bad_options_are_one_line_usage_errors"),
    Case("cli-cell", "rnnkernels train --cell foo", lambda c: _cli("train", "--cell", "foo"),
         Exits(2), r"--cell: invalid choice: 'foo'"),
    Case("cli-lr-nan", "rnnkernels train --lr nan", lambda c: _cli("train", "--lr", "nan"),
         Exits(2), r"--lr: .*positive number, got 'nan'"),
    Case("cli-batch-size", "rnnkernels train --batch-size -4", lambda c: _cli("train", "--batch-size", "-4"),
         Exits(2), r"--batch-size"),
    Case("cli-unknown-command", "rnnkernels dance", lambda c: _cli("dance"), Exits(2), r"invalid choice: 'dance'"),
    Case("cli-data-missing", "rnnkernels train --data /nonexistent",
         lambda c: _cli("train", "--data", "/nonexistent/rk-data", "--quiet"), Exits(1),
         r"data folder '/nonexistent/rk-data': no such directory", "tests/cli/test_commands.py::test_bad_paths_are_one_line_errors"),
    Case("cli-data-file", "rnnkernels train --data <a file>",
         lambda c: _cli("train", "--data", c.garbage, "--quiet"), Exits(1), r"is a file, expected a directory"),
    Case("cli-data-empty", "rnnkernels train --data <empty folder>",
         lambda c: _cli("train", "--data", c.empty_dir, "--quiet"), Exits(1), r"no audio files"),
    Case("cli-save-folder", "rnnkernels train --save /missing/m.rnk",
         lambda c: _cli("train", "--save", c.path("no/m.rnk")), Exits(1), r"--save .*does not exist"),
    Case("cli-evaluate-missing", "rnnkernels evaluate missing.rnk --data DIR",
         lambda c: _cli("evaluate", c.path("missing.rnk"), "--data", c.empty_dir), Exits(1),
         r"model file .*missing\.rnk': no such file", "tests/cli/test_commands.py::test_corrupt_model_files_are_one_line_errors"),
    Case("cli-evaluate-truncated", "rnnkernels evaluate truncated.rnk --data DIR",
         lambda c: _cli("evaluate", c.truncated, "--data", c.empty_dir), Exits(1),
         r"truncated\.rnk': corrupt or not an rnnkernels model"),
    Case("cli-evaluate-empty-data", "rnnkernels evaluate audio.rnk --data <empty folder>",
         lambda c: _cli("evaluate", c.audio_model, "--data", c.empty_dir), Exits(1), r"no audio files"),
    Case("cli-predict-corrupt-wav", "rnnkernels predict audio.rnk corrupt.wav",
         lambda c: _cli("predict", c.audio_model, c.corrupt_wav), Exits(1), r"3_zed_0\.wav': cannot decode"),
    Case("cli-predict-missing-wav", "rnnkernels predict audio.rnk missing.wav",
         lambda c: _cli("predict", c.audio_model, c.path("none.wav")), Exits(1), r"none\.wav': no such file"),
    Case("cli-predict-plain-model", "rnnkernels predict <model without audio settings> clip.wav",
         lambda c: _cli("predict", c.model_file, c.good_wav), Exits(1), r"not an audio classifier"),
    Case("cli-predict-ok", "rnnkernels predict audio.rnk clip.wav (control row)",
         lambda c: _cli("predict", c.audio_model, c.good_wav), Exits(0)),
    # --- second round (issue 22): threads, fork, files as untrusted data, lost work --------
    Case("threads-huge", "set_num_threads(100000) (was: the next LSTM call segfaulted)",
         lambda c: __import__("rnnkernels").set_num_threads(100000), ValueError,
         r"^num_threads: expected at most \d+ \(max\(64, 4 x the \d+ usable CPUs\)", "reliability/test_threads_and_fork.py"),
    Case("threads-fork", "LSTM in a child forked after a 2-thread call (was: hung)",
         lambda c: _isolated(_FORK), Ok(lambda r: r.returncode == 0 and "child 0" in r.stdout,
                                        "child runs on 1 thread, same bits; the parent keeps 2"),
         see="reliability/test_threads_and_fork.py (and multiprocessing.Pool)"),
    Case("file-fifo", "load_model / read_audio of a named pipe (was: blocked)",
         lambda c: _isolated(_FIFO, c.fifo, c.audio_fifo),
         Ok(lambda r: r.stdout.count("is a named pipe (FIFO), expected a regular file") == 2,
            "ValueError: ... is a named pipe (FIFO), expected a regular file"), see="reliability/test_model_files.py"),
    Case("file-units-6000", "a 6 kB file declaring units=6000 (was: built the layer first)",
         lambda c: load_model(c.units_6000), ValueError,
         r"weights of layer 0 .* have shapes \[\(2, 12\), \(3, 12\), \(12,\)\], its config .* gives \[\(2, 24000\)",
         "reliability/test_model_files.py"),
    Case("file-huge-npy", "an array header declaring 2^40 values (was: reached the allocator)",
         lambda c: load_model(c.huge_npy), ValueError, r"declares shape \(1048576, 1048576\) .* more than the limit"),
    Case("file-deflate-bomb", "a 64 MiB entry deflated to 64 kB (was: read whole)",
         lambda c: load_model(c.deflate_bomb), ValueError, r"have shapes \[\(16777216,\)"),
    Case("file-deep-json", "a header nested 100,000 deep (was: RecursionError)",
         lambda c: load_model(c.deep_json), ValueError, r"nested"),
    Case("file-infinity", "Infinity in a numeric field (was: OverflowError)",
         lambda c: load_model(c.infinity), ValueError, r"holds Infinity; numbers must be finite"),
    Case("file-absurd-units", "units = 10^30 (was: numpy's _ArrayMemoryError)",
         lambda c: load_model(c.absurd_units), ValueError, r"layer 0: units: expected an integer in \[1, 16,777,216\]"),
    Case("file-shape-list", "one input shape fewer than layers (was: loaded a shorter model)",
         lambda c: load_model(c.fewer_shapes), ValueError, r"2 layers but 1 input shapes"),
    Case("file-layer-list", "one layer fewer than weight groups (was: loaded a shorter model)",
         lambda c: load_model(c.fewer_layers), ValueError, r"1 layers but weights for 2"),
    Case("file-state-shape", "saved LSTM state (2, 5) for 4 units (was: failed at predict)",
         lambda c: load_model(c.bad_state), ValueError, r"states\[0\]: expected shape \(2, 4\)"),
    Case("model-lr-schedule-nan", "a schedule giving NaN (was: every weight NaN)",
         lambda c: _schedule_nan(), ValueError, r"^learning_rate: the schedule nan_rate gave nan at step 0",
         "reliability/test_training_faults.py"),
    Case("model-lr-negative", "PiecewiseConstantDecay values [0.1, -0.1]",
         lambda c: __import__("rnnkernels.optimizers").optimizers.PiecewiseConstantDecay([2], [0.1, -0.1]),
         ValueError, r"^values\[1\]: expected a non-negative finite number, got -0.1"),
    Case("model-validation-split-empty", "validation_split=0.1 of 4 samples (was: val_loss 0.0)",
         lambda c: _fit(_model(), *_xy(4), validation_split=0.1), ValueError,
         r"^validation_split: 0.1 of 4 samples leaves 0 for validation and 4 for training"),
    Case("model-sparse-last-batch", "a bad sparse label in the last batch (was: found after earlier updates)",
         lambda c: (lambda m: (m.compile("adam", "sparse_categorical_crossentropy"),
                               _fit(m, _xy(8)[0], np.array([0, 1] * 3 + [0, 5]), batch_size=2)))(_model()),
         ValueError, r"^y: expected class ids in \[0, 1\], got 5 for sample 7"),
    Case("ops-x-changed-after-forward", "x overwritten between lstm_forward and lstm_backward",
         lambda c: _x_changed_after_forward(),
         Ok(_check_x_changed, "no gradient changes, at equal lengths and with lengths= alike")),
    Case("cli-threads-huge", "rnnkernels train --threads 100000 (was: segfault)",
         lambda c: _cli("train", "--threads", "100000"), Exits(1), r"--threads 100000: expected at most"),
    Case("cli-resume-units-6000", "rnnkernels train --resume <file declaring units=6000>",
         lambda c: _cli("train", "--resume", c.units_6000), Exits(1),
         r"units6000\.rnk: not a valid rnnkernels model: weights of layer 0 .* its config"),
]


# ----------------------------------------------------------------------------- running a row
def observe(case, ctx):
    """Run one row and assert it; returns (outcome, message) for the table."""
    try:
        result = case.call(ctx)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the catalogue is about which exceptions come out
        message = " ".join(str(exc).split())
        expected = case.expected
        assert isinstance(expected, type) and isinstance(exc, expected), \
            f"{case.id}: expected {expected!r}, got {type(exc).__name__}: {message}"
        assert re.search(case.match, message), f"{case.id}: message {message!r} !~ {case.match!r}"
        return f"`{type(exc).__name__}`", message
    expected = case.expected
    if isinstance(expected, Exits):
        status, err = result
        lines = err.strip().splitlines()
        assert status == expected.status, f"{case.id}: exit {status}, stderr {err!r}"
        assert "Traceback" not in err, err
        if expected.status == 0:
            assert not lines or all("warning" in l for l in lines), err
            return "exit 0", "(no error)"
        assert len(lines) == 1, f"{case.id}: stderr is not one line: {err!r}"
        assert re.match(r"rnnkernels( \w+)?: error: ", lines[0]), lines[0]
        assert re.search(case.match, lines[0]), f"{case.id}: {lines[0]!r} !~ {case.match!r}"
        return f"exit {status}", lines[0]
    assert isinstance(expected, Ok), f"{case.id}: expected {expected.__name__}, got a result"
    verdict = expected.check(result)  # asserts itself (None) or returns a bool
    assert verdict is None or verdict is True, f"{case.id}: check failed on {str(result):.200}"
    return "ok", expected.says


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("catalogue"))


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.defect)] if case.defect else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_catalogue(case, ctx):
    observe(case, ctx)


def test_catalogue_is_large_and_ids_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- the docs table
def markdown_table():
    """The table of docs/reliability.md, from the outcomes observed now."""
    def cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    rows = ["| # | case | input | outcome | message or result | covered in depth by |",
            "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(io.StringIO()):
        ctx = Fixtures(root)
        for i, case in enumerate(CASES, 1):
            try:
                outcome, message = observe(case, ctx)
            except AssertionError as exc:
                outcome, message = "**FAILS**", str(exc)
            if case.defect:
                try:
                    case.call(ctx)
                    outcome, message = "**defect**", "returns"
                except Exception as exc:  # noqa: BLE001
                    outcome, message = f"**defect** `{type(exc).__name__}`", " ".join(str(exc).split())
                message += f"; {case.defect}"
            message = message.replace(root, "<tmp>")
            message = re.sub(r"/tmp/[\w.]+", "<tmp>", message)
            message = re.sub(r"\b(lstm|dense)_\d+\b", r"\1", message)  # auto-numbered layer names
            if len(message) > 160:
                message = message[:157] + "..."
            see = case.see.replace("tests/", "")
            rows.append(f"| {i} | `{case.id}` | {cell(case.given)} | {outcome} | {cell(message)} | {cell(see)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import warnings
    warnings.simplefilter("ignore")
    print(markdown_table())
