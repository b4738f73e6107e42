"""Fuzzing the model-file loader: random mutations of valid files (bytes: bit flips,
truncations, insertions, overwrites; the JSON header: values replaced by hostile ones,
keys dropped, lists cut or grown, then re-zipped with valid CRCs so the loader's own
checks are reached) must end in a clean ValueError naming the file, or in a model that
loads and predicts without a crash.  Nothing else: no other exception type, no hang,
no huge allocation (the limits bound it).

Budget: RNNKERNELS_LOADER_FUZZ_EXAMPLES examples per test (default 150, derandomised
in CI); RNNKERNELS_FUZZ_RANDOM=1 draws fresh seeds:

    RNNKERNELS_LOADER_FUZZ_EXAMPLES=5000 pytest tests/reliability/test_model_file_fuzz.py
"""
import copy
import io
import json
import os
import zipfile

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

from rnnkernels.audio.recipes import AudioClassifier
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, Dropout
from rnnkernels.models import Sequential, load_model

EXAMPLES = int(os.environ.get("RNNKERNELS_LOADER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("RNNKERNELS_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

X = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")


def _files():
    """Valid files of several kinds, as bytes: plain, bidirectional with states-free GRU,
    stateful with states, weights only."""
    import tempfile
    out = {}
    with tempfile.TemporaryDirectory() as d:
        m = Sequential([LSTM(3, input_shape=(5, 2), return_sequences=True), Dropout(0.1), GRU(2),
                        Dense(2, activation="softmax")], seed=0)
        m.compile("adam", "categorical_crossentropy", ["accuracy"])
        m.fit(X, np.eye(2, dtype="float32")[[0, 1, 0]], epochs=1, verbose=0)
        m.save(os.path.join(d, "a"))
        b = Sequential([Bidirectional(LSTM(2), input_shape=(None, 2)), Dense(1)], seed=1)
        b.compile("sgd", "mse")
        b.save(os.path.join(d, "b"), include_optimizer=False)
        s = Sequential([GRU(2, batch_size=3, input_shape=(5, 2), stateful=True), Dense(1)], seed=2)
        s.compile("rmsprop", "mse")
        s.predict(X, batch_size=3)
        s.save(os.path.join(d, "c"))
        for name in "abc":
            out[name] = open(os.path.join(d, name), "rb").read()
    return out


FILES = _files()


def _load_and_use(path):
    """The only outcomes allowed: ValueError naming the file, or a model that predicts."""
    try:
        model = load_model(path)
    except ValueError as e:
        assert str(path) in str(e), e
        return "refused"
    try:
        model.predict(X, batch_size=3)
    except ValueError:  # a valid model of another input shape: a clean refusal of the data
        pass
    return "loaded"


def _mutate_bytes(data, ops):
    data = bytearray(data)
    for kind, where, value in ops:
        if not data:
            break
        i = where % len(data)
        if kind == "flip":
            data[i] ^= 1 << (value % 8)
        elif kind == "set":
            data[i] = value % 256
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = bytes([value % 256]) * (1 + value % 7)
        elif kind == "delete":
            del data[i:i + 1 + value % 16]
    return bytes(data)


byte_ops = st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
                              st.integers(0, 1 << 20), st.integers(0, 1 << 16)), min_size=1, max_size=6)


@FUZZ
@given(name=st.sampled_from(sorted(FILES)), ops=byte_ops)
def test_byte_mutations_load_or_fail_cleanly(tmp_path_factory, name, ops):
    path = tmp_path_factory.mktemp("fuzz") / "m.rnk"
    path.write_bytes(_mutate_bytes(FILES[name], ops))
    event(_load_and_use(path))


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 8), st.sampled_from([0, -1, 6000, 2 ** 31, 2 ** 40, 10 ** 30]),
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.sampled_from([0.5, -0.5, 1e300]),
    st.text(max_size=8), st.sampled_from(["LSTM", "Dense", "float64", "relu", "sgd", "adam", "mse"]),
    st.lists(st.integers(-1, 9), max_size=4), st.just({}), st.just([]), st.just([[[]]]))


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate_header(header, ops):
    header = copy.deepcopy(header)
    for kind, pick, value in ops:
        paths = [p for p, _ in _paths(header) if p]
        if not paths:
            break
        path = paths[pick % len(paths)]
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if kind == "replace":
            parent[key] = value
        elif kind == "drop":
            del parent[key]
        elif kind == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif kind == "nest":
            parent[key] = [parent[key]]
    return header


header_ops = st.lists(st.tuples(st.sampled_from(["replace", "replace", "drop", "duplicate", "nest"]),
                                st.integers(0, 10 ** 6), HOSTILE), min_size=1, max_size=4)


def _rezip(data, header):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, json.dumps(header) if info.filename == "rnnkernels.json"
                         else src.read(info))
    return out.getvalue()


@FUZZ
@given(name=st.sampled_from(sorted(FILES)), ops=header_ops)
def test_header_mutations_load_or_fail_cleanly(tmp_path_factory, name, ops):
    with zipfile.ZipFile(io.BytesIO(FILES[name])) as zf:
        header = json.loads(zf.read("rnnkernels.json"))
    path = tmp_path_factory.mktemp("fuzz") / "m.rnk"
    path.write_bytes(_rezip(FILES[name], _mutate_header(header, ops)))
    event(_load_and_use(path))


@FUZZ
@given(ops=byte_ops)
def test_audio_classifier_files_load_or_fail_cleanly(tmp_path_factory, ops):
    """AudioClassifier.load (what the command line uses) has the same two outcomes; its
    errors are ValueError or FileNotFoundError-free (the file exists)."""
    path = tmp_path_factory.mktemp("fuzz") / "m.rnk"
    path.write_bytes(_mutate_bytes(_audio_file(), ops))
    try:
        AudioClassifier.load(path)
        event("loaded")
    except ValueError as e:
        assert str(path) in str(e), e
        event("refused")


_AUDIO = {}


def _audio_file():
    if "data" not in _AUDIO:
        import tempfile

        from rnnkernels.audio.recipes import DEFAULT_FEATURES, build_model
        with tempfile.TemporaryDirectory() as d:
            m = build_model(DEFAULT_FEATURES.n_features, 3, hidden=2, bidirectional=False)
            AudioClassifier(m, DEFAULT_FEATURES, ["a", "b", "c"]).save(os.path.join(d, "m"))
            _AUDIO["data"] = open(os.path.join(d, "m"), "rb").read()
    return _AUDIO["data"]


def test_the_fuzz_reaches_both_outcomes(tmp_path):
    """Guard against a fuzz that only ever sees refusals: unmutated files load, and a
    harmless header change (a dropout rate) still loads."""
    for name, data in FILES.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert _load_and_use(p) == "loaded"
    with zipfile.ZipFile(io.BytesIO(FILES["a"])) as zf:
        header = json.loads(zf.read("rnnkernels.json"))
    header["model"]["layers"][1]["config"]["rate"] = 0.5
    p = tmp_path / "rate.rnk"
    p.write_bytes(_rezip(FILES["a"], header))
    assert _load_and_use(p) == "loaded"
