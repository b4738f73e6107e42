"""One build for every CPU: the kernel builds, the choice among them, the
tuning plan, and what must hold whichever of them runs.

Every kernel build this CPU runs is tested here in one process (each test
activates the build it checks and goes back); CI also runs the whole kernel
suite once per build (``RNNKERNELS_ISA``), and tests/kernels/test_other_cpus.py
runs the package on emulated older CPUs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnkernels
from helpers.cells import PLAIN, assert_close, make_case, run
from helpers.environment import package_env
from rnnkernels import ops, reference
from rnnkernels._core import cpu, isa, tuning

BUILDS = isa.available()


def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif(not cpu.facts().get("level"), reason="not an x86-64 CPU")
def test_cpuid_agrees_with_the_compiler_and_the_kernel():
    """Our CPUID reading gives the x86-64 level the compiler's
    __builtin_cpu_supports gives, and the features Linux reports."""
    facts = cpu.facts()
    from rnnkernels._core import _cpu
    if _cpu.compiler_level() >= 0:
        assert facts["level"] == _cpu.compiler_level()
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    for ours, linux in [("sse4_2", "sse4_2"), ("popcnt", "popcnt"), ("avx", "avx"), ("avx2", "avx2"),
                        ("fma", "fma"), ("avx512f", "avx512f"), ("avx512bw", "avx512bw"),
                        ("avx512vl", "avx512vl"), ("bmi2", "bmi2"), ("movbe", "movbe")]:
        assert bool(facts[ours]) == (linux in flags), ours
    assert facts["l1d"] > 0 and facts["l2"] > 0


def test_the_widest_build_this_cpu_runs_is_the_default():
    assert BUILDS, "no kernel build runs on this CPU"
    assert isa.default() == BUILDS[0]
    order = [name for name in isa.ORDER if name in BUILDS]
    assert list(BUILDS) == order
    level = cpu.facts()["level"]
    if level:  # x86: the portable builds are all there, and exactly those the level allows
        assert {"avx512", "avx2", "baseline"} <= set(isa.built())
        assert ("avx512" in BUILDS) == (level >= 4) and ("avx2" in BUILDS) == (level >= 3)


def test_a_build_the_cpu_cannot_run_is_refused_before_it_loads(monkeypatch):
    """Asking for a build the CPU lacks is a ValueError that names it, never
    an import that dies of SIGILL."""
    if "avx512" not in isa.built():
        pytest.skip("no avx512 build here")
    plan = tuning.defaults(BUILDS[-1]).replace(isa="avx512")
    facts = dict(cpu.facts(), level=2)
    monkeypatch.setattr(cpu, "facts", lambda: facts)
    problem = isa.why_not("avx512")
    assert problem and "x86-64-v4" in problem and "AVX-512" in problem
    with pytest.raises(ValueError, match="isa 'avx512': this CPU .* lacks x86-64-v4"):
        plan.check()
    assert "no kernel build named" in isa.why_not("sse9")


@pytest.mark.parametrize("value, message", [("avx1024", "no kernel build named 'avx1024'"),
                                            ("native", "no 'native' build")])
def test_rnnkernels_isa_names_what_is_wrong(value, message):
    """A bad RNNKERNELS_ISA is one clear error naming the variable."""
    code = "from rnnkernels import ops; import numpy as np; ops.rnn_forward(np.ones((1,1,1)), np.ones((1,1)), np.ones((1,1)), None, None)"
    env = package_env(RNNKERNELS_ISA=value)
    env.pop("RNNKERNELS_PLAN", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if value == "native" and "native" in isa.built():
        pytest.skip("this installation has a native build")
    assert proc.returncode != 0
    assert "RNNKERNELS_ISA" in proc.stderr and message in proc.stderr


@pytest.fixture(params=BUILDS)
def build(request):
    """Run the test under each kernel build this CPU runs (its default plan)."""
    with tuning.using(tuning.defaults(request.param)):
        assert tuning.active() == request.param
        yield request.param


@pytest.mark.parametrize("cell", PLAIN + ["lstm_proj_peephole", "lstm_layer_norm", "gru_dropout_zoneout"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_build_matches_the_reference(build, cell, dtype):
    """Each build, at odd sizes (primes, 1, non-multiples of any vector width),
    with variable lengths: the reference's numbers, and the same bits at 1
    and 2 threads."""
    for T, B, I, H, lengths in [(5, 3, 7, 13, [5, 2, 4]), (1, 1, 1, 1, None), (4, 11, 5, 37, None)]:
        case = make_case(cell, T, B, I, H, dtype=dtype, seed=T + H,
                         lengths=None if lengths is None else np.array(lengths))
        want = run(reference, cell, case)
        got = []
        for n in (1, 2):
            with rnnkernels.num_threads(n):
                got.append(run(ops, cell, case))
            assert_close(got[-1], want, dtype, f"{build} {cell}")
        for k, v in got[0].items():
            if k != "cache" and v is not None:
                assert np.array_equal(v, got[1][k]), (build, cell, k)


def test_gemm_blocking_never_changes_a_bit(build):
    """The plan's k chunk and row block change speed only: every element is
    summed over k in increasing order whatever they are."""
    kernels = tuning.kernels()
    limits = kernels.gemm_limits()
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((37, 613)).astype(dtype)
        b = rng.standard_normal((613, 71)).astype(dtype)
        first = None
        plan = tuning.current()
        for kc in (16, 64, 100, 256, 512):
            for mr in range(1, limits["mr_max"] + 1):
                with tuning.using(plan.replace(gemm_kc=kc, gemm_mr=mr)):
                    out = np.empty((37, 71), dtype)
                    kernels.matmul(a, b, out, 2)
                first = out if first is None else first
                assert np.array_equal(out, first), (dtype, kc, mr)
        np.testing.assert_allclose(first, a.astype(np.float64) @ b, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-3 if dtype == np.float32 else 1e-11)


def test_plan_blocking_leaves_training_bitwise_equal(build):
    """A whole forward and backward under other GEMM blockings: the same bits."""
    case = make_case("lstm", 6, 9, 5, 67, dtype=np.float32, seed=3)
    base = run(ops, "lstm", case)
    plan = tuning.current()
    for kc, mr in [(64, 1), (128, 3), (512, plan.gemm_mr)]:
        with tuning.using(plan.replace(gemm_kc=kc, gemm_mr=mr)):
            other = run(ops, "lstm", case)
        for k, v in base.items():
            if k != "cache" and v is not None:
                assert np.array_equal(v, other[k]), (kc, mr, k)


@pytest.mark.skipif(len(BUILDS) < 2, reason="this CPU runs one kernel build only")
def test_backward_runs_on_the_build_its_forward_ran_on():
    """The packed weights a forward keeps follow its build's vector width: a
    plan changed between forward and backward must not mix them."""
    wide, narrow = BUILDS[0], BUILDS[1]
    case = make_case("gru", 4, 5, 3, 19, dtype=np.float64, seed=2)
    with tuning.using(tuning.defaults(narrow)):
        want = run(ops, "gru", case)
    x, w_ih, w_hh, b_ih, b_hh = (case[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh"))
    with tuning.using(tuning.defaults(narrow)):
        y, h_n, cache = ops.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=case["h0"], reset_after=True)
    with tuning.using(tuning.defaults(wide)):
        grads = ops.gru_backward(cache, case["dy"], case["dh_n"])
    assert np.array_equal(y, want["y"])
    assert np.array_equal(grads["w_hh"], want["d_w_hh"]) and np.array_equal(grads["x"], want["d_x"])


def test_defaults_come_from_cpuid():
    """No measuring: the build from the level, the k chunk from the L1 data
    cache and the vector width, the row block from the build."""
    plan = tuning.defaults()
    limits = isa.module(plan.isa).gemm_limits()
    assert plan.gemm_mr == limits["mr"] and plan.cpus == (os.cpu_count() or 1)
    assert plan.gemm_kc == tuning.default_kc(cpu.facts()["l1d"], limits["vector_bytes"])
    assert tuning.default_kc(48 * 1024, 64) == 256 and tuning.default_kc(32 * 1024, 64) == 128
    assert tuning.default_kc(32 * 1024, 32) == 320 and tuning.default_kc(0, 16) == 512
    assert tuning.default_kc(1024, 64) == 64


def test_plan_files_round_trip_and_bad_ones_are_clear_errors(tmp_path):
    plan = tuning.defaults().replace(gemm_kc=192, tile_wide=48, source="test")
    path = tuning.save(plan, str(tmp_path / "plan.json"))
    back = tuning.load(path)
    assert back.replace(source="test") == plan
    data = json.loads(open(path).read())

    def bad(change, message):
        p = tmp_path / "bad.json"
        p.write_text(change(dict(data)) if callable(change) else change)
        with pytest.raises(ValueError, match=message):
            tuning.load(str(p))

    bad(lambda d: json.dumps({**d, "gemm_kc": "256"}), "gemm_kc: expected a positive integer")
    bad(lambda d: json.dumps({**d, "gemm_mr": 99}), "gemm_mr: expected 1 to")
    bad(lambda d: json.dumps({**d, "isa": "avx1024"}), "isa: expected one of")
    bad(lambda d: json.dumps({**d, "extra": 1}), "unknown plan fields")
    bad(lambda d: json.dumps({k: v for k, v in d.items() if k != "cpus"}), "lacks 'cpus'")
    # a field added after the file was written (it has a default) takes its default
    older = tmp_path / "older.json"
    older.write_text(json.dumps({k: v for k, v in data.items() if k != "min_lane_flops"}))
    assert tuning.load(str(older)).replace(source="test") == plan
    bad(lambda d: json.dumps({**d, "format": "pickle"}), "not an rnnkernels plan")
    bad(lambda d: json.dumps(d).replace('"gemm_kc": 192', '"gemm_kc": Infinity'), "Infinity is not a plan value")
    bad("[1, 2", "cannot read the plan")
    with pytest.raises(ValueError, match="not a regular file"):
        tuning.load(str(tmp_path))


def test_a_plan_file_in_the_environment_runs(tmp_path):
    """RNNKERNELS_PLAN=<file> is the process's plan (what show_config says);
    its results equal those of the same plan set in-process."""
    plan = tuning.defaults(BUILDS[-1]).replace(gemm_kc=128, gemm_mr=3)
    path = tuning.save(plan, str(tmp_path / "plan.json"))
    code = ("import numpy as np; from rnnkernels import ops; from rnnkernels._core import tuning, isa;"
            "rng = np.random.default_rng(0); x = rng.standard_normal((5, 3, 4)).astype(np.float32);"
            "w = [rng.standard_normal(s).astype(np.float32) for s in [(40, 4), (40, 10), (40,), (40,)]];"
            "y = ops.lstm_forward(x, *w)[0]; p = tuning.current();"
            "print(tuning.active(), p.gemm_kc, p.gemm_mr, p.source); print(y.tobytes().hex())")
    env = package_env(RNNKERNELS_PLAN=path)
    env.pop("RNNKERNELS_ISA", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split("\n")
    assert out[0].split()[:3] == [BUILDS[-1], "128", "3"] and path in out[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    w = [rng.standard_normal(s).astype(np.float32) for s in [(40, 4), (40, 10), (40,), (40,)]]
    with tuning.using(plan):
        assert ops.lstm_forward(x, *w)[0].tobytes().hex() == out[1]


def test_the_tuned_plan_is_keyed_by_the_cpu_and_version():
    path = tuning.cache_path()
    assert cpu.signature() in os.path.basename(path) and rnnkernels.__version__ in os.path.basename(path)


def test_show_config_names_the_build_and_the_plan(capsys):
    rnnkernels.show_config()
    out = capsys.readouterr().out
    assert f"kernels: {tuning.active()} of built" in out
    assert "plan: " in out and tuning.current().source in out


TORCH_WORKER = r"""
import os, sys, json
import numpy as np
first = sys.argv[1]
if first == "torch":
    import torch
    torch.set_num_threads(2)
import rnnkernels
from rnnkernels import ops
rnnkernels.set_num_threads(2)
rng = np.random.default_rng(0)
T, B, I, H = 30, 16, 20, 96
x = rng.standard_normal((T, B, I)).astype(np.float32)
w = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
out = []
for step in range(6):
    y, h, c, cache = ops.lstm_forward(x, *w)
    g = ops.lstm_backward(cache, np.ones_like(y))
    out.append(y.tobytes() + g["w_hh"].tobytes())
    if first == "torch":  # torch's own OpenMP runtime, in between
        lstm = torch.nn.LSTM(I, H)
        yt, _ = lstm(torch.from_numpy(x))
        yt.sum().backward()
assert all(o == out[0] for o in out)
threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1
from rnnkernels._core import _threads, openmp
shared = openmp.shared_runtime()
follows = None
if first == "torch":  # one runtime: torch's thread setting is the one our modules read
    torch.set_num_threads(1)
    follows = _threads.omp_max_threads() == 1
    torch.set_num_threads(2)
print(json.dumps({"digest": __import__("hashlib").sha256(out[0]).hexdigest(), "threads": threads,
                  "torch_threads": torch.get_num_threads() if first == "torch" else None,
                  "shared": shared, "follows": follows}))
"""


def test_beside_pytorchs_openmp_runtime():
    """PyTorch loads its own libgomp: in one process with it (imported first),
    the kernels run on that runtime (one thread pool: docs/design.md, "Idle
    threads"), neither crash nor change a bit, and the threads stay bounded."""
    pytest.importorskip("torch")
    results = {}
    for first in ("torch", "alone"):
        proc = subprocess.run([sys.executable, "-c", TORCH_WORKER, first], env=package_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[first] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["torch"]["digest"] == results["alone"]["digest"]
    assert results["torch"]["torch_threads"] == 2
    if sys.platform.startswith("linux"):
        assert results["alone"]["shared"] is None, results
        assert results["torch"]["shared"] and "torch" in results["torch"]["shared"], results
        assert results["torch"]["follows"], results
    cpus = os.cpu_count() or 1
    if results["torch"]["threads"] > 0:  # the main thread + each runtime's team, plus a few helpers
        assert results["torch"]["threads"] <= 2 * max(2, cpus) + 8, results
