"""Gradient averaging over the global batch: buckets all-reduced while backward runs.

Each rank's gradients are already its *share* of the global batch's gradient
(the loss divides each rank's sum by the whole batch's count, losses.py), so
the global gradient is their plain sum: no division, nothing rank-dependent.
As backward walks the layers from the last to the first, each finished
layer's gradients are copied into the current bucket; a bucket that reaches
``bucket_bytes`` is launched at once (``MPI_Iallreduce``, sum, in place) and the
next layers' backward runs while it travels (the overlap Horovod's tensor
fusion and PyTorch DDP's buckets get; here MPI progresses the transfer when
the next layer finishes, by testing the requests).  The step then waits for
the buckets, writes the sums back into the gradient arrays, and the optimizer
applies them, identically on every rank.

The bucket layout depends only on the model, so every rank launches the same
collectives in the same order (MPI's rule for nonblocking collectives).  The
last bucket also carries the step's loss share, so the global loss costs no
extra message.
"""
import numpy as np

__all__ = ["GradientSync"]

DEFAULT_BUCKET_BYTES = 1 << 18  # 256 KiB: small models still get several buckets


class GradientSync:
    """One training step's gradient reduction (create per fit; :meth:`begin` each step)."""

    def __init__(self, comm, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.comm = comm
        self.bucket_bytes = int(bucket_bytes)
        self.buckets_launched = 0  # per step, for tests and benchmarks

    def begin(self):
        self._grads = []      # the arrays of the open bucket
        self._bytes = 0
        self._inflight = []   # (request, buffer, arrays)
        self.buckets_launched = 0

    def ready(self, layer):
        """``layer``'s backward has finished: its gradients join the open bucket."""
        grads = layer.trainable_grads()
        if not grads:
            return
        for g in grads:
            self._grads.append(g)
            self._bytes += g.nbytes
        if self._bytes >= self.bucket_bytes:
            self._launch()
        elif self._inflight:  # let MPI move what is in flight
            self.comm.MPI.Request.Testall([r for r, _, _ in self._inflight])

    def zeros_like(self, params):
        """An idle rank's step (no rows in this batch): zero gradients of ``params``'s shapes."""
        return [np.zeros_like(p) for p in params]

    def ready_arrays(self, grads):
        for g in grads:
            self._grads.append(g)
            self._bytes += g.nbytes

    def _launch(self, extra=None):
        arrays, self._grads, self._bytes = self._grads, [], 0
        if arrays:
            buf = np.concatenate([np.ravel(g) for g in arrays])
            self._inflight.append((self.comm.iallreduce(buf), buf, arrays))
            self.buckets_launched += 1

    def finish(self, scalars):
        """Launch the rest, wait for every bucket, write the sums back into the gradient
        arrays; returns ``scalars`` (a float64 array, e.g. the loss share) summed too."""
        self._launch()
        scalars = np.ascontiguousarray(scalars, np.float64)
        requests = [r for r, _, _ in self._inflight] + [self.comm.iallreduce(scalars)]
        self.comm.wait(requests, "the gradient reduction")
        for _, buf, arrays in self._inflight:
            offset = 0
            for g in arrays:
                g[...] = buf[offset:offset + g.size].reshape(g.shape)
                offset += g.size
        self._inflight = []
        return scalars
