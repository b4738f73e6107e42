"""Side-by-side benchmark of rnnkernels against PyTorch and Keras.

``rnnkernels bench`` / ``python -m rnnkernels.bench`` times the kernels of
docs/kernel-abi.md, ``torch.nn.LSTM/GRU/RNN`` and ``keras.layers.LSTM/GRU/
SimpleRNN`` on identical inputs (same x, weights and output gradient dy, the
outputs checked against each other), forward-only (inference) and
forward+backward (gradients of ``sum(y * dy)`` with respect to every parameter
and the input). See docs/benchmarks.md for the method and every option.

Fairness rules the code follows:
- One run, interleaved: each repetition runs every contender once, in an order
  rotated per repetition, so drifting machine load hits all systems alike; the
  reported time is the median of the repetitions after ``--warmup`` discarded ones.
- Keras runs in a subprocess (a worker fed over a pipe and timing itself), so
  TensorFlow's thread pools never spin next to the others.
- Every system gets the same thread count (``--threads``); TensorFlow's is
  fixed at start-up, so there is one Keras worker per thread count.
- Work is counted as GEMM flops (forward ``2*N*G*H*(I+H)`` for N valid time
  steps x sequences, backward twice that) and set against a large square GEMM
  timed with numpy in the same run at the same thread count and dtype.
"""
import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from ._argtypes import non_negative_int, positive_int
from ._atomic import write_json

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SYSTEMS = ("rnnkernels", "torch", "keras")
PEERS = ("torch", "keras")
MODES = ("fwd", "fwdbwd")
MODE_TITLES = {"fwd": "forward-only ms", "fwdbwd": "forward+backward ms"}
DTYPES = ("float32", "float64")
SCHEMA = "rnnkernels-bench/2"


@dataclass(frozen=True)
class Size:
    """Problem size: T time steps, B sequences, I inputs, H hidden units."""
    T: int
    B: int
    I: int
    H: int

    def __str__(self):
        return f"T={self.T} B={self.B} I={self.I} H={self.H}"


SIZES = {
    "small": Size(100, 32, 40, 128),
    "medium": Size(100, 64, 80, 256),
    "large": Size(200, 64, 128, 512),
}
# --quick: same names, so every code path (targets included) runs in seconds.
QUICK_SIZES = {
    "small": Size(6, 3, 4, 8),
    "medium": Size(8, 4, 5, 12),
    "large": Size(10, 4, 6, 16),
}
GEMM_N, QUICK_GEMM_N = 2048, 256
# Largest forward-output difference to a system's own rnnkernels twin that still
# counts as "the same computation" (outputs are bounded by 1 for tanh cells).
CHECK_TOLERANCE = {"float32": 1e-3, "float64": 1e-9}
# Timings whose interquartile range exceeds this share of the median are flagged.
NOISY_IQR_PCT = 25


def gemm_flops(cell, size, mode, tokens=None):
    """GEMM flops of one call: forward ``2*N*G*H*(I+H)`` with N = valid
    (time, sequence) pairs (T*B when padded), backward twice the forward."""
    n = size.T * size.B if tokens is None else int(tokens)
    forward = 2.0 * n * GATES[cell] * size.H * (size.I + size.H)
    return forward if mode == "fwd" else 3.0 * forward


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# --------------------------------------------------------------------- inputs
def case_seed(base_seed, cell, size_name):
    """Seed that depends on the case, not on which other cases run."""
    return (int(base_seed) * 1_000_003 + zlib.crc32(f"{cell}/{size_name}".encode())) % 2**32


def make_inputs(cell, size, dtype, seed, varlen=False):
    """Inputs shared by every system: ``x (T, B, I)``, PyTorch-layout weights
    ``w_ih (G*H, I)``, ``w_hh (G*H, H)``, ``b_ih, b_hh (G*H,)``, the output
    gradient ``dy (T, B, H)`` and ``lengths (B,)`` (None unless ``varlen``;
    evenly spread over [ceil(T/4), T]). Drawn in float64, then cast, so both dtypes
    see the same numbers."""
    rng = np.random.default_rng(seed)
    T, B, I, H = size.T, size.B, size.I, size.H
    G = GATES[cell]
    k = 1.0 / math.sqrt(H)  # PyTorch's default initialisation range
    data = {
        "x": rng.uniform(-1.0, 1.0, (T, B, I)),
        "w_ih": rng.uniform(-k, k, (G * H, I)),
        "w_hh": rng.uniform(-k, k, (G * H, H)),
        "b_ih": rng.uniform(-k, k, G * H),
        "b_hh": rng.uniform(-k, k, G * H),
        "dy": rng.standard_normal((T, B, H)),
    }
    data = {name: np.ascontiguousarray(a, dtype=dtype) for name, a in data.items()}
    if varlen:
        # Evenly spread over [ceil(T/4), T] in random order, not B independent
        # draws: the mean of 32 or 64 draws strays by several percent, so a
        # varlen/padded ratio would measure the draw as much as the kernels
        # (the seeded draws had sum(lengths)/(T*B) from 0.58 to 0.67).
        # Evenly spread, every case's share of the padded work is 0.625.
        lo = max(1, math.ceil(T / 4))
        data["lengths"] = rng.permutation(np.round(np.linspace(lo, T, B)).astype(np.int64))
    else:
        data["lengths"] = None
    return data


def tokens_of(data):
    """Valid (time, sequence) pairs: the unit of work."""
    x = data["x"]
    return int(np.sum(data["lengths"])) if data["lengths"] is not None else x.shape[0] * x.shape[1]


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


class WorkerError(RuntimeError):
    pass


def _worker_env(extra=None):
    """Environment for a child ``python -m rnnkernels.bench``: it must import
    this very rnnkernels (a source tree is not necessarily installed)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class KerasWorker:
    """A long-lived ``python -m rnnkernels.bench --_worker keras`` speaking
    JSON lines: one request on its stdin, one reply on its stdout."""

    def __init__(self, threads):
        self.threads = threads
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rnnkernels.bench", "--_worker", "keras", "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env=_worker_env({"TF_CPP_MIN_LOG_LEVEL": "2"}))
        self.info = self._reply()

    @property
    def alive(self):
        return self._proc.poll() is None

    def _reply(self):
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            tail = [l for l in self._stderr.read().strip().splitlines() if l.strip()][-1:]
            raise WorkerError(f"keras worker exited with status {self._proc.returncode}"
                              + (f": {tail[0]}" if tail else ""))
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def request(self, message):
        if not self.alive:
            raise WorkerError("keras worker is not running")
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def close(self):
        if self.alive:
            try:
                self._proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()


def _keras_layer(cell, data):
    """A Keras layer holding the PyTorch-layout weights of ``data``.

    Keras stores ``kernel (I, G*H)``; LSTM gates i,f,c,o match PyTorch's
    i,f,g,o and take one bias (b_ih + b_hh); GRU (reset_after=True, the
    Keras default and PyTorch's equations) orders gates z,r,h against
    PyTorch's r,z,n and keeps the two biases as rows of a (2, 3H) bias."""
    import keras
    H = data["w_hh"].shape[1]
    dtype = str(data["x"].dtype)
    w_ih, w_hh, b_ih, b_hh = data["w_ih"], data["w_hh"], data["b_ih"], data["b_hh"]
    if cell == "lstm":
        layer = keras.layers.LSTM(H, return_sequences=True, dtype=dtype)
        weights = [w_ih.T, w_hh.T, b_ih + b_hh]
    elif cell == "gru":
        layer = keras.layers.GRU(H, return_sequences=True, reset_after=True, dtype=dtype)
        zrn = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
        weights = [w_ih[zrn].T, w_hh[zrn].T, np.stack([b_ih[zrn], b_hh[zrn]])]
    else:
        layer = keras.layers.SimpleRNN(H, return_sequences=True, activation="tanh", dtype=dtype)
        weights = [w_ih.T, w_hh.T, b_ih + b_hh]
    T, B, I = data["x"].shape
    layer.build((B, T, I))
    layer.set_weights([np.ascontiguousarray(w) for w in weights])
    return layer


def keras_worker(threads):
    """Body of the Keras subprocess (see :class:`KerasWorker`)."""
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter on stdout must not corrupt the replies

    def reply(message):
        reply_stream.write(json.dumps(message) + "\n")
        reply_stream.flush()

    try:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras
    except Exception as exc:  # any import failure means: no Keras here
        reply({"error": f"tensorflow/keras cannot be imported ({type(exc).__name__}: {exc})"})
        return 1
    reply({"ready": True, "tensorflow": tf.__version__, "keras": keras.__version__})
    cases = {}
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "exit":
                break
            if op == "setup":
                with np.load(request["inputs"]) as npz:
                    data = {k: npz[k] for k in npz.files}
                data["lengths"] = None
                layer = _keras_layer(request["cell"], data)
                x = tf.constant(np.transpose(data["x"], (1, 0, 2)))   # Keras is batch-major
                dy = tf.constant(np.transpose(data["dy"], (1, 0, 2)))
                forward = tf.function(lambda x: layer(x, training=False))

                @tf.function
                def train_step(x, dy):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = layer(x, training=True)
                    return tape.gradient(y, [x] + list(layer.trainable_variables), output_gradients=dy)

                cases[request["case"]] = {"fwd": lambda: forward(x), "fwdbwd": lambda: train_step(x, dy)}
                np.save(request["output"], np.transpose(forward(x).numpy(), (1, 0, 2)))
                reply({"ok": True})
            elif op == "time":
                call = cases[request["case"]][request["mode"]]
                start = time.perf_counter()
                call()
                reply({"seconds": time.perf_counter() - start})
            elif op == "drop":
                cases.pop(request["case"], None)
                reply({"ok": True})
            else:
                reply({"error": f"unknown request {op!r}"})
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


# ------------------------------------------------------------------- timing
def measure_gemm_peak(dtype, threads, n, repeats):
    """Best GFLOP/s of an (n x n) @ (n x n) product on ``threads`` threads,
    by NumPy's BLAS and by the kernels' own GEMM: ``(best, numpy, kernel)``.
    Both count because neither is the machine's limit everywhere: OpenBLAS
    0.3.30-0.3.31 does not know Zen 5 and runs its AVX2 kernels there, half the
    peak that our AVX-512 kernel reaches, and elsewhere a tuned BLAS may beat
    ours.  The percentages of peak are of the better one."""
    from threadpoolctl import threadpool_limits
    from . import _gemm
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)

    def best_of(product):
        product()  # warm-up: page in, start the threads
        best = float("inf")
        for _ in range(max(3, repeats)):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        return 2.0 * n ** 3 / best / 1e9

    with threadpool_limits(limits=threads, user_api="blas"):
        numpy_gflops = best_of(lambda: np.matmul(a, b, out=out))
    kernel_gflops = best_of(lambda: _gemm.matmul(a, b, out, threads))
    return max(numpy_gflops, kernel_gflops), numpy_gflops, kernel_gflops


@dataclass
class Case:
    """One cell x size x dtype, either full-length or variable-length, with
    every contender that is timed interleaved with the others."""
    cell: str
    size_name: str
    size: Size
    dtype: str
    varlen: bool
    threads: list            # thread counts every system runs at
    extra_threads: list = field(default_factory=list)  # rnnkernels only (thread scaling)

    @property
    def case_id(self):
        return f"{self.cell}-{self.size_name}-{self.dtype}" + ("-varlen" if self.varlen else "")


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


def time_case(contenders, repeats, warmup, progress=None):
    """Set up, then run every contender ``warmup + repeats`` times in both modes,
    round-robin (the order rotates each repetition); fills ``samples`` (ms).

    Each contender's timed runs follow one untimed forward pass of its own.
    A library's OpenMP threads keep spinning for a few milliseconds after its
    call returns, on the cores the next call needs: measured on the 2-core
    machine, whatever ran right after PyTorch was 7-20% slower (small RNN,
    variable lengths: 4.72 ms after PyTorch, 4.07 after our padded run, 3.98
    after its own untimed pass).  With the rotation alone, one contender still
    followed another system in most repetitions (rnnkernels' variable-length
    run followed PyTorch in five of six), so the order decided ratios.  The
    settling pass puts every system in its own steady state, as in a training
    loop, where a step follows a step of the same library."""
    outputs = {}
    for c in contenders:
        try:
            outputs[c] = c.setup()
        except Unavailable as exc:
            c.status, c.reason = "unavailable", str(exc)
        except Exception as exc:
            c.status, c.reason = "error", f"setup: {type(exc).__name__}: {exc}"
    _check_outputs(contenders, outputs)
    active = [c for c in contenders if c.status == "ok"]
    for rep in range(warmup + repeats):
        shift = rep % len(active) if active else 0
        for c in active[shift:] + active[:shift]:
            for mode in ("settle",) + MODES:
                if c.status != "ok":
                    break
                try:
                    seconds = c.run("fwd" if mode == "settle" else mode)
                except Exception as exc:
                    c.status, c.reason = "error", f"{mode}: {type(exc).__name__}: {exc}"
                    break
                if rep >= warmup and mode != "settle":
                    c.samples[mode].append(seconds * 1e3)
        if progress is not None:
            progress.update(1)
    for c in contenders:
        try:
            c.close()
        except Exception:
            pass  # a dead worker is reported by the next case's setup


def _check_outputs(contenders, outputs):
    """Max |y - y_rnnkernels| per contender, against the rnnkernels contender
    with the same length semantics and thread count (or any thread count)."""
    for c in outputs:
        twins = [o for o in outputs if o.system == "rnnkernels" and o.uses_lengths == c.uses_lengths]
        twins.sort(key=lambda o: o.threads != c.threads)
        if twins and twins[0] is not c:
            c.max_abs_diff = float(np.max(np.abs(outputs[c] - outputs[twins[0]]), initial=0.0))


# ------------------------------------------------------------------- memory
def _rss_kib(field_name):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")


def _trim_heap():
    """Give free heap memory back to the system (glibc's malloc_trim), so
    that memory left over from setup is not mistaken for the step's."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_worker(spec):
    """Body of a fresh memory-measuring process: peak RSS increase of
    training steps (forward with training=True + backward), in KiB,
    everything a step keeps between calls included.

    A tiny training step and setup (one inference call) load libraries,
    thread pools and JIT-ed kernels; then rnnkernels' buffer pool is emptied and the heap trimmed for
    both systems, the peak RSS is reset (Linux: write 5 to
    /proc/self/clear_refs), and two training steps run: the first fills
    whatever caches a system keeps (rnnkernels' buffer pool and scratch,
    glibc's heap for PyTorch's small per-step tensors), the second is the
    steady state.  Their peak (VmHWM) is compared with the resident size just
    before them.  Where the reset is not possible the getrusage ru_maxrss
    peak is used instead."""
    import resource
    size = Size(**spec["size"])
    data = make_inputs(spec["cell"], size, spec["dtype"], spec["seed"])
    cls = RnnkernelsContender if spec["system"] == "rnnkernels" else TorchContender
    args = (spec["impl"],) if spec["system"] == "rnnkernels" else ()
    # One tiny training step first, so that one-time initialisation (lazy
    # imports, autograd and OpenMP thread pools, JIT-ed kernels) is not
    # charged to the steps measured.
    tiny = Size(T=2, B=2, I=size.I, H=size.H)
    warm = cls(spec["cell"], make_inputs(spec["cell"], tiny, spec["dtype"], spec["seed"]),
               spec["threads"], "padded", *args)
    warm.setup()
    warm.run("fwdbwd")
    del warm
    contender = cls(spec["cell"], data, spec["threads"], "padded", *args)
    contender.setup()
    gc.collect()
    if spec["system"] == "rnnkernels":
        import rnnkernels
        rnnkernels.release_memory()
    _trim_heap()
    try:
        before = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        method = "VmHWM, 2 steps"
        contender.run("fwdbwd")
        contender.run("fwdbwd")
        peak = _rss_kib("VmHWM")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss, 2 steps"
        contender.run("fwdbwd")
        contender.run("fwdbwd")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_increase_kib": max(0, peak - before), "method": method}


def measure_memory(cell, size_name, size, dtype, system, impl, threads, seed):
    """Run :func:`memory_worker` in a fresh process. glibc's mmap threshold is
    pinned so large buffers are returned to the system when freed, as they
    would be the first time; both systems run under the same setting."""
    spec = {"cell": cell, "size": size.__dict__, "dtype": dtype, "system": system, "impl": impl,
            "threads": threads, "seed": case_seed(seed, cell, size_name)}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnkernels.bench", "--_worker", "memory", "--_spec", json.dumps(spec)],
        capture_output=True, text=True,
        env=_worker_env({"MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(threads),
                         "TF_CPP_MIN_LOG_LEVEL": "2"}))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = [l for l in proc.stderr.strip().splitlines() if l.strip()][-1:]
        raise WorkerError(f"memory worker exited with status {proc.returncode}"
                          + (f": {tail[0]}" if tail else ""))
    return json.loads(lines[-1])


# ------------------------------------------------------------- the whole run
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


def default_threads():
    import rnnkernels
    return rnnkernels.get_num_threads()


def plan_cases(options):
    """Cases to time: the matrix for every dtype, the variable-length matrix
    with --varlen, and for --targets the 1- and 2-thread medium LSTM."""
    sizes = QUICK_SIZES if options.quick else SIZES
    cases = []
    for varlen in (False, True) if options.varlen else (False,):
        for dtype in options.dtype:
            for cell in options.cells:
                for size_name in options.sizes:
                    cases.append(Case(cell, size_name, sizes[size_name], dtype, varlen, list(options.threads)))
    if options.targets:
        for case in cases:
            if (case.cell, case.size_name, case.dtype, case.varlen) == ("lstm", "medium", "float32", False):
                case.extra_threads = [t for t in (1, 2) if t not in case.threads]
    return cases


def run_benchmark(options):
    """Everything one invocation measures, as a JSON-ready dict."""
    systems, notes = available_systems(options.systems)
    report = {
        "schema": SCHEMA,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "options": {k: v for k, v in vars(options).items() if not k.startswith("_") and k != "json"},
        "sizes": {name: size.__dict__ for name, size in (QUICK_SIZES if options.quick else SIZES).items()
                  if name in options.sizes},
        "notes": notes,
        "gemm_peak": [],
        "results": [],
        "memory": [],
    }
    cases = plan_cases(options)
    all_threads = sorted({t for c in cases for t in c.threads + c.extra_threads})
    gemm_n = QUICK_GEMM_N if options.quick else GEMM_N
    for dtype in options.dtype:
        for threads in all_threads:
            gflops, numpy_gflops, kernel_gflops = measure_gemm_peak(dtype, threads, gemm_n, options.repeats)
            report["gemm_peak"].append({"dtype": dtype, "threads": threads, "n": gemm_n, "gflops": gflops,
                                        "gflops_start": gflops, "numpy_gflops": [numpy_gflops],
                                        "kernel_gflops": [kernel_gflops]})
    keras_workers = {}
    if "keras" in systems:
        for threads in sorted({t for c in cases for t in c.threads}):
            try:
                keras_workers[threads] = worker = KerasWorker(threads)
                report["machine"]["tensorflow"] = worker.info.get("tensorflow")
                report["machine"]["keras"] = worker.info.get("keras")
            except (WorkerError, OSError) as exc:
                notes.append(f"keras: skipped at {threads} thread(s) ({exc})")
    try:
        from tqdm import tqdm
        progress = tqdm(total=len(cases) * (options.warmup + options.repeats), desc="bench",
                        unit="rep", file=sys.stderr, disable=None, leave=False)
    except ImportError:
        progress = None
    try:
        with tempfile.TemporaryDirectory(prefix="rnnkernels-bench-") as exchange_dir:
            for case in cases:
                data = make_inputs(case.cell, case.size, case.dtype,
                                   case_seed(options.seed, case.cell, case.size_name), case.varlen)
                contenders = build_contenders(case, data, systems, options.impl, keras_workers, exchange_dir)
                time_case(contenders, options.repeats, options.warmup, progress)
                report["results"].extend(_result_entries(case, data, contenders))
    finally:
        if progress is not None:
            progress.close()
        for worker in keras_workers.values():
            worker.close()
    # Measured again at the end, the best of the two counting: on a shared
    # host one measurement can fall in a busy spell, and a low peak would
    # flatter every percentage.
    for g in report["gemm_peak"]:
        g["gflops_end"], numpy_gflops, kernel_gflops = measure_gemm_peak(g["dtype"], g["threads"], g["n"],
                                                                         options.repeats)
        g["numpy_gflops"].append(numpy_gflops)
        g["kernel_gflops"].append(kernel_gflops)
        g["gflops"] = max(g["gflops_start"], g["gflops_end"])
    _apply_peaks(report["results"], report["gemm_peak"])
    if options.memory:
        report["memory"] = _memory_entries(options, systems)
    report["rows"] = summary_rows(report)
    report["targets"] = evaluate_targets(report) if options.targets else []
    return report


def _apply_peaks(results, gemm_peaks):
    """Percent of the GEMM peak (same dtype and thread count) for every result."""
    for entry in results:
        peak = next((g["gflops"] for g in gemm_peaks
                     if g["dtype"] == entry["dtype"] and g["threads"] == entry["threads"]), None)
        for mode in MODES:
            gflops = entry[f"{mode}_gflops"]
            entry[f"{mode}_pct_peak"] = 100.0 * gflops / peak if gflops and peak else None


def _result_entries(case, data, contenders):
    tokens = tokens_of(data)
    padded_tokens = case.size.T * case.size.B
    entries = []
    for c in contenders:
        entry = {"cell": c.cell, "size": case.size_name, **case.size.__dict__, "dtype": case.dtype,
                 "varlen": case.varlen, "threads": c.threads, "system": c.system, "variant": c.variant,
                 "status": c.status, "reason": c.reason, "tokens": tokens if c.uses_lengths else padded_tokens,
                 "max_abs_diff": c.max_abs_diff}
        for mode in MODES:
            samples = c.samples[mode]
            ms = float(np.median(samples)) if samples and c.status == "ok" else None
            gflops = gemm_flops(c.cell, case.size, mode, entry["tokens"]) / (ms * 1e6) if ms else None
            entry[f"{mode}_ms"] = ms
            # interquartile range over the median: how much to trust the median
            entry[f"{mode}_iqr_pct"] = (100.0 * float(np.subtract(*np.percentile(samples, [75, 25]))) / ms
                                        if ms and len(samples) >= 3 else None)
            entry[f"{mode}_samples_ms"] = [round(s, 6) for s in samples]
            entry[f"{mode}_gflops"] = gflops
        entries.append(entry)
    return entries


def _memory_entries(options, systems):
    sizes = QUICK_SIZES if options.quick else SIZES
    entries = []
    for dtype in options.dtype:
        for cell in options.cells:
            for size_name in options.sizes:
                for system in ("rnnkernels", "torch"):
                    if system not in systems:
                        continue
                    entry = {"cell": cell, "size": size_name, "dtype": dtype, "system": system}
                    try:
                        entry.update(measure_memory(cell, size_name, sizes[size_name], dtype, system,
                                                    options.impl, options.threads[0], options.seed))
                        entry["peak_increase_mib"] = entry["peak_increase_kib"] / 1024.0
                    except WorkerError as exc:
                        entry.update(peak_increase_kib=None, peak_increase_mib=None, error=str(exc))
                    entries.append(entry)
    return entries


def cpu_description(cpuinfo):
    """Model name, family and model, and widest vector ISA of the first CPU in
    a /proc/cpuinfo text.  The kernels are built for the CPU they run on
    (-march=native), so the same commit measures differently on an AVX2 and
    an AVX-512 machine of the same name: the project's "AMD EPYC" changed
    from one to the other between two runs."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE" if flags else None
    out = {"cpu": fields.get("model name"), "cpu_family": fields.get("cpu family"),
           "cpu_model": fields.get("model"), "simd": simd}
    return {k: v for k, v in out.items() if v}


def _cpu_line(m):
    details = ", ".join(part for part in (
        f"family {m['cpu_family']} model {m['cpu_model']}" if m.get("cpu_family") and m.get("cpu_model") else "",
        m.get("simd", "")) if part)
    return (m.get("cpu") or m["processor"]) + (f" ({details})" if details else "")


def machine_info():
    import rnnkernels
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "rnnkernels": rnnkernels.__version__, "default_threads": default_threads()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info.update(cpu_description(cpuinfo.read()))
    except OSError:
        pass
    if importlib.util.find_spec("torch") is not None:
        import torch
        info["torch"] = torch.__version__
    return info


# ------------------------------------------------------------------ analysis
def summary_rows(report):
    """One row per cell x size x dtype x varlen x threads: median ms per
    contender label and mode, the rnnkernels/best-peer ratios, and
    rnnkernels' GFLOP/s and percent of the GEMM peak."""
    rows = {}
    for r in report["results"]:
        key = (r["cell"], r["size"], r["dtype"], r["varlen"], r["threads"])
        row = rows.setdefault(key, {"cell": r["cell"], "size": r["size"], "dtype": r["dtype"],
                                    "varlen": r["varlen"], "threads": r["threads"], "ms": {}})
        label = r["system"] if r["variant"] == "padded" else f"{r['system']} {r['variant']}"
        row["ms"][label] = {mode: r[f"{mode}_ms"] for mode in MODES}
        if r.get("tokens"):
            row.setdefault("tokens", {})[label] = r["tokens"]
        if r["system"] == "rnnkernels" and r["variant"] in ("padded", "varlen") and \
                (r["variant"] == "varlen") == r["varlen"]:
            row["gflops"] = {mode: r[f"{mode}_gflops"] for mode in MODES}
            row["pct_peak"] = {mode: r[f"{mode}_pct_peak"] for mode in MODES}
    for row in rows.values():
        ours_label = "rnnkernels varlen" if row["varlen"] else "rnnkernels"
        ours = row["ms"].get(ours_label, {})
        peers = {k: v for k, v in row["ms"].items() if k.split()[0] in PEERS}
        row["best_peer"], row["ratio"] = {}, {}
        for mode in MODES:
            timed = {k: v[mode] for k, v in peers.items() if v[mode]}
            best = min(timed, key=timed.get) if timed else None
            row["best_peer"][mode] = best
            row["ratio"][mode] = ours[mode] / timed[best] if best and ours.get(mode) else None
        if row["varlen"]:
            padded = row["ms"].get("rnnkernels", {})
            row["varlen_over_padded"] = {mode: ours[mode] / padded[mode] if ours.get(mode) and padded.get(mode)
                                         else None for mode in MODES}
            tokens = row.get("tokens", {})
            # The ratio that work alone would give: sum(lengths) / (T*B).
            row["work_share"] = (tokens[ours_label] / tokens["rnnkernels"]
                                 if ours_label in tokens and "rnnkernels" in tokens else None)
    return sorted(rows.values(), key=lambda r: (r["varlen"], DTYPES.index(r["dtype"]), CELLS.index(r["cell"]),
                                                list(SIZES).index(r["size"]), r["threads"]))


def _target(name, goal, measured, ok, detail=""):
    status = "SKIP" if measured is None else ("PASS" if ok else "FAIL")
    return {"name": name, "goal": goal, "measured": measured, "status": status, "detail": detail}


def evaluate_targets(report):
    """The issue's targets, each PASS/FAIL with the measured value (SKIP when
    this run did not measure it). Evaluated on float32 at the default thread
    count (or the largest one measured)."""
    rows = [r for r in report["rows"] if r["dtype"] == "float32"]
    thread_counts = sorted({r["threads"] for r in rows if not r["varlen"] and r["ratio"]["fwdbwd"]})
    default = report["machine"].get("default_threads")
    main_threads = default if default in thread_counts else (thread_counts[-1] if thread_counts else None)
    main = [r for r in rows if not r["varlen"] and r["threads"] == main_threads]
    targets = []

    ratios = {(r["cell"], r["size"]): r["ratio"] for r in main}
    fb = {k: v["fwdbwd"] for k, v in ratios.items() if v["fwdbwd"]}
    worst = max(fb, key=fb.get) if fb else None
    over = [f"{c}/{s} {v:.2f}x" for (c, s), v in sorted(fb.items()) if v > 1.0]
    targets.append(_target("fwd+bwd vs best peer, every cell x size", "<= 1.00x",
                           fb[worst] if worst else None, bool(fb) and not over,
                           f"worst {worst[0]}/{worst[1]} of {len(fb)} cases" + (f"; over: {', '.join(over)}"
                                                                                 if over else "") if worst else
                           "no case timed against a peer"))
    targets.append(_target("fwd+bwd vs best peer, geometric mean", "<= 0.75x",
                           geometric_mean(fb.values()) if fb else None,
                           bool(fb) and geometric_mean(fb.values()) <= 0.75, f"over {len(fb)} cases"))
    fw = [v["fwd"] for v in ratios.values() if v["fwd"]]
    targets.append(_target("forward-only vs best peer, geometric mean", "<= 0.80x",
                           geometric_mean(fw) if fw else None, bool(fw) and geometric_mean(fw) <= 0.8,
                           f"over {len(fw)} cases"))

    large = next((r for r in main if (r["cell"], r["size"]) == ("lstm", "large")), None)
    pct = large["pct_peak"]["fwdbwd"] if large and large.get("pct_peak") else None
    targets.append(_target("large LSTM fwd+bwd, share of GEMM peak", ">= 75%", pct,
                           pct is not None and pct >= 75.0, "percent of the GEMM peak in this run"))

    by_threads = {r["threads"]: r["ms"].get("rnnkernels", {}).get("fwdbwd") for r in rows
                  if not r["varlen"] and (r["cell"], r["size"]) == ("lstm", "medium")}
    speedup = by_threads[1] / by_threads[2] if by_threads.get(1) and by_threads.get(2) else None
    targets.append(_target("medium LSTM fwd+bwd, 2 threads vs 1", ">= 1.70x", speedup,
                           speedup is not None and speedup >= 1.7, "time(1 thread) / time(2 threads)"))

    varlen = {(r["cell"], r["size"]): r["varlen_over_padded"]["fwdbwd"] for r in rows
              if r["varlen"] and r["threads"] == main_threads and r["varlen_over_padded"]["fwdbwd"]}
    worst_v = max(varlen, key=varlen.get) if varlen else None
    targets.append(_target("variable-length fwd+bwd vs fully padded", "<= 0.65x",
                           varlen[worst_v] if worst_v else None, bool(varlen) and max(varlen.values()) <= 0.65,
                           f"worst {worst_v[0]}/{worst_v[1]} of {len(varlen)} cases" if worst_v else ""))

    mem = {}
    for m in report["memory"]:
        if m["dtype"] == "float32" and m.get("peak_increase_kib") is not None:
            mem.setdefault((m["cell"], m["size"]), {})[m["system"]] = m["peak_increase_kib"]
    mem_ratio = {k: v["rnnkernels"] / max(v["torch"], 1) for k, v in mem.items() if len(v) == 2}
    worst_m = max(mem_ratio, key=mem_ratio.get) if mem_ratio else None
    targets.append(_target("training-step peak memory vs torch", "<= 1.00x",
                           mem_ratio[worst_m] if worst_m else None,
                           bool(mem_ratio) and max(mem_ratio.values()) <= 1.0,
                           f"worst {worst_m[0]}/{worst_m[1]} of {len(mem_ratio)} cases" if worst_m else ""))
    return targets


# ----------------------------------------------------------------- printing
def _fmt(value, spec=".2f", suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(header, rows, groups=None, left=4):
    """Plain-text table, the first ``left`` columns left-aligned, the rest right.
    ``groups`` is an optional row of titles, each spanning the columns up to
    the next title (widened where a title is longer than its span)."""
    width = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    if groups:
        starts = [i for i, title in enumerate(groups) if title] + [len(groups)]
        for start, end in zip(starts, starts[1:]):
            span = sum(width[start:end]) + 2 * (end - start - 1)
            width[end - 1] += max(0, len(groups[start]) + 1 - span)
        lines.append("".join(str(title).ljust(w + 2) for title, w in zip(groups, width)).rstrip())
    cells = lambda r: "  ".join(str(v).ljust(w) if i < left else str(v).rjust(w)
                                for i, (v, w) in enumerate(zip(r, width))).rstrip()
    lines += [cells(header), "  ".join("-" * w for w in width)] + [cells(r) for r in rows]
    return "\n".join(lines)


def render(report):
    """The human-readable report."""
    out = []
    m = report["machine"]
    out.append(f"rnnkernels bench  {report['created']}  impl={report['options']['impl']}")
    out.append(f"machine: {_cpu_line(m)}, {m['cpus']} CPUs; python {m['python']}, "
               f"numpy {m['numpy']}, torch {m.get('torch', '-')}, tensorflow {m.get('tensorflow', '-')}")
    out.append("sizes: " + "; ".join(f"{n} = {Size(**s)}" for n, s in report["sizes"].items()))
    for g in report["gemm_peak"]:
        both = (f"; best of {g['gflops_start']:.1f} before and {g['gflops_end']:.1f} after the cases"
                if "gflops_end" in g else "")
        which = ""
        if g.get("numpy_gflops") and g.get("kernel_gflops"):
            which = (f"; numpy's BLAS {max(g['numpy_gflops']):.1f}, "
                     f"rnnkernels' GEMM {max(g['kernel_gflops']):.1f}")
        out.append(f"GEMM peak: {g['gflops']:.1f} GFLOP/s ({g['dtype']} {g['n']}x{g['n']}, "
                   f"{g['threads']} thread{'s' if g['threads'] > 1 else ''}{both}{which})")
    out.extend(f"note: {n}" for n in report["notes"])
    rows = [r for r in report["rows"] if not r["varlen"]]
    if rows:
        labels = [s for s in SYSTEMS if any(s in r["ms"] for r in rows)]
        head1 = ["", "", "", ""] + [MODE_TITLES[mode] if i == 0 else "" for mode in MODES
                                    for i in range(len(labels))] + ["vs best peer", "", "rnnkernels f+b", ""]
        head2 = ["cell", "size", "dtype", "thr"] + labels * 2 + ["fwd", "f+b", "GFLOP/s", "%peak"]
        body = [[r["cell"], r["size"], r["dtype"], r["threads"]]
                + [_fmt(r["ms"].get(s, {}).get(mode)) for mode in MODES for s in labels]
                + [_fmt(r["ratio"][mode], ".2f", "x") for mode in MODES]
                + [_fmt(r.get("gflops", {}).get("fwdbwd"), ".1f"), _fmt(r.get("pct_peak", {}).get("fwdbwd"), ".0f", "%")]
                for r in rows]
        out += ["", format_table(head2, body, head1)]
    vrows = [r for r in report["rows"] if r["varlen"]]
    if vrows:
        labels = ["rnnkernels varlen", "rnnkernels", "torch packed"]
        head1 = ["variable length", "", "", ""] + [MODE_TITLES[mode] if i == 0 else "" for mode in MODES
                                                   for i in range(3)] + ["varlen / padded", "", "work", "vs torch"]
        head2 = ["cell", "size", "dtype", "thr"] + ["varlen", "padded", "torch"] * 2 + ["fwd", "f+b", "share", "f+b"]
        body = [[r["cell"], r["size"], r["dtype"], r["threads"]]
                + [_fmt(r["ms"].get(s, {}).get(mode)) for mode in MODES for s in labels]
                + [_fmt(r["varlen_over_padded"][mode], ".2f", "x") for mode in MODES]
                + [_fmt(r.get("work_share"), ".3f"), _fmt(r["ratio"]["fwdbwd"], ".2f", "x")] for r in vrows]
        out += ["", format_table(head2, body, head1)]
    scaling = _thread_scaling(rows)
    if scaling:
        out += ["", format_table(["thread scaling", "size", "dtype", "", "system", "threads", "f+b ms",
                                               "speed-up"], scaling)]
    if report["memory"]:
        body = []
        for m_ in report["memory"]:
            body.append([m_["cell"], m_["size"], m_["dtype"], "", m_["system"],
                         _fmt(m_.get("peak_increase_mib"), ".1f"), m_.get("method") or m_.get("error", "")])
        out += ["", format_table(["memory", "size", "dtype", "", "system", "peak MiB", "method"], body)]
    problems = [r for r in report["results"] if r["status"] != "ok"]
    for r in problems:
        out.append(f"{r['status']}: {r['system']} {r['variant']} {r['cell']}/{r['size']}/{r['dtype']}/"
                   f"{r['threads']}t: {r['reason']}")
    for r in report["results"]:
        if r["max_abs_diff"] is not None and r["max_abs_diff"] > CHECK_TOLERANCE[r["dtype"]]:
            out.append(f"WARNING: {r['system']} {r['cell']}/{r['size']}/{r['dtype']} output differs from "
                       f"rnnkernels by {r['max_abs_diff']:.2e}: not the same computation")
    spreads = [r[f"{mode}_iqr_pct"] for r in report["results"] for mode in MODES
               if r.get(f"{mode}_iqr_pct") is not None]
    noisy = sum(v > NOISY_IQR_PCT for v in spreads)
    if noisy:
        out.append(f"note: {noisy} of {len(spreads)} medians have an interquartile range above "
                   f"{NOISY_IQR_PCT}% of the median: the machine was busy; rerun when it is quiet")
    if report["targets"]:
        out.append("")
        if report["options"]["quick"]:
            out.append("targets (--quick sizes: the verdicts below exercise the code, they mean nothing)")
        body = [[t["status"], t["name"], t["goal"], _fmt(t["measured"], ".3f"), t["detail"]]
                for t in report["targets"]]
        out.append(format_table(["status", "target", "goal", "measured", "detail"], body, left=5))
    return "\n".join(out)


def _thread_scaling(rows):
    """Speed-up of each system's fwd+bwd relative to its fewest-thread run,
    for cases measured at more than one thread count."""
    body = []
    groups = {}
    for r in rows:
        groups.setdefault((r["cell"], r["size"], r["dtype"]), []).append(r)
    for (cell, size, dtype), group in groups.items():
        if len(group) < 2:
            continue
        for system in SYSTEMS:
            timed = sorted((r["threads"], r["ms"][system]["fwdbwd"]) for r in group
                           if r["ms"].get(system, {}).get("fwdbwd"))
            for threads, ms in timed[1:] if len(timed) > 1 else []:
                body.append([cell, size, dtype, "", system, f"{timed[0][0]}->{threads}", _fmt(ms),
                             _fmt(timed[0][1] / ms, ".2f", "x")])
    return body


def write_json_atomic(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically (NumPy scalars as numbers)."""
    write_json(path, obj, indent=1, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


# ---------------------------------------------------------------------- CLI
def _csv(name, choices=None, convert=str, minimum=None):
    """argparse type: a comma-separated list, each item checked."""
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        values = []
        for item in items:
            try:
                value = convert(item)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {convert.__name__} values, got {item!r}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"expected a subset of {','.join(choices)}, got {item!r}")
            if minimum is not None and value < minimum:
                raise argparse.ArgumentTypeError(f"expected values >= {minimum}, got {item!r}")
            if value not in values:
                values.append(value)
        return values
    return parse


def build_parser(prog="rnnkernels bench"):
    p = argparse.ArgumentParser(
        prog=prog, description="Time rnnkernels against PyTorch and Keras on identical inputs "
                               "(interleaved, median after warm-up) and print a comparison table.")
    p.add_argument("--cells", type=_csv("--cells", CELLS), default=list(CELLS), help="rnn,lstm,gru (default: all)")
    p.add_argument("--sizes", type=_csv("--sizes", tuple(SIZES)), default=list(SIZES),
                   help="small,medium,large (default: all): " + "; ".join(f"{n} {s}" for n, s in SIZES.items()))
    p.add_argument("--dtype", type=_csv("--dtype", DTYPES), default=["float32"], help="float32 and/or float64")
    p.add_argument("--threads", type=_csv("--threads", convert=int, minimum=1), default=None,
                   help="thread counts, e.g. 1,2 (default: rnnkernels.get_num_threads())")
    p.add_argument("--systems", type=_csv("--systems", SYSTEMS), default=list(SYSTEMS),
                   help="rnnkernels,torch,keras (default: all that are installed)")
    p.add_argument("--impl", choices=("ops", "reference"), default="ops",
                   help="rnnkernels implementation to time (default: ops)")
    p.add_argument("--repeats", type=positive_int, default=None, help="timed repetitions (default 9, quick 3)")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="discarded repetitions (default 2, quick 1)")
    p.add_argument("--varlen", action="store_true",
                   help="also time variable-length batches (lengths evenly spread over [T/4, T], shuffled)")
    p.add_argument("--memory", action="store_true", help="also measure the peak memory of a training step")
    p.add_argument("--targets", action="store_true",
                   help="evaluate the performance targets (implies --varlen and --memory; exit status 1 on FAIL)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (smoke test)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")
    p.add_argument("--_worker", choices=("keras", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Entry point of ``rnnkernels bench``; returns the exit status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    if options._worker == "keras":
        return keras_worker(options.threads[0] if options.threads else 1)
    if options._worker == "memory":
        print(json.dumps(memory_worker(json.loads(options._spec))))
        return 0
    if options.threads is None:
        options.threads = [default_threads()]
    if options.repeats is None:
        options.repeats = 3 if options.quick else 9
    if options.warmup is None:
        options.warmup = 1 if options.quick else 2
    if options.targets:
        options.varlen = options.memory = True
    if options.json:
        directory = os.path.dirname(os.path.abspath(options.json))
        if not os.path.isdir(directory):  # fail now, not after the whole run
            print(f"rnnkernels bench: error: --json: directory {directory!r} does not exist", file=sys.stderr)
            return 2
    try:
        report = run_benchmark(options)
        print(render(report))
        if options.json:
            write_json_atomic(options.json, report)
    except KeyboardInterrupt:
        print("rnnkernels bench: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"rnnkernels bench: error: {exc}", file=sys.stderr)
        return 1
    return 1 if any(t["status"] == "FAIL" for t in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
