"""The TensorFlow backend's path onto the kernels: ``tf.custom_gradient`` around two
``tf.numpy_function`` calls (forward, backward), so it runs eagerly and inside
``model.fit``'s ``tf.function`` graph alike.

The forward call keeps the kernels' cache (what backward reads: gates, states) in a
process-wide store under an integer token, which it returns as a tensor; the gradient's
call takes the token and pops the cache.  A training-mode forward whose gradient is
never taken (``model(x, training=True)`` outside a tape) would leave its cache behind,
so the store is bounded (oldest dropped first, :data:`STORE_BYTES`); a gradient whose
cache is gone recomputes the forward from the inputs it is also given, so it is always
right, only slower.  Inference-mode calls (``training=False``: ``evaluate``,
``predict``, validation) keep nothing; a gradient of one (saliency maps) recomputes.
"""
import collections
import itertools
import threading

import numpy as np
import tensorflow as tf

from . import _compute
from .._core.worker import Worker

# TensorFlow runs each numpy_function on whichever inter-op thread is free, and libgomp
# keeps one OpenMP thread pool per calling thread: a few steps in, the process has more
# OpenMP threads than CPUs, libgomp all but stops spinning at barriers, and the time
# loop's barriers turn into sleeps (a SimpleRNN forward inside fit: 2.4 ms against
# 0.6 ms).  So every kernel call of this adapter runs on one thread of ours.
_kernel_thread = Worker("rnnkernels-tf")

STORE_BYTES = 1 << 30        # caches kept for pending gradients, at most (bytes)
STORE_ENTRIES = 4096


class _Store:
    """Caches waiting for their gradient, keyed by token (never 0)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = collections.OrderedDict()   # token -> (cache, nbytes)
        self._bytes = 0
        self._tokens = itertools.count(1)

    @staticmethod
    def _size(cache):
        return sum(v.nbytes for v in vars(cache.ops_cache).values() if isinstance(v, np.ndarray))

    def put(self, cache):
        size = self._size(cache)
        with self._lock:
            token = next(self._tokens)
            self._items[token] = (cache, size)
            self._bytes += size
            while self._items and (self._bytes > STORE_BYTES or len(self._items) > STORE_ENTRIES):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return token

    def pop(self, token):
        with self._lock:
            item = self._items.pop(token, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def __len__(self):
        return len(self._items)


store = _Store()


def call(spec, x, states, kernel, recurrent_kernel, bias, lengths=None, recurrent_mask=None,
         training=True):
    """Keras's ``(last_output, outputs, states)`` on the kernels, differentiable with respect
    to ``x``, the initial ``states``, ``kernel``, ``recurrent_kernel`` and ``bias``.
    ``lengths`` (int64 ``(B,)``) and ``recurrent_mask`` (``(B, U)``) are constants."""
    n_states = spec.n_states
    has_bias, has_len, has_mask = bias is not None, lengths is not None, recurrent_mask is not None
    dtype = x.dtype
    B, T = x.shape[0], x.shape[1]
    P = spec.units

    def unpack(arrays):
        arrays = list(arrays)
        xa, st = arrays[0], arrays[1:1 + n_states]
        k, r = arrays[1 + n_states], arrays[2 + n_states]
        i = 3 + n_states
        b = arrays[i] if has_bias else None
        i += has_bias
        L = np.asarray(arrays[i], np.int64) if has_len else None
        i += has_len
        m = arrays[i] if has_mask else None
        return xa, st, k, r, b, L, m, arrays[i + has_mask:]

    def fwd_numpy(*arrays):
        return _kernel_thread.call(fwd_kernels, *arrays)

    def fwd_kernels(*arrays):
        xa, st, k, r, b, L, m, _ = unpack(arrays)
        last, outputs, finals, cache = _compute.forward(spec, xa, st, k, r, b, L, m, training)
        token = store.put(cache) if cache is not None else 0
        return [last] + ([outputs] if spec.return_sequences else []) + finals + [np.int64(token)]

    constants = [t for t, on in ((lengths, has_len), (recurrent_mask, has_mask)) if on]

    @tf.custom_gradient
    def op(*diff):
        out_types = [dtype] * (1 + spec.return_sequences + n_states) + [tf.int64]
        results = tf.numpy_function(fwd_numpy, list(diff) + constants, out_types, stateful=True,
                                    name=f"rnnkernels_{spec.kind}_forward")
        token = results[-1]
        outs = list(results[:-1])
        outs[0].set_shape((B, P))
        k = 1
        if spec.return_sequences:
            outs[1].set_shape((B, T, P))
            k = 2
        for s in outs[k:]:
            s.set_shape((B, P))

        def grad(*upstream):
            present = tuple(g is not None for g in upstream)
            given = [g for g in upstream if g is not None]

            def bwd_numpy(tok, *arrays):
                return _kernel_thread.call(bwd_kernels, tok, *arrays)

            def bwd_kernels(tok, *arrays):
                n_in = len(diff) + len(constants)
                xa, st, k_, r_, b_, L, m, _ = unpack(arrays[:n_in])
                it = iter(arrays[n_in:])
                ups = [next(it) if p else None for p in present]
                cache = store.pop(int(tok))
                if cache is None:  # kept nothing (inference call) or dropped: recompute
                    cache = _compute.forward(spec, xa, st, k_, r_, b_, L, m, True)[3]
                d_last = ups[0]
                d_out = ups[1] if spec.return_sequences else None
                d_states = ups[1 + spec.return_sequences:]
                dx, d_init, dk, dr, db = _compute.backward(cache, d_last, d_out, d_states)
                return [dx] + list(d_init) + [dk, dr] + ([db] if has_bias else [])

            grads = tf.numpy_function(bwd_numpy, [token] + list(diff) + constants + given,
                                      [dtype] * len(diff), stateful=True,
                                      name=f"rnnkernels_{spec.kind}_backward")
            for g, v in zip(grads, diff):
                g.set_shape(v.shape)
            return grads

        return outs, grad

    # variables read here, outside the op: the op sees plain tensors (custom_gradient would
    # otherwise want a gradient for each variable it touches)
    inputs = [x] + list(states) + [kernel, recurrent_kernel] + ([bias] if has_bias else [])
    outs = op(*[tf.convert_to_tensor(getattr(t, "value", t)) for t in inputs])
    last = outs[0]
    outputs = outs[1] if spec.return_sequences else tf.expand_dims(last, 1)
    return last, outputs, list(outs[1 + spec.return_sequences:])
