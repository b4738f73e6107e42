"""Smoke tests of the comparison runner (rnnkernels.bench): a --quick run end
to end, its JSON, its argument errors, and the arithmetic behind the table and
the targets. No performance is asserted here (targets live in the benchmark)."""
import json
import math
import os

import numpy as np
import pytest

from rnnkernels import bench
from rnnkernels._util.atomic import write_json

# one thread: on a busy 2-core machine two spinning OpenMP threads make timings (not results) erratic
QUICK_LSTM = ["--quick", "--cells", "lstm", "--sizes", "small", "--repeats", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    status = bench.main(QUICK_LSTM + ["--systems", "rnnkernels", "--json", str(path)])
    assert status == 0
    return json.loads(path.read_text())


def test_quick_run_json_structure(quick_report):
    r = quick_report
    assert r["schema"] == bench.cases.SCHEMA
    for key in ("created", "machine", "options", "sizes", "notes", "gemm_peak", "results", "rows", "memory",
                "targets"):
        assert key in r
    assert r["options"]["cells"] == ["lstm"] and r["options"]["systems"] == ["rnnkernels"]
    assert r["sizes"] == {"small": bench.cases.QUICK_SIZES["small"].__dict__}
    (peak,) = r["gemm_peak"]
    assert peak["dtype"] == "float32" and peak["threads"] == r["options"]["threads"][0] and peak["gflops"] > 0
    # measured before and after the cases; the better one is the peak
    assert peak["gflops"] == max(peak["gflops_start"], peak["gflops_end"])
    # each the better of NumPy's BLAS and the kernels' own GEMM
    assert len(peak["numpy_gflops"]) == len(peak["kernel_gflops"]) == 2
    assert peak["gflops_start"] == max(peak["numpy_gflops"][0], peak["kernel_gflops"][0])
    assert peak["gflops_end"] == max(peak["numpy_gflops"][1], peak["kernel_gflops"][1])

    (result,) = r["results"]
    size = bench.cases.QUICK_SIZES["small"]
    assert (result["cell"], result["size"], result["system"], result["variant"]) == ("lstm", "small",
                                                                                      "rnnkernels", "padded")
    assert result["status"] == "ok", result["reason"]
    assert result["tokens"] == size.T * size.B
    for mode in bench.cases.MODES:
        samples = result[f"{mode}_samples_ms"]
        assert len(samples) == 2 and all(s > 0 for s in samples)
        assert result[f"{mode}_ms"] == pytest.approx(float(np.median(samples)), rel=1e-4)
        expected = bench.cases.gemm_flops("lstm", size, mode) / (result[f"{mode}_ms"] * 1e6)
        assert result[f"{mode}_gflops"] == pytest.approx(expected)
        assert result[f"{mode}_pct_peak"] == pytest.approx(100 * expected / peak["gflops"])

    (row,) = r["rows"]
    assert row["ms"]["rnnkernels"]["fwdbwd"] == result["fwdbwd_ms"]
    assert row["ratio"] == {"fwd": None, "fwdbwd": None}  # no peer ran
    assert r["memory"] == [] and r["targets"] == []


def test_json_holds_no_temporary_files(quick_report, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    write_json(str(target), {"a": np.float32(1.5), "b": [1, 2], "c": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 1.5, "b": [1, 2], "c": [0, 1]}
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("argv, fragment", [
    (["--cells", "lstmx"], "--cells"),
    (["--threads", "0"], "--threads"),
    (["--sizes", "huge"], "--sizes"),
    (["--repeats", "x"], "--repeats"),
    (["--dtype", "float16"], "--dtype"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("rnnkernels bench: error:") and fragment in error
    assert "Traceback" not in capsys.readouterr().err


def test_missing_json_directory_fails_before_running(capsys, tmp_path):
    status = bench.main(["--quick", "--json", str(tmp_path / "no" / "such" / "dir.json")])
    assert status == 2
    assert "--json" in capsys.readouterr().err


def test_flop_count():
    size = bench.cases.Size(T=100, B=32, I=40, H=128)
    forward = 2 * 100 * 32 * 4 * 128 * (40 + 128)
    assert bench.cases.gemm_flops("lstm", size, "fwd") == forward
    assert bench.cases.gemm_flops("lstm", size, "fwdbwd") == 3 * forward
    assert bench.cases.gemm_flops("gru", size, "fwd") == forward * 3 / 4
    assert bench.cases.gemm_flops("rnn", size, "fwd", tokens=1000) == 2 * 1000 * 128 * 168


def test_inputs_are_seeded_and_lengths_in_range():
    size = bench.cases.Size(T=40, B=50, I=3, H=5)
    a = bench.cases.make_inputs("gru", size, "float32", seed=7, varlen=True)
    b = bench.cases.make_inputs("gru", size, "float64", seed=7, varlen=True)
    assert a["x"].dtype == np.float32 and b["x"].dtype == np.float64
    np.testing.assert_array_equal(a["lengths"], b["lengths"])
    np.testing.assert_allclose(a["w_hh"], b["w_hh"], rtol=1e-6)
    assert a["w_ih"].shape == (15, 3) and a["dy"].shape == (40, 50, 5)
    assert a["lengths"].min() == 10 and a["lengths"].max() == 40
    # evenly spread, so every case does the same share of the padded work
    np.testing.assert_array_equal(np.sort(a["lengths"]), np.round(np.linspace(10, 40, 50)))
    assert not np.all(np.diff(a["lengths"]) >= 0)  # in random order, not sorted
    assert abs(a["lengths"].sum() / (40 * 50) - 0.625) < 0.01
    assert bench.cases.make_inputs("gru", size, "float32", seed=7)["lengths"] is None
    assert bench.cases.case_seed(0, "lstm", "small") != bench.cases.case_seed(0, "lstm", "large")


def _result(cell, size, system, fwd, fwdbwd, threads=2, variant="padded", varlen=False, pct=None,
            tokens=3200):
    return {"cell": cell, "size": size, "dtype": "float32", "varlen": varlen, "threads": threads,
            "tokens": tokens,
            "system": system, "variant": variant, "fwd_ms": fwd, "fwdbwd_ms": fwdbwd,
            "fwd_gflops": 1.0, "fwdbwd_gflops": 1.0, "fwd_pct_peak": pct, "fwdbwd_pct_peak": pct}


def _targets(results, memory=()):
    report = {"results": results, "memory": list(memory), "machine": {"default_threads": 2}}
    report["rows"] = bench.targets.summary_rows(report)
    return {t["name"]: t for t in bench.targets.evaluate_targets(report)}


def test_every_timed_run_follows_an_untimed_pass_of_its_own_system():
    """Another library's threads spin on after its call and slow whatever runs
    next: a timed run must never directly follow a different contender."""
    calls = []

    class Fake(bench.contenders.Contender):
        def setup(self):
            return np.zeros((1, 1, 1))

        def run(self, mode):
            calls.append((self.system, mode))
            return 0.001

    contenders = []
    for name in ("a", "b", "c"):
        c = Fake("rnn", {}, 1, "padded")
        c.system = name
        contenders.append(c)
    bench.runner.time_case(contenders, repeats=4, warmup=1)
    assert all(len(c.samples[m]) == 4 for c in contenders for m in bench.cases.MODES)
    assert len(calls) == 5 * 3 * (1 + len(bench.cases.MODES))
    for i, (system, mode) in enumerate(calls):
        if i % (1 + len(bench.cases.MODES)) == 0:  # the settling pass, untimed, forward only
            assert mode == "fwd"
        else:
            assert calls[i - 1][0] == system
    firsts = [calls[i][0] for i in range(0, len(calls), 3 * (1 + len(bench.cases.MODES)))]
    assert firsts == ["a", "b", "c", "a", "b"]  # the order still rotates


def test_targets_pass_and_fail_on_known_numbers():
    results = []
    for cell in bench.cases.CELLS:
        for size in bench.cases.SIZES:
            results += [_result(cell, size, "rnnkernels", 5.0, 5.5, pct=90.0),
                        _result(cell, size, "torch", 10.0, 10.0), _result(cell, size, "keras", 8.0, 12.0)]
    results += [_result("lstm", "medium", "rnnkernels", 9.0, 10.8, threads=1)]
    results += [_result("lstm", "small", "rnnkernels", 3.0, 3.6, variant="varlen", varlen=True, tokens=2000),
                _result("lstm", "small", "rnnkernels", 5.0, 6.0, varlen=True),
                _result("lstm", "small", "torch", 4.0, 5.0, variant="packed", varlen=True)]
    memory = [{"cell": "lstm", "size": "large", "dtype": "float32", "system": "rnnkernels",
               "peak_increase_kib": 900},
              {"cell": "lstm", "size": "large", "dtype": "float32", "system": "torch", "peak_increase_kib": 1000}]
    t = _targets(results, memory)
    assert {v["status"] for v in t.values()} == {"PASS"}, [(k, v["measured"]) for k, v in t.items() if v["status"] != "PASS"]
    report = {"results": results, "memory": memory, "machine": {"default_threads": 2}}
    (varlen_row,) = [r for r in bench.targets.summary_rows(report) if r["varlen"]]
    assert varlen_row["work_share"] == pytest.approx(2000 / 3200)
    assert t["fwd+bwd vs best peer, every cell x size"]["measured"] == pytest.approx(0.55)
    assert t["fwd+bwd vs best peer, geometric mean"]["measured"] == pytest.approx(0.55)
    assert t["forward-only vs best peer, geometric mean"]["measured"] == pytest.approx(5 / 8)
    assert t["forward-only vs best peer, every cell x size"]["measured"] == pytest.approx(5 / 8)
    assert t["large LSTM fwd+bwd, share of GEMM peak"]["measured"] == pytest.approx(90.0)
    assert t["medium LSTM fwd+bwd, 2 threads vs 1"]["measured"] == pytest.approx(10.8 / 5.5)
    assert t["variable-length fwd+bwd vs fully padded"]["measured"] == pytest.approx(0.6)
    assert t["training-step peak memory vs torch"]["measured"] == pytest.approx(0.9)

    # one case slower than its best peer: the every-case target fails and names it
    results[0] = _result("rnn", "small", "rnnkernels", 5.0, 11.0, pct=90.0)
    t = _targets(results, memory)
    worst = t["fwd+bwd vs best peer, every cell x size"]
    assert worst["status"] == "FAIL" and worst["measured"] == pytest.approx(1.1)
    assert "rnn/small 1.10x" in worst["detail"]
    geo = math.exp((8 * math.log(0.55) + math.log(1.1)) / 9)
    assert t["fwd+bwd vs best peer, geometric mean"]["measured"] == pytest.approx(geo)


def test_targets_not_measured_are_skipped():
    t = _targets([_result("gru", "small", "rnnkernels", 1.0, 2.0)])
    assert {v["status"] for v in t.values()} == {"SKIP"}


@pytest.mark.torch
def test_torch_sees_the_same_computation(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "torch.json"
    assert bench.main(QUICK_LSTM + ["--systems", "rnnkernels,torch", "--varlen", "--json", str(path)]) == 0
    results = json.loads(path.read_text())["results"]
    torch_results = [r for r in results if r["system"] == "torch"]
    assert {r["variant"] for r in torch_results} == {"padded", "packed"}
    for r in torch_results:
        assert r["status"] == "ok", r["reason"]
        assert r["max_abs_diff"] < 1e-5


def test_cpu_description_names_the_vector_isa():
    """The kernels are built for the CPU they run on, so the report says which
    vector ISA it has (the project's machine changed from AVX2 to AVX-512
    under the same model name)."""
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n\n"
            "processor\t: 1\nmodel name\t: something else\n")
    info = bench.machine.cpu_description(text)
    assert info == {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "17", "simd": "AVX-512"}
    assert bench.machine._cpu_line(dict(info, processor="x86_64")) == "AMD EPYC (family 25 model 17, AVX-512)"
    assert bench.machine.cpu_description("model name : Old\nflags : sse2 avx2\n")["simd"] == "AVX2"
    assert bench.machine.cpu_description("") == {}
    assert bench.machine._cpu_line({"processor": "arm64"}) == "arm64"
