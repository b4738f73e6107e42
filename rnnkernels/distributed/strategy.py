"""The strategies fit runs under, and the hooks its loop calls.

``fit`` asks :func:`active` which strategy applies: the one of an enclosing
``with strategy.scope():`` if any (as Keras's ``tf.distribute``), else
:class:`MPIStrategy` when an MPI launcher started more than one rank (as
Horovod, but without a line of user code), else none: one process, the
plain loop.  :class:`OneProcess` opts a launched process out.

What an :class:`MPIStrategy` does to a fit (docs/distributed.md):

- broadcasts rank 0's weights, optimizer state, seed and epoch count
  (state.py); every rank draws the same permutation from ``(seed, epoch)``;
- gives each rank its rows of every global batch (partition.py); dropout masks
  are keyed by each sample's global index (rnnkernels/_util/keyed_random.py),
  so they are those of the one-process run;
- divides each rank's loss by the *global* batch's count, so the ranks'
  gradients add up to the one-process gradient, summed in buckets during
  backward (gradients.py); BatchNormalization's sums are reduced over the ranks;
- reduces metrics (and agrees on stopping) at every batch end, checks the
  weights are bitwise the same on every rank after every epoch;
- keeps progress bars, ModelCheckpoint and CSVLogger to rank 0;
- watches the peers and the signals (watchdog.py).
"""
import atexit
import contextlib
import os
import sys

import numpy as np

from .._core import threads as _threads
from .comm import Comm, DistributedError
from .gradients import DEFAULT_BUCKET_BYTES, GradientSync
from .launch import default_threads, launched_rank, launched_size
from .partition import LaunchError, check_launch, rows
from .state import broadcast_state, check_same_weights
from .watchdog import SignalFlags, Watchdog

__all__ = ["MPIStrategy", "OneProcess", "active", "rank", "size", "is_chief"]

_scopes = []       # strategies of enclosing scope() blocks, innermost last
_launched = None   # the MPIStrategy made for a launched process


class OneProcess:
    """Train in this process alone, even when launched as one of several MPI ranks."""
    rank, size, is_chief = 0, 1, True

    @contextlib.contextmanager
    def scope(self):
        _scopes.append(self)
        try:
            yield self
        finally:
            _scopes.remove(self)


def _rank_zero_only(callback):
    """Whether a callback writes files (only rank 0's may)."""
    from ..callbacks import CSVLogger, ModelCheckpoint
    return isinstance(callback, (ModelCheckpoint, CSVLogger)) or getattr(callback, "rank_zero_only", False)


class MPIStrategy(OneProcess):
    """Synchronous data parallelism over MPI's ``COMM_WORLD`` (see the module docstring).

    ``bucket_bytes``: gradient bytes per all-reduce bucket; ``threads``: kernel threads of
    this rank (default: the node's usable cores divided by its ranks, unless
    ``OMP_NUM_THREADS`` or ``set_num_threads`` chose already); ``watchdog``: watch the
    peers while fit runs."""

    def __init__(self, bucket_bytes=DEFAULT_BUCKET_BYTES, threads=None, watchdog=True):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) \
                or bucket_bytes < 1:
            raise ValueError(f"bucket_bytes: expected a positive integer, got {bucket_bytes!r}")
        self.comm = Comm()
        self.rank, self.size = self.comm.rank, self.comm.size
        self.is_chief = self.rank == 0
        self.bucket_bytes = int(bucket_bytes)
        self.use_watchdog = bool(watchdog)
        if threads is not None:
            _threads.set_num_threads(threads)
        elif _threads._num_threads is None and not _threads.os.environ.get("OMP_NUM_THREADS"):
            # the launcher may not have said how many ranks share the node; MPI knows
            _threads.set_num_threads(default_threads(self.comm.local_size))
        self._agree_on_the_plan()
        self._gradients = GradientSync(self.comm, self.bucket_bytes)
        self._signals = None
        self._watchdog = None
        self._batch_rows = 0
        self._fresh, self._results = False, []
        atexit.register(self._exit_without_finalize)  # runs before mpi4py's MPI_Finalize

    _abnormal_exit = None  # exit status when fit left this rank in a failed parallel run

    def _agree_on_the_plan(self):
        """Every rank runs rank 0's tuning plan (its kernel build, tile widths, CPU count):
        the plan decides the last bits, and the ranks must compute the same ones.  A rank
        whose CPU cannot run it (ranks on different CPUs) is a clear error on every rank."""
        from .._core import tuning

        data = self.comm.bcast_object(tuning.current().to_dict() if self.is_chief else None,
                                      what="the tuning plan")
        try:
            plan, problem = tuning.Plan.from_dict(data, "rank 0's tuning plan"), None
        except ValueError as exc:
            plan, problem = None, str(exc)
        failed = self.comm.allgather(np.array([problem is not None], np.int8), what="the tuning plan")
        bad = [int(r) for r in np.flatnonzero(failed[:, 0])]
        if bad:
            raise LaunchError(f"mpiexec -n {self.size}: rank(s) {', '.join(map(str, bad))} cannot run rank 0's "
                              f"tuning plan ({problem or 'see that rank'}); on ranks with different CPUs, "
                              f"give every rank one plan they all run (RNNKERNELS_ISA=avx2 or "
                              f"RNNKERNELS_PLAN=FILE)")
        if not self.is_chief or tuning.current() != plan:
            tuning.use(plan)

    def _exit_without_finalize(self):
        """After a failed parallel fit the peers may never reach MPI_Finalize (dead, hung,
        or still waiting in a collective for this rank), and Finalize would wait for them:
        leave without it.  The launcher then sees this rank's failure and ends the job."""
        if self._abnormal_exit is not None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(self._abnormal_exit)

    # fit's hooks ---------------------------------------------------------------
    def check_fit(self, model, n_samples, batch_size, n_batches):
        """Bad launches fail on every rank alike, before training."""
        check_launch(self.size, n_samples, batch_size, n_batches)
        if n_samples is not None and batch_size and 0 < n_samples % batch_size < self.size \
                and _has_batch_norm(model):
            raise LaunchError(f"mpiexec -n {self.size}: the last batch has {n_samples % batch_size} "
                              f"samples, fewer than the ranks, and BatchNormalization needs every "
                              f"rank to have samples; choose a batch size or sample count for which "
                              f"n % batch_size is 0 or at least {self.size}")

    def verbose(self, verbose):
        return verbose if self.is_chief else 0

    def callbacks(self, callbacks):
        return callbacks if self.is_chief else [c for c in callbacks if not _rank_zero_only(c)]

    @contextlib.contextmanager
    def training(self, model):
        """Around fit's epochs: same state everywhere, the peers watched, signals agreed on."""
        model._dist = self
        batch_norms = _batch_norms(model)
        try:
            broadcast_state(self.comm, model)
            if self.use_watchdog and self._watchdog is None:
                self._watchdog = Watchdog(self.comm).start()
                self.comm.watchdog = self._watchdog
            self._signals = SignalFlags().install()
            for layer in batch_norms:
                layer._reduce = self.sum_arrays
            yield self
            self.comm.barrier("the end of training")
        except KeyboardInterrupt:
            if not getattr(model, "_interrupted", False):  # not the ranks' agreed stop
                self._abnormal_exit = 130
            raise
        except BaseException:
            self._abnormal_exit = 1
            raise
        finally:
            for layer in batch_norms:
                layer._reduce = None
            if self._signals is not None:
                self._signals.restore()
                self._signals = None
            self.close()
            model._dist = None

    def share(self, n, *arrays, cost=None):
        """This rank's rows of a global batch of ``n`` rows (None arrays stay None);
        ``cost``: the rows' lengths, to even the ranks' work (partition.rows)."""
        idx = rows(n, self.rank, self.size, cost)
        self._batch_rows = n
        if cost is None and idx.size:  # contiguous: views, no copies
            idx = slice(int(idx[0]), int(idx[-1]) + 1)
        return tuple(None if a is None else a[idx] for a in arrays)

    def loss_count(self, out, weights):
        """The loss divisor of the whole batch: for one output per sample its rows (known
        to every rank, no message); for sequence outputs its positions, or its real ones
        under a padding mask, summed over the ranks (every rank makes this call alike:
        whether a mask comes depends on the model, not on the rank)."""
        if out.ndim == 2:
            return float(self._batch_rows)
        if weights is None:
            return self.global_count(int(np.prod(out.shape[:-1], dtype=np.int64)))
        return self.global_count(np.count_nonzero(np.broadcast_to(weights, out.shape[:-1])))

    def global_count(self, local_count):
        buf = np.array([float(local_count)])
        return float(self.comm.allreduce(buf, what="the loss count")[0])

    def gradient_sync(self):
        self._gradients.begin()
        return self._gradients

    def idle_train_step(self, model, sequences):
        """A rank without rows in this batch joins the step's collectives with zeros
        (``sequences``: whether the model outputs sequences, so the count is summed)."""
        if sequences:
            self.global_count(0)
        sync = self.gradient_sync()
        for layer in reversed(model.layers):
            _zero_grads(layer)
            sync.ready(layer)
        value = self.finish_step(model, sync, 0.0)
        model.optimizer.apply_gradients(model.trainable_params(), model._trainable_grads())
        return value

    def finish_step(self, model, sync, value):
        """Wait for the step's gradient buckets; the last one carries the loss share, the
        metrics' running sums (updated before, on this rank's rows) and the stop flag, so a
        step costs one wait.  Returns the global batch's loss."""
        state = self._metric_state(model)
        out = sync.finish(np.concatenate([[float(value)], state]))
        self._use_metrics(model, out[1:])
        self._fresh = True  # the next batch-end logs use these sums
        return float(out[0])

    def _metric_state(self, model):
        state = [v for m in model.metrics for v in (m._total, m._count)]
        state.append(1.0 if self._signals is not None and self._signals.requested else 0.0)
        return np.array(state, np.float64)

    def _use_metrics(self, model, buf):
        if buf[-1] > 0:  # a signal reached some rank: every rank stops after this batch
            model._interrupted = True
        self._results = [buf[2 * i] / buf[2 * i + 1] if buf[2 * i + 1] else 0.0
                         for i in range(len(model.metrics))]

    def sum_scalar(self, value):
        return float(self.comm.allreduce(np.array([float(value)]), what="the loss")[0])

    def sum_arrays(self, *arrays):
        """Sums over the ranks of float arrays (one reduction); returns new arrays."""
        flat = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])
        self.comm.allreduce(flat, what="the BatchNormalization statistics")
        out, offset = [], 0
        for a in arrays:
            a = np.asarray(a)
            out.append(flat[offset:offset + a.size].reshape(a.shape).astype(a.dtype))
            offset += a.size
        return out

    def metric_results(self, model):
        """The metrics over every rank's rows so far (from the step's reduction after a
        training batch, else reduced now); also where the ranks agree on a stop (a signal
        to any rank sets ``model._interrupted`` on all)."""
        if not self._fresh:
            self._use_metrics(model, self.comm.allreduce(self._metric_state(model), what="the metrics"))
        self._fresh = False
        return self._results

    def epoch_end(self, model, epoch):
        check_same_weights(self.comm, model, epoch)

    def close(self):
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
            self.comm.watchdog = None


def _inner_layers(layer):
    if hasattr(layer, "forward_layer"):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def _batch_norms(model):
    from ..layers.core import BatchNormalization
    return [l for l in model.layers if isinstance(l, BatchNormalization)]


def _has_batch_norm(model):
    return bool(_batch_norms(model))


def _zero_grads(layer):
    if not layer.trainable:
        return
    for inner in _inner_layers(layer):
        inner.grads = {k: np.zeros_like(v) for k, v in inner.params.items()}


def active():
    """The strategy fit trains under now, or None for the plain one-process loop."""
    global _launched
    if _scopes:
        s = _scopes[-1]
        return s if s.size > 1 else None
    if launched_size() > 1:
        if _launched is None:
            _launched = MPIStrategy()
        return _launched
    return None


def rank():
    """This process's rank (0 when not launched by MPI); no MPI call needed."""
    s = _scopes[-1] if _scopes else _launched
    return s.rank if s is not None else launched_rank()


def size():
    s = _scopes[-1] if _scopes else _launched
    return s.size if s is not None else launched_size()


def is_chief():
    """Whether this rank writes files and prints (rank 0)."""
    return rank() == 0


__all__ += ["DistributedError", "LaunchError"]
