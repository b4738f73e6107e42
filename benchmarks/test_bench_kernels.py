"""pytest-benchmark suite: rnnkernels and PyTorch on the benchmark matrix.

Not part of the normal test run (pytest collects tests/ only). Run from the
repository root:

    python3 -m pytest benchmarks/ --benchmark-only --benchmark-columns=min,median,iqr,rounds

One group per cell and size ("lstm small", ...), holding forward-only and
forward+backward for each system, so ``--benchmark-group-by=group`` tables
compare like with like. Environment knobs:

    RNNKERNELS_BENCH_QUICK=1         tiny sizes (seconds, for checking the suite itself)
    RNNKERNELS_BENCH_IMPL=reference  time rnnkernels.reference instead of rnnkernels.ops
    RNNKERNELS_BENCH_DTYPE=float64   float64 instead of float32

Keras is not here: it must run in its own process, which only the comparison
runner (``rnnkernels bench``) does. The runner is also the one that
interleaves systems and evaluates the targets; this suite is for tracking
one system across commits (``--benchmark-autosave`` / ``--benchmark-compare``).
"""
import os

import pytest

from rnnkernels import bench

SIZES = bench.QUICK_SIZES if os.environ.get("RNNKERNELS_BENCH_QUICK") else bench.SIZES
IMPL = os.environ.get("RNNKERNELS_BENCH_IMPL", "ops")
DTYPE = os.environ.get("RNNKERNELS_BENCH_DTYPE", "float32")


@pytest.fixture(scope="module")
def threads():
    return bench.default_threads()


@pytest.mark.parametrize("system", ["rnnkernels", "torch"])
@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("size_name", list(SIZES))
@pytest.mark.parametrize("cell", bench.CELLS)
def test_kernel(benchmark, threads, cell, size_name, mode, system):
    size = SIZES[size_name]
    data = bench.make_inputs(cell, size, DTYPE, bench.case_seed(0, cell, size_name))
    if system == "rnnkernels":
        contender = bench.RnnkernelsContender(cell, data, threads, "padded", IMPL)
    else:
        contender = bench.TorchContender(cell, data, threads, "padded")
    try:
        contender.setup()
    except bench.Unavailable as exc:
        pytest.skip(str(exc))
    benchmark.group = f"{cell} {size_name}"
    benchmark.extra_info.update(size=str(size), dtype=DTYPE, threads=threads, mode=mode,
                                gflop=bench.gemm_flops(cell, size, mode) / 1e9)
    benchmark.pedantic(contender.run, args=(mode,), warmup_rounds=1, rounds=5 if SIZES is bench.SIZES else 3)
