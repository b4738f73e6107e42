"""The default audio-classification recipe and the saved audio classifier.

The recipe (chosen by leave-one-speaker-out measurements, docs/audio.md):
20 MFCCs normalised per utterance (the truncated cepstrum keeps the spectral
envelope and drops the voice's pitch harmonics), a bidirectional GRU whose
outputs are averaged over the utterance's real frames, a small dense head, and
augmentation drawn anew every epoch: a VTLP-style frequency warp of up to 10%
(a longer or shorter vocal tract) and SpecAugment-style masks.

An :class:`AudioClassifier` is a trained model plus what is needed to use it on
new audio: the :class:`~rnnkernels.audio.FeatureConfig` and the class names.
It saves to one file, the model archive of ``Sequential.save`` with one more
entry (``audio.json``), written atomically.
"""
import dataclasses
import json
import os
import signal
import time
import zipfile

import numpy as np

from .._version import __version__
from .._util.atomic import replacing
from .._util.padding import pad_sequences
from ..callbacks import Callback
from .augment import frequency_warp, spec_augment
from .batching import BatchPlan, inference_batches
from .features import FeatureConfig, compute_features

DEFAULT_FEATURES = FeatureConfig(kind="mfcc", n_mfcc=20, sample_rate=8000, n_mels=40, n_fft=256,
                                 hop_length=128, deltas=0, normalize="utterance")
DEFAULT_RECIPE = dict(features=DEFAULT_FEATURES, cell="gru", hidden=64, layers=1,
                      bidirectional=True, pooling="mean", augment=True, masking=True, warp=0.1,
                      weight_decay=0.0, epochs=15, batch_size=32, lr=3e-3, bucket=False)
_D = DEFAULT_RECIPE

_AUDIO_ENTRY = "audio.json"
# audio.json's feature settings a loaded classifier may hold (a hostile file could ask the
# feature extraction for a filterbank of 10^9 bands otherwise)
_FEATURE_LIMITS = {"sample_rate": 1 << 20, "n_mels": 4096, "n_mfcc": 4096, "n_fft": 1 << 16,
                   "hop_length": 1 << 20, "win_length": 1 << 16}
_AUDIO_FORMAT = "rnnkernels.audio_classifier"


def featurize(dataset, config):
    """Features of every item of an :class:`~rnnkernels.datasets.AudioDataset`.

    Returns a list of N ``(T_i, F)`` float32 arrays.
    """
    return [compute_features(w, int(r), config)
            for w, r in zip(dataset.waveforms, dataset.sample_rates)]


POOLINGS = ("mean", "last")


def build_model(n_features, n_classes, cell="gru", hidden=64, layers=1, bidirectional=True,
                lr=3e-3, dropout=0.2, seed=0, pooling="mean", weight_decay=0.0):
    """A compiled ``Sequential``: recurrent layer(s) -> pooling over time -> dense head.

    ``pooling="mean"`` averages the last recurrent layer's outputs over the real
    frames; ``"last"`` keeps only its final state (the seed's Keras model).
    ``weight_decay > 0`` trains with AdamW (decoupled decay) instead of Adam.
    Input ``(N, T, n_features)`` with ``lengths (N,)`` passed to fit/predict (the
    recurrent layers and the mean skip padding); output ``(N, n_classes)`` probabilities.
    """
    from ..layers import GRU, LSTM, Bidirectional, Dense, Dropout, GlobalAveragePooling1D, SimpleRNN
    from ..models import Sequential
    from ..optimizers import Adam, AdamW

    cells = {"lstm": LSTM, "gru": GRU, "rnn": SimpleRNN}
    if cell not in cells:
        raise ValueError(f"cell: expected one of {sorted(cells)}, got {cell!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected a number >= 0, got {weight_decay!r}")
    model = Sequential(seed=seed)
    for i in range(layers):
        shape = dict(input_shape=(None, n_features)) if i == 0 else {}
        sequences = pooling == "mean" or i < layers - 1
        rnn = cells[cell](hidden, return_sequences=sequences, **({} if bidirectional else shape))
        model.add(Bidirectional(rnn, **shape) if bidirectional else rnn)
    if pooling == "mean":
        model.add(GlobalAveragePooling1D())
    model.add(Dropout(dropout))
    model.add(Dense(64, activation="relu"))
    model.add(Dropout(dropout))
    model.add(Dense(n_classes, activation="softmax"))
    optimizer = (AdamW(learning_rate=lr, weight_decay=weight_decay) if weight_decay
                 else Adam(learning_rate=lr))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@dataclasses.dataclass
class AudioClassifier:
    """A trained model with its feature settings and class names."""

    model: object
    features: FeatureConfig
    label_names: list

    def save(self, path):
        """Write one file atomically: the model archive plus an ``audio.json`` entry."""
        with replacing(path) as tmp:
            self.model.save(tmp)
            meta = {"format": _AUDIO_FORMAT, "version": __version__,
                    "features": self.features.to_dict(), "label_names": list(self.label_names)}
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(_AUDIO_ENTRY, json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; a missing, corrupt or foreign file is an error."""
        from ..engine.saving import read_json_entry
        from ..models import load_model

        path = os.fspath(path)
        try:  # a regular file (a FIFO would block), the entry bounded and strictly parsed
            meta = read_json_entry(path, _AUDIO_ENTRY)
        except KeyError:
            raise ValueError(f"model file {path!r}: no {_AUDIO_ENTRY} entry; not an audio "
                             f"classifier saved by `rnnkernels train --save`") from None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, ValueError, EOFError) as exc:
            if isinstance(exc, (FileNotFoundError, ValueError)) and str(exc).startswith("model file"):
                raise  # no such file, or a FIFO / device: says so already
            reason = str(exc).removeprefix(f"{path}: ")
            raise ValueError(f"model file {path!r}: corrupt or not an rnnkernels model "
                             f"({reason})") from None
        try:
            if not isinstance(meta, dict) or meta.get("format") != _AUDIO_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            features = FeatureConfig.from_dict(meta["features"])
            for name, limit in _FEATURE_LIMITS.items():  # what inference would allocate from
                value = getattr(features, name)
                if value is not None and value > limit:
                    raise ValueError(f"features: {name} {value} is above the limit of {limit}")
            label_names = meta["label_names"]
            if not isinstance(label_names, list):
                raise ValueError(f"label_names: expected a list, got {type(label_names).__name__}")
            label_names = [str(n) for n in label_names]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"model file {path!r}: bad {_AUDIO_ENTRY} ({exc})") from None
        model = load_model(path)
        inputs, outputs = model.layers[0].input_shape, model.layers[-1].output_shape
        if not inputs or inputs[-1] != features.n_features:
            raise ValueError(f"model file {path!r}: the model reads {inputs[-1] if inputs else None} "
                             f"features per frame, {_AUDIO_ENTRY} describes {features.n_features}")
        if not outputs or outputs[-1] != len(label_names):
            raise ValueError(f"model file {path!r}: the model has {outputs[-1] if outputs else None} "
                             f"outputs, {_AUDIO_ENTRY} names {len(label_names)} classes")
        return cls(model=model, features=features, label_names=label_names)

    def probabilities(self, features, batch_size=256):
        """Class probabilities ``(N, C)`` of a list of ``(T_i, F)`` feature arrays, in their
        order.  They run in batches of similar lengths with bounded padding
        (:func:`~rnnkernels.audio.batching.inference_batches`): a long recording does not
        pad a whole batch of short ones."""
        features = list(features)
        probs = None
        for idx in inference_batches([len(f) for f in features], batch_size):
            x, lengths = pad_sequences([features[j] for j in idx])
            out = np.asarray(self.model.predict(x, batch_size=len(idx), verbose=0, lengths=lengths))
            if probs is None:
                probs = np.empty((len(features),) + out.shape[1:], np.float64)
            probs[idx] = out
        if probs is None:
            raise ValueError("features: expected at least one utterance, got none")
        return probs

    def predict_files(self, paths):
        """``(N, C)`` class probabilities of audio files (read, resampled, featurised as in training)."""
        from .features import file_features

        return self.probabilities([file_features(p, self.features) for p in paths])

    def evaluate(self, dataset, batch_size=256):
        """Accuracy, loss (mean cross-entropy) and confusion matrix on a labelled dataset."""
        probs = self.probabilities(featurize(dataset, self.features), batch_size)
        return classification_metrics(probs, dataset.labels, len(self.label_names))


def classification_metrics(probs, labels, n_classes):
    """``{'accuracy', 'loss', 'confusion' (rows: true class, columns: predicted), 'n'}``."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.argmax(probs, axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"accuracy": float(np.mean(pred == labels)), "loss": float(-np.mean(np.log(p_true))),
            "confusion": confusion.tolist(), "n": int(len(labels))}


class _AugmentedBatches:
    """The training set as a Keras-style dataset for ``Sequential.fit``: ``len()`` batches,
    ``[i]`` -> ``(features, labels)``, ``on_epoch_end()`` moving on to the next epoch.

    The utterances are kept as a list of ``(T_i, F)`` arrays, never padded to the longest
    (memory follows the sum of the lengths).  Each epoch has its own order of the
    utterances, from ``(seed, 5, epoch)``, cut into batches by
    :class:`~rnnkernels.audio.batching.BatchPlan` (plain batches of ``batch_size``; long
    recordings in batches of their own; with ``bucket``, batches of similar lengths; the
    batch order then from ``(seed, 6, epoch)``).  Each utterance's augmentation is drawn
    from its own generator, seeded by ``(seed, 6, epoch, utterance)``: a frequency warp,
    then SpecAugment masks.  So an utterance's draws depend on the epoch and on the
    utterance alone, not on the batch it lands in nor on how many ranks share the batch:
    under ``mpiexec`` each rank augments only its own rows of the batch (those
    rnnkernels.distributed.rows gives it by their lengths, as fit shares them; fit drops
    the others, served unaugmented), and the result is the one-process one.
    ``batch_size`` also keys each row's dropout masks by its place in the epoch's batches.
    A batch's features are a list of ``(T_i, F)`` arrays, each utterance's real frames, so
    fit pads them (per batch) and keeps their lengths.  ``fit(initial_epoch=k)`` starts at
    epoch k: :meth:`seek` (called by :class:`_EpochHooks` at each epoch's start) says which
    epoch is being trained, and its draws are those of an uninterrupted run.
    """

    def __init__(self, sequences, labels, batch_size, seed, config, masking, warp, bucket=False):
        self.x_clean, self.labels = list(sequences), np.asarray(labels)
        self.lengths = np.array([len(s) for s in self.x_clean], dtype=np.int64)
        self.batch_size, self.seed = int(batch_size), seed
        self.config, self.masking, self.warp = config, masking, warp
        self.plan = BatchPlan(self.lengths, self.batch_size, bucket)
        self.epoch = 0  # the epoch [i] serves
        self._batches = None

    def __len__(self):
        return len(self.plan)

    def seek(self, epoch):
        """Serve ``epoch`` from now on."""
        if epoch != self.epoch:
            self.epoch, self._batches = epoch, None

    def on_epoch_end(self):
        self.epoch, self._batches = self.epoch + 1, None

    def _augmented(self, j):
        """Utterance ``j``'s real frames, augmented with this epoch's draws for it."""
        x = self.x_clean[j][None]  # (1, T_j, F): the padded functions' layout, nothing padded
        if self.warp or self.masking:
            rng = np.random.default_rng([self.seed, 6, self.epoch, int(j)])
            if self.warp:
                x = frequency_warp(x, self.lengths[j:j + 1], rng, self.config, self.warp)
            if self.masking:
                x = spec_augment(x, self.lengths[j:j + 1], rng)
        return x[0]

    def __getitem__(self, i):
        from .. import distributed

        if self._batches is None:
            order = np.random.default_rng([self.seed, 5, self.epoch]).permutation(len(self.labels))
            self._batches = self.plan.epoch(order, np.random.default_rng([self.seed, 6, self.epoch]))
        idx = self._batches[i]
        mine = set(range(len(idx)))
        if distributed.active() is not None:  # the rows fit gives this rank (by their lengths)
            mine = set(distributed.rows(len(idx), distributed.rank(), distributed.size(),
                                        self.lengths[idx]).tolist())
        return ([self._augmented(j) if r in mine else self.x_clean[j] for r, j in enumerate(idx)],
                self.labels[idx])


class _InferenceBatches:
    """Labelled utterances as a dataset for fit's validation: batches from
    :func:`~rnnkernels.audio.batching.inference_batches` (sorted by length, padding
    bounded), so one long recording does not pad the whole set."""

    def __init__(self, sequences, labels, batch_size=32):
        self.sequences, self.labels = list(sequences), np.asarray(labels)
        self.batches = inference_batches([len(s) for s in self.sequences], batch_size)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        idx = self.batches[i]
        return [self.sequences[j] for j in idx], self.labels[idx]


class _EpochHooks(Callback):
    """Tells the training data which epoch is starting (see :class:`_AugmentedBatches`);
    a checkpoint at each epoch's end."""

    def __init__(self, classifier, data, save):
        super().__init__()
        self.classifier, self.data, self.save = classifier, data, save
        self.completed, self.saved_epoch = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.data.seek(epoch)

    def on_epoch_end(self, epoch, logs=None):
        from .. import distributed

        self.completed = epoch + 1
        if self.save and distributed.is_chief():  # one writer: rank 0
            self.classifier.save(self.save)
            self.saved_epoch = epoch + 1


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, ``signum``) during :func:`train_classifier`; the message says
    which checkpoint was kept."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_classifier` returns: the classifier, per-epoch history and test results."""

    classifier: AudioClassifier
    history: dict
    test: dict
    report: dict


def train_classifier(train_set, test_set, features=DEFAULT_FEATURES, cell=_D["cell"],
                     hidden=_D["hidden"], layers=_D["layers"], bidirectional=_D["bidirectional"],
                     augment=_D["augment"], epochs=_D["epochs"], batch_size=_D["batch_size"],
                     lr=_D["lr"], seed=0, save=None, verbose=1, describe=None,
                     pooling=_D["pooling"], masking=_D["masking"], warp=_D["warp"],
                     weight_decay=_D["weight_decay"], precomputed=None, model=None,
                     initial_epoch=0, resumed_from=None, bucket=_D["bucket"]):
    """Train the recipe on ``train_set`` and test it on ``test_set`` (AudioDatasets, same labels).

    ``augment`` switches all training-time augmentation on or off; when on,
    ``masking`` adds SpecAugment time/frequency masks and ``warp > 0`` a random
    frequency warp of up to that fraction (:func:`~rnnkernels.audio.frequency_warp`),
    both drawn anew every epoch. ``bucket`` batches utterances of similar lengths together
    (:mod:`~rnnkernels.audio.batching`; recordings far longer than the rest get batches of
    their own either way). ``pooling`` and ``weight_decay``
    go to :func:`build_model`. ``precomputed``: ``(train features, test features)``
    as returned by :func:`featurize` for these sets and ``features``, to skip
    recomputing them (leave-one-speaker-out studies reuse one featurisation).

    With ``save`` the classifier is written there after every epoch (atomically),
    so an interruption keeps the last complete epoch. ``describe`` is merged into
    the report (the options a caller wants recorded). Returns a :class:`TrainResult`.

    To continue a run, pass its ``model`` (a model of this recipe, e.g.
    ``AudioClassifier.load(path).model``, optimizer state included) and the epochs it
    has trained as ``initial_epoch``; ``epochs`` then counts all epochs, as in Keras's
    ``fit``. The augmentation of the finished epochs is drawn and dropped, so the
    result is the uninterrupted run's. ``resumed_from``: the file ``model`` came from
    (when ``save`` is that file, an interruption before the next epoch ends keeps it).
    """
    from .. import distributed
    from .._core.threads import get_num_threads

    if list(train_set.label_names) != list(test_set.label_names):
        raise ValueError(f"test set labels {test_set.label_names} differ from the training set's "
                         f"{train_set.label_names}")
    if not 0 <= warp < 1:
        raise ValueError(f"warp: expected a fraction in [0, 1), got {warp!r}")
    warp = warp if augment else 0.0
    masking = bool(masking and augment)
    t0 = time.perf_counter()
    if precomputed is None:
        precomputed = featurize(train_set, features), featurize(test_set, features)
    train_features, test_features = precomputed
    if (len(train_features), len(test_features)) != (len(train_set), len(test_set)):
        raise ValueError(f"precomputed: expected features of {len(train_set)} training and "
                         f"{len(test_set)} test items, got {len(train_features)} and "
                         f"{len(test_features)}")
    y_train, y_test = train_set.labels, test_set.labels
    feature_seconds = time.perf_counter() - t0

    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"initial_epoch: expected 0 <= initial_epoch < epochs = {epochs}, "
                         f"got {initial_epoch!r}")
    if model is None:
        model = build_model(features.n_features, len(train_set.label_names), cell, hidden, layers,
                            bidirectional, lr, seed=seed, pooling=pooling, weight_decay=weight_decay)
    classifier = AudioClassifier(model, features, list(train_set.label_names))
    data = _AugmentedBatches(train_features, y_train, batch_size, seed, features, masking, warp, bucket)
    progress = _EpochHooks(classifier, data, save)
    progress.completed = initial_epoch
    if save and resumed_from and os.path.abspath(save) == os.path.abspath(resumed_from):
        progress.saved_epoch = initial_epoch  # that file still holds the finished epochs
    t1 = time.perf_counter()
    try:
        # validation_data in length-sorted batches with bounded padding (fit pads each batch
        # and keeps the lengths). The dataset shuffles the utterances itself, so fit need not
        # shuffle its batches.
        history = model.fit(data, epochs=epochs, initial_epoch=initial_epoch,
                            validation_data=_InferenceBatches(test_features, y_test),
                            shuffle=False, verbose=verbose, callbacks=[progress]).history
    except KeyboardInterrupt as exc:
        kept = (f"; the model of epoch {progress.saved_epoch} is kept in {save!r}"
                if progress.saved_epoch else "; no epoch had completed, nothing was saved"
                if save else "")
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        raise TrainingInterrupted(f"{what} during epoch {progress.completed + 1}{kept}", signum) from None
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    train_seconds = time.perf_counter() - t1

    probs = classifier.probabilities(test_features)
    test = classification_metrics(probs, y_test, len(train_set.label_names))
    wrong = np.flatnonzero(np.argmax(probs, axis=1) != y_test)
    report = dict(
        version=__version__,
        train_seconds=round(train_seconds, 3),
        feature_seconds=round(feature_seconds, 3),
        train_samples_per_second=round((epochs - initial_epoch) * len(train_set) / train_seconds, 1),
        threads=get_num_threads(),
        ranks=distributed.size(),  # MPI ranks that trained (1: this process alone)
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        test_errors=int(wrong.size),
        epochs=epochs - initial_epoch,  # trained in this call
        n_train=len(train_set),
        n_test=len(test_set),
        label_names=list(train_set.label_names),
        history=history,
        confusion=test["confusion"],
        misclassified=[{"source": test_set.sources[i], "true": train_set.label_names[y_test[i]],
                        "predicted": train_set.label_names[int(np.argmax(probs[i]))]}
                       for i in wrong[:50]],
        features=features.to_dict(),
        features_summary=describe_features(features),
        model=describe_model(cell, hidden, layers, bidirectional, pooling),
        augmentation=describe_augmentation(masking, warp),
        options=dict(cell=cell, hidden=hidden, layers=layers, bidirectional=bidirectional,
                     pooling=pooling, augment=augment, masking=masking, warp=warp,
                     weight_decay=weight_decay, epochs=epochs, batch_size=batch_size, lr=lr,
                     seed=seed, save=save, bucket=bucket),
        batches=dict(long_threshold_frames=data.plan.threshold, long_batches=len(data.plan.long_batches),
                     per_epoch=len(data.plan)),
    )
    report.update(describe or {})
    return TrainResult(classifier=classifier, history=history, test=test, report=report)


def describe_features(f):
    base = f"{f.n_mels} log-mel" if f.kind == "logmel" else f"{f.n_mfcc} MFCC"
    deltas = {0: "", 1: " + deltas", 2: " + deltas + delta-deltas"}[f.deltas]
    norm = ", per-utterance normalised" if f.normalize == "utterance" else ""
    return (f"{base}{deltas} ({f.n_features}/frame), {f.sample_rate} Hz, "
            f"{1000 * f.hop_length / f.sample_rate:g} ms hop{norm}")


def describe_model(cell, hidden, layers, bidirectional, pooling="mean"):
    rnn = f"{'Bidirectional ' if bidirectional else ''}{cell.upper()}({hidden})"
    stack = f"{layers} x {rnn}" if layers > 1 else rnn
    pool = "mean over time" if pooling == "mean" else "last state"
    return f"{stack} -> {pool} -> Dense(64, relu) -> Dense(softmax)"


def describe_augmentation(masking, warp):
    parts = ([f"frequency warp +/-{100 * warp:g}%"] if warp else []) + (
        ["SpecAugment masks"] if masking else [])
    return ", ".join(parts) or "none"
