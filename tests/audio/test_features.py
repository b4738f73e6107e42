"""rnnkernels.audio: reading, resampling, features, normalisation, padding, augmentation."""
import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
librosa = pytest.importorskip("librosa")

from rnnkernels.audio import (FeatureConfig, compute_features, file_features, normalize_utterance,
                              pad_batch, read_audio, resample, spec_augment)


def tone(n, rate, freq=440.0, seed=0):
    t = np.arange(n) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(n) + noise).astype(np.float32)


# --- FeatureConfig ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="spectrogram"), "kind"),
    (dict(normalize="global"), "normalize"),
    (dict(deltas=3), "deltas"),
    (dict(deltas=True), "deltas"),
    (dict(n_mels=0), "n_mels"),
    (dict(hop_length=1.5), "hop_length"),
    (dict(win_length=512), "win_length"),
    (dict(fmax=5000.0), "fmin/fmax"),
    (dict(fmin=4000.0), "fmin/fmax"),
    (dict(kind="mfcc", n_mfcc=50), "n_mfcc"),
])
def test_feature_config_rejects_bad_values(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FeatureConfig(**kwargs)


def test_feature_config_round_trips_and_counts_features():
    cfg = FeatureConfig(kind="mfcc", n_mfcc=13, deltas=2, sample_rate=16000, fmax=7000.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_features == 39
    assert FeatureConfig(n_mels=32, deltas=1).n_features == 64
    with pytest.raises(ValueError, match="unknown keys"):
        FeatureConfig.from_dict(dict(cfg.to_dict(), colour="red"))
    with pytest.raises(TypeError):
        FeatureConfig.from_dict([1, 2])


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, ext, subtype, tol", [("WAV", "wav", "PCM_16", 1 / 32768),
                                                    ("FLAC", "flac", "PCM_16", 1 / 32768),
                                                    ("OGG", "ogg", "VORBIS", 0.05)])
def test_read_audio_formats_mono_float32(tmp_path, fmt, ext, subtype, tol):
    y = tone(4000, 8000)
    stereo = np.stack([y, 0.5 * y], axis=1)
    path = tmp_path / f"clip.{ext}"
    soundfile.write(path, stereo, 8000, format=fmt, subtype=subtype)
    w, rate = read_audio(path)
    assert rate == 8000 and w.dtype == np.float32 and w.ndim == 1 and w.size == 4000
    np.testing.assert_allclose(w, 0.75 * y, atol=tol)


def test_read_audio_resamples_with_librosa(tmp_path):
    y = tone(16000, 16000, freq=300.0)
    soundfile.write(tmp_path / "a.wav", y, 16000, subtype="FLOAT")
    w, rate = read_audio(tmp_path / "a.wav", sample_rate=8000)
    assert rate == 8000 and w.size == 8000
    np.testing.assert_allclose(w, librosa.resample(y, orig_sr=16000, target_sr=8000), atol=1e-6)


def test_read_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(ValueError, match="junk.wav.*cannot decode"):
        read_audio(junk)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 8000)
    with pytest.raises(ValueError, match="empty.wav.*no samples"):
        read_audio(empty)
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        read_audio(nan)
    with pytest.raises(ValueError, match="directory"):
        read_audio(tmp_path)


# --- features ------------------------------------------------------------------------------------

def test_logmel_is_librosa_in_decibels_time_major():
    y = tone(4000, 8000)
    cfg = FeatureConfig(normalize="none")
    f = compute_features(y, 8000, cfg)
    mel = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=256, hop_length=80, n_mels=40,
                                         fmin=20.0)
    expected = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0).T
    assert f.shape == (1 + 4000 // 80, 40) and f.dtype == np.float32
    np.testing.assert_allclose(f, expected, rtol=1e-5, atol=1e-4)


def test_mfcc_deltas_and_normalisation_shapes():
    y = tone(3000, 8000)
    f = compute_features(y, 8000, FeatureConfig(kind="mfcc", n_mfcc=13, deltas=2))
    assert f.shape == (1 + 3000 // 80, 39)
    np.testing.assert_allclose(f.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(axis=0), 1, atol=1e-3)
    raw = compute_features(y, 8000, FeatureConfig(kind="mfcc", n_mfcc=13, deltas=1,
                                                  normalize="none"))
    base = librosa.feature.mfcc(S=compute_features(y, 8000, FeatureConfig(normalize="none")).T,
                                n_mfcc=13)
    np.testing.assert_allclose(raw[:, :13], base.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(raw[:, 13:], librosa.feature.delta(base, width=9, mode="nearest").T,
                               rtol=1e-4, atol=1e-3)


def test_features_resample_and_accept_int16():
    y = tone(8000, 16000)
    at16 = compute_features(y, 16000)
    at8 = compute_features(librosa.resample(y, orig_sr=16000, target_sr=8000), 8000)
    np.testing.assert_allclose(at16, at8, atol=1e-4)
    pcm = np.round(y * 20000).astype(np.int16)
    np.testing.assert_allclose(compute_features(pcm, 16000),
                               compute_features(pcm / np.float32(32768), 16000), atol=1e-5)


def test_very_short_and_silent_clips_give_finite_frames():
    for n in (1, 10, 200):
        f = compute_features(tone(n, 8000), 8000, FeatureConfig(deltas=2))
        assert f.shape[0] >= 1 and f.shape[1] == 120 and np.isfinite(f).all()
    silent = compute_features(np.zeros(800, np.float32), 8000)
    assert np.isfinite(silent).all() and np.all(silent == 0)


def test_feature_errors():
    with pytest.raises(ValueError, match="1-D"):
        compute_features(np.zeros((2, 100)), 8000)
    with pytest.raises(ValueError, match="NaN"):
        compute_features(np.array([0.0, np.inf]), 8000)
    with pytest.raises(TypeError, match="FeatureConfig"):
        compute_features(np.zeros(100), 8000, {"n_mels": 40})
    with pytest.raises(ValueError, match="sample_rate"):
        compute_features(np.zeros(100), 0)
    with pytest.raises(TypeError, match="dtype"):
        resample(np.array(["a"]), 8000, 8000)


def test_file_features_matches_array_path(tmp_path):
    y = tone(2400, 8000)
    soundfile.write(tmp_path / "x.wav", y, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(file_features(tmp_path / "x.wav"), compute_features(y, 8000))


def test_normalize_utterance():
    f = np.random.default_rng(0).normal(5, 3, (50, 4)).astype(np.float32)
    f[:, 2] = 7.0  # constant feature -> 0, not NaN
    g = normalize_utterance(f)
    np.testing.assert_allclose(g[:, [0, 1, 3]].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(g[:, [0, 1, 3]].std(0), 1, atol=1e-4)
    assert np.all(g[:, 2] == 0)


# --- batching and augmentation ------------------------------------------------------------------

def test_pad_batch_keeps_lengths_and_never_truncates_by_default():
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(t, 3)) for t in (5, 12, 1)]
    x, lengths = pad_batch(seqs)
    assert x.shape == (3, 12, 3) and x.dtype == np.float32
    assert lengths.tolist() == [5, 12, 1]
    for s, row, n in zip(seqs, x, lengths):
        np.testing.assert_allclose(row[:n], s, rtol=1e-6)
        assert np.all(row[n:] == 0)
    xt, lt = pad_batch(seqs, time_major=True)
    np.testing.assert_array_equal(xt, x.transpose(1, 0, 2))
    xc, lc = pad_batch(seqs, max_len=4)
    assert xc.shape == (3, 4, 3) and lc.tolist() == [4, 4, 1]


def test_pad_batch_errors():
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])
    with pytest.raises(ValueError, match=r"sequences\[1\]: expected 3 features like sequences\[0\], got 4"):
        pad_batch([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"sequences\[0\]: expected a \(timesteps, features\) array"):
        pad_batch([np.zeros(5)])
    with pytest.raises(ValueError, match="max_len"):
        pad_batch([np.zeros((2, 3))], max_len=0)


def test_spec_augment_masks_inside_lengths_only_and_is_seeded():
    x, lengths = pad_batch([np.ones((40, 20)), np.ones((25, 20))])
    a = spec_augment(x, lengths, np.random.default_rng(3), time_width=0.2, freq_width=0.2)
    b = spec_augment(x, lengths, np.random.default_rng(3), time_width=0.2, freq_width=0.2)
    np.testing.assert_array_equal(a, b)
    assert np.all(x[0, :40] == 1)  # input untouched
    assert np.all(a[1, 25:] == 0)  # padding stays padding
    masked = [(a[i, :n] == 0).mean() for i, n in enumerate(lengths)]
    assert all(0 < m < 0.7 for m in masked)
    with pytest.raises(ValueError, match="lengths"):
        spec_augment(x, lengths[:1], np.random.default_rng(0))


# ------------------------------------------------------------ frequency warp
def _tone_logmel(freq, cfg):
    return compute_features(tone(8000, 8000, freq=freq), 8000, cfg)


def test_frequency_warp_zero_is_identity_and_keeps_padding_zero():
    from rnnkernels.audio import frequency_warp
    cfg = FeatureConfig(normalize="none")
    f = _tone_logmel(1000.0, cfg)
    batch = np.zeros((2, f.shape[0] + 5, cfg.n_features), np.float32)
    batch[0, :f.shape[0]] = f
    batch[1, :10] = f[:10]
    lengths = np.array([f.shape[0], 10])
    np.testing.assert_array_equal(frequency_warp(batch, lengths, np.random.default_rng(0), cfg, 0.0), batch)
    warped = frequency_warp(batch, lengths, np.random.default_rng(0), cfg, 0.2)
    assert warped.shape == batch.shape and warped.dtype == np.float32
    assert not np.any(warped[0, f.shape[0]:]) and not np.any(warped[1, 10:])
    assert not np.allclose(warped[0, :f.shape[0]], f)  # it did warp


def test_frequency_warp_moves_a_tone_like_a_shifted_tone():
    """Warping by alpha should look like the tone at alpha * f: the peak band
    of every warped copy lies between the peaks of the tones at 0.8f and 1.2f,
    and the copies spread over several bands (the factor is random)."""
    from rnnkernels.audio import frequency_warp
    cfg = FeatureConfig(normalize="none")
    f = _tone_logmel(1200.0, cfg)
    lo, hi = (int(np.argmax(_tone_logmel(1200.0 * a, cfg).mean(0))) for a in (0.8, 1.2))
    batch = np.repeat(f[None], 40, axis=0)
    warped = frequency_warp(batch, np.full(40, f.shape[0]), np.random.default_rng(1), cfg, 0.2)
    peaks = warped.mean(axis=1).argmax(axis=1)
    assert np.all((peaks >= lo) & (peaks <= hi)), (lo, hi, peaks)
    assert len(set(peaks.tolist())) >= 3


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"max_warp": 1.0}, ValueError, "max_warp"),
    ({"max_warp": -0.1}, ValueError, "max_warp"),
    ({"config": "logmel"}, TypeError, "config"),
    ({"batch": np.zeros((2, 5, 3), np.float32)}, ValueError, "batch"),
    ({"lengths": np.array([5])}, ValueError, "lengths"),
])
def test_frequency_warp_rejects_bad_arguments(kwargs, exc, match):
    from rnnkernels.audio import frequency_warp
    cfg = FeatureConfig()
    args = dict(batch=np.zeros((2, 5, cfg.n_features), np.float32), lengths=np.array([5, 3]),
                rng=np.random.default_rng(0), config=cfg, max_warp=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        frequency_warp(**args)
