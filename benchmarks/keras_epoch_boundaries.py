"""Where the seed's Keras program spends its fit time, epoch by epoch: the training
batches, the validation, and the wait at the start of each epoch before its first
batch, with ``keras.layers.LSTM`` and with ``rnnkernels.keras.LSTM`` (TensorFlow
backend, the program of ``rnnkernels bench --dropin``'s "seed program fit" row).

    python benchmarks/keras_epoch_boundaries.py [--epochs 10] [--repeats 3] [--threads N]

Why: that row's ratio moves between runs far more than the per-step rows do.  The
wait at an epoch's start is spent in TensorFlow, idle (no CPU time), not in either
LSTM.  Seen under gdb: Keras makes a new tf.data iterator each epoch, and the main
thread waits in the old one's destructor (RootDataset::Iterator) for tf.data's
autotuning thread, which sits in a timed wait in Model::OptimizeLoop.  The waits
come in sizes of about 0.6 s and 1.25 s, as if that thread slept out a period that
doubles from 10 ms, so whether an epoch pays one depends on where its length falls
among 10 x (2^k - 1) ms: ours (about 0.65 s an epoch on the 2-core machines) often
ends just past 630 ms.  With ``fit(shuffle=False)`` the waits stayed under 25 ms;
the script measures the seed program as it is, shuffling.

Prints, per system and repetition, the fit's wall time and its parts, then the
ratio ours / Keras's of the fit times and of the fit times less the epoch-start
waits.  Both systems run in one child process, alternating (as the bench does).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, os, sys, time
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
epochs, repeats, threads = map(int, sys.argv[1:4])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
import keras
import rnnkernels
import rnnkernels.keras as ours
from rnnkernels.bench.dropin_keras import _seed_model, seed_data
rnnkernels.set_num_threads(threads)


class Parts(keras.callbacks.Callback):
    """Per epoch: the wait before its first batch, its batches, its validation."""
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"start_wait": None, "batches": 0.0, "validation": 0.0})
        self.mark = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self.epochs[-1]["start_wait"] is None:
            self.epochs[-1]["start_wait"] = now - self.mark
        self.batch_start = now

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1]["batches"] += time.perf_counter() - self.batch_start

    def on_test_begin(self, logs=None):
        self.test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self.epochs:
            self.epochs[-1]["validation"] += time.perf_counter() - self.test_start


d = seed_data()
T, I = d["X_train"].shape[1:]
classes = d["y_train"].shape[1]
systems = {"keras": keras.layers.LSTM, "ours": ours.LSTM}
for cls in systems.values():  # process-level warm-up
    _seed_model(keras, cls, T, I, classes).fit(d["X_train"][:64], d["y_train"][:64], epochs=1, batch_size=32,
                                               verbose=0)
runs = []
for rep in range(repeats):
    for name in (("keras", "ours") if rep % 2 == 0 else ("ours", "keras")):
        keras.utils.set_random_seed(rep)
        model = _seed_model(keras, systems[name], T, I, classes)
        parts = Parts()
        started = time.perf_counter()
        model.fit(d["X_train"], d["y_train"], epochs=epochs, batch_size=32,
                  validation_data=(d["X_val"], d["y_val"]), verbose=0, callbacks=[parts])
        runs.append({"system": name, "repetition": rep, "fit_s": time.perf_counter() - started,
                     "epochs": parts.epochs})
print(json.dumps(runs))
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.epochs), str(args.repeats), str(args.threads)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"the child process failed:\n{out.stderr[-4000:]}")
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"seed program, {args.epochs} epochs, {args.threads} threads; seconds")
    print(f"{'system':6} {'rep':>3} {'fit':>6} {'batches':>8} {'valid.':>7} {'waits':>6}  epoch-start waits (ms)")
    totals = {"keras": [], "ours": []}
    for run in runs:
        waits = [e["start_wait"] or 0.0 for e in run["epochs"]]
        batches = sum(e["batches"] for e in run["epochs"])
        validation = sum(e["validation"] for e in run["epochs"])
        totals[run["system"]].append((run["fit_s"], run["fit_s"] - sum(waits)))
        print(f"{run['system']:6} {run['repetition']:3d} {run['fit_s']:6.2f} {batches:8.2f} {validation:7.2f} "
              f"{sum(waits):6.2f}  {' '.join(f'{1e3 * w:.0f}' for w in waits)}")
    fit = {k: statistics.median(t for t, _ in v) for k, v in totals.items()}
    less = {k: statistics.median(t for _, t in v) for k, v in totals.items()}
    print(f"median fit: ours {fit['ours']:.2f} s, keras {fit['keras']:.2f} s, ours/keras {fit['ours'] / fit['keras']:.2f}")
    print(f"median fit less the epoch-start waits: ours {less['ours']:.2f} s, keras {less['keras']:.2f} s, "
          f"ours/keras {less['ours'] / less['keras']:.2f}")


if __name__ == "__main__":
    main()
