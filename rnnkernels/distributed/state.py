"""The model's state made the same on every rank, and checked to stay so.

At the start of fit, rank 0's weights (every layer's, BatchNormalization's
moving statistics included), its optimizer state (step count and slots), its
seed and its epoch count are broadcast to the others, as Horovod's
``broadcast_global_variables`` / ``BroadcastGlobalVariablesCallback`` does:
whatever each rank built or loaded (its own seed, a checkpoint read by one
rank only), training starts from rank 0's.  After every epoch the weights'
fingerprints (a hash of their bytes) are gathered and compared: the
gradient sums are bitwise the same on every rank, so the weights must be too,
and a difference is an error rather than a silent divergence.
"""
import hashlib
import zlib

import numpy as np

from .comm import DistributedError

__all__ = ["broadcast_state", "fingerprint", "check_same_weights"]


def _model_arrays(model):
    """The arrays a rank's training depends on, in a fixed order (views, written in place)."""
    arrays = []
    for layer in model.layers:
        stack = [layer]
        while stack:
            l = stack.pop(0)
            if hasattr(l, "forward_layer"):
                stack += [l.forward_layer, l.backward_layer]
                continue
            arrays += list(l.params.values())
            for name in ("moving_mean", "moving_variance"):
                if hasattr(l, name):
                    arrays.append(getattr(l, name))
    return arrays


def broadcast_state(comm, model):
    """Rank 0's weights, optimizer state and epoch count on every rank."""
    opt = model.optimizer
    params = model.trainable_params()
    if opt._slots is None and len(opt.slot_names):
        opt.build(params)  # fresh optimizer: zero slots, so every rank has the same arrays
    head = comm.bcast_object({"iterations": int(opt.iterations),
                              "epochs_trained": int(getattr(model, "epochs_trained", 0)),
                              "seed": int(model.seed),
                              "n_arrays": len(_model_arrays(model))}, what="the initial state")
    arrays = _model_arrays(model)
    if head["n_arrays"] != len(arrays):
        raise DistributedError(f"rank {comm.rank}: the model has {len(arrays)} weight arrays, "
                               f"rank 0's has {head['n_arrays']} (build the same model on every rank)")
    slots = [] if opt._slots is None else [s[n] for s in opt._slots for n in opt.slot_names]
    flat = arrays + slots
    shapes = np.array([zlib.crc32(repr((a.shape, a.dtype.str)).encode()) for a in flat], np.int64)
    same = comm.allgather(shapes, "the initial state")
    if not np.all(same == same[0]):
        raise DistributedError(f"rank {comm.rank}: the model's weight shapes differ from rank 0's "
                               "(build the same model on every rank)")
    for a in flat:
        buf = np.ascontiguousarray(a)
        comm.bcast(buf, what="the initial weights")
        if buf is not a:
            a[...] = buf
    opt.iterations = head["iterations"]
    model.seed = head["seed"]  # the permutations and dropout masks come from it
    model.epochs_trained = head["epochs_trained"]


def fingerprint(model):
    """8 bytes (as an int64) hashing every weight and moving statistic."""
    h = hashlib.blake2b(digest_size=8)
    for a in _model_arrays(model):
        h.update(np.ascontiguousarray(a).tobytes())
    return np.frombuffer(h.digest(), np.int64).copy()


def check_same_weights(comm, model, epoch):
    prints = comm.allgather(fingerprint(model), "the weight check")
    if not np.all(prints == prints[0]):
        differ = [r for r in range(comm.size) if prints[r][0] != prints[0][0]]
        raise DistributedError(f"after epoch {epoch + 1} the weights of rank(s) {differ} differ from "
                               "rank 0's: the ranks diverged (a callback changed one rank's "
                               "weights, or the MPI reduction is not reproducible)")
