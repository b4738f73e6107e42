"""``rnnkernels bench --dropin`` and rnnkernels.bench.dropin_torch: the rows'
structure and the table (no performance asserted here)."""
import json

import pytest

pytest.importorskip("torch")

from rnnkernels import bench  # noqa: E402
from rnnkernels.bench import dropin_torch  # noqa: E402
from rnnkernels.bench.report import render_dropin  # noqa: E402


def test_rows_time_both_modules_on_the_same_model():
    rows = dropin_torch.rows(1, 1, cells=("gru", "lstm"), layers=(2,), bidirectional=(True,),
                             size=dropin_torch.QUICK_SIZE)
    assert [(r["cell"], r["input"]) for r in rows] == [("gru", "padded"), ("gru", "packed"),
                                                       ("lstm", "padded"), ("lstm", "packed")]
    for r in rows:
        assert r["framework"] == "torch" and r["peer"] == "torch.nn" and r["layers"] == 2 and r["bidirectional"]
        assert r["peer_ms"] > 0 and r["ours_ms"] > 0 and r["ratio"] == pytest.approx(r["ours_ms"] / r["peer_ms"])
        assert r["max_abs_diff"] < 1e-5 and r["threads"] == 1 and r["dtype"] == "float32"
    table = render_dropin(rows)
    assert "ours/peer" in table and "packed" in table and table.count("\n") == 2 + len(rows)


def test_render_shows_unknown_keys_of_other_frameworks_rows():
    table = render_dropin([{"framework": "keras", "cell": "lstm", "peer": "keras", "peer_ms": 2.0,
                            "ours_ms": 1.0, "ratio": 0.5, "backend": "tensorflow"}])
    assert "backend" in table and "tensorflow" in table and "0.50x" in table


def test_dropin_option_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "dropin.json"
    status = bench.main(["--dropin", "--quick", "--cells", "rnn", "--repeats", "1", "--threads", "1",
                         "--json", str(path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "drop-in training steps" in out and "rnn" in out
    data = json.loads(path.read_text())
    assert data["schema"] == "rnnkernels-dropin/1"
    assert {r["input"] for r in data["rows"] if r["framework"] == "torch"} == {"padded", "packed"}
