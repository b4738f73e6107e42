"""The command line's speech recognition: train --task ctc (tiny runs), transcribe,
evaluate of a CTC model, one-line errors."""
import json
import os

import pytest

from rnnkernels import cli

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("librosa")

TINY = ["--utterances", "48", "--test-utterances", "12", "--epochs", "1", "--hidden", "8", "--layers", "1",
        "--quiet", "--beam", "2"]


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny `train --task ctc` run: its model, report, plot and a transcribed test folder."""
    import contextlib
    import io

    from rnnkernels.asr import corpus
    from rnnkernels.audio.datasets import load_spoken_digits

    folder = tmp_path_factory.mktemp("ctc")
    model, report, plot = folder / "m.rnk", folder / "r.json", folder / "p.png"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", "--task", "ctc", *TINY, "--save", str(model), "--report", str(report),
                         "--plot", str(plot)])
    assert code == 0, out.getvalue()
    _, test = corpus.connected_digit_split(load_spoken_digits(), n_train=4, n_test=8, seed=9)
    corpus.write_transcribed_folder(test, folder / "data")
    return dict(model=str(model), report=str(report), plot=str(plot), data=str(folder / "data"),
                out=out.getvalue())


def test_train_ctc_summary_report_and_plot(trained):
    assert "test CER" in trained["out"] and "utterance error rate" in trained["out"]
    r = json.load(open(trained["report"]))
    assert r["task"] == "ctc" and r["n_train"] == 48 and r["n_test"] == 12
    for key in ("test_cer", "test_wer", "train_seconds", "history", "alignment", "vocabulary"):
        assert key in r
    assert r["vocabulary"] == list("0123456789")
    assert set(r["history"]) == {"loss", "val_loss", "val_cer"} and len(r["history"]["loss"]) == 1
    assert os.path.getsize(trained["plot"]) > 10_000


def test_transcribe_and_timestamps(trained, capsys):
    files = [os.path.join(trained["data"], f"utt0000{i}.wav") for i in range(3)]
    code, out, _ = run_cli(capsys, "transcribe", trained["model"], *files)
    assert code == 0 and [line.split(":")[0] for line in out.splitlines()] == files
    code, out, _ = run_cli(capsys, "transcribe", trained["model"], files[0], "--timestamps", "--json")
    item = json.loads(out)
    assert item["file"] == files[0] and isinstance(item["timestamps"], list)


def test_evaluate_a_ctc_model(trained, capsys, tmp_path):
    report = tmp_path / "e.json"
    code, out, _ = run_cli(capsys, "evaluate", trained["model"], "--data", trained["data"], "--report",
                           str(report), "--beam", "1")
    assert code == 0 and "CER" in out and "WER" in out
    r = json.load(open(report))
    assert r["n_test"] == 8 and 0 <= r["cer"] and 0 <= r["wer"] <= 1 and r["decoder"] == "greedy"


def test_train_ctc_on_a_transcribed_folder(trained, capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--task", "ctc", "--data", trained["data"], "--split", "random",
                             "--test-fraction", "0.25", *TINY)
    assert code == 0, err
    assert "6 / 2" in out


def test_one_line_errors(trained, capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--task", "ctc", "--split", "random", *TINY)[::2],
                          "--split random")
    assert_one_line_error(*run_cli(capsys, "train", "--task", "ctc", "--resume", trained["model"], *TINY)[::2],
                          "--resume")
    assert_one_line_error(*run_cli(capsys, "transcribe", str(tmp_path / "none.rnk"), "a.wav")[::2],
                          "no such file")
    assert_one_line_error(*run_cli(capsys, "transcribe", trained["model"], str(tmp_path / "a.wav"))[::2],
                          "a.wav")
    assert_one_line_error(*run_cli(capsys, "train", "--task", "ctc", "--data", str(tmp_path), *TINY)[::2],
                          "transcripts.tsv")
    (tmp_path / "x.rnk").write_bytes(b"not a zip")
    assert_one_line_error(*run_cli(capsys, "transcribe", str(tmp_path / "x.rnk"), "a.wav")[::2], "x.rnk")
