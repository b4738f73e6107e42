"""Training-time augmentation of padded feature batches, drawn from a seeded
generator: SpecAugment-style masks (Park et al. 2019) and a VTLP-style
frequency warp (Jaitly & Hinton 2013).  Padding stays zero."""
import numpy as np

from .._util.validation import check_lengths
from .features import FeatureConfig, _require, normalize_utterance

__all__ = ["spec_augment", "frequency_warp", "spec_augment_sequences", "frequency_warp_sequences"]


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
    lengths = check_lengths(lengths, x.shape[0], x.shape[1])
    for i in range(x.shape[0]):
        _mask(x[i, :int(lengths[i])], rng, time_masks, time_width, freq_masks, freq_width)
    return x


def spec_augment_sequences(sequences, rng, time_masks=2, time_width=0.1, freq_masks=2, freq_width=0.15):
    """:func:`spec_augment` of a list of ``(T_i, F)`` utterances (no padding, so memory
    follows the sum of the lengths, not N times the longest); new arrays, and the same
    draws from ``rng`` as :func:`spec_augment` of the same utterances padded."""
    out = []
    for i, s in enumerate(sequences):
        x = np.array(s, dtype=np.float32, copy=True)
        if x.ndim != 2:
            raise ValueError(f"sequences[{i}]: expected (T, F), got shape {x.shape}")
        _mask(x, rng, time_masks, time_width, freq_masks, freq_width)
        out.append(x)
    return out


def _mask(x, rng, time_masks, time_width, freq_masks, freq_width):
    """Mask one utterance's real frames ``x (length, F)`` in place."""
    length, n_feat = x.shape
    max_f = max(1, int(freq_width * n_feat))
    max_t = max(1, int(time_width * length))
    for _ in range(time_masks):
        w = int(rng.integers(0, max_t + 1))
        t0 = int(rng.integers(0, max(1, length - w + 1)))
        x[t0:t0 + w] = 0.0
    for _ in range(freq_masks):
        w = int(rng.integers(0, max_f + 1))
        f0 = int(rng.integers(0, n_feat - w + 1))
        x[:, f0:f0 + w] = 0.0


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
    lengths = check_lengths(lengths, n, x.shape[1])
    if max_warp == 0:
        return x
    _warp_each([x[i, :int(lengths[i])] for i in range(n)], rng, config, max_warp)
    return x


def frequency_warp_sequences(sequences, rng, config, max_warp=0.1):
    """:func:`frequency_warp` of a list of ``(T_i, config.n_features)`` utterances (no
    padding); new float32 arrays, and the same draws from ``rng`` as :func:`frequency_warp`
    of the same utterances padded."""
    if not isinstance(config, FeatureConfig):
        raise TypeError(f"config: expected a FeatureConfig, got {type(config).__name__}")
    if isinstance(max_warp, bool) or not isinstance(max_warp, (int, float)) or not 0 <= max_warp < 1:
        raise ValueError(f"max_warp: expected a number in [0, 1), got {max_warp!r}")
    out = [np.array(s, dtype=np.float32, copy=True) for s in sequences]
    for i, x in enumerate(out):
        if x.ndim != 2 or x.shape[1] != config.n_features:
            raise ValueError(f"sequences[{i}]: expected (T, {config.n_features}), got shape {x.shape}")
    if max_warp:
        _warp_each(out, rng, config, max_warp)
    return out


def _warp_each(views, rng, config, max_warp):
    """Warp each utterance's real frames (``views``: ``(length, F)`` arrays) in place."""
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
    for x, alpha in zip(views, rng.uniform(1 - max_warp, 1 + max_warp, size=len(views))):
        if x.shape[0] == 0:  # no frames: nothing to warp (its draw is made all the same)
            continue
        source = np.interp(centres / alpha, centres, band)  # fractional band index, clamped
        lo = np.floor(source).astype(np.intp)
        frac = source - lo
        warp = np.zeros((config.n_mels, config.n_mels))
        warp[band, lo] = 1 - frac
        warp[band, np.minimum(lo + 1, config.n_mels - 1)] += frac
        if dct is not None:
            warp = dct @ warp @ dct.T
        length = x.shape[0]
        # (length, blocks, width) @ warp.T: every block of values is warped alike.
        frames = x.reshape(length, -1, width)
        x[...] = (frames @ warp.T.astype(np.float32)).reshape(length, -1)
        if config.normalize == "utterance" and length:
            x[...] = normalize_utterance(x)
