"""The default speech recogniser (CTC) and the saved :class:`SpeechRecognizer`.

The recipe (docs/asr.md has the measurements): 20 MFCCs every 10 ms, normalised per
utterance; four frames stacked into one (40 ms steps: the recurrent layers run a quarter
of the steps, and an utterance of 7 digits still has several steps per label); two
bidirectional GRU layers; a softmax over the characters and the blank; CTC with
``zero_infinity`` (a transcript too long for its audio counts 0, not inf); Adam; the
classifier's augmentation drawn anew every epoch (a frequency warp of up to 10% and
SpecAugment masks).  Decoding: prefix beam search, width 8.

A :class:`SpeechRecognizer` is a trained model plus what is needed to use it on new
audio: the :class:`~rnnkernels.audio.FeatureConfig` and the vocabulary.  It saves to one
file, the model archive of ``Sequential.save`` with one more entry (``asr.json``), data
only, written atomically.
"""
import dataclasses
import json
import os
import time
import zipfile

import numpy as np

from .._version import __version__
from .._util.atomic import replacing
from .._util.padding import pad_sequences
from ..audio.features import FeatureConfig, compute_features
from ..callbacks import Callback
from .decode import greedy_decode, prefix_beam_search
from .metrics import error_rates
from .text import Vocabulary

DEFAULT_FEATURES = FeatureConfig(kind="mfcc", n_mfcc=20, sample_rate=8000, n_mels=40, n_fft=256,
                                 hop_length=80, deltas=0, normalize="utterance")
DEFAULT_RECIPE = dict(features=DEFAULT_FEATURES, stack=4, cell="gru", hidden=96, layers=2,
                      bidirectional=True, augment=True, warp=0.1, epochs=12, batch_size=32, lr=3e-3,
                      n_train=2400, n_test=400, beam=8)
_D = DEFAULT_RECIPE

_ENTRY = "asr.json"
_FORMAT = "rnnkernels.speech_recognizer"


def featurize(waveforms, sample_rates, config):
    """``(T_i, F)`` features of each waveform (BLAS held to one thread: librosa's mel
    product otherwise waits on OpenBLAS's pool, 30x slower on a loaded 2-core machine)."""
    from .._core.blas import pin_blas

    with pin_blas(1):
        return [compute_features(w, int(r), config) for w, r in zip(waveforms, sample_rates)]


def build_model(n_features, n_classes, stack=_D["stack"], cell=_D["cell"], hidden=_D["hidden"],
                layers=_D["layers"], bidirectional=_D["bidirectional"], lr=_D["lr"], seed=0,
                projection=None):
    """A compiled ``Sequential``: FrameStack(stack) -> recurrent layers (sequences) ->
    Dense(n_classes, softmax), trained with CTC (blank 0).  ``projection``: LSTM only, the
    size its outputs are projected to (PyTorch's ``proj_size``)."""
    from ..layers import GRU, LSTM, Bidirectional, Dense, FrameStack, SimpleRNN
    from ..losses import CTC
    from ..models import Sequential
    from ..optimizers import Adam

    cells = {"lstm": LSTM, "gru": GRU, "rnn": SimpleRNN}
    if cell not in cells:
        raise ValueError(f"cell: expected one of {sorted(cells)}, got {cell!r}")
    if projection is not None and cell != "lstm":
        raise ValueError(f"projection: only for cell 'lstm', got cell {cell!r}")
    model = Sequential(seed=seed)
    model.add(FrameStack(stack, input_shape=(None, n_features)))
    for _ in range(layers):
        extra = {"projection": projection} if projection else {}
        rnn = cells[cell](hidden, return_sequences=True, **extra)
        model.add(Bidirectional(rnn) if bidirectional else rnn)
    model.add(Dense(n_classes, activation="softmax"))
    model.compile(optimizer=Adam(learning_rate=lr), loss=CTC(zero_infinity=True))
    return model


def describe_model(stack, cell, hidden, layers, bidirectional, projection=None):
    rnn = (f"{'Bidirectional ' if bidirectional else ''}{cell.upper()}({hidden}"
           f"{f', projection {projection}' if projection else ''})")
    return (f"FrameStack({stack}) -> {f'{layers} x ' if layers > 1 else ''}{rnn} -> Dense(softmax) "
            f"-> CTC")


def _output_lengths(model, lengths):
    for layer in model.layers:
        lengths = layer.output_lengths(lengths)
    return lengths


@dataclasses.dataclass
class SpeechRecognizer:
    """A trained CTC model with its feature settings and vocabulary (blank = id 0)."""

    model: object
    features: FeatureConfig
    vocabulary: Vocabulary

    @property
    def frame_seconds(self):
        """Seconds per output frame (the feature hop times the model's frame stacking)."""
        stride = int(np.prod([getattr(layer, "stride", 1) for layer in self.model.layers]))
        return stride * self.features.hop_length / self.features.sample_rate

    def save(self, path):
        """One file, atomically: the model archive plus an ``asr.json`` entry."""
        with replacing(path) as tmp:
            self.model.save(tmp)
            meta = {"format": _FORMAT, "version": __version__, "features": self.features.to_dict(),
                    "vocabulary": self.vocabulary.to_list(), "blank": 0}
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(_ENTRY, json.dumps(meta, indent=1))

    @staticmethod
    def is_recognizer_file(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return _ENTRY in zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return False

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; a missing, corrupt or foreign file is an error."""
        from ..models import load_model

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file {path!r}: no such file")
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read(_ENTRY).decode("utf-8"))
        except KeyError:
            raise ValueError(f"model file {path!r}: no {_ENTRY} entry; not a speech recogniser saved "
                             f"by `rnnkernels train --task ctc --save`") from None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, EOFError) as exc:
            raise ValueError(f"model file {path!r}: corrupt or not an rnnkernels model ({exc})") from None
        try:
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            features = FeatureConfig.from_dict(meta["features"])
            vocabulary = Vocabulary(meta["vocabulary"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"model file {path!r}: bad {_ENTRY} ({exc})") from None
        model = load_model(path)
        if model.layers[-1].output_shape[-1] != len(vocabulary):
            raise ValueError(f"model file {path!r}: the model has {model.layers[-1].output_shape[-1]} "
                             f"outputs, its vocabulary {len(vocabulary)} classes")
        return cls(model=model, features=features, vocabulary=vocabulary)

    def log_probs(self, features, batch_size=64):
        """Per-frame log-probabilities ``(T'_i, C)`` of each ``(T_i, F)`` feature array."""
        out = []
        for start in range(0, len(features), batch_size):
            x, lengths = pad_sequences(features[start:start + batch_size], dtype=self.model.dtype)
            probs = np.asarray(self.model.predict(x, batch_size=batch_size, lengths=lengths))
            n = _output_lengths(self.model, lengths)
            for b in range(len(lengths)):
                out.append(np.log(np.maximum(probs[b, :n[b]].astype(np.float64), 1e-30)))
        return out

    def decode(self, log_probs, beam=_D["beam"], timestamps=False):
        """Text of each utterance's log-probabilities (beam 1 = greedy); with ``timestamps``,
        also ``[(character, seconds), ...]``, each character's first frame (best path)."""
        texts, times = [], []
        for lp in log_probs:
            ids = greedy_decode(lp) if beam == 1 else prefix_beam_search(lp, beam_width=beam)
            texts.append(self.vocabulary.decode(ids))
            if timestamps:
                best, frames = greedy_decode(lp, return_frames=True)
                times.append([(self.vocabulary.decode([k]), round(f * self.frame_seconds, 3))
                              for k, f in zip(best, frames)])
        return (texts, times) if timestamps else texts

    def transcribe_files(self, paths, beam=_D["beam"], timestamps=False):
        """Transcripts of audio files (read, resampled, featurised as in training)."""
        from .._core.blas import pin_blas
        from ..audio.features import file_features

        with pin_blas(1):
            feats = [file_features(p, self.features) for p in paths]
        return self.decode(self.log_probs(feats), beam=beam, timestamps=timestamps)

    def evaluate(self, dataset, beam=_D["beam"], features=None):
        """``{'cer', 'wer', 'n_test', 'note', 'errors'}`` on a SpeechDataset (``features``: its
        precomputed features)."""
        if features is None:
            features = featurize(dataset.waveforms, dataset.sample_rates, self.features)
        hyps = self.decode(self.log_probs(features), beam=beam)
        rates = error_rates(dataset.transcripts, hyps)
        errors = [{"source": s, "reference": r, "hypothesis": h}
                  for s, r, h in zip(dataset.sources, dataset.transcripts, hyps) if r != h]
        return {"cer": rates["cer"], "wer": rates["wer"], "n_test": rates["n"], "note": rates["note"],
                "n_wrong": len(errors), "errors": errors[:50], "hypotheses": hyps}


class _Curves(Callback):
    """At each epoch's end: the test set's CTC loss and greedy CER (one forward pass)."""

    def __init__(self, recognizer, features, transcripts, every=1):
        super().__init__()
        self.recognizer, self.features, self.transcripts = recognizer, features, transcripts
        self.labels = _labels(recognizer.vocabulary, transcripts)
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        from .. import ops

        lps = self.recognizer.log_probs(self.features)
        hyps = self.recognizer.decode(lps, beam=1)
        T = max(lp.shape[0] for lp in lps)
        z = np.zeros((T, len(lps), lps[0].shape[1]))
        for b, lp in enumerate(lps):
            z[:lp.shape[0], b] = lp
        n = np.array([lp.shape[0] for lp in lps])
        targets = np.where(self.labels < 0, 0, self.labels)
        losses = ops.ctc_loss(z, targets, n, (self.labels >= 0).sum(1), zero_infinity=True, training=False)[0]
        if logs is not None:
            logs["val_loss"] = float(losses.mean())
            logs["val_cer"] = error_rates(self.transcripts, hyps)["cer"]


def _labels(vocabulary, transcripts, sources=None):
    """Transcripts as ids ``(N, S)`` padded with -1."""
    ids = [vocabulary.encode(t, None if sources is None else sources[i]) for i, t in enumerate(transcripts)]
    S = max([len(i) for i in ids] + [1])
    out = np.full((len(ids), S), -1, np.int64)
    for i, row in enumerate(ids):
        out[i, :len(row)] = row
    return out


@dataclasses.dataclass
class TrainResult:
    recognizer: SpeechRecognizer
    history: dict
    test: dict
    report: dict


def train_recognizer(train_set, test_set, features=DEFAULT_FEATURES, stack=_D["stack"], cell=_D["cell"],
                     hidden=_D["hidden"], layers=_D["layers"], bidirectional=_D["bidirectional"],
                     augment=_D["augment"], warp=_D["warp"], epochs=_D["epochs"],
                     batch_size=_D["batch_size"], lr=_D["lr"], seed=0, beam=_D["beam"], save=None,
                     verbose=1, describe=None, vocabulary=None, precomputed=None, projection=None):
    """Train the recipe on ``train_set`` (a SpeechDataset) and test it on ``test_set``.

    The vocabulary is the characters of the training and test transcripts (a test
    character the training data lacks is simply never emitted) unless given.  With ``save`` the recogniser is written there after every
    epoch (atomically).  ``precomputed``: ``(train features, test features)``.  Returns a
    :class:`TrainResult` whose report has the per-epoch loss, test loss and greedy test
    CER, the final test CER/WER with the beam, and the timings."""
    from .._core.threads import get_num_threads
    from ..audio.recipes import TrainingInterrupted, _AugmentedBatches, _EpochHooks

    if not 0 <= warp < 1:
        raise ValueError(f"warp: expected a fraction in [0, 1), got {warp!r}")
    vocabulary = vocabulary or Vocabulary.from_texts(list(train_set.transcripts) + list(test_set.transcripts))
    y_train = _labels(vocabulary, train_set.transcripts, train_set.sources)
    _labels(vocabulary, test_set.transcripts, test_set.sources)  # fail before training
    t0 = time.perf_counter()
    if precomputed is None:
        precomputed = (featurize(train_set.waveforms, train_set.sample_rates, features),
                       featurize(test_set.waveforms, test_set.sample_rates, features))
    train_features, test_features = precomputed
    feature_seconds = time.perf_counter() - t0

    model = build_model(features.n_features, len(vocabulary), stack, cell, hidden, layers, bidirectional,
                        lr, seed=seed, projection=projection)
    recognizer = SpeechRecognizer(model, features, vocabulary)
    data = _AugmentedBatches(train_features, y_train, batch_size, seed, features,
                             masking=augment, warp=warp if augment else 0.0)
    hooks = _EpochHooks(recognizer, data, save)
    curves = _Curves(recognizer, test_features, test_set.transcripts)
    t1 = time.perf_counter()
    try:
        history = model.fit(data, epochs=epochs, shuffle=False, verbose=verbose,
                            callbacks=[curves, hooks]).history
    except KeyboardInterrupt:
        kept = (f"; the model of epoch {hooks.saved_epoch} is kept in {save!r}" if hooks.saved_epoch
                else "; no epoch had completed, nothing was saved" if save else "")
        raise TrainingInterrupted(f"interrupted during epoch {hooks.completed + 1}{kept}") from None
    train_seconds = time.perf_counter() - t1
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    t2 = time.perf_counter()
    test = recognizer.evaluate(test_set, beam=beam, features=test_features)
    greedy = error_rates(test_set.transcripts, recognizer.decode(recognizer.log_probs(test_features), beam=1))
    decode_seconds = time.perf_counter() - t2
    report = dict(
        version=__version__, task="ctc",
        train_seconds=round(train_seconds, 3), feature_seconds=round(feature_seconds, 3),
        test_decode_seconds=round(decode_seconds, 3),
        train_utterances_per_second=round(epochs * len(train_set) / train_seconds, 1),
        threads=get_num_threads(), ranks=_ranks(),
        test_cer=test["cer"], test_wer=test["wer"], test_greedy_cer=greedy["cer"],
        test_greedy_wer=greedy["wer"], metric_note=test["note"], n_test_wrong=test["n_wrong"],
        n_train=len(train_set), n_test=len(test_set), epochs=epochs,
        train_audio_seconds=round(float(sum(len(w) / r for w, r in zip(train_set.waveforms,
                                                                      train_set.sample_rates))), 1),
        vocabulary=vocabulary.to_list(), history=history, errors=test["errors"],
        features=features.to_dict(), features_summary=_describe_features(features, stack),
        model=describe_model(stack, cell, hidden, layers, bidirectional, projection),
        augmentation=(", ".join(([f"frequency warp +/-{100 * warp:g}%"] if warp else []) + ["SpecAugment masks"])
                      if augment else "none"),
        decoder=f"prefix beam search, width {beam}" if beam > 1 else "greedy",
        options=dict(stack=stack, cell=cell, hidden=hidden, layers=layers, bidirectional=bidirectional,
                     projection=projection,
                     augment=augment, warp=warp, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                     beam=beam, save=save),
        alignment=_alignment(recognizer, test_set, test_features, test["hypotheses"]),
    )
    report.update(describe or {})
    return TrainResult(recognizer=recognizer, history=history, test=test, report=report)


def _describe_features(f, stack):
    base = f"{f.n_mels} log-mel" if f.kind == "logmel" else f"{f.n_mfcc} MFCC"
    hop = 1000 * f.hop_length / f.sample_rate
    return (f"{base} every {hop:g} ms, {f.sample_rate} Hz, per-utterance normalised; {stack} frames "
            f"stacked ({stack * hop:g} ms steps)")


def _alignment(recognizer, dataset, features, hyps):
    """One test utterance's posteriors over time, for the alignment picture."""
    i = int(np.argmax([len(t) for t in dataset.transcripts[:20]]))
    lp = recognizer.log_probs([features[i]])[0]
    best, frames = greedy_decode(lp, return_frames=True)
    return {"source": dataset.sources[i], "reference": dataset.transcripts[i], "hypothesis": hyps[i],
            "frame_seconds": recognizer.frame_seconds, "classes": ["blank"] + recognizer.vocabulary.to_list(),
            "posteriors": np.round(np.exp(lp), 4).tolist(),
            "tokens": [[recognizer.vocabulary.decode([k]), int(f)] for k, f in zip(best, frames)]}


def _ranks():
    from .. import distributed
    return distributed.size()  # MPI ranks that trained (1: this process alone)
