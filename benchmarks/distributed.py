"""Data-parallel training on MPI: scaling, overlap and a cost model to hundreds of nodes.

    python benchmarks/distributed.py steps  [--repeats 5]   # step times: the overlap target
    python benchmarks/distributed.py train  [--repeats 2]   # rnnkernels train, 1 vs 2 ranks
    python benchmarks/distributed.py model  [--json FILE]   # the cost model's table

``steps`` runs, interleaved and repeated, one process on half the global batch, two
ranks on the global batch and one process on the global batch (the default
recipe's model: Bidirectional GRU(64) on 20 features, T = 50 frames, 1 kernel thread
per rank), and reports the median step time of each and the ratios: the 2-rank step
against the 1-rank step on half the batch (communication not hidden shows as a ratio
above 1), the speed-up over one process on the whole batch, and the time each rank
spent waiting in MPI.  ``train`` runs ``rnnkernels train --threads 1 --epochs 4`` and
``mpiexec -n 2 rnnkernels train --threads 1 --epochs 4`` (interleaved) and compares
train_seconds, test accuracy and the saved weights.  ``model`` measures the per-sample
compute of the default recipe and of a large LSTM here and predicts the efficiency of a
step at 2 to 256 nodes with a ring all-reduce on named networks (docs/distributed.md).

Timings on a shared machine are noisy: compare the ratios of one run, never absolute
times across runs.  ``steps`` and ``train`` first measure the machine's own ceiling: a
fixed single-thread computation alone and as two processes at once (no messages), so
the best two ranks can do on this machine, now, is printed beside what they did.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout: the package beside benchmarks/
    sys.path.insert(1, ROOT)
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------- the step worker
def _recipe_model(seed=0):
    from rnnkernels.audio.recipes import build_model
    return build_model(20, 10, "gru", 64, 1, True, seed=seed)


def _large_lstm(seed=0):
    from rnnkernels.layers import LSTM, Dense
    from rnnkernels.models import Sequential
    m = Sequential([LSTM(512, return_sequences=True, input_shape=(None, 80)), LSTM(512),
                    Dense(10, activation="softmax")], seed=seed)
    m.compile("adam", "sparse_categorical_crossentropy")
    return m


def step_worker(batch, steps, model_name="recipe", T=50):
    """Times ``steps`` training steps of ``batch`` (the global batch) under whatever launch
    this process has; prints one JSON line from rank 0."""
    from rnnkernels import callbacks, distributed
    model = _recipe_model() if model_name == "recipe" else _large_lstm()
    F = 20 if model_name == "recipe" else 80
    rng = np.random.default_rng(0)
    n = batch * (steps + 2)
    x = rng.normal(size=(n, T, F)).astype("float32")
    lengths = rng.integers(T // 2, T + 1, n)
    y = rng.integers(0, 10, n)
    times, waits, cpus = [], [], []

    class Clock(callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            s = distributed.active()
            self.t, self.w = time.perf_counter(), (s.comm.waited if s else 0.0)
            self.c = time.process_time() - (s.comm.waited_cpu if s else 0.0)

        def on_train_batch_end(self, b, logs=None):
            s = distributed.active()
            times.append(time.perf_counter() - self.t)
            waits.append((s.comm.waited if s else 0.0) - self.w)
            cpus.append(time.process_time() - (s.comm.waited_cpu if s else 0.0) - self.c)

    model.fit(x, y, lengths=lengths, batch_size=batch, epochs=1, verbose=0, shuffle=False,
              callbacks=[Clock()])
    times, waits, cpus = times[2:], waits[2:], cpus[2:]  # the first steps warm the buffers
    if distributed.rank() == 0 or os.environ.get("BENCH_ALL_RANKS"):
        s = distributed.active()
        print(json.dumps({"ranks": distributed.size(), "batch": batch,
                          "step_s": statistics.median(times), "wait_s": statistics.median(waits),
                          "min_step_s": min(times), "cpu_s": statistics.median(cpus),
                          "buckets": s._gradients.buckets_launched if s else 0,
                          "grad_bytes": int(sum(p.nbytes for p in model.trainable_params()))}),
              flush=True)


def _launch_steps(ranks, batch, steps, model_name="recipe"):
    cmd = [sys.executable, os.path.abspath(__file__), "_step", str(batch), str(steps), model_name]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1200)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])


def _ceiling_worker():
    """A fixed amount of single-thread compute (BLAS on one thread); prints its wall time."""
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).random((300, 300))
    with threadpool_limits(1):
        a @ a
        t = time.perf_counter()
        for _ in range(300):
            a @ a
    print(json.dumps({"wall_s": time.perf_counter() - t}), flush=True)


def ceiling(repeats=5):
    """The machine's own limit: one process of fixed compute alone, then two at once (no
    messages).  Two ranks cannot gain more than ``2 * alone / together`` here."""
    def run(n):
        cmd = [sys.executable, os.path.abspath(__file__), "_ceiling"]
        if n > 1:
            cmd = [MPIEXEC, "-n", str(n)] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
        # two ranks' lines may interleave on the shared stdout: read the numbers alone
        return max(float(v) for v in re.findall(r'"wall_s": ([0-9.eE+-]+)', out.stdout))
    alone, together = [], []
    for _ in range(repeats):
        alone.append(run(1))
        together.append(run(2))
    a, b = statistics.median(alone), statistics.median(together)
    print(f"Machine check: fixed single-thread compute, 1 process alone {1e3 * a:.0f} ms, 2 at once "
          f"(no messages) {1e3 * b:.0f} ms (medians of {repeats}): two ranks can gain at most "
          f"{2 * a / b:.2f}x on this machine now")
    return 2 * a / b


def steps(args):
    ceiling()
    B = args.batch
    cases = [("1 process, B/2", 1, B // 2), ("2 ranks, B", 2, B), ("1 process, B", 1, B)]
    got = {name: [] for name, _, _ in cases}
    best = {name: [] for name, _, _ in cases}
    cpu = {name: [] for name, _, _ in cases}
    waits = []
    for _ in range(args.repeats):  # interleaved: the machine's load hits every case alike
        for name, ranks, batch in cases:
            r = _launch_steps(ranks, batch, args.steps)
            got[name].append(r["step_s"])
            best[name].append(r["min_step_s"])
            cpu[name].append(r["cpu_s"])
            if ranks == 2:
                waits.append(r["wait_s"])
                info = r
    med = {k: statistics.median(v) for k, v in got.items()}
    fastest = {k: min(v) for k, v in best.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"Default recipe model, T=50, 1 thread per rank, global batch B={B}, "
          f"{args.steps} steps x {args.repeats} repeats, medians (ms):")
    for name, _, _ in cases:
        print(f"  {name:<16} {1e3 * med[name]:8.2f}   runs: "
              + " ".join(f"{1e3 * t:.2f}" for t in got[name]))
    print(f"  2-rank step / 1-rank step on B/2: {med['2 ranks, B'] / med['1 process, B/2']:.3f}"
          "  (target <= 1.1)")
    print(f"  the same from the fastest step of each case: "
          f"{fastest['2 ranks, B'] / fastest['1 process, B/2']:.3f}")
    print(f"  the same in CPU time per step outside MPI waits (rank 0; the work a step costs, "
          f"which descheduling does not inflate): "
          f"{cpu_med['2 ranks, B'] / cpu_med['1 process, B/2']:.3f}  "
          f"({1e3 * cpu_med['2 ranks, B']:.2f} vs {1e3 * cpu_med['1 process, B/2']:.2f} ms)")
    print(f"  speed-up of 2 ranks over 1 process on B: {med['1 process, B'] / med['2 ranks, B']:.2f}x")
    print(f"  rank 0's wait in MPI per step: {1e3 * statistics.median(waits):.2f} ms "
          f"({info['buckets']} gradient buckets, {info['grad_bytes']} bytes)")


# ---------------------------------------------------------------- rnnkernels train
def _weights(path):
    from rnnkernels.audio.recipes import AudioClassifier
    return AudioClassifier.load(path).model.get_weights()


def train(args):
    ceiling()
    tmp = tempfile.mkdtemp()
    rows = {1: [], 2: []}
    for rep in range(args.repeats):
        for ranks in (1, 2):
            report, model = os.path.join(tmp, f"r{ranks}.{rep}.json"), os.path.join(tmp, f"m{ranks}.{rep}")
            cmd = [sys.executable, "-m", "rnnkernels", "train", "--threads", "1", "--epochs",
                   str(args.epochs), "--quiet", "--report", report, "--save", model]
            if ranks > 1:
                cmd = [MPIEXEC, "-n", str(ranks)] + cmd
            out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1800)
            if out.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
            if rep == 0:
                print(f"$ {' '.join(cmd[cmd.index('-m') - 1 if ranks == 1 else 0:])}")
                print(out.stdout)
            r = json.load(open(report))
            rows[ranks].append((r["train_seconds"], r["test_accuracy"], r["ranks"], model))
    t1 = statistics.median(t for t, _, _, _ in rows[1])
    t2 = statistics.median(t for t, _, _, _ in rows[2])
    a, b = _weights(rows[1][0][3]), _weights(rows[2][0][3])
    worst = max(float(np.max(np.abs(u - v)) / max(float(np.max(np.abs(u))), 1e-30)) for u, v in zip(a, b))
    print(f"rnnkernels train --threads 1 --epochs {args.epochs}, {args.repeats} interleaved repeats:")
    print(f"  1 process : train_seconds {[t for t, *_ in rows[1]]}, median {t1:.2f}, "
          f"test accuracy {[acc for _, acc, _, _ in rows[1]]}")
    print(f"  2 ranks   : train_seconds {[t for t, *_ in rows[2]]}, median {t2:.2f}, "
          f"test accuracy {[acc for _, acc, _, _ in rows[2]]}, report ranks {rows[2][0][2]}")
    print(f"  speed-up {t1 / t2:.2f}x (target >= 1.8); weights max |a-b|/max|a| per array: "
          f"{worst:.2e} (target <= 1e-3)")
    if args.keep:  # the first repeat's reports, for the record
        os.makedirs(args.keep, exist_ok=True)
        for ranks in (1, 2):
            shutil.copy(os.path.join(tmp, f"r{ranks}.0.json"),
                        os.path.join(args.keep, f"train-{ranks}-rank{'s' if ranks > 1 else ''}.json"))
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the cost model
NETWORKS = {  # alpha: per-message latency (s), bandwidth (bytes/s) of one link
    "InfiniBand HDR 200 Gb/s": (1.5e-6, 25e9),
    "100 GbE RoCE": (3e-6, 12.5e9),
    "10 GbE TCP": (30e-6, 1.25e9),
}


def ring_allreduce(nbytes, p, alpha, bandwidth):
    """Time of a ring all-reduce (reduce-scatter then all-gather): 2 (p - 1) messages of
    n / p bytes each way (Patarasuk & Yuan 2009, Horovod's ring)."""
    if p == 1:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / bandwidth


def model(args):
    measured = {}
    for name, batch in (("recipe", 32), ("large_lstm", 8)):
        r = _launch_steps(1, batch, 6 if name == "recipe" else 3, name)
        measured[name] = dict(per_sample_s=r["step_s"] / batch, grad_bytes=r["grad_bytes"], batch=batch)
    print("Per-sample step compute measured here (1 thread, loaded machine): "
          + ", ".join(f"{k}: {1e3 * v['per_sample_s']:.2f} ms/sample, gradients "
                      f"{v['grad_bytes'] / 1e6:.2f} MB" for k, v in measured.items()))
    print("Weak scaling (per-rank batch fixed: recipe 32, large LSTM 8; global batch grows with p),")
    print("step = compute + ring all-reduce not hidden; efficiency = compute / step.")
    print("'no overlap': the whole all-reduce exposed; 'overlap': all but the last bucket")
    print("(the first layer's gradients, which finish last) hidden behind backward.\n")
    table = []
    nodes = [2, 4, 8, 16, 32, 64, 128, 256]
    header = "| model | network | overlap | " + " | ".join(f"p={p}" for p in nodes) + " |"
    print(header)
    print("|" + "---|" * (3 + len(nodes)))
    for name, m in measured.items():
        compute = m["per_sample_s"] * m["batch"]
        last = m["grad_bytes"] * (0.8 if name == "recipe" else 0.45)  # the first layer's share
        for net, (alpha, bw) in NETWORKS.items():
            for overlap in (False, True):
                effs = []
                for p in nodes:
                    comm = ring_allreduce(m["grad_bytes"], p, alpha, bw)
                    exposed = comm if not overlap else max(
                        ring_allreduce(last, p, alpha, bw), comm - 0.5 * compute)
                    effs.append(compute / (compute + exposed))
                table.append(dict(model=name, network=net, overlap=overlap, efficiency=effs))
                print(f"| {name} | {net} | {'yes' if overlap else 'no'} | "
                      + " | ".join(f"{100 * e:.0f}%" for e in effs) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"measured": measured, "nodes": nodes, "table": table}, f, indent=1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_step":
        return step_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        return _ceiling_worker()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--repeats", type=int, default=5)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--keep", metavar="DIR", help="copy the first repeat's two reports here")
    m = sub.add_parser("model")
    m.add_argument("--json")
    args = p.parse_args()
    if MPIEXEC is None and args.what != "model":
        raise SystemExit("no mpiexec: pip install '.[mpi]'")
    {"steps": steps, "train": train, "model": model}[args.what](args)


if __name__ == "__main__":
    main()
