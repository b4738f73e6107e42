"""rnnkernels.bench.dropin_keras: its rows come from a real child-process run."""
import os

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from rnnkernels.bench import dropin_keras  # noqa: E402
from rnnkernels.bench.workers import _worker_env  # noqa: E402


def test_rows_time_both_systems():
    rows = dropin_keras.rows(1, 1, seed_program=False, steps=1, step_cases=("SimpleRNN", "LSTM masked"))
    assert [r["name"] for r in rows] == ["SimpleRNN fit step", "LSTM masked fit step"]
    for r in rows:
        assert r["ours_ms"] > 0 and r["peer_ms"] > 0
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["peer_ms"])
        assert r["threads"] == 1 and r["dtype"] == "float32"
    assert "SimpleRNN fit step" in dropin_keras.render(rows)


@pytest.mark.parametrize("kwargs,message", [({"repeats": 0}, "repeats"), ({"dtype": "float16"}, "dtype"),
                                            ({"step_cases": ("LSTM", "CNN")}, "step_cases")])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(repeats=1, threads=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dropin_keras.rows(**args)


def test_workers_put_the_folder_holding_the_package_on_the_path():
    # not the package folder itself, where rnnkernels/keras would shadow keras
    first = _worker_env()["PYTHONPATH"].split(os.pathsep)[0]
    assert os.path.isfile(os.path.join(first, "rnnkernels", "__init__.py"))
