"""The portable build against a -march=native one: forward+backward training calls
(float32) of every cell at the sizes of ``rnnkernels bench``, on the portable
build's widest kernels (``RNNKERNELS_ISA`` = this CPU's best of avx512, avx2,
baseline) and on a ``-march=native`` build of the same sources, in alternating
child processes (never two builds in one process; the machine's noise moves
both alike).

    python benchmarks/native_vs_portable.py [--pairs 5] [--build DIR] [--wheel-python PY]

Without ``--build`` it copies the checkout to a temporary folder and builds it
there with ``RNNKERNELS_NATIVE=1`` (a minute or two), which adds the native
kernels beside the portable ones; both sides then run from that one build, told
apart by ``RNNKERNELS_ISA``.  With ``--wheel-python`` the portable side is instead
the Python of an environment where the wheel is installed (``pip wheel .`` then
``auditwheel repair``: its own copy of libgomp included), run without PYTHONPATH.
Prints per case the medians and native / portable
(the issue's target: the portable build within 5% of native, so >= 0.95).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = {"small": 20, "medium": 6, "large": 3}   # timed calls a child, per size of rnnkernels.bench.cases.SIZES
CASES = [(cell, size) for cell in ("rnn", "lstm", "gru") for size in CALLS]

CHILD = r'''
import json, statistics, sys, time
from rnnkernels import ops
from rnnkernels._core import tuning
from rnnkernels.bench.cases import SIZES, make_inputs
cell, size, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = make_inputs(cell, SIZES[size], "float32", seed=0)
fwd, bwd = getattr(ops, cell + "_forward"), getattr(ops, cell + "_backward")
times = []
for i in range(2 + calls):
    t0 = time.perf_counter()
    out = fwd(d["x"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"], training=True)
    bwd(out[-1], d["dy"])
    if i >= 2:
        times.append(time.perf_counter() - t0)
print(json.dumps({"ms": 1e3 * statistics.median(times), "isa": tuning.current().isa}))
'''


def build_native(dest):
    """Copy the package and its sources to dest and build them there, native kernels included."""
    for part in ("src", "rnnkernels", "setup.py", "pyproject.toml", "README.md"):
        source = os.path.join(ROOT, part)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(dest, part),
                            ignore=shutil.ignore_patterns("*.so", "__pycache__", "build"))
        elif os.path.exists(source):
            shutil.copy(source, dest)
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", "2"], cwd=dest,
                           env=dict(os.environ, RNNKERNELS_NATIVE="1"), capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"the native build failed:\n{built.stderr[-4000:]}")


def _env(build, **extra):
    """The environment of a child: the build on PYTHONPATH, or (build None) the installed package."""
    env = dict(os.environ, **extra)
    if build is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = build
    return env


def portable_isa(python, build):
    """The widest portable kernel build this CPU runs (what a wheel would load)."""
    code = ("from rnnkernels._core import isa; "
            "print(next(n for n in isa.available() if n != 'native'))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         env=_env(build), cwd=tempfile.gettempdir())
    return out.stdout.strip()


def child(python, build, isa_name, cell, size):
    out = subprocess.run([python, "-c", CHILD, cell, size, str(CALLS[size])],
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir(),
                         env=_env(build, RNNKERNELS_ISA=isa_name))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["isa"] != isa_name:
        raise RuntimeError(f"asked for the {isa_name!r} kernels, the child ran {result['isa']!r}")
    return result["ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--build", help="a checkout already built with RNNKERNELS_NATIVE=1 (built here if left out)")
    parser.add_argument("--wheel-python", help="the Python of an environment with the portable wheel installed "
                                               "(the portable side; default: the native build's portable kernels)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rnnkernels-native-") as tmp:
        build = args.build or tmp
        if not args.build:
            build_native(build)
        wheel = (args.wheel_python, None) if args.wheel_python else (sys.executable, build)
        portable = portable_isa(*wheel)
        where = f"the wheel installed for {args.wheel_python}" if args.wheel_python else "the same build"
        print(f"portable: {where}, {portable} kernels; native: -march=native; {args.pairs} alternating pairs per case")
        print(f"{'cell':5} {'size':7} {'portable ms':>12} {'native ms':>10} {'native/portable':>16}")
        ratios = []
        for cell, size in CASES:
            ms = {"portable": [], "native": []}
            for _ in range(args.pairs):
                ms["portable"].append(child(*wheel, portable, cell, size))
                ms["native"].append(child(sys.executable, build, "native", cell, size))
            ratio = statistics.median(n / p for n, p in zip(ms["native"], ms["portable"]))
            ratios.append(ratio)
            print(f"{cell:5} {size:7} {statistics.median(ms['portable']):12.2f} "
                  f"{statistics.median(ms['native']):10.2f} {ratio:16.3f}", flush=True)
        geo = statistics.geometric_mean(ratios)
        print(f"worst native/portable {min(ratios):.3f}, geometric mean {geo:.3f} "
              f"(portable within 5% of native where every ratio >= 0.95)")


if __name__ == "__main__":
    main()
