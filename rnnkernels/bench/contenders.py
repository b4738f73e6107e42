"""The systems timed side by side: rnnkernels (ops or reference), torch.nn and Keras (in a
worker process), each behind one interface: setup, run a mode, close."""
import contextlib
import importlib
import importlib.util
import os
import time

import numpy as np


from .cases import MODES


# ---------------------------------------------------------------- contenders
class Unavailable(Exception):
    """A contender that cannot run here (library missing, cell not implemented)."""


class Contender:
    """One system (with a variant and a thread count) timed on one case.

    ``setup()`` prepares it and returns its inference output ``y (T, B, H)``
    for the consistency check; ``run(mode)`` performs one call and returns
    seconds."""
    system = ""

    def __init__(self, cell, data, threads, variant):
        self.cell, self.data, self.threads, self.variant = cell, data, threads, variant
        self.status, self.reason = "ok", ""
        self.samples = {mode: [] for mode in MODES}
        self.max_abs_diff = None

    @property
    def label(self):
        return self.system if self.variant == "padded" else f"{self.system} {self.variant}"

    @property
    def uses_lengths(self):
        return self.variant in ("varlen", "packed")

    def setup(self):
        raise NotImplementedError

    def run(self, mode):
        raise NotImplementedError

    def close(self):
        pass


class RnnkernelsContender(Contender):
    """``rnnkernels.ops`` (or ``.reference``) through the kernel ABI.

    Variant "varlen" passes the lengths, "padded" runs the same batch as if
    every sequence were T long (what one pays without length support)."""
    system = "rnnkernels"

    def __init__(self, cell, data, threads, variant, impl):
        super().__init__(cell, data, threads, variant)
        self.impl = impl

    def setup(self):
        module_name = f"rnnkernels.{self.impl}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise Unavailable(f"{module_name} cannot be imported ({exc})") from None
        try:
            self._forward = getattr(module, f"{self.cell}_forward")
            self._backward = getattr(module, f"{self.cell}_backward")
        except AttributeError:
            raise Unavailable(f"{module_name} has no {self.cell}_forward/{self.cell}_backward yet") from None
        import rnnkernels
        self._set_threads = rnnkernels.set_num_threads
        self._blas = None
        if self.impl == "reference":  # NumPy code: its threads are BLAS's
            from threadpoolctl import ThreadpoolController
            self._blas = ThreadpoolController().select(user_api="blas")
        d = self.data
        self._args = (d["x"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
        self._lengths = d["lengths"] if self.variant == "varlen" else None
        self._dy = d["dy"]
        with self._threads():
            return np.asarray(self._forward(*self._args, lengths=self._lengths, training=False)[0])

    @contextlib.contextmanager
    def _threads(self):
        self._set_threads(self.threads)
        if self._blas is None:
            yield
        else:
            with self._blas.limit(limits=self.threads):
                yield

    def run(self, mode):
        with self._threads():
            start = time.perf_counter()
            if mode == "fwd":
                self._forward(*self._args, lengths=self._lengths, training=False)
            else:
                cache = self._forward(*self._args, lengths=self._lengths, training=True)[-1]
                self._backward(cache, self._dy)
            return time.perf_counter() - start


class TorchContender(Contender):
    """``torch.nn.LSTM/GRU/RNN`` (time-major, CPU). Variant "packed" feeds a
    ``pack_padded_sequence`` (enforce_sorted=False, packing and unpadding timed,
    as a user must do them); inference under ``torch.inference_mode``; the
    backward pass is ``y.backward(dy)``, i.e. the gradient of ``sum(y * dy)``."""
    system = "torch"

    def setup(self):
        try:
            import torch
        except ImportError as exc:
            raise Unavailable(f"torch cannot be imported ({exc})") from None
        self._torch = torch
        d = self.data
        dtype = getattr(torch, str(d["x"].dtype))
        I, H = d["x"].shape[2], d["w_hh"].shape[1]
        factory = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[self.cell]
        self._module = factory(I, H, dtype=dtype)
        with torch.no_grad():
            for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
                getattr(self._module, name.replace("w_", "weight_").replace("b_", "bias_") + "_l0").copy_(
                    torch.from_numpy(d[name]))
        self._params = list(self._module.parameters())
        self._x = torch.from_numpy(d["x"])
        self._dy = torch.from_numpy(d["dy"])
        self._lengths = torch.from_numpy(d["lengths"]) if self.variant == "packed" else None
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self._call(self._x).numpy().copy()

    def _call(self, x):
        if self._lengths is None:
            return self._module(x)[0]
        nn_utils = self._torch.nn.utils.rnn
        packed = nn_utils.pack_padded_sequence(x, self._lengths, enforce_sorted=False)
        return nn_utils.pad_packed_sequence(self._module(packed)[0], total_length=x.shape[0])[0]

    def run(self, mode):
        torch = self._torch
        torch.set_num_threads(self.threads)
        if mode == "fwd":
            start = time.perf_counter()
            with torch.inference_mode():
                self._call(self._x)
            return time.perf_counter() - start
        for p in self._params:  # optimizer.zero_grad(set_to_none=True)
            p.grad = None
        x = self._x.detach().requires_grad_()
        start = time.perf_counter()
        self._call(x).backward(self._dy)
        return time.perf_counter() - start


class KerasContender(Contender):
    """``keras.layers.LSTM/GRU/SimpleRNN`` in a worker subprocess (see
    :func:`keras_worker`); the worker times each call itself, so the pipe is
    not part of the measurement."""
    system = "keras"

    def __init__(self, cell, data, threads, variant, worker, exchange_dir, case_id):
        super().__init__(cell, data, threads, variant)
        self.worker, self.exchange_dir, self.case_id = worker, exchange_dir, case_id

    def setup(self):
        if self.uses_lengths:
            raise Unavailable("variable-length batches are compared against torch only")
        inputs = os.path.join(self.exchange_dir, f"{self.case_id}-in.npz")
        output = os.path.join(self.exchange_dir, f"{self.case_id}-y.npy")
        np.savez(inputs, **{k: v for k, v in self.data.items() if v is not None})
        self.worker.request({"op": "setup", "case": self.case_id, "cell": self.cell,
                             "inputs": inputs, "output": output})
        return np.load(output)

    def run(self, mode):
        return self.worker.request({"op": "time", "case": self.case_id, "mode": mode})["seconds"]

    def close(self):
        if self.worker.alive:
            self.worker.request({"op": "drop", "case": self.case_id})


def build_contenders(case, data, systems, impl, keras_workers, exchange_dir):
    """Contenders of ``case`` (a missing Keras is dropped by the caller)."""
    contenders = []
    for threads in sorted(set(case.threads) | set(case.extra_threads)):
        peers_too = threads in case.threads
        if case.varlen:
            contenders.append(RnnkernelsContender(case.cell, data, threads, "varlen", impl))
            contenders.append(RnnkernelsContender(case.cell, data, threads, "padded", impl))
            if peers_too and "torch" in systems:
                contenders.append(TorchContender(case.cell, data, threads, "packed"))
            continue
        if "rnnkernels" in systems or not peers_too:
            contenders.append(RnnkernelsContender(case.cell, data, threads, "padded", impl))
        if peers_too and "torch" in systems:
            contenders.append(TorchContender(case.cell, data, threads, "padded"))
        if peers_too and "keras" in systems and threads in keras_workers:
            contenders.append(KerasContender(case.cell, data, threads, "padded", keras_workers[threads],
                                             exchange_dir, f"{case.case_id}-t{threads}"))
    return contenders


def available_systems(requested):
    """(systems to run, notes on the ones skipped)."""
    systems, notes = [], []
    for system in requested:
        module = {"rnnkernels": None, "torch": "torch", "keras": "tensorflow"}[system]
        if module and importlib.util.find_spec(module) is None:
            notes.append(f"{system}: skipped ({module} is not installed)")
        else:
            systems.append(system)
    return systems, notes
