"""Interrupted training: a real Ctrl-C (SIGINT) during ``rnnkernels train`` and during
``Sequential.fit``; what is kept, and resuming to the same final weights.

The in-process tests of the deferral itself (batch boundary, second Ctrl-C) are in
tests/nn/test_models.py; checkpoint round trips and a simulated interrupt of the CLI in
tests/nn/test_saving.py and tests/cli/test_commands.py.  Here the signal is real.
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.environment import package_env

import rnnkernels
from rnnkernels import callbacks as cbs
from rnnkernels.layers import GRU, LSTM, Dense, Dropout
from rnnkernels.models import Sequential, load_model

# The subprocess must import the rnnkernels this test imported (the installed
# package in CI, whose compiled modules the source tree lacks).


@pytest.fixture
def tone_folder(tmp_path):
    """FSDD-style folder: 3 classes (tones of different pitch) x 2 speakers x 10 takes, 0.25 s."""
    soundfile = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    folder = tmp_path / "tones"
    folder.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(2000) / 8000
    for label, hz in enumerate((300, 700, 1500)):
        for speaker in ("ann", "bob"):
            for take in range(10):
                wave = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.02 * rng.normal()) * t)
                wave += 0.02 * rng.normal(size=t.size)
                soundfile.write(folder / f"{label}_{speaker}_{take}.wav", wave, 8000, subtype="PCM_16")
    return folder


def test_ctrl_c_during_cli_train_exits_130_and_keeps_a_loadable_model(tmp_path, tone_folder):
    from rnnkernels.audio.recipes import AudioClassifier

    model = tmp_path / "model.rnk"
    env = package_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnkernels", "train", "--data", str(tone_folder), "--epochs", "50",
         "--hidden", "4", "--no-bidirectional", "--n-mels", "16", "--n-mfcc", "8", "--batch-size", "4",
         "--threads", "1", "--quiet", "--save", str(model)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not model.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model.exists(), "no checkpoint appeared: " + (proc.stderr.read() if proc.poll() is not None else "timeout")
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    m = re.fullmatch(r"rnnkernels: interrupted during epoch (\d+); the model of epoch (\d+) is kept "
                     r"in '(.*)'", lines[0])
    assert m, lines[0]
    during, kept = int(m[1]), int(m[2])
    assert kept == during - 1 >= 1 and m[3] == str(model)
    # The kept file is complete: the classifier loads, holds the epoch it names, and predicts.
    classifier = AudioClassifier.load(model)
    assert classifier.model.epochs_trained == kept
    assert classifier.label_names == ["0", "1", "2"]
    probs = classifier.predict_files([str(tone_folder / "2_ann_0.wav")])
    assert probs.shape == (1, 3) and np.isfinite(probs).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.rnk", "tones"]  # no temp files


def _data(n=48):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 7, 3)).astype("float32")
    x[:, :, 0] += labels[:, None]
    return x, np.eye(3, dtype="float32")[labels]


def _model():
    # Dropout and shuffling: resuming must also replay each epoch's random draws.
    m = Sequential([GRU(6, return_sequences=True, input_shape=(7, 3), dropout=0.1), LSTM(5),
                    Dropout(0.2), Dense(3, activation="softmax")], seed=11)
    m.compile("adam", "categorical_crossentropy", ["accuracy"])
    return m


class _CtrlC(cbs.Callback):
    """Sends the process a real SIGINT in the middle of one epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def one_thread():
    """Tiny models on one thread: on a busy 2-core machine a 2-thread OpenMP region costs
    ~10 ms per call in wake-ups (reported to the lead); results do not depend on it."""
    with rnnkernels.num_threads(1):
        yield


def test_ctrl_c_during_fit_then_resume_gives_the_uninterrupted_weights(tmp_path, one_thread):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, epochs=5, batch_size=8, verbose=0)

    interrupted = _model()
    ckpt = str(tmp_path / "ckpt-{epoch:02d}.rnk")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, epochs=5, batch_size=8, verbose=0,
                        callbacks=[cbs.ModelCheckpoint(ckpt, monitor="loss"), _CtrlC(epoch=2, batch=3)])
    # Stopped at the end of batch 3 of epoch 3 (6 batches per epoch): 2 * 6 + 4 steps applied.
    assert interrupted.optimizer.iterations == 16 and interrupted.epochs_trained == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.rnk", "ckpt-02.rnk"]  # complete files only

    resumed = load_model(tmp_path / "ckpt-02.rnk")
    assert resumed.epochs_trained == 2 and resumed.optimizer.iterations == 12
    resumed.fit(x, y, epochs=5, batch_size=8, verbose=0, initial_epoch=resumed.epochs_trained)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.optimizer.iterations == straight.optimizer.iterations == 30


def test_ctrl_c_while_saving_keeps_the_previous_file(tmp_path, monkeypatch, one_thread):
    """A second Ctrl-C (not deferred) can land inside a save: the target keeps its old content."""
    x, y = _data(16)
    model = _model()
    path = tmp_path / "m.rnk"
    model.save(path)
    before = path.read_bytes()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    real = np.lib.format.write_array
    calls = []

    def interrupted_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # some arrays are already in the temporary file
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.rnk"]
    assert load_model(path).epochs_trained == 0
