"""The rnnkernels command line: options, one-line errors, Ctrl-C, train/evaluate/predict/bench."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers.environment import package_env


from rnnkernels import __version__, cli
from rnnkernels.cli import plots

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

# Subprocesses must import the rnnkernels this test imported (the installed
# package in CI, whose compiled modules the source tree lacks), not whatever
# the working directory would put first on sys.path.
ENV = package_env()


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles, status=1):
    assert code == status
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """A small FSDD-style folder cut from the embedded digits: 3 speakers x 10 digits x 8 takes."""
    from rnnkernels.audio.datasets import load_spoken_digits

    folder = tmp_path_factory.mktemp("digits")
    ds = load_spoken_digits()
    for i in range(len(ds)):
        if ds.speakers[i] != "nicolas" and ds.takes[i] < 8:
            name = ds.sources[i].rsplit(":", 1)[1]
            soundfile.write(folder / f"{name}.wav", ds.waveforms[i], 8000, subtype="PCM_16")
    return folder


# --- options and one-line errors -------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--hidden", "many"], "--hidden"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--cell", "transformer"], "--cell"),
    (["train", "--split", "alphabetical"], "--split"),
    (["train", "--seed", "-3"], "--seed"),
    (["train", "--warp", "1"], "--warp"),
    (["train", "--warp", "-0.1"], "--warp"),
    (["train", "--warp", "nan"], "--warp"),
    (["train", "--pooling", "max"], "--pooling"),
    (["train", "--frobnicate"], "--frobnicate"),
    (["dance"], "dance"),
    ([], "COMMAND"),
    (["predict", "model.rnk"], "FILE"),
    (["evaluate", "model.rnk"], "--data"),
])
def test_bad_options_are_one_line_usage_errors(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, needle, status=2)


def test_bad_paths_are_one_line_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "nowhere", "no such directory")
    code, _, err = run_cli(capsys, "train", "--save", str(tmp_path / "no" / "m.rnk"))
    assert_one_line_error(code, err, "--save", "does not exist")
    code, _, err = run_cli(capsys, "train", "--report", str(tmp_path))
    assert_one_line_error(code, err, "--report", "directory")
    code, _, err = run_cli(capsys, "train", "--test-data", str(tmp_path))
    assert_one_line_error(code, err, "--test-data needs --data")
    code, _, err = run_cli(capsys, "train", "--test-speaker", "lucas")
    assert_one_line_error(code, err, "--test-speaker needs --split speaker")
    code, _, err = run_cli(capsys, "train", "--split", "speaker", "--test-speaker", "zed")
    assert_one_line_error(code, err, "zed")


def test_corrupt_model_files_are_one_line_errors(capsys, tmp_path):
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.zeros(800, np.float32), 8000)
    cases = {"missing.rnk": None, "junk.rnk": b"not a model", "empty.rnk": b""}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        code, _, err = run_cli(capsys, "predict", str(tmp_path / name), str(clip))
        assert_one_line_error(code, err, name)
        code, _, err = run_cli(capsys, "evaluate", str(tmp_path / name), "--data", str(tmp_path))
        assert_one_line_error(code, err, name)


def test_version_and_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rnnkernels", "--version"], capture_output=True,
                         text=True, cwd=tmp_path, env=ENV)
    assert out.returncode == 0 and out.stdout.strip() == f"rnnkernels {__version__}"
    out = subprocess.run([sys.executable, "-m", "rnnkernels", "train", "--epochs", "x"],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, "-m", "rnnkernels.cli", "--version"], capture_output=True,
                         text=True, cwd=tmp_path, env=ENV)
    assert out.returncode == 0 and out.stdout.strip() == f"rnnkernels {__version__}"


def test_bench_has_one_front_end(capsys, monkeypatch):
    """``rnnkernels bench`` parses the bench's own options (the ones of
    ``python -m rnnkernels.bench``) and hands them to its run."""
    import rnnkernels.bench as bench

    seen = []
    monkeypatch.setattr(bench, "run", lambda options: seen.append(options) or 0)
    assert cli.main(["bench", "--cells", "gru", "--quick"]) == 0
    assert seen[0].cells == ["gru"] and seen[0].quick and seen[0].sizes == list(bench.cases.SIZES)
    assert cli.main(["bench", "--help"]) == 0
    options = set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out))
    bench.build_parser().print_help()
    assert options == set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out)) >= {"--cells", "--targets"}
    assert cli.main(["bench", "--cells", "nope"]) == 2
    assert "--cells" in capsys.readouterr().err


# --- train / evaluate / predict ---------------------------------------------------------------------

def test_tiny_train_then_evaluate_and_predict(capsys, tmp_path, digit_folder, monkeypatch):
    model, report, plot = tmp_path / "m.rnk", tmp_path / "r.json", tmp_path / "p.png"
    code, out, err = run_cli(capsys, "train", "--data", str(digit_folder), "--epochs", "2",
                             "--hidden", "8", "--n-mels", "20", "--threads", "1", "--save",
                             str(model), "--report", str(report), "--plot", str(plot))
    assert code == 0, err
    assert "test accuracy" in out and "Epoch 2/2" in err  # summary table and progress bars
    r = json.loads(report.read_text())
    for key in ("train_seconds", "test_accuracy", "test_loss", "epochs", "n_train", "n_test",
                "history", "threads", "version", "options", "command_options"):
        assert key in r, key
    assert r["n_train"] == 90 and r["n_test"] == 150 and r["epochs"] == 2 and r["threads"] == 1
    assert len(r["history"]["loss"]) == len(r["history"]["val_accuracy"]) == 2
    assert r["features"]["n_mels"] == 20 and r["version"] == __version__
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]  # atomic writes leave nothing
    figures = []  # the accuracy panel: the last test accuracy in the legend, no label on the curves
    monkeypatch.setattr(plots, "_save_figure", lambda fig, path: figures.append(fig))
    monkeypatch.setattr(plots._pyplot(), "close", lambda fig: None)
    plots.training_figure(r, str(plot))
    accuracy = figures[0].axes[1]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [
        "train", f"test (last {100 * r['history']['val_accuracy'][-1]:.1f}%)"]
    assert not accuracy.texts

    # evaluate on the test takes gives the report's numbers: same features (n_mels=20) from the file
    test_folder = tmp_path / "test"
    test_folder.mkdir()
    for f in os.listdir(digit_folder):
        if int(f.split("_")[2][:-4]) < 5:
            os.link(digit_folder / f, test_folder / f)
    code, out, err = run_cli(capsys, "evaluate", str(model), "--data", str(test_folder),
                             "--report", str(tmp_path / "e.json"))
    assert code == 0, err
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n"] == 150 and e["accuracy"] == pytest.approx(r["test_accuracy"])
    assert e["loss"] == pytest.approx(r["test_loss"], rel=1e-4)

    files = sorted(str(test_folder / f) for f in os.listdir(test_folder))[:3]
    code, out, err = run_cli(capsys, "predict", str(model), *files, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [row["file"] for row in rows] == files
    for row in rows:
        probs = row["probabilities"]
        assert sorted(probs, key=int) == [str(d) for d in range(10)]
        assert sum(probs.values()) == pytest.approx(1, abs=1e-4)
        assert row["label"] == max(probs, key=probs.get)
    code, out, err = run_cli(capsys, "predict", str(model), files[0], str(tmp_path / "r.json"))
    assert_one_line_error(code, err, "r.json", "cannot decode")


def test_corrupt_file_in_data_folder_is_skipped_with_a_warning(capsys, tmp_path, digit_folder):
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(os.listdir(digit_folder))[::4]:
        os.link(digit_folder / f, data / f)
    (data / "3_george_1.wav").write_bytes(b"RIFF....WAVEjunk")
    code, out, err = run_cli(capsys, "train", "--data", str(data), "--split", "random",
                             "--epochs", "1", "--hidden", "4", "--quiet", "--no-bidirectional",
                             "--cell", "lstm")
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "3_george_1.wav" in warning[0]


def _ctrl_c_at_start_of_epoch(monkeypatch, epoch):
    """Make the training recipe raise KeyboardInterrupt as (0-based) ``epoch`` begins."""
    from rnnkernels.audio import recipes

    real_begin = recipes._EpochHooks.on_epoch_begin

    def interrupted(self, e, logs=None):
        if e == epoch:
            raise KeyboardInterrupt
        return real_begin(self, e, logs)

    monkeypatch.setattr(recipes._EpochHooks, "on_epoch_begin", interrupted)


def test_ctrl_c_exits_130_and_keeps_the_last_complete_epoch(capsys, tmp_path, digit_folder,
                                                            monkeypatch):
    from rnnkernels.models import load_model

    _ctrl_c_at_start_of_epoch(monkeypatch, 1)  # during epoch 2
    model = tmp_path / "m.rnk"
    code, out, err = run_cli(capsys, "train", "--data", str(digit_folder), "--epochs", "3",
                             "--hidden", "4", "--quiet", "--save", str(model))
    assert code == 130
    assert err.strip().splitlines() == [
        f"rnnkernels: interrupted during epoch 2; the model of epoch 1 is kept in {str(model)!r}"]
    assert load_model(str(model)).epochs_trained == 1


# --- --warp, --pooling, --resume ------------------------------------------------------------------

def _tiny(digit_folder, *more, quiet=True):
    """A quick run on the small digit folder (a few seconds)."""
    return ("train", "--data", str(digit_folder), "--hidden", "4", "--n-mels", "20", "--threads", "1",
            *(("--quiet",) if quiet else ())) + more


def test_warp_and_pooling_reach_the_recipe(capsys, tmp_path, digit_folder, monkeypatch):
    from rnnkernels.audio import recipes
    from rnnkernels.layers import GlobalAveragePooling1D
    from rnnkernels.models import load_model

    warps = []
    real_warp = recipes.frequency_warp

    def spy(batch, lengths, rng, config, max_warp=0.1):
        warps.append(max_warp)
        return real_warp(batch, lengths, rng, config, max_warp)

    monkeypatch.setattr(recipes, "frequency_warp", spy)
    report, model = tmp_path / "r.json", tmp_path / "m.rnk"
    code, out, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "2", "--warp", "0.05",
                                            "--pooling", "last", "--report", str(report),
                                            "--save", str(model)))
    assert code == 0, err
    r = json.loads(report.read_text())
    assert warps == [0.05] * 2 * r["n_train"]  # every utterance warped each epoch, by the asked size
    assert r["options"]["warp"] == 0.05 and r["options"]["pooling"] == "last"
    assert r["augmentation"] == "frequency warp +/-5%, SpecAugment masks"
    assert "last state" in r["model"]
    m = load_model(str(model))
    assert not any(isinstance(l, GlobalAveragePooling1D) for l in m.layers)
    assert m.layers[0].return_sequences is False
    warps.clear()
    code, out, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "1", "--warp", "0",
                                            "--report", str(report)))
    assert code == 0, err
    assert warps == [] and json.loads(report.read_text())["augmentation"] == "SpecAugment masks"


def _weights_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_resume_continues_exactly_where_the_run_stopped(capsys, tmp_path, digit_folder):
    """2 epochs, then --resume to 3, gives the very model of 3 epochs in one run: the optimizer's
    moments and step count, the epochs' shuffling and the augmentation draws all continue."""
    from rnnkernels.models import load_model

    paths = {k: str(tmp_path / f"{k}.rnk") for k in ("whole", "half", "resumed")}
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "3", "--save", paths["whole"]))
    assert code == 0, err
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "2", "--save", paths["half"]))
    assert code == 0, err
    report = tmp_path / "r.json"
    code, out, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "3", "--resume", paths["half"],
                                            "--save", paths["resumed"], "--report", str(report)))
    assert code == 0, err
    assert f"1 (epoch 3, resumed from {paths['half']})" in out
    whole, half, resumed = (load_model(paths[k]) for k in ("whole", "half", "resumed"))
    assert (half.epochs_trained, resumed.epochs_trained) == (2, 3)
    assert resumed.optimizer.iterations == whole.optimizer.iterations == 3 * 3  # 90 files, batch 32
    assert _weights_equal(resumed, whole) and not _weights_equal(half, whole)
    for x, y in zip(resumed.optimizer.get_state()[1], whole.optimizer.get_state()[1]):
        np.testing.assert_array_equal(x, y)
    r = json.loads(report.read_text())
    assert r["resumed_from"] == {"path": paths["half"], "epochs_trained": 2}
    assert r["epochs"] == 1 and len(r["history"]["loss"]) == 1
    # in place: --save the file being resumed; the progress bar numbers the epochs on
    code, out, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "4", "--resume", paths["half"],
                                            "--save", paths["half"], quiet=False))
    assert code == 0, err
    assert "Epoch 3/4" in err and "Epoch 4/4" in err and "Epoch 1/" not in err
    assert load_model(paths["half"]).epochs_trained == 4


def test_ctrl_c_in_a_resumed_run_names_the_kept_epoch(capsys, tmp_path, digit_folder, monkeypatch):
    from rnnkernels.models import load_model

    model = str(tmp_path / "m.rnk")
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "2", "--save", model))
    assert code == 0, err
    _ctrl_c_at_start_of_epoch(monkeypatch, 2)  # during epoch 3
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "5", "--resume", model,
                                          "--save", model))
    assert code == 130
    assert err.strip().splitlines() == [
        f"rnnkernels: interrupted during epoch 3; the model of epoch 2 is kept in {model!r}"]
    assert load_model(model).epochs_trained == 2


def _checkpoint(path, n_features=20, n_classes=10, include_optimizer=True, weights_only=False):
    """A model of recipes.build_model trained one epoch on noise, saved by ModelCheckpoint."""
    from rnnkernels.audio import recipes
    from rnnkernels.callbacks import ModelCheckpoint

    model = recipes.build_model(n_features, n_classes, hidden=4)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, n_features)).astype("float32"), rng.integers(0, n_classes, 8)
    checkpoint = ModelCheckpoint(str(path), save_weights_only=weights_only)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    if not include_optimizer:
        model.save(str(path), include_optimizer=False)
    return model


def test_resume_from_a_model_checkpoint_file(capsys, tmp_path, digit_folder):
    from rnnkernels.models import load_model

    path = tmp_path / "ckpt.rnk"
    start = _checkpoint(path)
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "2", "--resume", str(path),
                                          "--save", str(tmp_path / "m.rnk")))
    assert code == 0, err
    m = load_model(str(tmp_path / "m.rnk"))
    assert m.epochs_trained == 2 and m.optimizer.iterations == 1 + 3  # its step, then 90 files / 32
    assert not _weights_equal(m, start)


def test_bad_resume_files_are_one_line_errors(capsys, tmp_path, digit_folder):
    from rnnkernels.layers import LSTM, Dense
    from rnnkernels.models import Sequential

    good = tmp_path / "good.rnk"
    code, _, err = run_cli(capsys, *_tiny(digit_folder, "--epochs", "1", "--save", str(good)))
    assert code == 0, err
    saved = good.read_bytes()
    renamed = tmp_path / "renamed"  # the same recordings, classes d0..d9 instead of 0..9
    renamed.mkdir()
    for f in os.listdir(digit_folder):
        os.link(digit_folder / f, renamed / f"d{f}")
    (tmp_path / "junk.rnk").write_bytes(b"not a model")
    (tmp_path / "cut.rnk").write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    _checkpoint(tmp_path / "weights.rnk", weights_only=True)
    _checkpoint(tmp_path / "noopt.rnk", include_optimizer=False)
    _checkpoint(tmp_path / "f13.rnk", n_features=13)
    _checkpoint(tmp_path / "c5.rnk", n_classes=5)
    other = Sequential([LSTM(4, input_shape=(None, 20)), Dense(10, activation="softmax")])
    other.compile("adam", "sparse_categorical_crossentropy")
    other.save(str(tmp_path / "other.rnk"))
    cases = [
        ("missing.rnk", (), "no such file"),
        ("", (), "is a directory, expected a regular file"),
        ("junk.rnk", (), "corrupt or not an rnnkernels model"),
        ("cut.rnk", (), "corrupt"),
        ("weights.rnk", (), "holds weights only"),
        ("noopt.rnk", (), "holds no optimizer state"),
        ("good.rnk", ("--cell", "lstm"),
         "the model was trained with --cell gru, this command has --cell lstm"),
        ("good.rnk", ("--no-bidirectional",),
         "trained with --bidirectional, this command has --no-bidirectional"),
        ("good.rnk", ("--pooling", "last"), "trained with --pooling mean"),
        ("good.rnk", ("--n-mfcc", "13"),
         "trained on features with --n-mfcc 20, this command computes --n-mfcc 13"),
        ("good.rnk", ("--epochs", "1"),
         "has trained 1 epochs already and --epochs 1 asks for 1 in all"),
        ("f13.rnk", (), "the model takes 13 features per frame, this command's features have 20"),
        ("c5.rnk", (), "the model has 5 classes, the training data has 10"),
        ("other.rnk", ("--cell", "lstm", "--no-bidirectional", "--pooling", "last"),
         "not a model of the train recipe"),
        ("good.rnk", ("--data", str(renamed)), "the model's classes ['0', '1', "),
    ]
    for name, more, needle in cases:
        path = str(tmp_path / name)
        epochs = () if "--epochs" in more else ("--epochs", "2")
        argv = _tiny(digit_folder, *epochs, "--resume", path, *more)
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, "--resume", needle)
    assert good.read_bytes() == saved  # a refused resume leaves the file alone


def test_bad_resume_file_in_a_subprocess_is_one_line(tmp_path):
    (tmp_path / "junk.rnk").write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "rnnkernels", "train", "--resume", "junk.rnk",
                          "--epochs", "2"], capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "rnnkernels: error: --resume 'junk.rnk': corrupt or not an rnnkernels model "
        "(File is not a zip file)"]


@pytest.mark.slow
def test_default_train_reaches_97_percent(tmp_path):
    """The README's main command: embedded digits, official split, default recipe."""
    report = tmp_path / "r.json"
    out = subprocess.run([sys.executable, "-m", "rnnkernels", "train", "--report", str(report)],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr
    r = json.loads(report.read_text())
    assert r["n_train"] == 1800 and r["n_test"] == 200
    assert r["test_accuracy"] >= 0.97
