"""The seed example on real recordings: rnnkernels against the same model in PyTorch (and Keras).

Trains the issue's seed model, exactly as written::

    model = Sequential()
    model.add(LSTM(128, input_shape=(timesteps, input_dim)))
    model.add(Dropout(0.2))
    model.add(Dense(64, activation='relu'))
    model.add(Dropout(0.2))
    model.add(Dense(num_classes, activation='softmax'))
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    model.fit(X_train, y_train, epochs=10, batch_size=32, validation_data=(X_val, y_val))
    loss, accuracy = model.evaluate(X_test, y_test)

on the Free Spoken Digit Dataset (log-mel features from ``rnnkernels.audio``, FSDD's official
split: takes 0-4 are the test set; a seeded, label-stratified 10% of the training takes is the
validation set), then the identical model and schedule in PyTorch (``torch.nn.LSTM(batch_first=True)``
last hidden state, Dropout, Linear+ReLU, Dropout, Linear; CrossEntropyLoss; Adam lr 1e-3 with
Keras's eps 1e-7; the same batches per epoch; validation every epoch) and, with ``--keras``, in
Keras in a subprocess. All start from the same initial weights (rnnkernels' Keras-default
initialisation copied across), run one after the other in one invocation with the same thread
count, and the wall time of ``fit`` (per-epoch validation included, feature extraction excluded)
is compared.

    python3 benchmarks/seed_fsdd.py [--threads N] [--order torch-first] [--keras] [--json out.json]

Data: the copy embedded in rnnkernels (``load_spoken_digits()``, the same 2,000 recordings), or
``--data DIR`` for a folder of FSDD-style ``{digit}_{speaker}_{index}.wav`` files.
Sequences are padded (or cut) to a fixed ``timesteps`` at the front by default, as Keras's
``pad_sequences`` does, so the LSTM's last state follows the end of the utterance.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout: import this tree's rnnkernels
    sys.path.insert(0, ROOT)

from rnnkernels._util.argtypes import non_negative_int, positive_int  # noqa: E402
from rnnkernels._util.atomic import write_json as write_json_atomic  # noqa: E402
from rnnkernels.bench.machine import machine_info  # noqa: E402
from rnnkernels.bench.report import format_table  # noqa: E402
from rnnkernels.bench.workers import _worker_env  # noqa: E402

SYSTEMS = ("rnnkernels", "torch")
UNITS, DENSE_UNITS, DROPOUT = 128, 64, 0.2
LEARNING_RATE, KERAS_EPSILON = 1e-3, 1e-7


# ------------------------------------------------------------------ data
def load_recordings(data):
    """The FSDD recordings: the embedded copy (``data='embedded'``) or a folder."""
    from rnnkernels.audio import datasets
    if data == "embedded":
        return datasets.load_spoken_digits()
    if not os.path.isdir(data):
        raise ValueError(f"--data: expected 'embedded' or a folder of recordings, got {data!r}")
    return datasets.load_audio_folder(data)


def pad_to_timesteps(features, timesteps, padding):
    """Stack ``(T_i, F)`` features into ``(N, timesteps, F)`` float32, zero-padded.

    ``padding='pre'`` puts the zeros before the utterance and keeps its last ``timesteps``
    frames when it is longer (Keras ``pad_sequences`` defaults); ``'post'`` pads after and
    keeps the first frames."""
    n_feat = features[0].shape[1]
    x = np.zeros((len(features), timesteps, n_feat), np.float32)
    for i, f in enumerate(features):
        if padding == "pre":
            f = f[-timesteps:]
            x[i, timesteps - len(f):] = f
        else:
            f = f[:timesteps]
            x[i, :len(f)] = f
    return x


def prepare_data(args):
    """Features, split and one-hot targets: ``dict`` of X/y for train, val and test, plus info."""
    from rnnkernels.audio import FeatureConfig
    from rnnkernels.audio.datasets import official_split, random_split
    from rnnkernels.audio.recipes import featurize

    started = time.perf_counter()
    dataset = load_recordings(args.data)
    train_idx, test_idx = official_split(dataset)
    fit_part, val_part = random_split(dataset.subset(train_idx), args.val_fraction, args.seed)
    parts = {"train": train_idx[fit_part], "val": train_idx[val_part], "test": test_idx}
    config = FeatureConfig(kind="logmel", sample_rate=8000, n_mels=args.n_mels, n_fft=args.n_fft,
                           hop_length=args.hop_length, deltas=args.deltas,
                           normalize="utterance" if args.normalize == "utterance" else "none")
    feats = {k: featurize(dataset.subset(idx), config) for k, idx in parts.items()}
    if args.normalize == "global":
        # Each feature standardised with the training frames' mean and deviation (dB values span
        # about 100, far outside the LSTM gates' useful range).
        frames = np.concatenate(feats["train"])
        mean, std = frames.mean(axis=0), np.maximum(frames.std(axis=0), 1e-5)
        feats = {k: [(f - mean) / std for f in v] for k, v in feats.items()}
    timesteps = args.timesteps or max(len(f) for f in feats["train"])
    n_classes = len(dataset.label_names)
    out = {"timesteps": timesteps, "input_dim": config.n_features, "num_classes": n_classes,
           "features": dict(config.to_dict(), normalize=args.normalize), "padding": args.padding,
           "sizes": {k: int(len(idx)) for k, idx in parts.items()},
           "longer_than_timesteps": {k: int(sum(len(f) > timesteps for f in v)) for k, v in feats.items()}}
    eye = np.eye(n_classes, dtype=np.float32)
    for k, idx in parts.items():
        out["X_" + k] = pad_to_timesteps(feats[k], timesteps, args.padding)
        out["y_" + k] = eye[dataset.labels[idx]]
    out["feature_seconds"] = time.perf_counter() - started
    return out


# ------------------------------------------------------------ rnnkernels
def build_seed_model(timesteps, input_dim, num_classes, seed):
    """The seed model, exactly as the issue writes it (plus a seed, for repeatable runs)."""
    from rnnkernels.layers import LSTM, Dense, Dropout
    from rnnkernels.models import Sequential
    model = Sequential(seed=seed)
    model.add(LSTM(128, input_shape=(timesteps, input_dim)))
    model.add(Dropout(0.2))
    model.add(Dense(64, activation='relu'))
    model.add(Dropout(0.2))
    model.add(Dense(num_classes, activation='softmax'))
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    return model


def run_rnnkernels(model, d, epochs, verbose):
    X_train, y_train, X_val, y_val = d["X_train"], d["y_train"], d["X_val"], d["y_val"]
    X_test, y_test = d["X_test"], d["y_test"]
    wall, cpu = time.perf_counter(), time.process_time()
    history = model.fit(X_train, y_train, epochs=epochs, batch_size=32, validation_data=(X_val, y_val),
                        verbose=verbose)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
    return {"fit_seconds": wall, "fit_cpu_seconds": cpu, "test_loss": float(loss),
            "test_accuracy": float(accuracy), "history": {k: [float(v) for v in vs]
                                                          for k, vs in history.history.items()}}


# ----------------------------------------------------------------- torch
def run_torch(model, d, epochs, seed, verbose):
    """Keras's fit/evaluate loop, written out for ``torch.nn``: shuffled batches of 32, Adam
    (Keras's lr and epsilon), running train loss/accuracy, validation loss/accuracy every epoch."""
    import torch
    nn = torch.nn

    class SeedLSTM(nn.Module):
        def __init__(self, input_dim, num_classes):
            super().__init__()
            self.lstm = nn.LSTM(input_dim, UNITS, batch_first=True)
            self.drop1 = nn.Dropout(DROPOUT)
            self.dense = nn.Linear(UNITS, DENSE_UNITS)
            self.drop2 = nn.Dropout(DROPOUT)
            self.out = nn.Linear(DENSE_UNITS, num_classes)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            h = torch.relu(self.dense(self.drop1(h[-1])))
            return self.out(self.drop2(h))  # logits; CrossEntropyLoss applies the softmax

    from rnnkernels.engine.interop import dense_to_torch, to_torch_state_dict
    torch.manual_seed(seed)
    net = SeedLSTM(d["input_dim"], d["num_classes"])
    # Same starting point as rnnkernels (Keras initialisers): glorot/orthogonal, forget bias 1.
    from rnnkernels.layers import Dense
    lstm_layer = model.layers[0]
    dense, out_layer = [l for l in model.layers if isinstance(l, Dense)]
    net.lstm.load_state_dict(to_torch_state_dict([lstm_layer], as_tensors=True))
    net.dense.load_state_dict(dense_to_torch(dense, as_tensors=True))
    net.out.load_state_dict(dense_to_torch(out_layer, as_tensors=True))
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, eps=KERAS_EPSILON)
    criterion = nn.CrossEntropyLoss()
    tensors = {k: torch.from_numpy(np.ascontiguousarray(d[k])) for k in
               ("X_train", "X_val", "X_test")}
    labels = {k: torch.from_numpy(d["y_" + k].argmax(1)) for k in ("train", "val", "test")}
    generator = torch.Generator().manual_seed(seed)
    batch = 32

    def evaluate(x, y):
        net.eval()
        total, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), batch):
                logits = net(x[start:start + batch])
                yb = y[start:start + batch]
                total += criterion(logits, yb).item() * len(yb)
                correct += (logits.argmax(1) == yb).sum().item()
        return total / len(x), correct / len(x)

    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    x, y = tensors["X_train"], labels["train"]
    n = len(x)
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=generator)
        total, correct = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = criterion(logits, yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        val_loss, val_acc = evaluate(tensors["X_val"], labels["val"])
        for key, value in zip(history, (total / n, correct / n, val_loss, val_acc)):
            history[key].append(value)
        if verbose:
            print(f"torch epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - "
                  + " - ".join(f"{k}: {v[-1]:.4f}" for k, v in history.items()), file=sys.stderr, flush=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test_loss, test_acc = evaluate(tensors["X_test"], labels["test"])
    return {"fit_seconds": wall, "fit_cpu_seconds": cpu, "test_loss": test_loss,
            "test_accuracy": test_acc, "history": history}


# ----------------------------------------------------------------- keras
def run_keras(model, d, epochs, seed, threads, verbose):
    """The seed model in Keras, timed in a child process (TensorFlow's thread pools must not
    spin beside the others); same data and initial weights, handed over in an .npz."""
    with tempfile.TemporaryDirectory(prefix="seed_fsdd_") as tmp:
        inputs, output = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "result.json")
        arrays = {k: d[k] for k in d if k.startswith(("X_", "y_"))}
        arrays.update({f"w{i}": w for i, w in enumerate(model.get_weights())})
        np.savez(inputs, **arrays)
        cmd = [sys.executable, os.path.abspath(__file__), "--_keras-worker", inputs, output,
               "--epochs", str(epochs), "--seed", str(seed), "--threads", str(threads),
               "--verbose", str(verbose)]
        proc = subprocess.run(cmd, env=_worker_env({"TF_CPP_MIN_LOG_LEVEL": "2"}),
                              stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            tail = [l for l in proc.stderr.strip().splitlines() if l.strip()][-1:]
            raise RuntimeError(f"keras run exited with status {proc.returncode}"
                               + (f": {tail[0]}" if tail else ""))
        with open(output) as f:
            return json.load(f)


def keras_worker(inputs, output, epochs, seed, threads, verbose):
    """Body of the Keras child process."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    from keras.layers import LSTM, Dense, Dropout
    keras.utils.set_random_seed(seed)
    with np.load(inputs) as npz:
        d = {k: npz[k] for k in npz.files}
    weights = [d[f"w{i}"] for i in range(sum(k.startswith("w") for k in d))]
    timesteps, input_dim = d["X_train"].shape[1:]
    num_classes = d["y_train"].shape[1]
    model = keras.Sequential()
    model.add(keras.Input((timesteps, input_dim)))
    model.add(LSTM(128))
    model.add(Dropout(0.2))
    model.add(Dense(64, activation='relu'))
    model.add(Dropout(0.2))
    model.add(Dense(num_classes, activation='softmax'))
    model.set_weights(weights)
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    wall, cpu = time.perf_counter(), time.process_time()
    history = model.fit(d["X_train"], d["y_train"], epochs=epochs, batch_size=32,
                        validation_data=(d["X_val"], d["y_val"]), verbose=2 if verbose else 0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loss, accuracy = model.evaluate(d["X_test"], d["y_test"], verbose=0)
    result = {"fit_seconds": wall, "fit_cpu_seconds": cpu, "test_loss": float(loss),
              "test_accuracy": float(accuracy), "tensorflow": tf.__version__, "keras": keras.__version__,
              "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    write_json_atomic(output, result)
    return 0


# ------------------------------------------------------------------ main
def run(args):
    import rnnkernels
    import torch
    rnnkernels.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    d = prepare_data(args)
    print(f"data: {d['sizes']['train']} train, {d['sizes']['val']} validation, {d['sizes']['test']} test; "
          f"features (N, {d['timesteps']}, {d['input_dim']}) in {d['feature_seconds']:.1f} s; "
          f"threads {args.threads}; load average {load_before[0]:.2f}", flush=True)
    model = build_seed_model(d["timesteps"], d["input_dim"], d["num_classes"], args.seed)
    initial = model.get_weights()
    order = SYSTEMS if args.order == "rnnkernels-first" else SYSTEMS[::-1]
    results = {}
    for system in order:
        print(f"--- {system}: fit, {args.epochs} epochs", file=sys.stderr, flush=True)
        if system == "rnnkernels":
            results[system] = run_rnnkernels(model, d, args.epochs, args.verbose)
        else:
            reference = build_seed_model(d["timesteps"], d["input_dim"], d["num_classes"], args.seed)
            reference.set_weights(initial)
            results[system] = run_torch(reference, d, args.epochs, args.seed, args.verbose)
        results[system]["load_average_after"] = os.getloadavg()[0]
    if args.keras:
        print(f"--- keras: fit, {args.epochs} epochs (subprocess)", file=sys.stderr, flush=True)
        reference = build_seed_model(d["timesteps"], d["input_dim"], d["num_classes"], args.seed)
        reference.set_weights(initial)
        try:
            results["keras"] = run_keras(reference, d, args.epochs, args.seed, args.threads, args.verbose)
            results["keras"]["load_average_after"] = os.getloadavg()[0]
        except (RuntimeError, OSError) as exc:
            results["keras"] = {"error": str(exc)}
    ratio = results["rnnkernels"]["fit_seconds"] / results["torch"]["fit_seconds"]
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": machine_info(), "threads": args.threads, "order": list(order),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "data": args.data, "seed": args.seed, "epochs": args.epochs, "batch_size": 32,
        "timesteps": d["timesteps"], "input_dim": d["input_dim"], "padding": d["padding"],
        "features": d["features"], "sizes": d["sizes"], "longer_than_timesteps": d["longer_than_timesteps"],
        "feature_seconds": d["feature_seconds"], "results": results,
        "ratio_rnnkernels_over_torch": ratio,
    }
    print(render(report))
    if args.json:
        write_json_atomic(args.json, report)
    return 0


def render(report):
    results = report["results"]
    rows = []
    for system, r in results.items():
        if "error" in r:
            rows.append([system, "-", "-", "-", "-", "-", r["error"]])
            continue
        rows.append([system, f"{r['fit_seconds']:.1f}", f"{r['fit_cpu_seconds']:.1f}",
                     f"{100 * r['test_accuracy']:.1f}%", f"{r['test_loss']:.4f}",
                     f"{100 * r['history']['val_accuracy'][-1]:.1f}%",
                     f"{r['fit_seconds'] / results['torch']['fit_seconds']:.2f}"])
    table = format_table(["system", "fit s", "fit cpu s", "test acc", "test loss", "val acc", "fit / torch"],
                         rows, left=1)
    before, after = report["load_average_before"][0], report["load_average_after"][0]
    return (f"{table}\n\nrnnkernels/PyTorch fit time ratio: {report['ratio_rnnkernels_over_torch']:.2f} "
            f"({'faster' if report['ratio_rnnkernels_over_torch'] < 1 else 'SLOWER'}); "
            f"{report['epochs']} epochs, batch 32, {report['threads']} threads, order {' then '.join(report['order'])}; "
            f"load average {before:.2f} before, {after:.2f} after")


def build_parser():
    p = argparse.ArgumentParser(prog="seed_fsdd.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="embedded",
                   help="'embedded' (rnnkernels' copy of FSDD, default) or a folder of FSDD recordings")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for every system (default: all usable cores)")
    p.add_argument("--order", choices=("rnnkernels-first", "torch-first"), default="rnnkernels-first")
    p.add_argument("--keras", action="store_true", help="also time the model in Keras (subprocess, last)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--n-mels", type=positive_int, default=40)
    p.add_argument("--n-fft", type=positive_int, default=256)
    p.add_argument("--hop-length", type=positive_int, default=128)
    p.add_argument("--deltas", type=int, choices=(0, 1, 2), default=0,
                   help="append first (and second) time derivatives of the log-mel bands")
    p.add_argument("--normalize", choices=("global", "utterance", "none"), default="global",
                   help="standardise each feature over the training set (default), over its utterance, "
                        "or not at all (dB)")
    p.add_argument("--timesteps", type=positive_int, default=None,
                   help="frames per sequence (default: the longest training clip)")
    p.add_argument("--padding", choices=("pre", "post"), default="pre")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="fit's verbose (1, a progress bar, is the seed's default)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON (atomically)")
    p.add_argument("--_keras-worker", nargs=2, metavar=("INPUTS", "OUTPUT"), help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads is None:
        from rnnkernels.bench import default_threads
        args.threads = default_threads()
    try:
        if args._keras_worker:
            return keras_worker(*args._keras_worker, args.epochs, args.seed, args.threads, args.verbose)
        if not 0 < args.val_fraction < 1:
            raise ValueError(f"--val-fraction: expected a number in (0, 1), got {args.val_fraction}")
        return run(args)
    except KeyboardInterrupt:
        print("seed_fsdd.py: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as exc:
        print(f"seed_fsdd.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
