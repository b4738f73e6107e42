"""The audio application: features, datasets, recipes and the embedded data.

- :mod:`.features`: reading (soundfile), resampling, log-mel/MFCC features
  (librosa), per-utterance normalisation, padding with lengths kept;
- :mod:`.augment`: SpecAugment masks and the VTLP-style frequency warp;
- :mod:`.batching`: which recordings share a batch (long ones apart, optional bucketing);
- :mod:`.datasets`: folders of recordings, the embedded spoken digits (Free
  Spoken Digit Dataset, CC BY-SA 4.0), speaker-aware splits;
- :mod:`.recipes`: the default classifier recipe and the saved
  :class:`~rnnkernels.audio.recipes.AudioClassifier`.

The feature functions are importable from here as before
(``from rnnkernels.audio import FeatureConfig, compute_features``).
"""
from .augment import frequency_warp, frequency_warp_sequences, spec_augment, spec_augment_sequences
from .features import (FeatureConfig, compute_features, file_features, normalize_utterance, pad_batch,
                       read_audio, resample)

__all__ = ["FeatureConfig", "read_audio", "resample", "compute_features", "file_features",
           "normalize_utterance", "pad_batch", "spec_augment", "frequency_warp", "spec_augment_sequences",
           "frequency_warp_sequences"]
