"""Worker processes: the Keras worker (TensorFlow's thread pools never spin beside the
others) and the memory worker (one training step per process, its peak RSS)."""
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


from .cases import Size, case_seed, make_inputs
from .contenders import RnnkernelsContender, TorchContender


class WorkerError(RuntimeError):
    pass


def _worker_env(extra=None):
    """Environment for a child ``python -m rnnkernels.bench``: it must import
    this very rnnkernels (a source tree is not necessarily installed)."""
    env = dict(os.environ)
    # the folder holding the rnnkernels package (not the package itself: on sys.path its
    # subpackages rnnkernels/keras and rnnkernels/torch would shadow keras and torch)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # and not the working directory first (Python 3.11+): run from a source checkout's folder,
    # `python -m` would import its unbuilt rnnkernels/ instead of this one
    env["PYTHONSAFEPATH"] = "1"
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
