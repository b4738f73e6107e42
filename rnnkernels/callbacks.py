"""Training callbacks with Keras's names and semantics.

A callback receives ``set_model(model)`` and then ``on_train_begin(logs)``,
``on_epoch_begin(epoch, logs)``, ``on_train_batch_begin(batch, logs)``,
``on_train_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)`` and
``on_train_end(logs)``.  ``logs`` at epoch end holds ``loss``, the metrics and
their ``val_`` counterparts.  Setting ``model.stop_training = True`` ends
training after the current epoch.
"""
import csv
import math
import os
import warnings

import numpy as np

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
           "CSVLogger", "TerminateOnNaN", "LearningRateScheduler"]


class Callback:
    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


class History(Callback):
    """Records the epoch logs: ``history.history['loss']`` etc., and ``history.epoch``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class _Monitor(Callback):
    """Shared 'monitor a logged quantity, min or max' logic."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
        self.mode = mode
        self.min_delta = abs(float(min_delta))

    def _improved(self, current, best):
        if best is None:
            return True
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta

    def _value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__}: monitored quantity {self.monitor!r} is not in the logs "
                          f"(available: {sorted(logs or {})})", stacklevel=3)
        return value


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    ``restore_best_weights`` puts back the weights of the best epoch when it stops (as in
    Keras, only when it stops, not when the epochs run out)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.baseline
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
                self.model.set_weights(self.best_weights)

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(_Monitor):
    """Save the model (or only its weights), atomically, at each epoch end or every
    ``save_freq`` training batches, as Keras 3's ModelCheckpoint.

    ``filepath`` may contain format fields: ``{epoch:02d}`` (the epoch being trained,
    1-based as in Keras), ``{batch}`` (batch-level saving only: the batch's 1-based index
    within its epoch) and any logged quantity, e.g. ``{val_loss:.3f}`` at epoch end or
    ``{loss:.3f}`` at batch level.  Missing directories are created (as Keras); every file is
    written to a temporary file and renamed over the target, so a crash or Ctrl-C never
    leaves a partial file.

    ``save_freq``: ``'epoch'`` (the default), or an integer N: save after every N training
    batches, counted across epochs (and ``fit`` calls), as Keras; there is then no
    epoch-end save.  Batch-level logs hold the epoch's running ``loss`` and metrics so far,
    no ``val_*``.

    ``save_best_only``: write only when ``monitor`` improves on the best value seen (at
    batch level, compared across batches and epochs).  As in Keras, when ``monitor`` is not
    in the logs (``val_loss`` at batch level, or without validation data) a warning is
    given and the file is written anyway.

    A full save (the default) includes the optimizer state and the epoch count (completed
    epochs), so ``load_model`` + ``fit(initial_epoch=model.epochs_trained)`` resumes exactly
    from an epoch-end file; a mid-epoch file resumes from the start of its epoch (its
    optimizer state already holds that epoch's first steps)."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, 0)
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, (int, np.integer))
                                     or save_freq < 1):
            raise ValueError(f"save_freq: expected 'epoch' or a positive integer (a number of batches), "
                             f"got {save_freq!r}")
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"filepath: expected a str or os.PathLike path, got {type(filepath).__name__}")
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.best = initial_value_threshold
        self._current_epoch = 0
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _should_save_on_batch(self, batch):
        """Keras's count: batches since the last save, across epochs."""
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            added = batch + 1  # a new epoch (batches are numbered from 0 in each)
        else:
            added = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += added
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _path(self, epoch, batch, logs):
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"filepath: cannot format {self.filepath!r} with "
                             f"{sorted(fields)} ({'batch' if batch is not None else 'epoch'} end): "
                             f"{type(e).__name__}: {e}") from None

    def _save(self, epoch, batch, logs):
        logs = logs or {}
        path = self._path(epoch, batch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: can save the best model only with {self.monitor!r} in "
                              f"the logs (available: {sorted(logs)}); saving anyway, as Keras",
                              stacklevel=3)
            elif self._improved(current, self.best):
                self.best = current
            else:
                return
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            where = f"Epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
            print(f"{where}: saved model to {path}")


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a value in (0, 1), got {factor}")
        self.factor, self.patience, self.verbose = float(factor), int(patience), verbose
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._value(logs)
        if current is None:
            return
        optimizer = self.model.optimizer
        if not isinstance(optimizer.learning_rate, (int, float)):
            raise ValueError("ReduceLROnPlateau: the optimizer's learning_rate is a schedule; "
                             "use a float learning rate with this callback")
        if logs is not None:
            logs["learning_rate"] = optimizer.learning_rate
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = optimizer.learning_rate
                new = max(old * self.factor, self.min_lr)
                if old > new:
                    optimizer.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, self.model.optimizer.current_learning_rate())
        try:
            self.model.optimizer.learning_rate = float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"LearningRateScheduler: the schedule gave {lr!r} for epoch {epoch}; "
                             "expected a finite, non-negative number (the weights were not changed)") from None


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` then the logs, sorted) to ``filename``.  Each row is
    flushed and fsynced, so an interrupted run keeps every completed epoch."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, bool(append)
        self._file = None
        self._keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._keys = None
        if exists:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer.writerow(["epoch"] + self._keys)
        self._writer.writerow([epoch] + [logs.get(k, "NA") for k in self._keys])
        self._file.flush()
        os.fsync(self._file.fileno())

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True
