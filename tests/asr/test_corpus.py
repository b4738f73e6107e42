"""The connected-digit corpus (deterministic, FSDD's splits kept) and transcribed folders."""
import os

import numpy as np
import pytest

from rnnkernels.asr import corpus
from rnnkernels.audio.datasets import AudioFileWarning, load_spoken_digits


@pytest.fixture(scope="module")
def recordings():
    return load_spoken_digits()


def _takes(source):
    """The take numbers of the FSDD recordings an utterance joins ("4_jackson_5+...")."""
    return [int(p.rsplit("_", 1)[1]) for p in source.split("+")]


def test_connected_digits_are_deterministic_one_speaker_and_1_to_7_digits(recordings):
    pool = recordings.subset(np.flatnonzero(recordings.takes < 10))
    a = corpus.connected_digits(pool, 60, seed=4)
    b = corpus.connected_digits(pool, 60, seed=4)
    c = corpus.connected_digits(pool, 60, seed=5)
    assert a.transcripts == b.transcripts and all(np.array_equal(x, y) for x, y in zip(a.waveforms, b.waveforms))
    assert a.transcripts != c.transcripts
    lengths = [len(t) for t in a.transcripts]
    assert min(lengths) >= 1 and max(lengths) <= 7 and len(set(lengths)) > 3
    for text, speaker, source in zip(a.transcripts, a.speakers, a.sources):
        parts = source.split("+")
        assert len(parts) == len(text)
        assert all(p.split("_")[1] == speaker for p in parts)            # one speaker
        assert "".join(p.split("_")[0] for p in parts) == text            # the sentence is the digits
    for w in a.waveforms:
        assert w.dtype == np.float32 and np.abs(w).max() <= 1.0
    assert a.sample_rates.tolist() == [8000] * 60


def test_splits_never_share_recordings(recordings):
    train, test = corpus.connected_digit_split(recordings, "official", n_train=80, n_test=40, seed=1)
    assert all(t >= 5 for s in train.sources for t in _takes(s))
    assert all(t < 5 for s in test.sources for t in _takes(s))
    train, test = corpus.connected_digit_split(recordings, "speaker", n_train=80, n_test=40, seed=1,
                                               test_speaker="lucas")
    assert set(test.speakers) == {"lucas"} and "lucas" not in train.speakers
    with pytest.raises(ValueError, match="split"):
        corpus.connected_digit_split(recordings, "random")


def test_transcribed_folder_round_trip_and_splits(recordings, tmp_path):
    pytest.importorskip("soundfile")
    ds = corpus.connected_digits(recordings.subset(np.arange(0, 2000, 7)), 12, seed=2)
    paths = corpus.write_transcribed_folder(ds, tmp_path / "data")
    assert len(paths) == 12 and os.path.isfile(tmp_path / "data" / "transcripts.tsv")
    back = corpus.load_transcribed_folder(tmp_path / "data")
    assert back.transcripts == ds.transcripts and back.speakers == ds.speakers
    np.testing.assert_allclose(back.waveforms[3], ds.waveforms[3], atol=1 / 32768)
    train, test = corpus.split_speech(back, "speaker", seed=0, test_fraction=0.3)
    assert not {back.speakers[i] for i in train} & {back.speakers[i] for i in test}
    train, test = corpus.split_speech(back, "random", seed=0, test_fraction=0.25)
    assert len(test) == 3 and len(train) == 9
    # a row whose file is gone is skipped with a warning naming it
    os.remove(paths[0])
    with pytest.warns(AudioFileWarning, match="utt00000.wav"):
        assert len(corpus.load_transcribed_folder(tmp_path / "data")) == 11
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "transcripts.tsv").write_text("file\ttext\nx.wav\t1\n")
    with pytest.raises(ValueError, match="'path' and 'sentence'"):
        corpus.load_transcribed_folder(tmp_path / "bad")
    with pytest.raises(ValueError, match="transcripts.tsv"):
        corpus.load_transcribed_folder(tmp_path)


def test_common_voice_release_folder(recordings, tmp_path):
    pytest.importorskip("soundfile")
    ds = corpus.connected_digits(recordings.subset(np.arange(0, 2000, 7)), 6, seed=3)
    clips = tmp_path / "cv" / "clips"
    corpus.write_transcribed_folder(ds, clips)
    rows = (clips / "transcripts.tsv").read_text().splitlines()
    header = "client_id\tpath\tsentence\tup_votes\n"
    for name, part in (("train", rows[1:5]), ("dev", rows[5:6]), ("test", rows[6:7])):
        lines = [f"{r.split(chr(9))[2]}\t{r.split(chr(9))[0]}\t{r.split(chr(9))[1]}\t2\n" for r in part]
        (tmp_path / "cv" / f"{name}.tsv").write_text(header + "".join(lines))
    (clips / "transcripts.tsv").unlink()
    assert corpus.is_common_voice(tmp_path / "cv")
    sets = corpus.load_common_voice(tmp_path / "cv")
    assert [len(sets[k]) for k in ("train", "dev", "test")] == [4, 1, 1]
    assert sets["test"].transcripts == [ds.transcripts[5]]
