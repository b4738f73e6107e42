"""Audio datasets: folders of recordings, the embedded spoken digits, and speaker-aware splits.

Two folder layouts are understood:

* FSDD-style names, all files in one folder: ``{label}_{speaker}_{index}.wav``
  (``7_jackson_32.wav``). Labels, speakers and take indices all come from the name.
* One subfolder per class: ``root/{label}/*.wav`` (any depth below the class
  folder). Speakers and indices are known only where file names follow the FSDD pattern.

Splits return index arrays into a dataset: ``official`` (FSDD's own: takes 0-4
are the test set), ``speaker`` (the test speakers are never heard in training)
and ``random`` (seeded, stratified by label). :func:`leave_one_speaker_out`
yields one speaker-held-out split per speaker.
"""
import dataclasses
import lzma
import os
import re
import warnings
import zipfile
import zlib

import numpy as np

from .._util.atomic import replacing

__all__ = [
    "AudioDataset",
    "AudioFileWarning",
    "load_audio_folder",
    "load_spoken_digits",
    "split_dataset",
    "official_split",
    "speaker_split",
    "random_split",
    "leave_one_speaker_out",
    "pack_recordings",
    "AUDIO_EXTENSIONS",
    "SPLITS",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SPLITS = ("official", "speaker", "random")
_FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>.+)_(?P<index>\d+)$")
_EMBEDDED = os.path.join(os.path.dirname(__file__), "data", "spoken_digits.npz")
_OFFICIAL_TEST_TAKES = range(0, 5)


class AudioFileWarning(UserWarning):
    """A file in a data folder was skipped (unreadable, corrupt, or an unexpected name)."""


@dataclasses.dataclass
class AudioDataset:
    """Waveforms with labels and, where known, speakers and take indices.

    waveforms: list of N 1-D arrays (float32 in [-1, 1], or int16 PCM).
    sample_rates: (N,) int64, the rate of each waveform in Hz.
    labels: (N,) int64 class ids, indices into ``label_names``.
    label_names: list of class names (strings), in class-id order.
    speakers: list of N speaker names, ``None`` where unknown.
    takes: (N,) int64 take index from FSDD-style names, -1 where unknown.
    sources: list of N strings naming where each item came from (file paths).
    """

    waveforms: list
    sample_rates: np.ndarray
    labels: np.ndarray
    label_names: list
    speakers: list
    takes: np.ndarray
    sources: list

    def __len__(self):
        return len(self.waveforms)

    def subset(self, indices):
        """A new dataset holding the items at ``indices`` (same label names)."""
        idx = np.asarray(indices, dtype=np.int64)
        return AudioDataset(
            waveforms=[self.waveforms[i] for i in idx],
            sample_rates=self.sample_rates[idx],
            labels=self.labels[idx],
            label_names=list(self.label_names),
            speakers=[self.speakers[i] for i in idx],
            takes=self.takes[idx],
            sources=[self.sources[i] for i in idx],
        )

    @property
    def speaker_names(self):
        """Sorted distinct known speakers."""
        return sorted({s for s in self.speakers if s is not None})


def _natural_key(name):
    # "2" < "10", and names that are not numbers sort after numbers, alphabetically.
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def _label_ids(found, label_names, sources):
    """Map label strings to ids, using ``label_names`` (a trained model's classes) if given."""
    if label_names is None:
        label_names = sorted(set(found), key=_natural_key)
    else:
        label_names = [str(n) for n in label_names]
        known = set(label_names)
        for name, src in zip(found, sources):
            if name not in known:
                raise ValueError(f"{src!r}: label {name!r} is not one of the model's classes "
                                 f"{label_names}")
    ids = {n: i for i, n in enumerate(label_names)}
    return np.array([ids[n] for n in found], dtype=np.int64), label_names


def _audio_files(folder):
    return sorted(e.path for e in os.scandir(folder)
                  if e.is_file() and e.name.lower().endswith(AUDIO_EXTENSIONS))


def load_audio_folder(path, layout="auto", label_names=None, sample_rate=None):
    """Load every recording under ``path``.

    layout: ``"names"`` (FSDD-style names in ``path`` itself), ``"folders"`` (one
        subfolder per class) or ``"auto"`` (names if ``path`` holds audio files
        directly, folders otherwise).
    label_names: the class names in id order (e.g. a trained model's); a file
        whose label is not among them is a ValueError. ``None`` collects the labels
        found, sorted naturally (``"2"`` before ``"10"``).
    sample_rate: resample every waveform to this rate (Hz); ``None`` keeps each file's own.

    A file that cannot be decoded, or (``names`` layout) whose name does not fit
    ``{label}_{speaker}_{index}``, is skipped with an :class:`AudioFileWarning`
    naming it. A missing path, a folder without usable audio, or an unknown
    layout is an error.
    """
    from .features import read_audio  # soundfile is optional: import only when reading files

    path = os.fspath(path)
    if layout not in ("auto", "names", "folders"):
        raise ValueError(f"layout: expected 'auto', 'names' or 'folders', got {layout!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"data folder {path!r}: no such directory")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"data folder {path!r}: is a file, expected a directory")
    top_files = _audio_files(path)
    if layout == "auto":
        layout = "names" if top_files else "folders"

    candidates = []  # (file, label, speaker, take)
    if layout == "names":
        for f in top_files:
            m = _FSDD_NAME.match(os.path.splitext(os.path.basename(f))[0])
            if m is None:
                warnings.warn(f"skipping {f!r}: name does not fit {{label}}_{{speaker}}_{{index}}",
                              AudioFileWarning, stacklevel=2)
                continue
            candidates.append((f, m["label"], m["speaker"], int(m["index"])))
    else:
        class_dirs = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
        for d in sorted(class_dirs, key=lambda e: e.name):
            for root, dirs, files in os.walk(d.path):
                dirs.sort()
                for name in sorted(files):
                    if not name.lower().endswith(AUDIO_EXTENSIONS):
                        continue
                    m = _FSDD_NAME.match(os.path.splitext(name)[0])
                    speaker, take = (m["speaker"], int(m["index"])) if m else (None, -1)
                    candidates.append((os.path.join(root, name), d.name, speaker, take))
    if not candidates:
        raise ValueError(f"data folder {path!r}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) "
                         f"found in the {layout!r} layout")

    waveforms, rates, kept = [], [], []
    for item in candidates:
        try:
            w, r = read_audio(item[0], sample_rate=sample_rate)
        except (ValueError, OSError) as exc:
            warnings.warn(f"skipping {item[0]!r}: {exc}", AudioFileWarning, stacklevel=2)
            continue
        waveforms.append(w)
        rates.append(r)
        kept.append(item)
    if not kept:
        raise ValueError(f"data folder {path!r}: none of its {len(candidates)} audio files "
                         f"could be read")
    sources = [k[0] for k in kept]
    labels, names = _label_ids([k[1] for k in kept], label_names, sources)
    return AudioDataset(
        waveforms=waveforms,
        sample_rates=np.array(rates, dtype=np.int64),
        labels=labels,
        label_names=names,
        speakers=[k[2] for k in kept],
        takes=np.array([k[3] for k in kept], dtype=np.int64),
        sources=sources,
    )


# ---------------------------------------------------------------------------
# The embedded spoken digits
#
# Format (``rnnkernels/audio/data/spoken_digits.npz``, a plain uncompressed .npz read
# with numpy alone): every recording's int16 samples are concatenated, replaced
# by their first difference (wrapping int16 arithmetic, exactly invertible by a
# wrapping cumulative sum), split into a low-byte and a high-byte plane and
# compressed with LZMA. Speech is smooth at 8 kHz, so differences are small and
# the high-byte plane is nearly constant: 15.1 MB of PCM become 8.7 MB,
# lossless, decoded in well under a second without soundfile or librosa.
# ---------------------------------------------------------------------------

def _encode_pcm(pcm):
    diff = np.diff(pcm, prepend=np.int16(0))  # int16 wraps: decoding wraps back identically
    planes = diff.view(np.uint8).reshape(-1, 2).T.copy()
    return np.frombuffer(lzma.compress(planes.tobytes(), preset=9 | lzma.PRESET_EXTREME),
                         dtype=np.uint8)


def _decode_pcm(blob, n):
    planes = np.frombuffer(lzma.decompress(blob.tobytes()), dtype=np.uint8)
    if planes.size != 2 * n:
        raise ValueError(f"decoded {planes.size} bytes, expected {2 * n}")
    diff = planes.reshape(2, n).T.copy().view(np.int16).ravel()
    return np.cumsum(diff, dtype=np.int16)


def pack_recordings(source, dest):
    """Write the recordings of an FSDD-style folder ``source`` to ``dest`` in the embedded format.

    Every file must be 16-bit PCM and fit ``{label}_{speaker}_{index}``; the result
    is checked by decoding it before it atomically replaces ``dest``. This is how
    ``rnnkernels/audio/data/spoken_digits.npz`` was made from FSDD's recordings.
    """
    import soundfile

    files = _audio_files(source)
    pcm, rates, labels, speakers, takes, names = [], [], [], [], [], []
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        m = _FSDD_NAME.match(stem)
        if m is None:
            raise ValueError(f"{f!r}: name does not fit {{label}}_{{speaker}}_{{index}}")
        data, rate = soundfile.read(f, dtype="int16", always_2d=True)
        if data.shape[1] != 1 or soundfile.info(f).subtype != "PCM_16":
            raise ValueError(f"{f!r}: expected mono 16-bit PCM")
        pcm.append(data[:, 0])
        rates.append(rate)
        labels.append(m["label"])
        speakers.append(m["speaker"])
        takes.append(int(m["index"]))
        names.append(stem)
    label_ids, label_names = _label_ids(labels, None, files)
    speaker_names = sorted(set(speakers))
    joined = np.concatenate(pcm)
    arrays = dict(
        audio_lzma=_encode_pcm(joined),
        audio_crc32=np.array(zlib.crc32(joined.tobytes()), dtype=np.int64),
        lengths=np.array([p.size for p in pcm], dtype=np.int64),
        sample_rates=np.array(rates, dtype=np.int64),
        labels=label_ids,
        label_names=np.array(label_names),
        speakers=np.array([speaker_names.index(s) for s in speakers], dtype=np.int64),
        speaker_names=np.array(speaker_names),
        takes=np.array(takes, dtype=np.int64),
        names=np.array(names),
    )
    with replacing(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        check = _read_packed(tmp)
        if any(not np.array_equal(a, b) for a, b in zip(check.waveforms, pcm)):
            raise RuntimeError("packed recordings do not decode to the originals")


def _read_packed(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            lengths = z["lengths"]
            pcm = _decode_pcm(z["audio_lzma"], int(lengths.sum()))
            if zlib.crc32(pcm.tobytes()) != int(z["audio_crc32"]):
                raise ValueError("audio checksum mismatch")
            speaker_names = [str(s) for s in z["speaker_names"]]
            names = [str(n) for n in z["names"]]
            ds = AudioDataset(
                waveforms=np.split(pcm, np.cumsum(lengths)[:-1]),
                sample_rates=z["sample_rates"].astype(np.int64),
                labels=z["labels"].astype(np.int64),
                label_names=[str(n) for n in z["label_names"]],
                speakers=[speaker_names[i] for i in z["speakers"]],
                takes=z["takes"].astype(np.int64),
                sources=[f"{path}:{n}" for n in names],
            )
    except (OSError, KeyError, ValueError, EOFError, IndexError, lzma.LZMAError, zlib.error,
            zipfile.BadZipFile) as exc:
        raise ValueError(f"embedded dataset {path!r} is damaged ({exc}); reinstall rnnkernels") \
            from None
    return ds


def load_spoken_digits():
    """The embedded spoken-digit dataset: all 2,000 recordings of the Free Spoken Digit Dataset.

    Digits 0-9, four speakers (george, jackson, lucas, nicolas), 50 takes of each
    digit per speaker, 8 kHz mono int16 PCM (lossless). Needs only numpy: no
    network, no soundfile. Source: FSDD (github.com/Jakobovski/free-spoken-digit-dataset),
    CC BY-SA 4.0; see ``rnnkernels/audio/data/README.md``.
    """
    return _read_packed(_EMBEDDED)


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

def official_split(dataset):
    """FSDD's own split: takes 0-4 of every speaker and digit are the test set.

    Returns ``(train_idx, test_idx)``. Every item needs a take index (FSDD-style names).
    """
    takes = np.asarray(dataset.takes)
    unknown = np.flatnonzero(takes < 0)
    if unknown.size:
        raise ValueError(f"split 'official' needs FSDD-style names {{label}}_{{speaker}}_{{index}}; "
                         f"{dataset.sources[unknown[0]]!r} has none (use split 'random')")
    test = np.isin(takes, _OFFICIAL_TEST_TAKES)
    return _nonempty("official", np.flatnonzero(~test), np.flatnonzero(test))


def speaker_split(dataset, test_speakers=None, seed=0):
    """Unseen-speaker split: every recording of ``test_speakers`` is the test set.

    ``test_speakers`` is a speaker name or a list of them; ``None`` picks one
    speaker at random from ``seed``. Returns ``(train_idx, test_idx)``.
    """
    names = dataset.speaker_names
    if any(s is None for s in dataset.speakers):
        raise ValueError("split 'speaker' needs a speaker for every file (FSDD-style names "
                         "{label}_{speaker}_{index}); use split 'random'")
    if len(names) < 2:
        raise ValueError(f"split 'speaker' needs at least 2 speakers, got {len(names)}: {names}")
    if test_speakers is None:
        test_speakers = [names[int(np.random.default_rng(seed).integers(len(names)))]]
    elif isinstance(test_speakers, str):
        test_speakers = [test_speakers]
    for s in test_speakers:
        if s not in names:
            raise ValueError(f"test speaker {s!r}: expected one of {names}")
    test = np.isin(np.array(dataset.speakers, dtype=object), list(test_speakers))
    return _nonempty("speaker", np.flatnonzero(~test), np.flatnonzero(test))


def random_split(dataset, test_fraction=0.1, seed=0):
    """Seeded random split, stratified by label: ``test_fraction`` of each class is test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.extend(members[:int(round(test_fraction * members.size))])
    mask = np.zeros(len(labels), dtype=bool)
    mask[np.array(test, dtype=np.int64)] = True
    return _nonempty("random", np.flatnonzero(~mask), np.flatnonzero(mask))


def split_dataset(dataset, kind="official", seed=0, test_speakers=None, test_fraction=0.1):
    """``(train_idx, test_idx)`` for ``kind`` in ``SPLITS`` (see the split functions)."""
    if kind == "official":
        return official_split(dataset)
    if kind == "speaker":
        return speaker_split(dataset, test_speakers, seed)
    if kind == "random":
        return random_split(dataset, test_fraction, seed)
    raise ValueError(f"split: expected one of {SPLITS}, got {kind!r}")


def leave_one_speaker_out(dataset):
    """Yield ``(speaker, train_idx, test_idx)`` holding out each speaker in turn."""
    for s in dataset.speaker_names:
        train, test = speaker_split(dataset, s)
        yield s, train, test


def _nonempty(kind, train, test):
    if train.size == 0 or test.size == 0:
        raise ValueError(f"split {kind!r} leaves {'no training' if train.size == 0 else 'no test'} "
                         f"data ({train.size} train, {test.size} test)")
    return train, test
