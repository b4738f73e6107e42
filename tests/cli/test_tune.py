"""``rnnkernels tune``: measures only when asked, decides only on clear
margins, keeps its plan as data where every later process finds it."""
import json

import pytest

from rnnkernels import cli
from rnnkernels._core import isa, tuning
from rnnkernels.bench import tune as tuner


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private user cache, and no RNNKERNELS_PLAN (the command refuses to tune under one)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("RNNKERNELS_PLAN", raising=False)
    yield tmp_path
    tuning.reset()


def _fake_measure(times):
    """measure() whose milliseconds come from ``times(plan)`` (deterministic)."""
    def measure(plans, repeats=7, workloads=None, stage=""):
        return [tuner.Measured(stage, p, {name: times(p) for name, *_ in workloads}, 0.01) for p in plans]
    return measure


def test_tuning_keeps_only_clear_wins(monkeypatch):
    """One k chunk other than this CPU's default is 20% faster, mr=4 only 1%
    (inside the margin): the plan takes the first and not the second; the
    confirmation round agrees."""
    fast_kc = 128 if tuning.defaults().gemm_kc != 128 else 256  # the default is CPUID's L1d's

    def times(p):
        return 10.0 * (0.8 if p.gemm_kc == fast_kc else 1.0) * (0.99 if p.gemm_mr == 4 else 1.0)
    monkeypatch.setattr(tuner, "measure", _fake_measure(times))
    plan, history = tuner.tune(repeats=3, log=lambda line: None)
    assert plan.gemm_kc == fast_kc and plan.gemm_mr == tuning.defaults().gemm_mr
    assert plan.isa == tuning.defaults().isa and plan.source == "tuned"
    assert any(h.stage == "confirm" for h in history)


def test_a_noisy_machine_decides_nothing(monkeypatch):
    def measure(plans, repeats=7, workloads=None, stage=""):
        return [tuner.Measured(stage, p, {name: 5.0 if i else 10.0 for name, *_ in workloads}, 0.5)
                for i, p in enumerate(plans)]
    monkeypatch.setattr(tuner, "measure", measure)
    lines = []
    plan, _ = tuner.tune(repeats=3, log=lines.append)
    assert plan.replace(source="x") == tuning.defaults().replace(source="x")
    assert any("too noisy to decide" in line for line in lines)


def test_tune_saves_show_reports_and_reset_removes(cache, capsys, monkeypatch):
    """A real (tiny) measurement end to end: saved in the user cache, found by
    the next plan resolution, shown, then removed."""
    monkeypatch.setattr(tuner, "WORKLOADS", (("tiny", "lstm", 3, 2, 3, 8),))
    assert cli.main(["tune", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    path = tuning.cache_path()
    assert str(cache) in path and f"saved {path}" in out
    data = json.loads(open(path).read())
    assert data["format"] == tuning.FORMAT and data["isa"] in isa.available()
    tuning.reset()
    assert tuning.current().source.startswith("tuned (")
    assert cli.main(["tune", "--show"]) == 0
    assert "from tuned (" in capsys.readouterr().out
    assert cli.main(["tune", "--reset"]) == 0
    assert "removed" in capsys.readouterr().out
    tuning.reset()
    assert tuning.current().source == "defaults"


def test_tune_refuses_under_a_fixed_plan_and_short_runs(cache, capsys, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PLAN", "default")
    assert cli.main(["tune"]) == 1
    err = capsys.readouterr().err
    assert "RNNKERNELS_PLAN is set" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delenv("RNNKERNELS_PLAN")
    assert cli.main(["tune", "--repeats", "1"]) == 1
    assert "--repeats: expected at least 3" in capsys.readouterr().err


def test_a_corrupt_saved_plan_is_a_clear_error(cache, capsys):
    path = tuning.save(tuning.defaults(), tuning.cache_path())
    with open(path, "w") as f:
        f.write('{"format": "rnnkernels-plan/1", "isa": "avx512", "gemm_kc": -1}')
    tuning.reset()
    with pytest.raises(ValueError, match="tuned .*lacks|gemm_kc"):
        tuning.current()
    tuning.reset()
    assert cli.main(["tune", "--reset"]) == 0
