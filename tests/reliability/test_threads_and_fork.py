"""Thread counts that OpenMP cannot start, and kernels in forked children (libgomp is not
fork-safe).  Each case runs in its own process under a timeout: before the fix the first
was a segfault and the fork cases hung forever."""
import os

import pytest

from helpers.isolated import one_error_line, run_cli, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

# an LSTM call with enough work for 2 threads in its time loop and in its copies
_LSTM = """
import numpy as np, rnnkernels
from rnnkernels import ops
rng = np.random.default_rng(0)
T, B, I, H = 20, 32, 64, 256
x = rng.standard_normal((T, B, I)).astype(np.float32)
w_ih = (rng.standard_normal((4 * H, I)) * 0.1).astype(np.float32)
w_hh = (rng.standard_normal((4 * H, H)) * 0.1).astype(np.float32)
def lstm(seed=None):
    y, h, c, cache = ops.lstm_forward(x, w_ih, w_hh, None, None)
    return y, ops.lstm_backward(cache, np.ones_like(y))["w_hh"]
"""


def _openmp():
    from rnnkernels._core import _threads
    return _threads.openmp_enabled()


def test_a_huge_thread_count_is_refused_and_the_limit_works():
    r = run_python(_LSTM + """
import warnings
from rnnkernels._core import threads
y1, g1 = lstm()
try:
    rnnkernels.set_num_threads(100000)
except ValueError as e:
    print("refused:", e)
assert rnnkernels.get_num_threads() != 100000
rnnkernels.set_num_threads(rnnkernels.max_threads())  # the limit itself is startable
y2, g2 = lstm()
assert np.array_equal(y1, y2) and np.array_equal(g1, g2)
print("limit", rnnkernels.max_threads(), "ok")
""", timeout=180)
    assert r.returncode == 0, r
    assert "refused: num_threads: expected at most" in r.stdout and "got 100000" in r.stdout
    assert "ok" in r.stdout


def test_omp_num_threads_above_the_limit_is_clamped():
    r = run_python(_LSTM + """
n = rnnkernels.get_num_threads()
assert n == rnnkernels.max_threads(), n
lstm()
print("ok", n)
""", env={"OMP_NUM_THREADS": "100000"}, timeout=180)
    assert r.returncode == 0 and "ok" in r.stdout, r


def test_cli_threads_above_the_limit_is_a_one_line_error():
    line = one_error_line(run_cli(["train", "--threads", "100000", "--epochs", "1"], timeout=120))
    assert line.startswith("rnnkernels: error: --threads 100000: expected at most"), line


def test_bench_threads_above_the_limit_is_a_one_line_error():
    line = one_error_line(run_cli(["bench", "--threads", "1,100000", "--quick"], timeout=120), status=2)
    assert "--threads 100000: expected at most" in line, line


def test_a_kernel_in_a_child_forked_after_two_threads_runs():
    if not _openmp():
        pytest.skip("serial build: no OpenMP thread pool to inherit")
    r = run_python(_LSTM + """
import os, warnings
from rnnkernels._core import threads
rnnkernels.set_num_threads(2)
y, g = lstm()
assert threads.usage()["max_time_loop_threads"] == 2   # the parent's pool exists
pid = os.fork()
if pid == 0:
    code = 1
    try:
        assert rnnkernels.get_num_threads() == 1
        y2, g2 = lstm()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            rnnkernels.set_num_threads(2)
        assert any("fork" in str(x.message) for x in w), w
        assert rnnkernels.get_num_threads() == 1
        lstm()
        code = 0 if np.array_equal(y, y2) and np.array_equal(g, g2) else 2
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print("child status", os.waitstatus_to_exitcode(status))
y3, g3 = lstm()   # the parent keeps its threads
assert threads.usage()["last_call"]["time_loop_threads"] == 2
""", timeout=120)
    assert not r.timed_out, "the forked child hung (libgomp's pool after fork)"
    assert r.returncode == 0 and "child status 0" in r.stdout, r


def test_a_child_of_a_process_that_never_ran_threads_keeps_them():
    if not _openmp():
        pytest.skip("serial build")
    r = run_python(_LSTM + """
import os
rnnkernels.set_num_threads(1)
lstm()          # one thread: libgomp started no pool
rnnkernels.set_num_threads(2)
pid = os.fork()
if pid == 0:
    from rnnkernels._core import threads
    ok = rnnkernels.get_num_threads() == 2
    lstm()
    ok = ok and threads.usage()["last_call"]["time_loop_threads"] == 2
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child status", os.waitstatus_to_exitcode(status))
""", timeout=120)
    assert not r.timed_out and r.returncode == 0 and "child status 0" in r.stdout, r


def test_multiprocessing_pool_with_fork_after_two_threads():
    if not _openmp():
        pytest.skip("serial build")
    r = run_python(_LSTM + """
import multiprocessing as mp
rnnkernels.set_num_threads(2)
y, g = lstm()
def work(i):
    y2, g2 = lstm()
    return bool(np.array_equal(y2, y) and np.array_equal(g2, g)), rnnkernels.get_num_threads()
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print("results", pool.map(work, range(4)))
""", timeout=120)
    assert not r.timed_out, "multiprocessing's fork workers hung"
    assert r.returncode == 0 and "results [(True, 1), (True, 1), (True, 1), (True, 1)]" in r.stdout, r
