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


def test_render_puts_each_framework_in_its_own_table():
    torch_row = {"framework": "torch", "size": "B4 T10", "cell": "lstm", "peer": "torch.nn", "peer_ms": 2.0,
                 "ours_ms": 1.0, "ratio": 0.5}
    keras_row = {"framework": "keras", "name": "LSTM fit step", "size": {"B": 32, "T": 100}, "peer_ms": 4.0,
                 "ours_ms": 3.0, "ratio": 0.75, "peer_cpu_ms": 8.0, "ours_cpu_ms": 5.0, "cpu_ratio": 0.625,
                 "ours_runs_ms": [1.0, 2.0]}
    table = render_dropin([torch_row, keras_row])
    torch_part, keras_part = table.split("\n\n")
    assert "torch.nn" in torch_part and "cpu ours/peer" not in torch_part
    assert "LSTM fit step" in keras_part and "B32 T100" in keras_part and "0.62x" in keras_part
    assert "ours_runs_ms" not in table  # per-run lists stay in the JSON


def test_render_shows_unknown_keys_of_other_frameworks_rows():
    table = render_dropin([{"framework": "keras", "cell": "lstm", "peer": "keras", "peer_ms": 2.0,
                            "ours_ms": 1.0, "ratio": 0.5, "backend": "tensorflow"}])
    assert "backend" in table and "tensorflow" in table and "0.50x" in table


def test_dropin_option_prints_the_table_and_writes_json(tmp_path, capsys):
    status = bench.main(["--dropin", "--quick", "--cells", "rnn", "--repeats", "1", "--threads", "1",
                         "--json", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "drop-in training steps" in out and "rnn" in out
    (path,) = tmp_path.glob("*-dropin.json")  # a folder: one file named by the run's date and CPU
    assert f"results: {path}" in out
    data = json.loads(path.read_text())
    assert data["schema"] == "rnnkernels-dropin/1" and data["machine"]["cpus"] and data["created"]
    assert {r["input"] for r in data["rows"] if r["framework"] == "torch"} == {"padded", "packed"}
