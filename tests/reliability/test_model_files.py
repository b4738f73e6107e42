"""A model file is untrusted data: every hostile file the issue found (a zip bomb, sizes the
config declares but the file does not hold, a 2^40-element array header, deep nesting,
Infinity, layer and shape lists that disagree, states of the wrong shape, a named pipe)
is a ValueError naming the file, before anything large is allocated; on the command line
one line.  Cases that could exhaust memory or block run in a child process with a timeout."""
import json
import os
import zipfile

import numpy as np
import pytest

from helpers.archives import entries, header, npy_bytes, npy_claiming, rewrite
from helpers.isolated import one_error_line, run_cli, run_python
from rnnkernels.engine import saving
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, Layer
from rnnkernels.models import Sequential, load_model


def _model():
    m = Sequential([LSTM(3, input_shape=(4, 2)), Dense(2, activation="softmax")], seed=0)
    m.compile("adam", "categorical_crossentropy", ["accuracy"])
    return m


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "good.rnk"
    m = _model()
    x = np.random.default_rng(0).normal(size=(8, 4, 2)).astype("float32")
    m.fit(x, np.eye(2, dtype="float32")[np.arange(8) % 2], epochs=1, batch_size=4, verbose=0)
    m.save(path)
    return str(path)


def _refused(path, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        load_model(path)
    assert str(info.value).startswith(str(path)), info.value
    return str(info.value)


def test_config_declaring_6000_units_is_refused_before_any_layer_is_built(good, tmp_path, monkeypatch):
    def units(h):
        h["model"]["layers"][0]["config"]["units"] = 6000
    bad = rewrite(good, tmp_path / "units.rnk", units)
    assert os.path.getsize(bad) < 10_000
    built = []
    monkeypatch.setattr(Layer, "build", lambda self, *a, **k: built.append(self.name))
    _refused(bad, r"weights of layer 0 \(lstm.*\) have shapes \[\(2, 12\), \(3, 12\), \(12,\)\], its config "
                  r"\(input shape \(4, 2\)\) gives \[\(2, 24000\), \(6000, 24000\), \(24000,\)\]")
    assert built == []  # nothing was built (nor initialised): the shapes were compared first


def test_absurd_sizes_in_the_config_are_refused(good, tmp_path):
    for i, (key, value) in enumerate([("units", 10 ** 30), ("units", -3), ("units", True),
                                      ("input_shape", [4, 2 ** 40]), ("batch_size", 0)]):
        def change(h, key=key, value=value):
            h["model"]["layers"][0]["config"][key] = value
        _refused(rewrite(good, tmp_path / f"size{i}.rnk", change), rf"layer 0: {key}: expected an integer in \[1, ")

    def huge_shape(h):
        h["model"]["built_input_shapes"][0] = [4, 2 ** 40]
    _refused(rewrite(good, tmp_path / "shape.rnk", huge_shape), r"layer 0: input shape: expected an integer")


def test_an_array_header_declaring_2_40_elements_never_reaches_the_allocator(good, tmp_path):
    name = "arrays/weights/0/0000.npy"
    bad = rewrite(good, tmp_path / "huge.rnk", replace={name: npy_claiming((1 << 20, 1 << 20), data=b"\0" * 64)})
    _refused(bad, r"declares shape \(1048576, 1048576\) \(1,099,511,627,776 values\), more than the limit")
    # within the element limit, but not what the entry holds
    bad = rewrite(good, tmp_path / "short.rnk", replace={name: npy_claiming((2, 1 << 28), data=b"\0" * 64)})
    _refused(bad, r"declares shape \(2, 268435456\) of float32 \(2,147,483,648 bytes\) but holds 64 bytes")


def test_a_zip_bomb_is_refused_without_inflating_it(good, tmp_path):
    """A 1 GiB array of zeros deflates to about 1 MB; the loader reads its 128-byte .npy header,
    finds a shape the config does not give, and stops: the child's peak memory stays small."""
    items = entries(good)
    rebuilt = str(tmp_path / "bomb2.rnk")
    with zipfile.ZipFile(rebuilt, "w") as zf:
        for name, data in items.items():
            if name != "arrays/weights/0/0000.npy":
                zf.writestr(name, data)
        info = zipfile.ZipInfo("arrays/weights/0/0000.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            f.write(npy_claiming((1 << 28,)))
            zeros = bytes(1 << 20)
            for _ in range(1024):
                f.write(zeros)
    assert os.path.getsize(rebuilt) < 3 << 20
    r = run_python("""
import resource, sys
from rnnkernels.models import load_model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(sys.argv[1])
except ValueError as e:
    print("refused:", e)
print("grew_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""", args=[rebuilt], timeout=120)
    assert r.returncode == 0, r
    assert "refused:" in r.stdout and "have shapes [(268435456,)" in r.stdout, r
    grew = int(r.stdout.split("grew_kib")[1])
    assert grew < 64 * 1024, f"the loader's peak memory grew by {grew} KiB"


def test_entry_sizes_are_checked_before_reading(good, tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "MAX_ENTRY_BYTES", 100)
    _refused(good, r"entry 'rnnkernels.json' inflates to [\d,]+ bytes, more than the limit of 100")
    monkeypatch.undo()
    # a stored entry declaring more bytes than the file holds after it
    data = bytearray(open(good, "rb").read())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("arrays/weights/1/0000.npy")
    at = bytes(data).find(b"arrays/weights/1/0000.npy", bytes(data).find(b"PK\x01\x02"))
    entry = bytes(data).rfind(b"PK\x01\x02", 0, at)
    data[entry + 20:entry + 24] = (10 ** 9).to_bytes(4, "little")  # compressed size
    data[entry + 24:entry + 28] = (10 ** 9).to_bytes(4, "little")  # uncompressed size
    bad = tmp_path / "beyond.rnk"
    bad.write_bytes(bytes(data))
    assert info.compress_size < 10 ** 9
    _refused(bad, r"declares 1,000,000,000 bytes at offset [\d,]+, beyond the file's [\d,]+ bytes")


def test_deep_nesting_and_non_finite_numbers_are_refused(good, tmp_path):
    h = header(good)
    text = json.dumps(h)
    deep = text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    _refused(rewrite(good, tmp_path / "deep.rnk", header_text=deep), r"nested")
    just_deep = text[:-1] + ', "x": ' + "[" * 70 + "]" * 70 + "}"
    _refused(rewrite(good, tmp_path / "deep70.rnk", header_text=just_deep), r"nested more than 64 levels")
    for i, literal in enumerate(["Infinity", "-Infinity", "NaN", "1e999"]):
        bad = text.replace('"dropout": 0.0', f'"dropout": {literal}', 1)
        assert bad != text
        _refused(rewrite(good, tmp_path / f"inf{i}.rnk", header_text=bad), r"not finite|finite")
    big = text.replace('"epochs_trained": 1', '"epochs_trained": ' + "9" * 5000)
    _refused(rewrite(good, tmp_path / "bigint.rnk", header_text=big), r"not a valid rnnkernels file")
    _refused(rewrite(good, tmp_path / "bool.rnk", header_text=text.replace('"epochs_trained": 1', '"epochs_trained": 1e300')),
             r"epochs_trained: expected a non-negative integer")


def test_layer_and_shape_lists_must_agree(good, tmp_path):
    def fewer_shapes(h):
        h["model"]["built_input_shapes"].pop()
    _refused(rewrite(good, tmp_path / "a.rnk", fewer_shapes), r"2 layers but 1 input shapes")

    def fewer_layers(h):
        h["model"]["layers"].pop()
        h["model"]["built_input_shapes"].pop()
    _refused(rewrite(good, tmp_path / "b.rnk", fewer_layers), r"1 layers but weights for 2")

    def no_layers(h):
        h["model"]["layers"], h["model"]["built_input_shapes"] = [], []
    _refused(rewrite(good, tmp_path / "c.rnk", no_layers), r"0 layers; expected 1 to")

    def more_arrays(h):
        h["arrays"]["weights/0"] = 4
    _refused(rewrite(good, tmp_path / "d.rnk", more_arrays), r"no entry 'arrays/weights/0/0003.npy'")


def test_saved_states_of_the_wrong_shape_are_refused_at_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    m = Sequential([LSTM(4, batch_size=2, input_shape=(None, 3), stateful=True), Dense(1)], seed=0)
    m.compile("sgd", "mse")
    m.predict(x, batch_size=2)
    m.save(tmp_path / "s.rnk")
    assert load_model(tmp_path / "s.rnk").layers[0].states[0].shape == (2, 4)
    for i, state in enumerate([np.zeros((2, 5), "float32"), np.zeros((3, 4), "float32"),
                               np.zeros((2, 4, 1), "float32"), np.full((2, 4), np.inf, "float32")]):
        bad = rewrite(tmp_path / "s.rnk", tmp_path / f"s{i}.rnk",
                      replace={"arrays/states/0/0000.npy": npy_bytes(state)})
        _refused(bad, r"states\[0\]: expected (shape \(2, 4\)|finite values)")

    def states_for_dense(h):
        h["arrays"]["states/1"] = 1
    bad = rewrite(tmp_path / "s.rnk", tmp_path / "s-dense.rnk", states_for_dense,
                  replace={"arrays/states/1/0000.npy": npy_bytes(np.zeros((2, 1), "float32"))})
    _refused(bad, r"states for layer 1, which is not a stateful layer")


def test_bidirectional_and_gru_files_still_round_trip(tmp_path):
    m = Sequential([Bidirectional(GRU(3, return_sequences=True), input_shape=(None, 2)), LSTM(2), Dense(2)], seed=1)
    m.compile("adam", "mse")
    m.save(tmp_path / "m.rnk")
    loaded = load_model(tmp_path / "m.rnk")
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_named_pipe_is_refused_not_waited_on(good, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    fifo = str(tmp_path / "pipe.rnk")
    wav = str(tmp_path / "pipe.wav")
    os.mkfifo(fifo)
    os.mkfifo(wav)
    r = run_python("""
import sys
from rnnkernels.models import load_model
from rnnkernels.audio import read_audio
from rnnkernels.audio.recipes import AudioClassifier
for call in (lambda: load_model(sys.argv[1]), lambda: AudioClassifier.load(sys.argv[1]),
             lambda: read_audio(sys.argv[2])):
    try:
        call()
    except ValueError as e:
        print("refused:", e)
""", args=[fifo, wav], timeout=60)
    assert not r.timed_out, "a named pipe blocked the loader"
    assert r.returncode == 0 and r.stdout.count("is a named pipe (FIFO), expected a regular file") == 3, r
    line = one_error_line(run_cli(["predict", fifo, wav], timeout=120))
    assert "pipe.rnk': is a named pipe (FIFO), expected a regular file" in line, line
    line = one_error_line(run_cli(["train", "--resume", fifo, "--epochs", "1"], timeout=120))
    assert "is a named pipe (FIFO)" in line, line


def test_cli_bad_model_files_are_one_line_errors(good, tmp_path):
    def units(h):
        h["model"]["layers"][0]["config"]["units"] = 6000
    deep = json.dumps(header(good))[:-1] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
    for bad in (rewrite(good, tmp_path / "u.rnk", units), rewrite(good, tmp_path / "n.rnk", header_text=deep)):
        # the audio entry is what `predict` reads first: give these files one, as --save does
        with zipfile.ZipFile(bad, "a") as zf:
            zf.writestr("audio.json", json.dumps({"format": "rnnkernels.audio_classifier", "version": "0",
                                                  "features": {}, "label_names": ["a", "b"]}))
        r = run_cli(["evaluate", bad, "--data", str(tmp_path)], timeout=120)
        line = one_error_line(r)
        assert line.startswith("rnnkernels: error: ") and os.path.basename(bad) in line, line


def test_the_shape_a_layer_is_built_with_must_be_the_saved_one(good, tmp_path, monkeypatch):
    """The model builds its first layer from the config's input_shape and each next one from
    the previous output: a file whose saved shapes disagree is refused before building."""
    def declared(h):
        h["model"]["layers"][0]["config"]["input_shape"] = [4, 1 << 24]
    built = []
    monkeypatch.setattr(Layer, "build", lambda self, *a, **k: built.append(self.name))
    _refused(rewrite(good, tmp_path / "declared.rnk", declared),
             r"layer 0 \(lstm.*\): saved input shape \(4, 2\), but it would be built for \(4, 16777216\)")

    def second(h):
        h["model"]["built_input_shapes"][1] = [1 << 24]
    _refused(rewrite(good, tmp_path / "second.rnk", second),
             r"layer 1 \(dense.*\): saved input shape \(16777216,\), but it would be built for \(3,\)")
    assert built == []


def test_audio_settings_are_bounded_and_must_match_the_model(tmp_path):
    from rnnkernels.audio.recipes import DEFAULT_FEATURES, AudioClassifier, build_model
    path = tmp_path / "a.rnk"
    AudioClassifier(build_model(DEFAULT_FEATURES.n_features, 3, hidden=2, bidirectional=False),
                    DEFAULT_FEATURES, ["a", "b", "c"]).save(path)
    assert AudioClassifier.load(path).label_names == ["a", "b", "c"]

    def audio(change):
        meta = json.loads(entries(path)["audio.json"])
        change(meta)
        return rewrite(path, tmp_path / "b.rnk", replace={"audio.json": json.dumps(meta).encode()})

    for change, pattern in [
            (lambda m: m["features"].update(n_mels=10 ** 9), r"bad audio.json \(features: n_mels 1000000000 is above"),
            (lambda m: m["features"].update(n_mfcc=13), r"the model reads 20 features per frame, audio.json describes 13"),
            (lambda m: m.update(label_names=["a", "b"]), r"the model has 3 outputs, audio.json names 2 classes"),
            (lambda m: m.update(label_names="abc"), r"label_names: expected a list")]:
        with pytest.raises(ValueError, match=pattern):
            AudioClassifier.load(audio(change))
