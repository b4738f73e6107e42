"""One long recording among short clips: batches are planned so that it does not pad a
whole batch (rnnkernels.audio.batching), augmentation and inference never pad the whole
set to it, and training's peak memory stays within 2x of the same folder without it."""
import json

import numpy as np
import pytest

from helpers.audio import tone_folder
from helpers.isolated import run_python
from rnnkernels.audio import batching
from rnnkernels.audio.augment import (frequency_warp, frequency_warp_sequences, spec_augment,
                                      spec_augment_sequences)
from rnnkernels.audio.features import FeatureConfig


def _lengths(n=200, long=(), seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 60, n)
    for i, v in long:
        lengths[i] = v
    return lengths


def _check_epoch(plan, batches, n):
    seen = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(seen, np.arange(n))  # every recording once
    assert len(batches) == len(plan)
    for b in batches:
        assert 1 <= len(b) <= plan.batch_size
        longest = plan.lengths[b].max()
        assert len(b) * longest <= max(plan.batch_size * plan.threshold, longest)


def test_without_outliers_the_batches_are_a_plain_shuffle_and_draw_nothing():
    lengths = _lengths()
    plan = batching.BatchPlan(lengths, 32)
    assert plan.long_batches == [] and len(plan) == 7
    order = np.random.default_rng(5).permutation(200)
    rng = np.random.default_rng(9)
    state = rng.bit_generator.state
    batches = plan.epoch(order, rng)
    assert rng.bit_generator.state == state  # the spoken digits train exactly as before
    for k, b in enumerate(batches):
        np.testing.assert_array_equal(b, order[32 * k:32 * (k + 1)])


def test_a_long_recording_gets_a_batch_of_its_own_every_epoch():
    lengths = _lengths(long=[(17, 37_500)])          # a 10-minute recording at 16 ms frames
    plan = batching.BatchPlan(lengths, 32)
    assert plan.threshold < 37_500 and [list(b) for b in plan.long_batches] == [[17]]
    assert len(plan) == 7 + 1
    for epoch in range(4):
        order = np.random.default_rng([0, 5, epoch]).permutation(200)
        batches = plan.epoch(order, np.random.default_rng([0, 6, epoch]))
        _check_epoch(plan, batches, 200)
        assert sum(len(b) * plan.lengths[b].max() for b in batches) < 2 * 37_500 + 8 * 32 * 60
    # deterministic: the same seeds give the same batches
    a = plan.epoch(np.random.default_rng(1).permutation(200), np.random.default_rng(2))
    b = plan.epoch(np.random.default_rng(1).permutation(200), np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_several_long_recordings_share_batches_within_the_budget():
    lengths = _lengths(long=[(i, 500 + 10 * i) for i in range(10)] + [(50, 90_000)])
    plan = batching.BatchPlan(lengths, 4)
    _check_epoch(plan, plan.epoch(np.arange(200), np.random.default_rng(0)), 200)
    assert [50] in [list(b) for b in plan.long_batches]


def test_bucketing_sorts_within_chunks_and_keeps_every_recording():
    lengths = _lengths(1000)
    plan = batching.BatchPlan(lengths, 16, bucket=True)
    order = np.random.default_rng(3).permutation(1000)
    batches = plan.epoch(order, np.random.default_rng(4))
    _check_epoch(plan, batches, 1000)
    plain = batching.BatchPlan(lengths, 16).epoch(order, np.random.default_rng(4))
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)  # noqa: E731
    assert pad(batches) < pad(plain) / 4  # far less padding
    assert len(batches) == len(plain) == 63


def test_inference_batches_bound_the_padding_and_cover_everything():
    lengths = _lengths(300, long=[(3, 37_500)])
    batches = batching.inference_batches(lengths, 256)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(300))
    assert [3] in [list(b) for b in batches]
    assert max(len(b) * lengths[b].max() for b in batches) <= max(256 * batching.long_threshold(lengths), 37_500)


def test_sequence_augmentation_equals_the_padded_one():
    pytest.importorskip("librosa")
    cfg = FeatureConfig(kind="mfcc", n_mfcc=13, n_mels=20, sample_rate=8000)
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, cfg.n_features)).astype(np.float32) for n in (7, 1, 30, 0, 12)]
    from rnnkernels._util.padding import pad_sequences
    x, lengths = pad_sequences([s if len(s) else np.zeros((0, cfg.n_features), np.float32) for s in seqs])
    padded = spec_augment(frequency_warp(x, lengths, np.random.default_rng(1), cfg, 0.1), lengths,
                          np.random.default_rng(2))
    listed = spec_augment_sequences(frequency_warp_sequences(seqs, np.random.default_rng(1), cfg, 0.1),
                                    np.random.default_rng(2))
    for i, s in enumerate(listed):
        np.testing.assert_array_equal(s, padded[i, :lengths[i]])
        assert not padded[i, lengths[i]:].any()


def test_probabilities_come_back_in_order():
    from rnnkernels.audio.recipes import DEFAULT_FEATURES, AudioClassifier, build_model
    model = build_model(DEFAULT_FEATURES.n_features, 3, hidden=4, bidirectional=True)
    clf = AudioClassifier(model, DEFAULT_FEATURES, ["a", "b", "c"])
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, DEFAULT_FEATURES.n_features)).astype(np.float32) for n in (5, 40, 3, 400, 9)]
    probs = clf.probabilities(feats, batch_size=2)
    for f, p in zip(feats, probs):
        np.testing.assert_allclose(p, clf.probabilities([f])[0], rtol=1e-5, atol=1e-7)


def test_training_with_one_long_recording_stays_within_twice_the_memory(tmp_path):
    """The issue's case, at 5 minutes: each run in its own process, peak RSS from getrusage."""
    pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    short = tone_folder(tmp_path / "short", seconds=0.5, takes=20)
    long = tone_folder(tmp_path / "long", seconds=0.5, takes=20, long_clip_seconds=300)
    peaks = {}
    for name, folder in (("short", short), ("long", long)):
        r = run_python("""
import json, resource, subprocess, sys
p = subprocess.run([sys.executable, "-m", "rnnkernels", "train", "--data", sys.argv[1], "--epochs", "1",
                    "--threads", "1", "--quiet", "--report", sys.argv[2]], capture_output=True, text=True)
print(json.dumps({"status": p.returncode, "err": p.stderr[-400:],
                  "kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""", args=[folder, tmp_path / f"{name}.json"], timeout=600)
        assert r.returncode == 0, r
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["status"] == 0, out
        peaks[name] = out["kib"]
    report = json.loads((tmp_path / "long.json").read_text())
    assert report["batches"]["long_batches"] == 1
    assert peaks["long"] <= 2 * peaks["short"], peaks
