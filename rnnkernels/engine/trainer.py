"""The Keras-style training loop: compile, fit, evaluate, predict (the
:class:`Trainer` mixin of :class:`rnnkernels.models.Sequential`, as Keras 3's
``Trainer`` is of its ``Model``).

Data is batch-major: ``x (N, T, F)`` for sequence models (or a list of
``(T_i, F)`` arrays of different lengths, padded here with their lengths kept),
``y`` one-hot ``(N, C)`` for categorical cross-entropy, ids ``(N,)`` for the
sparse variant.  ``lengths=`` (``(N,)`` ints) gives each sequence's valid
steps explicitly; the recurrent layers then skip the padding.

Instead of arrays, ``fit``/``evaluate``/``predict`` take a Keras-style dataset
(like ``keras.utils.PyDataset``): an object with ``len(data)`` batches whose
``data[i]`` is ``(x, y)`` or ``(x, y, sample_weight)`` for batch ``i``, and
optionally ``on_epoch_begin()`` / ``on_epoch_end()``, called around each pass.
A batch's ``x`` may be a list of ``(T_i, F)`` arrays: it is padded and its
lengths are kept, as for ``x`` itself.

Weighting, as Keras 3: ``sample_weight`` ``(N,)`` scales each sample's loss and
``class_weight`` ``{class index: weight}`` gives each sample the weight of its
target class; a batch's loss is ``sum(weight * loss) / batch size`` (padded
steps of sequence outputs are left out of both), and the epoch's loss the mean
of the batch losses weighted by batch size.  Metrics given as ``metrics=`` are
not weighted; those given as ``weighted_metrics=`` are, ``sum(weight * score) /
sum(weight)`` (as in Keras 3, which also names them ``weighted_<name>`` when an
unweighted metric has the same name).

Reproducibility: ``Sequential(seed=...)`` fixes the initial weights, each
epoch's shuffling comes from a generator seeded by ``(seed, epoch)`` and each
sample's dropout masks from ``(seed, epoch, the sample's index)`` (for a
dataset, its batch and row: rnnkernels/_util/keyed_random.py), so they do not
depend on the batch a sample lands in nor on how many processes share it;
every computation has a fixed order, so a seed gives
bitwise-identical training for any thread count, and resuming from a
checkpoint at epoch ``k`` continues exactly as the uninterrupted run.

Launched by ``mpiexec -n N`` (N > 1), fit trains data-parallel over the N
ranks (rnnkernels.distributed: each rank takes its rows of every global batch of
``batch_size``); the hooks below that read ``self._dist`` are all it takes.

Ctrl-C during :meth:`Sequential.fit` (called in the main thread, with Python's
default SIGINT handler in place) is deferred to the end of the current training
batch: that batch's update and its ``on_train_batch_end`` callbacks complete,
then ``KeyboardInterrupt`` is raised.  The model holds the weights after a
whole batch (``optimizer.iterations`` counts the batches applied), never a
half-applied update.  The interrupted epoch gets no validation and no
``on_epoch_end`` (a Ctrl-C during validation or the epoch-end callbacks acts
once they are done; that epoch then counts as completed), and ``on_train_end``
is not called: CSVLogger's file is not closed by it, but its rows are fsynced
at each epoch end, and files written by ModelCheckpoint are complete (written
atomically).  ``model.history`` and ``model.epochs_trained`` hold the completed
epochs, so training resumes with ``fit(initial_epoch=model.epochs_trained)`` or
from a checkpoint.  The previous SIGINT handler is back when fit returns or
raises.  A second Ctrl-C raises ``KeyboardInterrupt`` at once, wherever it
lands (possibly inside a batch's update).
"""
import contextlib
import copy
import math
import sys
import time

import numpy as np

from .. import distributed, losses, metrics as metrics_module, optimizers
from .._core.blas import pin_blas
from .._util.keyed_random import KeyedRandom, dataset_sample_ids
from ..callbacks import Callback, History
from ..layers.core import time_mask
from .data_adapter import DataAdapter, dataset_hook, dataset_length, is_dataset
from .interrupts import deferred_interrupts


def _metric_list(metrics):
    """compile's metrics argument as a list (None: none; one name or Metric: a list of it)."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, metrics_module.Metric)):
        return [metrics]
    return list(metrics)



class Trainer(DataAdapter):
    """Training, evaluation and prediction over the model's ``layers``."""
    _dist = None  # the distributed strategy while fit runs on several ranks

    # compiling ------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None):
        """Set the optimizer (name or instance), loss (name or instance) and metrics (names or
        Metric instances).  ``metrics`` count every valid position once; ``weighted_metrics``
        weigh each by its sample or class weight (Keras 3's two lists and log names)."""
        if loss is None:
            raise ValueError("loss: expected a loss name such as 'categorical_crossentropy' or a Loss")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self._metric_specs = _metric_list(metrics)
        self._weighted_specs = _metric_list(weighted_metrics)
        self._resolve_metrics()

    def _resolve_metrics(self):
        """``self.metrics``: the unweighted metrics, then the weighted ones (a copy of an
        instance given in both lists; ``weighted_`` before a name the unweighted list uses
        too)."""
        units = self.layers[-1].output_shape[-1] if self.built else None
        plain = [metrics_module.get(m, self.loss.name, units) for m in self._metric_specs]
        weighted = []
        for spec in self._weighted_specs:
            m = metrics_module.get(spec, self.loss.name, units, "weighted_metrics")
            if any(m is p for p in plain):  # one instance in both lists: two running means
                m = copy.copy(m)
                m.reset()
            if m.name in {p.name for p in plain}:
                m.name = "weighted_" + m.name
            weighted.append(m)
        self.metrics, self._n_unweighted = plain + weighted, len(plain)

    def _update_metrics(self, y, out, position_weights, sample_weight):
        """Add a batch to every metric: position weights (padded steps 0) for all, times
        the sample weights for the weighted ones."""
        weighted = position_weights
        if sample_weight is not None and len(self.metrics) > self._n_unweighted:
            sw = np.asarray(sample_weight, np.float64)
            positions = out.shape[:-1]
            sw = sw.reshape(sw.shape + (1,) * (len(positions) - sw.ndim))
            weighted = sw if position_weights is None else sw * position_weights
        for i, m in enumerate(self.metrics):
            m.update(y, out, position_weights if i < self._n_unweighted else weighted)

    @property
    def metrics_names(self):
        return ["loss"] + [m.name for m in self.metrics]

    def _require_compiled(self):
        if self.optimizer is None:
            raise ValueError("model: call compile(optimizer, loss, metrics) before fit/evaluate")

    def _fused(self):
        """Whether the last layer's activation is folded into the loss (stable p - y gradients)."""
        last = self.layers[-1]
        return (not self.loss.from_logits and self.loss.fuses_with is not None
                and getattr(last, "activation", None) == self.loss.fuses_with
                and hasattr(last, "backward_from_logits"))


    # running --------------------------------------------------------------
    def _forward(self, x, training, lengths, rng=None):
        for i, layer in enumerate(self.layers):
            layer.rng = rng.child(i) if isinstance(rng, KeyedRandom) else rng
            out = layer.forward(x, training=training, lengths=lengths)
            lengths = layer.output_lengths(lengths)
            x = out
        return x, lengths

    @staticmethod
    def _position_weights(out, lengths):
        if lengths is None or out.ndim != 3:
            return None
        return time_mask(lengths, out.shape[1], out.dtype)

    def _loss(self, y, out, lengths, with_grad, sample_weight=None):
        weights = self._position_weights(out, lengths)
        kw = {}
        if self._dist is not None:  # this rank's share of the global batch's loss
            kw["count"] = self._dist.loss_count(out, weights)
        # a sequence loss (CTC) takes each sample's frame count, after any subsampling
        if getattr(self.loss, "uses_lengths", False):
            kw["lengths"] = lengths
        if self._fused():
            value, grad = self.loss.from_logits_value_and_grad(y, self.layers[-1]._z, weights,
                                                               sample_weight=sample_weight, **kw)
        else:
            value, grad = self.loss.value_and_grad(y, out, weights, sample_weight, **kw)
        return value, grad, weights

    def _train_step(self, x, y, lengths, rng, sample_weight=None):
        if self._dist is not None and x.shape[0] == 0:  # this rank has no rows of the batch
            return self._dist.idle_train_step(self, self._sequence_output())
        out, out_lengths = self._forward(x, True, lengths, rng)
        value, grad, weights = self._loss(y, out, out_lengths, True, sample_weight)
        sync = None if self._dist is None else self._dist.gradient_sync()
        layers = self.layers
        if self._fused():
            grad = layers[-1].backward_from_logits(grad)
            layers = layers[:-1]
            if sync is not None:
                sync.ready(self.layers[-1])
        # nothing before the first trainable layer learns: no gradient reaches below it
        first = next((i for i, layer in enumerate(layers) if layer.trainable_params()), len(layers))
        try:
            for i in range(len(layers) - 1, first - 1, -1):
                layer = layers[i]
                layer.needs_input_grad = i > first
                grad = layer.backward(grad)
                if sync is not None:  # its gradients start their all-reduce now
                    sync.ready(layer)
        finally:
            if first < len(layers):  # a direct layer.backward() call still gets its dx
                layers[first].needs_input_grad = True
        if sync is not None:  # metrics first: their sums travel with the last bucket
            self._update_metrics(y, out, weights, sample_weight)
            value = self._dist.finish_step(self, sync, value)
        self.optimizer.apply_gradients(self.trainable_params(), self._trainable_grads())
        if sync is None:
            self._update_metrics(y, out, weights, sample_weight)
        return value

    def _sequence_output(self):
        """Whether the model's output keeps the time axis (one loss term per step)."""
        return len(self.layers[-1].output_shape) >= 2

    def _epoch_rng(self, epoch):
        return np.random.default_rng([self.seed, 1, epoch])


    def _logs(self, loss_tracker, prefix=""):
        logs = {prefix + "loss": loss_tracker.result()}
        results = ([m.result() for m in self.metrics] if self._dist is None
                   else self._dist.metric_results(self))  # over every rank's rows
        for m, r in zip(self.metrics, results):
            logs[prefix + m.name] = r
        return logs

    @staticmethod
    def _format_logs(logs):
        return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0, lengths=None,
            sample_weight=None, class_weight=None):
        """Train for ``epochs - initial_epoch`` epochs; returns a :class:`History`.

        ``validation_data``: ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``, or a
        dataset; ``validation_split``: fraction of the *last* samples held out (before
        shuffling, as Keras; their ``sample_weight`` goes with them).  ``verbose``: 0 silent,
        1 a progress bar per epoch (loss, metrics, samples/s, ETA), 2 one line per epoch.
        ``lengths``: valid steps of each sequence of ``x``.

        ``sample_weight``: ``(N,)`` non-negative weights, each sample's loss is multiplied by its
        weight (or ``(N, T)``, one per step, for sequence outputs).  ``class_weight``: dict
        ``{class index: weight}``; each sample weighs what its target class does (classes
        not in the dict weigh 1); training data only, not validation data.  The two cannot be
        combined.  A batch's loss is ``sum(weight * loss) / batch size`` (Keras 3's
        "sum_over_batch_size").  The weights also weigh the ``weighted_metrics`` given to
        :meth:`compile`; the ``metrics`` count every sample once (as Keras's).

        ``x`` may be a dataset (see the module docstring): ``len(x)`` batches, ``x[i]`` gives
        ``(x, y)`` or ``(x, y, sample_weight)``.  ``y``, ``batch_size``, ``sample_weight``,
        ``lengths`` and ``validation_split`` must then be left out (a ValueError otherwise);
        ``class_weight`` weights ``(x, y)`` batches.  ``shuffle=True`` visits the batches in a
        new order each epoch (as Keras; a dataset that wants new batch contents reshuffles in
        ``on_epoch_end``).  ``x.on_epoch_begin()`` and ``x.on_epoch_end()``, when defined, are
        called before and after each epoch's batches (before validation); on_epoch_end not
        when training stops inside the epoch."""
        self._require_compiled()
        for name, v in (("epochs", epochs), ("initial_epoch", initial_epoch)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"validation_split: expected a fraction in [0, 1), got {validation_split}")
        dataset = is_dataset(x)
        if dataset:
            self._no_array_arguments("x", y=y, batch_size=batch_size, sample_weight=sample_weight,
                                     lengths=lengths, validation_split=validation_split)
            n_batches = dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            self._resolve_metrics()
            if class_weight is not None:
                self._class_weight_table(class_weight)  # bad keys or values fail before training
            val_batch_size = self._batch_size(None)
        else:
            x, lengths = self._prepare_x(x, lengths, finite=True)
            y = self._prepare_y(y, x.shape[0])
            batch_size = val_batch_size = self._batch_size(batch_size)
            self._ensure_built(x.shape[1:])
            self._resolve_metrics()
            self._check_output_shape(y)
            sample_weight = self._weights(y, sample_weight, class_weight)
        val = None
        if validation_data is not None:
            if is_dataset(validation_data):
                dataset_length(validation_data, "validation_data")
                val = validation_data
            else:
                val = self._validation_arrays(validation_data)
        elif validation_split:
            split = x.shape[0] - int(math.floor(x.shape[0] * validation_split))
            if split in (0, x.shape[0]):  # as Keras 3: an empty side is an error, not val_loss 0.0
                raise ValueError(f"validation_split: {validation_split} of {x.shape[0]} samples leaves "
                                 f"{x.shape[0] - split} for validation and {split} for training; "
                                 "each needs at least one")
            # class weights are for training only: the held-out part keeps sample weights alone
            val_weight = None if class_weight is not None or sample_weight is None else sample_weight[split:]
            val = (x[split:], y[split:], None if lengths is None else lengths[split:], val_weight)
            x, y = x[:split], y[:split]
            lengths = None if lengths is None else lengths[:split]
            sample_weight = None if sample_weight is None else sample_weight[:split]
        if not dataset:
            n = x.shape[0]
            if n == 0:
                raise ValueError("x: expected at least one training sample, got 0")
            n_batches = -(-n // batch_size)
        dist = distributed.active()  # None: this process alone
        if dist is not None:
            dist.check_fit(self, None if dataset else n, None if dataset else batch_size, n_batches)
            verbose = dist.verbose(verbose)
        history = History()
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected Callback instances, got {type(cb).__name__}")
        callbacks.append(history)
        if dist is not None:
            callbacks = dist.callbacks(callbacks)  # files are written by rank 0
        for cb in callbacks:
            cb.set_model(self)
        self.history = history
        self.stop_training = False
        from tqdm.auto import tqdm

        dataset_samples = None  # samples per epoch of a dataset, known after its first epoch
        with pin_blas(1), (dist.training(self) if dist else contextlib.nullcontext()), \
                deferred_interrupts(self):
            for cb in callbacks:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                rng = self._epoch_rng(epoch)
                if dataset:
                    dataset_hook(x, "on_epoch_begin")
                    order = rng.permutation(n_batches) if shuffle else np.arange(n_batches)
                else:
                    order = rng.permutation(n) if shuffle else None
                tracker = metrics_module.Mean()
                for m in self.metrics:
                    m.reset()
                bar = tqdm(total=dataset_samples if dataset else n, desc=f"Epoch {epoch + 1}/{epochs}",
                           unit="sample", leave=True, disable=verbose != 1, file=sys.stderr,
                           mininterval=0.5, dynamic_ncols=True)
                started = time.perf_counter()
                seen = 0
                try:
                    for batch in range(n_batches):
                        for cb in callbacks:
                            cb.on_train_batch_begin(batch, {})
                        if dataset:
                            xb, yb, lb, wb = self._dataset_batch(x, int(order[batch]), class_weight, "x")
                            if bar.total is None:  # until the first epoch ends: an estimate
                                bar.total = n_batches * xb.shape[0]
                            ids = dataset_sample_ids(x, int(order[batch]), xb.shape[0])
                        else:
                            sl = slice(batch * batch_size, (batch + 1) * batch_size)
                            ids = np.arange(sl.start, min(sl.stop, n))
                            if order is not None:
                                sl = ids = order[sl]
                            xb, yb = x[sl], y[sl]
                            lb = None if lengths is None else lengths[sl]
                            wb = None if sample_weight is None else sample_weight[sl]
                        nb = xb.shape[0]  # the global batch's size
                        if dist is not None:
                            xb, yb, lb, wb, ids = dist.share(nb, xb, yb, lb, wb, ids, cost=lb)
                        masks = KeyedRandom((self.seed, 1, epoch), ids, batch_key=batch)
                        value = self._train_step(xb, yb, lb, masks, wb)
                        tracker.update(value, nb)
                        seen += nb
                        logs = self._logs(tracker)
                        for cb in callbacks:
                            cb.on_train_batch_end(batch, logs)
                        bar.update(nb)
                        bar.set_postfix_str(self._format_logs(logs), refresh=False)
                        if self._interrupted:
                            raise KeyboardInterrupt
                        if self.stop_training:
                            break
                    else:
                        if dataset:
                            dataset_samples = bar.total = seen
                            dataset_hook(x, "on_epoch_end")
                    logs = self._logs(tracker)
                    if val is not None:
                        logs.update(self._evaluate_data(val, val_batch_size, "val_"))
                    bar.set_postfix_str(self._format_logs(logs))
                finally:
                    bar.close()
                if verbose == 2:
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - "
                          f"{self._format_logs(logs)}", flush=True)
                self.epochs_trained = epoch + 1
                if dist is not None:
                    dist.epoch_end(self, epoch)  # the ranks' weights are bitwise the same
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self._interrupted:
                    raise KeyboardInterrupt
                if self.stop_training:
                    break
            for cb in callbacks:
                cb.on_train_end({})
        return history


    def _evaluate_batch(self, tracker, x, y, lengths, sample_weight):
        n = x.shape[0]
        if self._dist is not None:  # this rank's rows; the loss shares are summed
            x, y, lengths, sample_weight = self._dist.share(n, x, y, lengths, sample_weight, cost=lengths)
            if x.shape[0] == 0:
                if self._sequence_output():
                    self._dist.global_count(0)
                tracker.update(self._dist.sum_scalar(0.0), n)
                return n
        out, out_lengths = self._forward(x, False, lengths)
        value = self._loss(y, out, out_lengths, False, sample_weight)[0]
        tracker.update(value if self._dist is None else self._dist.sum_scalar(value), n)
        self._update_metrics(y, out, self._position_weights(out, out_lengths), sample_weight)
        return n

    def _evaluate_data(self, data, batch_size, prefix="", verbose=0, argument="validation_data"):
        """Logs (loss and metrics, keys prefixed) over arrays ``(x, y, lengths, sample_weight)``
        in batches of ``batch_size``, or over a dataset's batches in order."""
        from tqdm.auto import tqdm
        tracker = metrics_module.Mean()
        for m in self.metrics:
            m.reset()
        dataset = is_dataset(data)
        if dataset:
            n_batches = dataset_length(data, argument)
            dataset_hook(data, "on_epoch_begin")
        else:
            x, y, lengths, sample_weight = data
            n_batches = -(-x.shape[0] // batch_size)
        with tqdm(total=n_batches if dataset else x.shape[0], unit="batch" if dataset else "sample",
                  disable=verbose != 1, file=sys.stderr, leave=True, desc="Evaluate") as bar:
            for i in range(n_batches):
                if dataset:
                    self._evaluate_batch(tracker, *self._dataset_batch(data, i, None, argument))
                    bar.update(1)
                else:
                    sl = slice(i * batch_size, (i + 1) * batch_size)
                    bar.update(self._evaluate_batch(tracker, x[sl], y[sl],
                                                    None if lengths is None else lengths[sl],
                                                    None if sample_weight is None else sample_weight[sl]))
        if dataset:
            dataset_hook(data, "on_epoch_end")
        return self._logs(tracker, prefix)

    def evaluate(self, x=None, y=None, batch_size=None, verbose=1, lengths=None, return_dict=False,
                 sample_weight=None):
        """``[loss, metric...]`` over the data (the loss alone when there are no metrics);
        ``return_dict=True`` gives ``{'loss': ..., 'accuracy': ...}``.  ``sample_weight``
        weights the loss and the ``weighted_metrics`` as in :meth:`fit` (``metrics`` stay
        unweighted, as Keras's).
        ``x`` may be a dataset, as in :meth:`fit` (its batches in order; ``y``,
        ``batch_size``, ``lengths`` and ``sample_weight`` left out)."""
        self._require_compiled()
        if is_dataset(x):
            self._no_array_arguments("x", y=y, batch_size=batch_size, sample_weight=sample_weight,
                                     lengths=lengths)
            dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            self._resolve_metrics()
            data = x
        else:
            x, lengths = self._prepare_x(x, lengths, finite=True)
            y = self._prepare_y(y, x.shape[0])
            self._ensure_built(x.shape[1:])
            self._resolve_metrics()
            self._check_output_shape(y)
            data = (x, y, lengths, self._prepare_sample_weight(sample_weight, y))
        with pin_blas(1):
            logs = self._evaluate_data(data, self._batch_size(batch_size), verbose=verbose, argument="x")
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose=0, lengths=None):
        """Model outputs for ``x``, batch by batch (inference mode: no dropout).  ``x`` may be a
        dataset (its batches in order; a batch may be ``x``, ``(x,)``, ``(x, y)`` or
        ``(x, y, sample_weight)``, only ``x`` is used)."""
        if is_dataset(x):
            self._no_array_arguments("x", batch_size=batch_size, lengths=lengths)
            n_batches = dataset_length(x, "x")
            self._build_from_dataset(x, "x")
            outs = []
            dataset_hook(x, "on_epoch_begin")
            with pin_blas(1):
                for i in range(n_batches):
                    xb = self._dataset_item(x, i, "x", need_y=False)[0]
                    xb, lb = self._prepare_x(xb, None, f"x[{i}][0]")
                    outs.append(np.array(self._forward(xb, False, lb)[0]))
            dataset_hook(x, "on_epoch_end")
            shapes = {o.shape[1:] for o in outs}
            if len(shapes) > 1:
                raise ValueError(f"x: the dataset's batches gave outputs of different shapes "
                                 f"{sorted(shapes)[:4]} (sequences padded to different lengths?), "
                                 "which cannot be stacked; predict batch by batch instead")
            return np.concatenate(outs)
        x, lengths = self._prepare_x(x, lengths)
        self._ensure_built(x.shape[1:])
        batch_size = self._batch_size(batch_size)
        outs = []
        with pin_blas(1):
            for start in range(0, x.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                outs.append(np.array(self._forward(x[sl], False,
                                                   None if lengths is None else lengths[sl])[0]))
        return np.concatenate(outs) if outs else np.zeros((0,) + self.layers[-1].output_shape, self.dtype)

    def __call__(self, x, training=False, lengths=None):
        x, lengths = self._prepare_x(x, lengths)
        self._ensure_built(x.shape[1:])
        return self._forward(x, training, lengths, KeyedRandom((self.seed, 3), np.arange(x.shape[0])))[0]

    def train_on_batch(self, x, y, lengths=None, sample_weight=None, class_weight=None):
        """One optimizer step on this batch; returns the loss (and metrics, as a list), computed
        before the step.  ``sample_weight`` / ``class_weight`` as in :meth:`fit`."""
        self._require_compiled()
        x, lengths = self._prepare_x(x, lengths, finite=True)
        y = self._prepare_y(y, x.shape[0])
        self._ensure_built(x.shape[1:])
        self._resolve_metrics()
        self._check_output_shape(y)
        sample_weight = self._weights(y, sample_weight, class_weight)
        for m in self.metrics:
            m.reset()
        with pin_blas(1):
            value = self._train_step(x, y, lengths,
                                     KeyedRandom((self.seed, 2, self.optimizer.iterations),
                                                 np.arange(x.shape[0])), sample_weight)
        return value if not self.metrics else [value] + [m.result() for m in self.metrics]

    def test_on_batch(self, x, y, lengths=None, sample_weight=None):
        """:meth:`evaluate` on one batch; ``sample_weight`` weights the loss and the
        ``weighted_metrics``."""
        return self.evaluate(x, y, batch_size=max(1, len(x)), verbose=0, lengths=lengths,
                             sample_weight=sample_weight)

    def predict_on_batch(self, x, lengths=None):
        return self.predict(x, batch_size=max(1, len(x)), lengths=lengths)

