"""Keras with its own recurrent layers against Keras with ``rnnkernels.keras``'s, one run.

Rows (:func:`rows`):

* ``seed program fit``: the seed's Keras program (docs/seed-example.md: LSTM(128),
  Dropout, Dense(64, relu), Dropout, Dense(10, softmax), Adam, ``fit(epochs=10,
  batch_size=32, validation_data=...)``) on the embedded Free Spoken Digit Dataset,
  once with ``keras.layers.LSTM`` and once with ``rnnkernels.keras.LSTM`` (the only
  change), from the same initial weights; the wall time of ``fit`` (graph tracing and
  per-epoch validation included) and the test accuracy of each.
* ``<cell> fit step``: one ``train_on_batch`` (forward, backward, Adam) of
  Input -> layer -> Dense(10, softmax), B=32, T=100, I=40, H=128, for LSTM, GRU,
  SimpleRNN, a Bidirectional LSTM and an LSTM behind ``Masking`` with right-padded
  batches (lengths 50-100).

Everything runs in one child process (TensorFlow's thread pools are fixed at start-up
and must not spin beside other systems), with TensorFlow's intra/inter-op threads and
the kernels' threads all set to ``threads``.  Interleaved: each repetition runs both
systems, the order alternating, and a row reports medians.  ``ratio`` is ours / Keras's
wall time (below 1: ours is faster); ``cpu_ratio`` the same for the process's CPU time,
the steadier figure on a machine whose cores other work also takes.  The seed program's
repetition r seeds shuffling and dropout with r for both systems, so its accuracies are
means over seeds.

    python -m rnnkernels.bench.dropin_keras [--repeats 3] [--threads N] [--dtype float32]
        [--epochs 10] [--steps 5] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from .._util.argtypes import positive_int
from .._util.atomic import write_json
from .machine import default_threads
from .report import format_table
from .workers import WorkerError, _worker_env

STEP_SIZE = {"B": 32, "T": 100, "I": 40, "H": 128}
STEP_CASES = ("LSTM", "GRU", "SimpleRNN", "Bidirectional LSTM", "LSTM masked")
SEED_UNITS, SEED_DENSE, SEED_DROPOUT = 128, 64, 0.2


def rows(repeats, threads, dtype="float32", epochs=10, steps=5, seed_program=True, step_cases=STEP_CASES):
    """The drop-in rows (dicts with ``name, ours_ms, peer_ms, ratio`` and more), measured
    in a child process.  ``peer`` is Keras with its own layer, TensorFlow backend."""
    for name, value in (("repeats", repeats), ("threads", threads), ("epochs", epochs), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    unknown = sorted(set(step_cases) - set(STEP_CASES))
    if unknown:
        raise ValueError(f"step_cases: expected some of {list(STEP_CASES)}, got {unknown}")
    request = {"repeats": int(repeats), "threads": int(threads), "dtype": dtype, "epochs": int(epochs),
               "steps": int(steps), "seed_program": bool(seed_program), "step_cases": list(step_cases)}
    proc = subprocess.run([sys.executable, "-m", "rnnkernels.bench.dropin_keras", "--_worker", json.dumps(request)],
                          capture_output=True, text=True,
                          env=_worker_env({"TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}))
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:]
        raise WorkerError(f"keras drop-in worker exited with status {proc.returncode}"
                          + (f": {tail[0]}" if tail else ""))
    return json.loads(proc.stdout.strip().splitlines()[-1])["rows"]


# ------------------------------------------------------------------ the worker
def seed_data(seed=0, val_fraction=0.1):
    """The seed program's data (benchmarks/seed_fsdd.py's defaults): the embedded FSDD,
    official split, a seeded 10% validation part, 40 log-mel bands at 8 kHz (n_fft 256,
    hop 128) standardised with the training frames' statistics, zero-padded at the front
    to the longest training clip; one-hot targets."""
    from ..audio import FeatureConfig
    from ..audio.datasets import load_spoken_digits, official_split, random_split
    from ..audio.recipes import featurize
    dataset = load_spoken_digits()
    train_idx, test_idx = official_split(dataset)
    fit_part, val_part = random_split(dataset.subset(train_idx), val_fraction, seed)
    parts = {"train": train_idx[fit_part], "val": train_idx[val_part], "test": test_idx}
    config = FeatureConfig(kind="logmel", sample_rate=8000, n_mels=40, n_fft=256, hop_length=128,
                           normalize="none")
    feats = {k: featurize(dataset.subset(idx), config) for k, idx in parts.items()}
    frames = np.concatenate(feats["train"])
    mean, std = frames.mean(axis=0), np.maximum(frames.std(axis=0), 1e-5)
    timesteps = max(len(f) for f in feats["train"])
    eye = np.eye(len(dataset.label_names), dtype=np.float32)
    out = {}
    for k, idx in parts.items():
        x = np.zeros((len(idx), timesteps, config.n_features), np.float32)
        for i, f in enumerate(feats[k]):
            f = ((f - mean) / std)[-timesteps:]
            x[i, timesteps - len(f):] = f
        out["X_" + k], out["y_" + k] = x, eye[dataset.labels[idx]]
    return out


def _seed_model(keras, lstm_cls, timesteps, input_dim, classes):
    """The seed program's model (with ``keras.Input`` in place of the deprecated input_shape=)."""
    model = keras.Sequential()
    model.add(keras.Input((timesteps, input_dim)))
    model.add(lstm_cls(SEED_UNITS))
    model.add(keras.layers.Dropout(SEED_DROPOUT))
    model.add(keras.layers.Dense(SEED_DENSE, activation='relu'))
    model.add(keras.layers.Dropout(SEED_DROPOUT))
    model.add(keras.layers.Dense(classes, activation='softmax'))
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    return model


def _seed_rows(keras, ours_lstm, request):
    d = seed_data()
    timesteps, input_dim = d["X_train"].shape[1:]
    classes = d["y_train"].shape[1]
    keras.utils.set_random_seed(0)
    initial = _seed_model(keras, keras.layers.LSTM, timesteps, input_dim, classes).get_weights()
    systems = {"peer": keras.layers.LSTM, "ours": ours_lstm}
    for cls in systems.values():  # process-level warm-up (oneDNN, the kernels' buffers)
        model = _seed_model(keras, cls, timesteps, input_dim, classes)
        model.fit(d["X_train"][:64], d["y_train"][:64], epochs=1, batch_size=32, verbose=0)
    times = {k: [] for k in systems}
    cpu = {k: [] for k in systems}
    results = {k: [] for k in systems}
    for rep in range(request["repeats"]):
        for name in (("peer", "ours") if rep % 2 == 0 else ("ours", "peer")):
            # repetition r: shuffling and dropout seeded r, the same for both systems
            keras.utils.set_random_seed(rep)
            model = _seed_model(keras, systems[name], timesteps, input_dim, classes)
            model.set_weights(initial)
            started, cpu_started = time.perf_counter(), time.process_time()
            history = model.fit(d["X_train"], d["y_train"], epochs=request["epochs"], batch_size=32,
                                validation_data=(d["X_val"], d["y_val"]), verbose=0)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            loss, accuracy = model.evaluate(d["X_test"], d["y_test"], verbose=0)
            results[name].append({"seed": rep, "test_accuracy": float(accuracy), "test_loss": float(loss),
                                  "val_accuracy": float(history.history["val_accuracy"][-1])})
    ours_ms, peer_ms = 1e3 * float(np.median(times["ours"])), 1e3 * float(np.median(times["peer"]))
    ours_cpu, peer_cpu = 1e3 * float(np.median(cpu["ours"])), 1e3 * float(np.median(cpu["peer"]))
    accuracy = {k: float(np.mean([r["test_accuracy"] for r in results[k]])) for k in systems}
    return [{"name": f"seed program fit ({request['epochs']} epochs, FSDD)", "ours_ms": ours_ms,
             "peer_ms": peer_ms, "ratio": ours_ms / peer_ms,
             "ours_cpu_ms": ours_cpu, "peer_cpu_ms": peer_cpu, "cpu_ratio": ours_cpu / peer_cpu,
             "ours_test_accuracy": accuracy["ours"], "peer_test_accuracy": accuracy["peer"],
             "ours_runs_ms": [1e3 * t for t in times["ours"]], "peer_runs_ms": [1e3 * t for t in times["peer"]],
             "ours_runs_cpu_ms": [1e3 * t for t in cpu["ours"]], "peer_runs_cpu_ms": [1e3 * t for t in cpu["peer"]],
             "ours_runs": results["ours"], "peer_runs": results["peer"],
             "sizes": {k: int(len(d["X_" + k])) for k in ("train", "val", "test")},
             "timesteps": int(timesteps), "input_dim": int(input_dim)}]


def _step_model(keras, case, layers, dtype):
    B, T, I, H = (STEP_SIZE[k] for k in "BTIH")
    stack = [keras.Input((T, I), dtype=dtype)]
    if case == "LSTM masked":
        stack.append(keras.layers.Masking(0.0))
    if case == "Bidirectional LSTM":
        stack.append(layers["Bidirectional"](layers["LSTM"](H)))
    else:
        stack.append(layers[case.split()[0]](H))
    stack.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(stack)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def _step_rows(keras, ours, request):
    dtype = request["dtype"]
    B, T, I = STEP_SIZE["B"], STEP_SIZE["T"], STEP_SIZE["I"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, B)]
    x_masked = x.copy()
    lengths = rng.integers(T // 2, T + 1, B)
    x_masked[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    peer_layers = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU, "SimpleRNN": keras.layers.SimpleRNN,
                   "Bidirectional": keras.layers.Bidirectional}
    out = []
    for case in request["step_cases"]:
        xb = x_masked if case == "LSTM masked" else x
        keras.utils.set_random_seed(0)
        models = {"peer": _step_model(keras, case, peer_layers, dtype)}
        models["ours"] = _step_model(keras, case, ours, dtype)
        models["ours"].set_weights(models["peer"].get_weights())
        for m in models.values():  # trace and warm up
            for _ in range(2):
                m.train_on_batch(xb, y)
        times = {k: [] for k in models}
        cpu = {k: [] for k in models}
        for rep in range(request["repeats"]):
            for name in (("peer", "ours") if rep % 2 == 0 else ("ours", "peer")):
                for _ in range(request["steps"]):
                    started, cpu_started = time.perf_counter(), time.process_time()
                    models[name].train_on_batch(xb, y)
                    times[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - cpu_started)
        ours_ms, peer_ms = 1e3 * float(np.median(times["ours"])), 1e3 * float(np.median(times["peer"]))
        ours_cpu, peer_cpu = 1e3 * float(np.median(cpu["ours"])), 1e3 * float(np.median(cpu["peer"]))
        out.append({"name": f"{case} fit step", "ours_ms": ours_ms, "peer_ms": peer_ms, "ratio": ours_ms / peer_ms,
                    "ours_cpu_ms": ours_cpu, "peer_cpu_ms": peer_cpu, "cpu_ratio": ours_cpu / peer_cpu,
                    "ours_min_ms": 1e3 * min(times["ours"]), "peer_min_ms": 1e3 * min(times["peer"]),
                    "size": dict(STEP_SIZE), "samples": len(times["ours"])})
    return out


def worker(request):
    """The child process: everything measured here, rows printed as one JSON line."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    threads = request["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    import rnnkernels
    import rnnkernels.keras as ours
    rnnkernels.set_num_threads(threads)
    keras.config.set_floatx(request["dtype"])
    layers = {"LSTM": ours.LSTM, "GRU": ours.GRU, "SimpleRNN": ours.SimpleRNN, "Bidirectional": ours.Bidirectional}
    load_before = os.getloadavg()[0]
    out = _seed_rows(keras, ours.LSTM, request) if request["seed_program"] else []
    out += _step_rows(keras, layers, request)
    common = {"threads": threads, "dtype": request["dtype"], "repeats": request["repeats"],
              "load_before": load_before, "load_after": os.getloadavg()[0], "keras": keras.__version__,
              "tensorflow": tf.__version__}
    print(json.dumps({"rows": [dict(r, **common) for r in out]}))
    return 0


# ------------------------------------------------------------------ command line
def render(table_rows):
    body = []
    for r in table_rows:
        extra = ""
        if "ours_test_accuracy" in r:
            extra = (f"mean test acc {100 * r['ours_test_accuracy']:.1f}% vs {100 * r['peer_test_accuracy']:.1f}% "
                     f"({len(r['ours_runs'])} seeds)")
        body.append([r["name"], f"{r['ours_ms']:.1f}", f"{r['peer_ms']:.1f}", f"{r['ratio']:.2f}",
                     f"{r['cpu_ratio']:.2f}", extra])
    return format_table(["case", "rnnkernels.keras ms", "keras.layers ms", "ratio", "cpu ratio", ""], body, left=1)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m rnnkernels.bench.dropin_keras", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=None, help="default: all usable cores")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--epochs", type=positive_int, default=10, help="the seed program's epochs")
    p.add_argument("--steps", type=positive_int, default=5, help="fit steps per system per repetition")
    p.add_argument("--no-seed", action="store_true", help="only the fit-step rows")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON (atomically)")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return worker(json.loads(args._worker))
    threads = args.threads or default_threads()
    try:
        table_rows = rows(args.repeats, threads, args.dtype, epochs=args.epochs, steps=args.steps,
                          seed_program=not args.no_seed)
    except (WorkerError, ValueError) as exc:
        print(f"dropin_keras: error: {exc}", file=sys.stderr)
        return 1
    print(render(table_rows))
    r = table_rows[0]
    print(f"{threads} threads, {args.dtype}, {args.repeats} repeats; load average {r['load_before']:.2f} before, "
          f"{r['load_after']:.2f} after; keras {r['keras']}, tensorflow {r['tensorflow']}")
    if args.json:
        write_json(args.json, {"command": " ".join(["python -m rnnkernels.bench.dropin_keras"] + (argv or sys.argv[1:])),
                               "rows": table_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
