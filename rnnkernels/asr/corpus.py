"""Transcribed speech: the connected-digit corpus made from the embedded FSDD recordings,
folders with a ``transcripts.tsv``, and Common Voice releases.

Connected digits.  Each utterance is 1-7 digits (uniformly many), each spoken by one
speaker (the same speaker throughout an utterance, as a person reading a number), drawn
from a pool of FSDD recordings: each recording is trimmed of its leading and trailing
silence, scaled by a random gain of -6..+6 dB (level changes between words), and the
recordings are joined with pauses of 30-250 ms of faint noise (plus 50-200 ms before and
after).  The sentence is the digit string, without spaces (``"4823"``).  Everything is
drawn from one generator seeded by ``seed``: the same seed gives the same corpus.

Splits keep FSDD's: ``official`` builds the test utterances only from takes 0-4 of every
speaker and digit, the training utterances only from takes 5-49; ``speaker`` builds the
test utterances from one speaker's recordings (never heard in training) and the training
ones from the other speakers'.

Folders.  ``DIR/transcripts.tsv``: tab-separated, a header with Common Voice's column
names ``path`` (relative to DIR, or to ``DIR/clips``) and ``sentence``, and optionally
``client_id`` (the speaker).  A Common Voice release folder has ``train.tsv``, ``dev.tsv``
and ``test.tsv`` beside ``clips/``; :func:`load_common_voice` reads them as given.
"""
import csv
import dataclasses
import os
import warnings

import numpy as np

from ..audio.datasets import AudioFileWarning

__all__ = ["SpeechDataset", "connected_digits", "connected_digit_split", "load_transcribed_folder",
           "load_common_voice", "is_common_voice", "split_speech", "write_transcribed_folder",
           "CONNECTED_SPLITS"]

CONNECTED_SPLITS = ("official", "speaker")
_OFFICIAL_TEST_TAKES = range(0, 5)


@dataclasses.dataclass
class SpeechDataset:
    """Waveforms with their transcripts.

    waveforms: N 1-D float32 arrays in [-1, 1] (or int16 PCM); sample_rates (N,) Hz;
    transcripts: N strings; speakers: N names (None where unknown); sources: N strings
    naming where each came from (a file, or the recordings an utterance joins)."""

    waveforms: list
    sample_rates: np.ndarray
    transcripts: list
    speakers: list
    sources: list

    def __len__(self):
        return len(self.waveforms)

    def subset(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        return SpeechDataset([self.waveforms[i] for i in idx], self.sample_rates[idx],
                             [self.transcripts[i] for i in idx], [self.speakers[i] for i in idx],
                             [self.sources[i] for i in idx])

    @property
    def speaker_names(self):
        return sorted({s for s in self.speakers if s is not None})


def _as_float(w):
    w = np.asarray(w)
    if w.dtype == np.int16:
        return w.astype(np.float32) / 32768.0
    return w.astype(np.float32)


def trim_silence(w, rate, top_db=30.0, margin_s=0.02):
    """``w`` without its leading and trailing frames quieter than ``top_db`` below its
    loudest 10 ms frame (a margin of ``margin_s`` kept on each side)."""
    hop = max(1, int(rate * 0.01))
    n = len(w) // hop
    if n < 2:
        return w
    rms = np.sqrt(np.mean(w[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-top_db / 20))
    margin = int(rate * margin_s)
    start = max(0, loud[0] * hop - margin)
    end = min(len(w), (loud[-1] + 1) * hop + margin)
    return w[start:end]


def connected_digits(recordings, n, seed=0, min_digits=1, max_digits=7):
    """``n`` connected-digit utterances from the FSDD-style ``recordings`` (an
    :class:`~rnnkernels.audio.datasets.AudioDataset` with speakers and digit labels; all
    at one sample rate).  See the module docstring for how they are made."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"min_digits, max_digits: expected 1 <= min <= max, got {min_digits}, {max_digits}")
    rates = np.unique(recordings.sample_rates)
    if rates.size != 1:
        raise ValueError(f"recordings: expected one sample rate, got {rates.tolist()}")
    rate = int(rates[0])
    names = recordings.label_names
    by_speaker = {}
    for i, (s, label) in enumerate(zip(recordings.speakers, recordings.labels)):
        by_speaker.setdefault(s, {}).setdefault(int(label), []).append(i)
    speakers = sorted(s for s in by_speaker if s is not None and len(by_speaker[s]) == len(names))
    if not speakers:
        raise ValueError("recordings: no speaker has a recording of every digit")
    rng = np.random.default_rng([seed, 19])
    trimmed = {}
    waves, texts, who, sources = [], [], [], []
    for _ in range(n):
        speaker = speakers[int(rng.integers(len(speakers)))]
        k = int(rng.integers(min_digits, max_digits + 1))
        digits = rng.integers(0, len(names), k)
        parts, used = [], []
        peak = 0.0
        for j, d in enumerate(digits):
            pool = by_speaker[speaker][int(d)]
            i = pool[int(rng.integers(len(pool)))]
            if i not in trimmed:
                trimmed[i] = trim_silence(_as_float(recordings.waveforms[i]), rate)
            gain = 10 ** (rng.uniform(-6, 6) / 20)
            pause = rng.uniform(0.05, 0.2) if j == 0 else rng.uniform(0.03, 0.25)
            parts += [np.zeros(int(pause * rate), np.float32), gain * trimmed[i]]
            peak = max(peak, float(np.abs(parts[-1]).max(initial=0.0)))
            used.append(os.path.basename(recordings.sources[i]).split(":")[-1])
        parts.append(np.zeros(int(rng.uniform(0.05, 0.2) * rate), np.float32))
        w = np.concatenate(parts)
        w = w + rng.normal(0.0, 1e-3 * max(peak, 1e-3), w.size).astype(np.float32)  # faint noise floor
        scale = max(1.0, float(np.abs(w).max()))  # stay in [-1, 1]
        waves.append((w / scale).astype(np.float32))
        texts.append("".join(names[int(d)] for d in digits))
        who.append(speaker)
        sources.append("+".join(used))
    return SpeechDataset(waves, np.full(n, rate, np.int64), texts, who, sources)


def connected_digit_split(recordings, split="official", n_train=2400, n_test=400, seed=0,
                          test_speaker=None, min_digits=1, max_digits=7):
    """``(train, test)`` connected-digit corpora whose recordings never overlap: ``official``
    (test from takes 0-4) or ``speaker`` (test from ``test_speaker``'s recordings; None: one
    chosen by ``seed``)."""
    from ..audio.datasets import official_split, speaker_split

    if split == "official":
        train_idx, test_idx = official_split(recordings)
    elif split == "speaker":
        train_idx, test_idx = speaker_split(recordings, test_speaker, seed)
    else:
        raise ValueError(f"split: expected one of {CONNECTED_SPLITS} for connected digits, got {split!r}")
    train = connected_digits(recordings.subset(train_idx), n_train, seed=seed, min_digits=min_digits,
                             max_digits=max_digits)
    test = connected_digits(recordings.subset(test_idx), n_test, seed=seed + 1_000_003,
                            min_digits=min_digits, max_digits=max_digits)
    return train, test


# ------------------------------------------------------------------ folders
def _read_tsv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None:
            raise ValueError(f"{path!r}: empty file, expected a header with columns path and sentence")
        missing = [c for c in ("path", "sentence") if c not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path!r}: expected Common Voice's columns 'path' and 'sentence' (and "
                             f"optionally 'client_id'), the header has {reader.fieldnames}")
        return list(reader)


def _load_rows(rows, folder, tsv, sample_rate):
    from ..audio.features import read_audio

    waves, rates, texts, speakers, sources = [], [], [], [], []
    for n, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        text = row.get("sentence")
        if not rel or text is None:
            warnings.warn(f"{tsv!r} line {n}: no path or sentence, skipped", AudioFileWarning, stacklevel=3)
            continue
        candidates = [os.path.join(folder, rel), os.path.join(folder, "clips", rel)]
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            warnings.warn(f"{tsv!r} line {n}: {rel!r} not found, skipped", AudioFileWarning, stacklevel=3)
            continue
        try:
            w, r = read_audio(path, sample_rate=sample_rate)
        except (ValueError, OSError) as exc:
            warnings.warn(f"skipping {path!r}: {exc}", AudioFileWarning, stacklevel=3)
            continue
        waves.append(w)
        rates.append(r)
        texts.append(" ".join(text.split()))
        speakers.append((row.get("client_id") or "").strip() or None)
        sources.append(path)
    if not waves:
        raise ValueError(f"{tsv!r}: none of its {len(rows)} rows gave a readable recording")
    return SpeechDataset(waves, np.array(rates, np.int64), texts, speakers, sources)


def load_transcribed_folder(path, sample_rate=None):
    """A folder with ``transcripts.tsv`` (columns ``path``, ``sentence``, optional ``client_id``).
    Rows whose file is missing or unreadable are skipped with an AudioFileWarning."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data folder {path!r}: no such directory")
    tsv = os.path.join(path, "transcripts.tsv")
    if not os.path.isfile(tsv):
        hint = " (a Common Voice release: train.tsv/dev.tsv/test.tsv)" if is_common_voice(path) else ""
        raise ValueError(f"data folder {path!r}: no transcripts.tsv with columns path and sentence{hint}")
    return _load_rows(_read_tsv(tsv), path, tsv, sample_rate)


def is_common_voice(path):
    return all(os.path.isfile(os.path.join(path, f"{s}.tsv")) for s in ("train", "test")) and \
        os.path.isdir(os.path.join(path, "clips"))


def load_common_voice(path, splits=("train", "dev", "test"), sample_rate=None):
    """``{split: SpeechDataset}`` of a Common Voice release folder (``dev`` may be absent)."""
    out = {}
    for s in splits:
        tsv = os.path.join(path, f"{s}.tsv")
        if os.path.isfile(tsv):
            out[s] = _load_rows(_read_tsv(tsv), path, tsv, sample_rate)
    return out


def split_speech(dataset, kind="speaker", seed=0, test_fraction=0.1, test_speakers=None):
    """``(train_idx, test_idx)`` of a transcribed folder: ``speaker`` (about ``test_fraction``
    of the speakers, or ``test_speakers``, only in test) or ``random`` (seeded)."""
    n = len(dataset)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng([seed, 23])
    if kind == "random":
        order = rng.permutation(n)
        k = max(1, int(round(test_fraction * n)))
        test = np.sort(order[:k])
    elif kind == "speaker":
        if any(s is None for s in dataset.speakers):
            raise ValueError("split 'speaker' needs a client_id (speaker) for every row of transcripts.tsv; "
                             "use --split random")
        names = dataset.speaker_names
        if len(names) < 2:
            raise ValueError(f"split 'speaker' needs at least 2 speakers, got {len(names)}")
        if test_speakers is None:
            k = max(1, int(round(test_fraction * len(names))))
            test_speakers = [names[i] for i in rng.permutation(len(names))[:k]]
        elif isinstance(test_speakers, str):
            test_speakers = [test_speakers]
        unknown = [s for s in test_speakers if s not in names]
        if unknown:
            raise ValueError(f"test speaker {unknown[0]!r}: expected one of {names[:10]}")
        test = np.flatnonzero(np.isin(np.array(dataset.speakers, dtype=object), list(test_speakers)))
    else:
        raise ValueError(f"split: expected 'speaker' or 'random' for a transcribed folder, got {kind!r}")
    train = np.setdiff1d(np.arange(n), test)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"split {kind!r} leaves {'no training' if train.size == 0 else 'no test'} data")
    return train, test


def write_transcribed_folder(dataset, folder):
    """Write ``dataset`` as a transcribed folder: ``utt{i:05d}.wav`` (16-bit PCM) and
    ``transcripts.tsv`` (``path``, ``sentence``, ``client_id``), each file atomically.
    ``folder`` is created if needed.  Returns the wav paths."""
    import soundfile

    from .._util.atomic import replacing

    os.makedirs(folder, exist_ok=True)
    paths, rows = [], []
    for i, (w, r, text, who) in enumerate(zip(dataset.waveforms, dataset.sample_rates, dataset.transcripts,
                                              dataset.speakers)):
        name = f"utt{i:05d}.wav"
        path = os.path.join(folder, name)
        with replacing(path) as tmp:
            soundfile.write(tmp, _as_float(w), int(r), subtype="PCM_16", format="WAV")
        paths.append(path)
        rows.append(f"{name}\t{text}\t{who or ''}\n")
    with replacing(os.path.join(folder, "transcripts.tsv")) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("path\tsentence\tclient_id\n")
            fh.writelines(rows)
    return paths
