"""rnnkernels.audio.datasets: folders, the embedded spoken digits, splits."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from rnnkernels.audio.datasets import (AudioFileWarning, leave_one_speaker_out, load_audio_folder,
                                 load_spoken_digits, official_split, pack_recordings, random_split,
                                 speaker_split, split_dataset)

import rnnkernels.audio.datasets
from helpers.environment import FSDD, package_env

DATA_FILE = os.path.join(os.path.dirname(rnnkernels.audio.datasets.__file__), "data", "spoken_digits.npz")


@pytest.fixture(scope="module")
def digits():
    return load_spoken_digits()


def write_clip(path, seed=0, n=800, rate=8000):
    soundfile = pytest.importorskip("soundfile")
    y = np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)
    soundfile.write(path, y, rate, subtype="PCM_16")


# --- embedded data ---------------------------------------------------------------------------------

def test_embedded_digits_are_complete(digits):
    assert len(digits) == 2000
    assert digits.label_names == [str(d) for d in range(10)]
    assert digits.speaker_names == ["george", "jackson", "lucas", "nicolas"]
    assert np.bincount(digits.labels).tolist() == [200] * 10
    assert sorted(digits.speakers.count(s) for s in digits.speaker_names) == [500] * 4
    assert set(digits.takes.tolist()) == set(range(50))
    assert np.all(digits.sample_rates == 8000)
    assert all(w.dtype == np.int16 and w.size > 1000 for w in digits.waveforms)
    assert os.path.getsize(DATA_FILE) <= 10 * 1024 * 1024


@pytest.mark.skipif(not os.path.isdir(FSDD), reason="FSDD recordings not present")
def test_embedded_digits_equal_the_original_recordings(digits):
    soundfile = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(digits), 25, replace=False):
        name = digits.sources[i].rsplit(":", 1)[1]
        label, speaker, take = name.split("_")
        assert (label, speaker, int(take)) == (digits.label_names[digits.labels[i]],
                                               digits.speakers[i], digits.takes[i])
        original, rate = soundfile.read(os.path.join(FSDD, name + ".wav"), dtype="int16")
        np.testing.assert_array_equal(digits.waveforms[i], original)


def test_embedded_digits_load_without_soundfile_or_librosa():
    code = ("import sys; sys.modules['soundfile'] = None; sys.modules['librosa'] = None\n"
            "from rnnkernels.audio.datasets import load_spoken_digits\n"
            "print(len(load_spoken_digits()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=package_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2000"


def test_pack_round_trip_and_damage_detection(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(["1_ann_0", "1_ann_7", "2_bob_3", "10_bob_1"]):
        write_clip(src / f"{name}.wav", seed=i, n=500 + 100 * i)
    dest = tmp_path / "packed.npz"
    pack_recordings(src, dest)
    import rnnkernels.audio.datasets as ds_module
    monkeypatch.setattr(ds_module, "_EMBEDDED", str(dest))
    packed = load_spoken_digits()
    folder = load_audio_folder(src)
    assert packed.label_names == folder.label_names == ["1", "2", "10"]
    for a, b in zip(packed.waveforms, folder.waveforms):
        np.testing.assert_array_equal(a / np.float32(32768), b)
    raw = bytearray(dest.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    monkeypatch.setattr(ds_module, "_EMBEDDED", str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="damaged"):
        load_spoken_digits()


# --- splits -------------------------------------------------------------------------------------

def test_official_split(digits):
    train, test = official_split(digits)
    assert len(train) == 1800 and len(test) == 200
    assert set(digits.takes[test].tolist()) == set(range(5))
    assert np.bincount(digits.labels[test]).tolist() == [20] * 10
    assert not set(train) & set(test)


def test_speaker_split_and_leave_one_out(digits):
    train, test = speaker_split(digits, "lucas")
    assert {digits.speakers[i] for i in test} == {"lucas"}
    assert "lucas" not in {digits.speakers[i] for i in train}
    assert len(train) + len(test) == 2000
    a, b = speaker_split(digits, seed=5), speaker_split(digits, seed=5)
    np.testing.assert_array_equal(a[1], b[1])
    folds = list(leave_one_speaker_out(digits))
    assert [s for s, _, _ in folds] == digits.speaker_names
    assert sorted(np.concatenate([t for _, _, t in folds]).tolist()) == list(range(2000))
    with pytest.raises(ValueError, match="expected one of"):
        speaker_split(digits, "zed")


def test_random_split_is_seeded_and_stratified(digits):
    tr1, te1 = random_split(digits, 0.2, seed=1)
    tr2, te2 = random_split(digits, 0.2, seed=1)
    _, te3 = random_split(digits, 0.2, seed=2)
    np.testing.assert_array_equal(te1, te2)
    assert not np.array_equal(np.sort(te1), np.sort(te3))
    assert np.bincount(digits.labels[te1]).tolist() == [40] * 10
    assert len(tr1) == 1600
    with pytest.raises(ValueError, match="test_fraction"):
        random_split(digits, 1.5)
    with pytest.raises(ValueError, match="split"):
        split_dataset(digits, "alphabetical")


# --- folders --------------------------------------------------------------------------------------

def test_names_layout_with_corrupt_and_misnamed_files(tmp_path):
    for label in ("0", "1"):
        for speaker in ("ann", "bob"):
            for take in range(6):
                write_clip(tmp_path / f"{label}_{speaker}_{take}.wav", seed=take)
    (tmp_path / "1_bob_9.wav").write_bytes(b"this is not audio")
    write_clip(tmp_path / "stray.wav")
    (tmp_path / "notes.txt").write_text("ignored: not audio")
    with pytest.warns(AudioFileWarning) as record:
        ds = load_audio_folder(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "1_bob_9.wav" in messages and "stray.wav" in messages
    assert len(ds) == 24 and ds.label_names == ["0", "1"]
    train, test = official_split(ds)
    assert len(test) == 20 and set(ds.takes[test]) <= set(range(5))
    train, test = speaker_split(ds, "ann")
    assert {ds.speakers[i] for i in test} == {"ann"}
    sub = ds.subset(test)
    assert len(sub) == 12 and sub.label_names == ds.label_names


def test_folders_layout_and_label_names(tmp_path):
    for label in ("dog", "cat", "bird"):
        (tmp_path / label / "more").mkdir(parents=True)
        write_clip(tmp_path / label / "a.wav")
        write_clip(tmp_path / label / "more" / "b.flac")
    ds = load_audio_folder(tmp_path)
    assert ds.label_names == ["bird", "cat", "dog"] and len(ds) == 6
    assert all(s is None for s in ds.speakers) and np.all(ds.takes == -1)
    with pytest.raises(ValueError, match="official"):
        official_split(ds)
    with pytest.raises(ValueError, match="speaker"):
        speaker_split(ds)
    fixed = load_audio_folder(tmp_path, label_names=["dog", "cat", "bird", "fish"])
    assert fixed.label_names[fixed.labels[0]] == "bird" and len(fixed.label_names) == 4
    with pytest.raises(ValueError, match="'bird' is not one of the model's classes"):
        load_audio_folder(tmp_path, label_names=["dog", "cat"])


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_audio_folder(tmp_path / "nowhere")
    write_clip(tmp_path / "0_a_0.wav")
    with pytest.raises(NotADirectoryError):
        load_audio_folder(tmp_path / "0_a_0.wav")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        load_audio_folder(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0_a_0.wav").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioFileWarning)
        with pytest.raises(ValueError, match="none of its 1 audio files"):
            load_audio_folder(broken)
    with pytest.raises(ValueError, match="layout"):
        load_audio_folder(tmp_path, layout="csv")
