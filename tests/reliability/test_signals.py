"""SIGTERM (what a job scheduler or ``docker stop`` sends) during training: the command line
stops after the current batch as for Ctrl-C, exits with 143 and one line, keeps the last
complete checkpoint and leaves no temporary file; ``fit`` defers it the same way under
:func:`~rnnkernels.engine.interrupts.terminate_gracefully` and leaves SIGTERM's default
alone otherwise."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.audio import tone_folder
from helpers.environment import package_env
from helpers.isolated import run_python

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")


def _train(tmp_path, model, *extra):
    pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    folder = tone_folder(tmp_path / "tones")
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkernels", "train", "--data", str(folder), "--epochs", "50",
         "--hidden", "4", "--no-bidirectional", "--n-mels", "16", "--n-mfcc", "8", "--batch-size", "4",
         "--threads", "1", "--quiet", "--save", str(model), *extra],
        cwd=tmp_path, env=package_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _after_first_checkpoint(proc, model, signum, times=1):
    try:
        deadline = time.monotonic() + 180
        while not model.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model.exists(), "no checkpoint appeared: " + (proc.stderr.read() if proc.poll() is not None else "timeout")
        for _ in range(times):
            proc.send_signal(signum)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_during_cli_train_exits_143_and_keeps_the_last_checkpoint(tmp_path):
    from rnnkernels.audio.recipes import AudioClassifier

    model = tmp_path / "model.rnk"
    proc = _train(tmp_path, model)
    out, err = _after_first_checkpoint(proc, model, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    m = re.fullmatch(r"rnnkernels: terminated \(SIGTERM\) during epoch (\d+); the model of epoch (\d+) is "
                     r"kept in '(.*)'", lines[0])
    assert m, lines[0]
    during, kept = int(m[1]), int(m[2])
    assert kept == during - 1 >= 1 and m[3] == str(model)
    classifier = AudioClassifier.load(model)
    assert classifier.model.epochs_trained == kept
    assert np.isfinite(classifier.predict_files([str(tmp_path / "tones" / "2_ann_0.wav")])).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.rnk", "tones"]  # no temporary files


def test_sigterm_during_a_save_removes_the_temporary_file(tmp_path):
    """SIGTERM landing inside an atomic write (here: a save that a second SIGTERM, not
    deferred, interrupts) leaves the previous file and no temporary file."""
    r = run_python("""
import os, signal, sys
import numpy as np
from rnnkernels.engine.interrupts import Terminated, terminate_gracefully
from rnnkernels.layers import LSTM, Dense
from rnnkernels.models import Sequential, load_model
folder = sys.argv[1]
m = Sequential([LSTM(3, input_shape=(4, 2)), Dense(2)], seed=0)
m.compile("adam", "mse")
path = os.path.join(folder, "m.rnk")
m.save(path)
before = open(path, "rb").read()
real = np.lib.format.write_array
calls = []
def write(*a, **k):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)   # some arrays are in the temporary file already
    return real(*a, **k)
np.lib.format.write_array = write
with terminate_gracefully():
    try:
        m.save(path)
    except Terminated:
        print("terminated")
np.lib.format.write_array = real
assert open(path, "rb").read() == before
print(sorted(os.listdir(folder)))
""", args=[tmp_path], timeout=120)
    assert r.returncode == 0 and "terminated" in r.stdout and "['m.rnk']" in r.stdout, r


def test_fit_defers_sigterm_to_the_end_of_the_batch_under_terminate_gracefully(tmp_path):
    r = run_python("""
import os, signal
import numpy as np
from rnnkernels import callbacks as cbs
from rnnkernels.engine.interrupts import Terminated, terminate_gracefully
from rnnkernels.layers import LSTM, Dense
from rnnkernels.models import Sequential
x = np.random.default_rng(0).normal(size=(32, 5, 2)).astype("float32")
y = np.eye(2, dtype="float32")[np.arange(32) % 2]
m = Sequential([LSTM(3, input_shape=(5, 2)), Dense(2, activation="softmax")], seed=0)
m.compile("adam", "categorical_crossentropy")
class Term(cbs.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2 and self.model.epochs_trained == 1:
            os.kill(os.getpid(), signal.SIGTERM)
with terminate_gracefully():
    try:
        m.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[Term()])
    except Terminated:
        print("stopped", m.epochs_trained, m.optimizer.iterations)
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # restored
""", timeout=120)
    # epoch 2's third batch completes (8 + 3 steps), then fit raises Terminated
    assert r.returncode == 0 and "stopped 1 11" in r.stdout, r


def test_fit_leaves_sigterms_default_alone(tmp_path):
    r = run_python("""
import os, signal
import numpy as np
from rnnkernels import callbacks as cbs
from rnnkernels.layers import LSTM, Dense
from rnnkernels.models import Sequential
x = np.random.default_rng(0).normal(size=(16, 5, 2)).astype("float32")
m = Sequential([LSTM(3, input_shape=(5, 2)), Dense(1)], seed=0)
m.compile("adam", "mse")
class Term(cbs.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
m.fit(x, x[:, 0, :1], batch_size=4, epochs=2, verbose=0, callbacks=[Term()])
print("not reached")
""", timeout=120)
    assert r.returncode == -signal.SIGTERM and "not reached" not in r.stdout, r
