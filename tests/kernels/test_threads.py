"""The thread-count API, what the build has, how idle threads wait, and what the calls ran on."""
import subprocess
import sys

import numpy as np
import pytest

import rnnkernels
from helpers.environment import IN_CI
from rnnkernels import ops
from rnnkernels._core import threads as kernel_threads


def test_num_threads_api():
    before = rnnkernels.get_num_threads()
    with rnnkernels.num_threads(1):
        assert rnnkernels.get_num_threads() == 1
    assert rnnkernels.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        rnnkernels.set_num_threads(0)
    with pytest.raises(TypeError, match="num_threads"):
        rnnkernels.set_num_threads(1.5)
    # inside a thread's share (a Bidirectional direction) the process-wide value is what
    # set_num_threads returns and restores
    from rnnkernels._core import threads as _config
    with rnnkernels.num_threads(3):
        with _config.thread_share(1):
            assert rnnkernels.get_num_threads() == 1
            with rnnkernels.num_threads(2):
                pass
        assert rnnkernels.get_num_threads() == 3
    assert rnnkernels.get_num_threads() == before


def test_the_build_has_openmp_where_it_is_expected():
    """CI builds with OpenMP: a serial build there is a failure.  A user's own
    serial build (no OpenMP compiler, or RNNKERNELS_NO_OPENMP=1) skips."""
    from rnnkernels._core import _threads
    if not _threads.openmp_enabled():
        if IN_CI:
            pytest.fail("this CI build of the kernels has no OpenMP (serial build)")
        pytest.skip("serial build: the kernels were compiled without OpenMP")
    assert _threads.omp_max_threads() >= 1


def test_calls_record_the_threads_their_time_loop_ran_on():
    """An LSTM with two hidden-unit tiles and enough work per step runs its
    time loop on 2 threads when given 2, on 1 when given 1; usage() says so."""
    from rnnkernels._core import _threads
    if not _threads.openmp_enabled():
        pytest.skip("serial build")
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 32, 8, 128
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih, w_hh = (rng.standard_normal((4 * H, n)).astype(np.float32) * 0.1 for n in (I, H))
    for n in (2, 1):
        kernel_threads.reset_usage()
        with rnnkernels.num_threads(n):
            y, _, _, cache = ops.lstm_forward(x, w_ih, w_hh, None, None)
            ops.lstm_backward(cache, np.ones_like(y))
        usage = kernel_threads.usage()
        assert usage["calls"] == 2 and usage["max_time_loop_threads"] == n
        assert usage["last_call"] == {"kernel": "lstm_backward", "threads": n, "time_loop_threads": n}


def test_show_config_says_what_runs(capsys):
    rnnkernels.show_config()
    out = capsys.readouterr().out
    assert out.startswith(f"rnnkernels {rnnkernels.__version__}")
    assert "build: OpenMP" in out and "threads:" in out and "BLAS:" in out



# A call that loads libgomp (through the kernels) and reports what the process's environment
# holds afterwards; libgomp prints its settings as it loads under OMP_DISPLAY_ENV=verbose.
_LOAD_AND_REPORT = """
import os, numpy as np, rnnkernels
from rnnkernels import ops
from rnnkernels._core import openmp
x = np.ones((4, 3, 5), np.float32)
ops.rnn_forward(x, np.ones((7, 5), np.float32), np.ones((7, 7), np.float32), None, None)
print("left in environment:", os.environ.get("GOMP_SPINCOUNT"))
print("setting:", openmp.wait_setting())
"""


def _load_with(**settings):
    """_LOAD_AND_REPORT in a child whose environment has no OpenMP wait setting but ``settings``."""
    from helpers.environment import package_env
    env = {k: v for k, v in package_env().items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="verbose", **settings)
    r = subprocess.run([sys.executable, "-c", _LOAD_AND_REPORT], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return r


def test_our_libgomp_gets_a_bounded_idle_spin_unless_the_user_chose():
    """libgomp's default idle spin (300,000 rounds, 8-10 ms of a core after every call) is cut
    to openmp.SPIN_COUNT for the libgomp the kernels load, and the environment is put back."""
    from rnnkernels._core import _threads, openmp
    if not _threads.openmp_enabled():
        pytest.skip("serial build: the kernels were compiled without OpenMP")
    r = _load_with()
    assert f"GOMP_SPINCOUNT = '{openmp.SPIN_COUNT}'" in r.stderr, r.stderr
    assert "left in environment: None" in r.stdout, r.stdout
    assert "rnnkernels' default" in r.stdout, r.stdout
    # the user's choice wins, and is what show_config reports
    r = _load_with(GOMP_SPINCOUNT="1234")
    assert "GOMP_SPINCOUNT = '1234'" in r.stderr and "left in environment: 1234" in r.stdout, r
    assert "GOMP_SPINCOUNT=1234 (environment)" in r.stdout, r.stdout
    r = _load_with(OMP_WAIT_POLICY="active")
    assert f"GOMP_SPINCOUNT = '{openmp.SPIN_COUNT}'" not in r.stderr, r.stderr
    assert "OMP_WAIT_POLICY=active (environment)" in r.stdout, r.stdout


def test_the_shared_runtime_check_names_every_openmp_function_the_modules_import():
    """openmp.ENTRY_POINTS decides whether an already loaded runtime can serve our modules
    (docs/design.md, "Idle threads"): a function missing there would bind to our own
    libgomp beside the shared one, two runtimes for one region.  Read from each compiled
    module's string table (the OpenMP API's names; the modules' own Python functions
    such as omp_thread_limit are not imports)."""
    import glob
    import os
    import re
    from rnnkernels._core import openmp
    core = os.path.dirname(openmp.__file__)
    modules = glob.glob(os.path.join(core, "_*.so")) + glob.glob(os.path.join(core, "_*.pyd"))
    if not modules:
        pytest.skip("no compiled modules (an unbuilt checkout)")
    imported = set()
    for path in modules:
        with open(path, "rb") as f:
            imported |= {m.decode() for m in re.findall(rb"\x00(GOMP_[A-Za-z0-9_]+|omp_(?:get|set|in|is|init|destroy|test|unset|pause)_[A-Za-z0-9_]+)\x00", f.read())}
    assert imported, "no OpenMP functions found in the compiled modules"
    assert imported <= set(openmp.ENTRY_POINTS), sorted(imported - set(openmp.ENTRY_POINTS))
