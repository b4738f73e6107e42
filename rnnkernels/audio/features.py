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

from .._util.files import check_regular_file

from .._util.padding import pad_sequences
from .._util.validation import check_positive_int as _positive_int

__all__ = [
    "FeatureConfig",
    "read_audio",
    "resample",
    "compute_features",
    "file_features",
    "normalize_utterance",
    "pad_batch",
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
    check_regular_file(path, "audio file")  # a named pipe would block soundfile forever
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
    """Stack variable-length ``(T_i, F)`` sequences into one zero-padded array:
    ``(batch, lengths)``, ``batch`` ``(N, T_max, F)`` (``(T_max, N, F)`` with
    ``time_major=True``).  :func:`rnnkernels.models.pad_sequences` with this
    module's argument order."""
    return pad_sequences(sequences, max_len=max_len, dtype=dtype, time_major=time_major)
