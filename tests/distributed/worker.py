"""The script the distributed tests launch with ``mpiexec -n N`` (and run alone for N = 1):
trains a small model with fit, unchanged, and writes what the tests compare.

Usage: python worker.py OUT.npz [options as key=value]: model=gru|lstm|bn, epochs, batch,
n (samples), dropout, kill_rank, kill_at (batch), sleep (seconds per batch)."""
import contextlib
import os
import signal
import sys
import time

import numpy as np

from rnnkernels import callbacks, distributed
from rnnkernels.layers import GRU, LSTM, BatchNormalization, Bidirectional, Dense, Dropout, \
    GlobalAveragePooling1D
from rnnkernels.models import Sequential, load_model


def main(out, **opts):
    if opts.get("errfile"):  # this rank's stderr straight to a file (no launcher forwarding)
        fd = os.open(f"{opts['errfile']}.rank{distributed.launched_rank()}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
    n, T, F, C = int(opts.get("n", 45)), 7, 3, 3
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, n)
    x = rng.normal(size=(n, T, F)).astype(opts.get("dtype", "float32"))
    x[:, :, 0] += y[:, None]
    lengths = rng.integers(1, T + 1, n)
    kind = opts.get("model", "gru")
    drop = float(opts.get("dropout", 0.3))
    if kind == "bn":
        layers = [LSTM(5, return_sequences=True, input_shape=(None, F), recurrent_dropout=0.2),
                  GlobalAveragePooling1D(), BatchNormalization(), Dropout(drop),
                  Dense(C, activation="softmax")]
    elif kind == "seq":  # one loss term per real step: the padding mask's count over the ranks
        layers = [GRU(5, return_sequences=True, input_shape=(None, F), dropout=0.2),
                  Dropout(drop), Dense(C, activation="softmax")]
        y = np.repeat(y[:, None], T, axis=1)
    elif kind == "lstm":
        layers = [LSTM(6, return_sequences=True, input_shape=(None, F), dropout=0.1, zoneout=0.1),
                  GlobalAveragePooling1D(), Dense(8, activation="relu"), Dropout(drop),
                  Dense(C, activation="softmax")]
    else:
        layers = [Bidirectional(GRU(4, return_sequences=True, recurrent_dropout=0.2), input_shape=(None, F)),
                  GlobalAveragePooling1D(), Dropout(drop), Dense(C, activation="softmax")]
    resume = opts.get("resume")
    if resume:
        model = load_model(resume)
    else:
        model = Sequential(layers, seed=7 + distributed.rank(), dtype=opts.get("dtype", "float32"))
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    cbs = []
    if opts.get("checkpoint"):
        cbs.append(callbacks.ModelCheckpoint(opts["checkpoint"]))
    if opts.get("csv"):
        cbs.append(callbacks.CSVLogger(opts["csv"]))
    kill_rank, kill_at = int(opts.get("kill_rank", -1)), int(opts.get("kill_at", -1))
    pause = float(opts.get("sleep", 0))

    class Faults(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if pause:
                time.sleep(pause)
            if distributed.rank() == kill_rank and self.model.optimizer.iterations == kill_at:
                how = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}
                os.kill(os.getpid(), how[opts.get("signal", "kill")])

    cbs.append(Faults())
    if opts.get("per_rank_paths"):  # only rank 0's may appear
        for cb in cbs:
            for attr in ("filepath", "filename"):
                if hasattr(cb, attr):
                    setattr(cb, attr, f"{getattr(cb, attr)}.rank{distributed.rank()}")
    from rnnkernels._core.threads import get_num_threads
    print(f"rank {distributed.rank()} threads {get_num_threads()}", flush=True)
    batch = int(opts.get("batch", 8))

    class Batches:  # a Keras-style dataset of ragged batches (fit pads them, keeps lengths)
        batch_size = batch

        def __len__(self):
            return -(-n // batch)

        def __getitem__(self, i):
            sl = slice(i * batch, (i + 1) * batch)
            return [x[j, :lengths[j]] for j in range(n)[sl]], y[sl]

    data = dict(x=Batches()) if opts.get("dataset") else dict(x=x, y=y, lengths=lengths, batch_size=batch)
    scope = distributed.MPIStrategy(bucket_bytes=int(opts["bucket"])).scope() \
        if opts.get("bucket") and distributed.launched_size() > 1 else contextlib.nullcontext()
    try:
        with scope as strategy:
            history = model.fit(**data, epochs=int(opts.get("epochs", 2)),
                                verbose=int(opts.get("verbose", 0)),
                                validation_data=(x[:10], y[:10]), callbacks=cbs,
                                initial_epoch=model.epochs_trained)
        if strategy is not None:
            print(f"rank {distributed.rank()} buckets {strategy._gradients.buckets_launched}", flush=True)
    except KeyboardInterrupt:
        print(f"rank {distributed.rank()} interrupted after step {model.optimizer.iterations}",
              flush=True)
        sys.exit(130)
    weights = model.get_weights()
    np.savez(f"{out}.rank{distributed.rank()}.npz", *weights,
             history=np.array([history.history[k] for k in sorted(history.history)]))
    if distributed.rank() == 0 and opts.get("save"):
        model.save(opts["save"])
    print(f"rank {distributed.rank()} of {distributed.size()} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], **dict(a.split("=", 1) for a in sys.argv[2:]))
