"""Audio reading and features for recurrent models.

Reading uses soundfile (wav/flac/ogg); resampling, mel filterbanks, MFCCs and
deltas use librosa. Nothing here re-implements DSP: this module only chooses
parameters, normalises, and keeps the real length of every utterance so the
recurrent kernels never run over padding.

Shapes: a single utterance's features are ``(T, F)`` (time-major, one row per
frame); a batch is ``(N, T_max, F)`` (batch-major, as Keras) or
``(T_max, N, F)`` (time-major, as the kernels) plus ``lengths (N,)``.

Both soundfile and librosa are optional dependencies (extra ``audio``): they
are imported only when a function needs them.
"""
import dataclasses
import os
import re

import numpy as np

__all__ = [
    "FeatureConfig",
    "read_audio",
    "resample",
    "compute_features",
    "file_features",
    "pad_batch",
    "spec_augment",
    "frequency_warp",
]

_KINDS = ("logmel", "mfcc")
_NORMALIZE = ("utterance", "none")


def _require(module):
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"rnnkernels.audio needs {module!r}: pip install 'rnnkernels[audio]'") from exc


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How waveforms become features; stored with a saved model so that
    ``evaluate``/``predict`` compute exactly the features the model was trained on.

    kind: ``"logmel"`` (log-mel energies in dB, ``n_mels`` per frame) or
        ``"mfcc"`` (``n_mfcc`` cepstral coefficients of that log-mel spectrogram).
    sample_rate: every waveform is resampled to this rate first (Hz).
    n_fft, hop_length, win_length: STFT frame size, hop and window in samples
        (``win_length=None`` means ``n_fft``).
    fmin, fmax: mel filterbank range in Hz (``fmax=None`` means Nyquist).
    deltas: 0, 1 or 2: append first (and second) time derivatives, multiplying F.
    normalize: ``"utterance"`` subtracts each feature's mean over the utterance and
        divides by its standard deviation (removes channel and speaker level
        offsets); ``"none"`` leaves the values in dB.
    """

    kind: str = "logmel"
    sample_rate: int = 8000
    n_mels: int = 40
    n_mfcc: int = 20
    n_fft: int = 256
    hop_length: int = 80
    win_length: int = None
    fmin: float = 20.0
    fmax: float = None
    deltas: int = 0
    normalize: str = "utterance"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"FeatureConfig.kind: expected one of {_KINDS}, got {self.kind!r}")
        if self.normalize not in _NORMALIZE:
            raise ValueError(
                f"FeatureConfig.normalize: expected one of {_NORMALIZE}, got {self.normalize!r}")
        for name in ("sample_rate", "n_mels", "n_mfcc", "n_fft", "hop_length"):
            _positive_int(f"FeatureConfig.{name}", getattr(self, name))
        if self.win_length is not None:
            _positive_int("FeatureConfig.win_length", self.win_length)
            if self.win_length > self.n_fft:
                raise ValueError(f"FeatureConfig.win_length: expected at most n_fft={self.n_fft}, "
                                 f"got {self.win_length}")
        if self.deltas not in (0, 1, 2) or isinstance(self.deltas, bool):
            raise ValueError(f"FeatureConfig.deltas: expected 0, 1 or 2, got {self.deltas!r}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"FeatureConfig.n_mfcc: expected at most n_mels={self.n_mels}, "
                             f"got {self.n_mfcc}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ValueError(f"FeatureConfig.fmin/fmax: expected 0 <= fmin < fmax <= {nyquist:g} Hz "
                             f"(Nyquist), got fmin={self.fmin!r}, fmax={self.fmax!r}")

    @property
    def n_features(self):
        """F, the number of values per frame."""
        base = self.n_mels if self.kind == "logmel" else self.n_mfcc
        return base * (1 + self.deltas)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format)."""
        if not isinstance(d, dict):
            raise TypeError(f"FeatureConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FeatureConfig.from_dict: unknown keys {unknown}")
        return cls(**d)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")


def read_audio(path, sample_rate=None):
    """Read an audio file as a mono float32 waveform in [-1, 1].

    Returns ``(waveform (n,), rate)``; with ``sample_rate`` the waveform is
    resampled to it and ``rate == sample_rate``. Multi-channel files are averaged
    to mono. A missing file raises FileNotFoundError; a file soundfile cannot
    decode (corrupt, truncated, unknown format), an empty one or one holding
    NaN/Inf raises ValueError naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"audio file {path!r}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"audio file {path!r}: is a directory, expected a file")
    soundfile = _require("soundfile")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.SoundFileError, EOFError, OSError) as exc:
        # soundfile says "Error opening '<path>': <reason>"; we name the file ourselves.
        reason = re.sub(r"^Error opening .*?: ", "", str(exc)).strip() or type(exc).__name__
        raise ValueError(f"audio file {path!r}: cannot decode ({reason})") from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path!r}: contains no samples")
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path!r}: contains NaN or Inf samples")
    waveform = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and sample_rate != rate:
        waveform = resample(waveform, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(waveform, dtype=np.float32), int(rate)


def resample(waveform, orig_rate, target_rate):
    """Resample a 1-D waveform from ``orig_rate`` to ``target_rate`` Hz (librosa, soxr)."""
    _positive_int("orig_rate", orig_rate)
    _positive_int("target_rate", target_rate)
    waveform = _waveform(waveform)
    if orig_rate == target_rate:
        return waveform
    librosa = _require("librosa")
    return librosa.resample(waveform, orig_sr=int(orig_rate), target_sr=int(target_rate)).astype(
        np.float32, copy=False)


def _waveform(waveform):
    w = np.asarray(waveform)
    if w.ndim != 1:
        raise ValueError(f"waveform: expected a 1-D array of samples, got shape {w.shape}")
    if w.dtype.kind == "i":
        # int16 recordings (the embedded dataset) scale to [-1, 1) like soundfile does.
        w = w.astype(np.float32) / np.float32(np.iinfo(w.dtype).max + 1)
    elif w.dtype.kind != "f":
        raise TypeError(f"waveform: expected float or integer samples, got dtype {w.dtype}")
    if w.size == 0:
        raise ValueError("waveform: expected at least one sample, got 0")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise ValueError("waveform: contains NaN or Inf")
    return w


def compute_features(waveform, sample_rate, config=FeatureConfig()):
    """Features of one waveform: ``(T, config.n_features)`` float32, time-major.

    ``waveform`` is a 1-D float (or integer PCM) array at ``sample_rate`` Hz;
    it is resampled to ``config.sample_rate`` when the rates differ. T is
    ``1 + len // hop_length`` (librosa's centred frames; clips shorter than
    ``n_fft`` are first padded with silence to ``n_fft``).
    """
    if not isinstance(config, FeatureConfig):
        raise TypeError(f"config: expected a FeatureConfig, got {type(config).__name__}")
    _positive_int("sample_rate", sample_rate)
    librosa = _require("librosa")
    waveform = resample(waveform, sample_rate, config.sample_rate)
    n_fft = config.n_fft
    if waveform.size < n_fft:
        # librosa needs at least one full window: pad very short clips with silence.
        waveform = np.pad(waveform, (0, n_fft - waveform.size))
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=config.sample_rate, n_fft=n_fft, hop_length=config.hop_length,
        win_length=config.win_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax,
        power=2.0)
    # amin: floor at -100 dB so digital silence stays finite; top_db keeps 80 dB of range.
    feats = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
    if config.kind == "mfcc":
        feats = librosa.feature.mfcc(S=feats, n_mfcc=config.n_mfcc)
    if config.deltas:
        # mode="nearest" works for clips shorter than the delta window.
        width = min(9, feats.shape[1] if feats.shape[1] % 2 else feats.shape[1] - 1)
        parts = [feats]
        if width >= 3:
            parts += [librosa.feature.delta(feats, order=k, width=width, mode="nearest")
                      for k in range(1, config.deltas + 1)]
        else:  # a 1-2 frame clip has no measurable slope
            parts += [np.zeros_like(feats)] * config.deltas
        feats = np.concatenate(parts, axis=0)
    feats = np.ascontiguousarray(feats.T, dtype=np.float32)  # (T, F)
    if config.normalize == "utterance":
        feats = normalize_utterance(feats)
    return feats


def normalize_utterance(features, eps=1e-5):
    """Per-utterance mean/variance normalisation of ``(T, F)`` features, over time.

    A feature that is constant over the utterance (or a one-frame utterance) becomes 0.
    """
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features: expected (T, F), got shape {f.shape}")
    mean = f.mean(axis=0, keepdims=True)
    std = f.std(axis=0, keepdims=True)
    return ((f - mean) / np.maximum(std, eps)).astype(np.float32)


def file_features(path, config=FeatureConfig()):
    """Read one file and compute its features: ``(T, F)`` float32."""
    waveform, rate = read_audio(path)
    return compute_features(waveform, rate, config)


def pad_batch(sequences, max_len=None, time_major=False, dtype=np.float32):
    """Stack variable-length ``(T_i, F)`` sequences into one zero-padded array.

    Returns ``(batch, lengths)``: batch is ``(N, T_max, F)`` (or ``(T_max, N, F)``
    with ``time_major=True``) in ``dtype`` and lengths is ``(N,)`` int64 holding
    each sequence's real number of frames. ``T_max`` is the longest sequence, so
    nothing is truncated unless ``max_len`` is given, in which case longer
    sequences are cut to ``max_len`` frames and their lengths say so.
    """
    seqs = list(sequences)
    if not seqs:
        raise ValueError("sequences: expected at least one sequence, got none")
    arrays = []
    for i, s in enumerate(seqs):
        a = np.asarray(s)
        if a.ndim != 2:
            raise ValueError(f"sequences[{i}]: expected a (T, F) array, got shape {a.shape}")
        arrays.append(a)
    n_feat = arrays[0].shape[1]
    for i, a in enumerate(arrays):
        if a.shape[1] != n_feat:
            raise ValueError(f"sequences[{i}]: expected F={n_feat} features like sequences[0], "
                             f"got {a.shape[1]}")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    if max_len is not None:
        _positive_int("max_len", max_len)
        lengths = np.minimum(lengths, max_len)
    t_max = int(lengths.max()) if lengths.size else 0
    batch = np.zeros((len(arrays), t_max, n_feat), dtype=dtype)
    for i, (a, n) in enumerate(zip(arrays, lengths)):
        batch[i, :n] = a[:n]
    if time_major:
        batch = np.ascontiguousarray(batch.transpose(1, 0, 2))
    return batch, lengths


def spec_augment(batch, lengths, rng, time_masks=2, time_width=0.1, freq_masks=2, freq_width=0.15):
    """SpecAugment-style masking of a padded ``(N, T, F)`` batch (returns a new array).

    Each utterance gets ``time_masks`` bands of up to ``time_width`` of its own
    length and ``freq_masks`` bands of up to ``freq_width`` of F set to 0 (the
    mean, after per-utterance normalisation). Padding stays zero. ``rng`` is a
    ``numpy.random.Generator`` so augmentation is reproducible from the seed.
    """
    x = np.array(batch, dtype=np.float32, copy=True)
    if x.ndim != 3:
        raise ValueError(f"batch: expected (N, T, F), got shape {x.shape}")
    n, _, n_feat = x.shape
    lengths = np.asarray(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths: expected shape ({n},), got {lengths.shape}")
    max_f = max(1, int(freq_width * n_feat))
    for i in range(n):
        length = int(lengths[i])
        max_t = max(1, int(time_width * length))
        for _ in range(time_masks):
            w = int(rng.integers(0, max_t + 1))
            t0 = int(rng.integers(0, max(1, length - w + 1)))
            x[i, t0:t0 + w] = 0.0
        for _ in range(freq_masks):
            w = int(rng.integers(0, max_f + 1))
            f0 = int(rng.integers(0, n_feat - w + 1))
            x[i, :length, f0:f0 + w] = 0.0
    return x


def frequency_warp(batch, lengths, rng, config, max_warp=0.1):
    """Vocal-tract-length-style warping of padded features (returns a new array).

    VTLP (Jaitly & Hinton, 2013) scales the frequency axis by a random factor
    ``alpha`` per utterance, as a longer or shorter vocal tract would move the
    formants. Here it is applied to the features: mel band ``i`` (centre
    frequency ``f_i``) takes the value the utterance had at ``f_i / alpha``, read
    by linear interpolation between the neighbouring bands' centres (mel band
    centres from librosa, so the warp is linear in Hz, not in band index); bands
    whose source lies outside the filterbank repeat the edge band. ``alpha`` is
    drawn uniformly from ``[1 - max_warp, 1 + max_warp]`` per utterance.

    The warp is a linear map ``W`` of the log-mel bands. MFCCs are ``D @ logmel``
    with ``D`` librosa's orthonormal DCT-II truncated to ``n_mfcc`` rows, so they
    are warped by ``D W D^T``: the cepstral envelope is expanded back to bands,
    warped and re-projected (VTLN as a linear transform of the cepstrum, Pitz &
    Ney 2005). With deltas each block of values is warped the same way (a
    derivative over time commutes with a map over frequency). With
    ``normalize="utterance"`` every warped utterance is normalised again over its
    real frames, so the inputs keep zero mean and unit variance. Padding stays zero.

    ``batch`` is ``(N, T, config.n_features)``; returns the same shape, float32.
    """
    if not isinstance(config, FeatureConfig):
        raise TypeError(f"config: expected a FeatureConfig, got {type(config).__name__}")
    if isinstance(max_warp, bool) or not isinstance(max_warp, (int, float)) or not 0 <= max_warp < 1:
        raise ValueError(f"max_warp: expected a number in [0, 1), got {max_warp!r}")
    x = np.array(batch, dtype=np.float32, copy=True)
    if x.ndim != 3 or x.shape[2] != config.n_features:
        raise ValueError(f"batch: expected (N, T, {config.n_features}), got shape {x.shape}")
    n = x.shape[0]
    lengths = np.asarray(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths: expected shape ({n},), got {lengths.shape}")
    if max_warp == 0:
        return x
    librosa = _require("librosa")
    import scipy.fft

    fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
    # n_mels + 2 edges, as librosa's filterbank: the band centres are the inner ones.
    centres = librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=fmax)[1:-1]
    band = np.arange(config.n_mels)
    dct = None
    if config.kind == "mfcc":  # the DCT librosa.feature.mfcc applies to the dB bands
        dct = scipy.fft.dct(np.eye(config.n_mels), type=2, norm="ortho", axis=0)[:config.n_mfcc]
    width = config.n_features // (1 + config.deltas)
    for i, alpha in enumerate(rng.uniform(1 - max_warp, 1 + max_warp, size=n)):
        source = np.interp(centres / alpha, centres, band)  # fractional band index, clamped
        lo = np.floor(source).astype(np.intp)
        frac = source - lo
        warp = np.zeros((config.n_mels, config.n_mels))
        warp[band, lo] = 1 - frac
        warp[band, np.minimum(lo + 1, config.n_mels - 1)] += frac
        if dct is not None:
            warp = dct @ warp @ dct.T
        length = int(lengths[i])
        # (length, blocks, width) @ warp.T: every block of values is warped alike.
        frames = x[i, :length].reshape(length, -1, width)
        x[i, :length] = (frames @ warp.T.astype(np.float32)).reshape(length, -1)
        if config.normalize == "utterance" and length:
            x[i, :length] = normalize_utterance(x[i, :length])
    return x
