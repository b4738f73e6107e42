"""The default recipe's training data: a Keras-style dataset drawing each epoch's augmentation
(frequency warp, then SpecAugment masks) from the seed, and train_classifier's reproducibility."""
import numpy as np
import pytest

from rnnkernels.audio import recipes
from rnnkernels.audio import FeatureConfig, frequency_warp, spec_augment
from rnnkernels.audio.datasets import AudioDataset

CONFIG = FeatureConfig(kind="mfcc", n_mfcc=8, sample_rate=8000, n_mels=16, n_fft=256, hop_length=128,
                       normalize="utterance")


def _padded(n=10, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 13, n)
    x = np.zeros((n, 12, CONFIG.n_features), np.float32)
    for i, length in enumerate(lengths):
        x[i, :length] = rng.normal(size=(length, CONFIG.n_features))
    return x, lengths, rng.integers(0, 3, n)


def _epoch(data, epoch=None):
    """Every batch of the dataset's current epoch: (order of the utterances, their features, labels)."""
    batches = [data[i] for i in range(len(data))]
    feats = [f for b in batches for f in b[0]]
    labels = np.concatenate([b[1] for b in batches])
    return np.concatenate(data._batches), feats, labels


def test_each_epoch_serves_every_utterance_once_with_its_real_frames():
    x, lengths, labels = _padded()
    data = recipes._AugmentedBatches([x[i, :n] for i, n in enumerate(lengths)], labels, 4, seed=3, config=CONFIG, masking=True, warp=0.0)
    assert len(data) == 3
    orders = []
    for epoch in range(3):
        order, feats, got = _epoch(data)
        assert sorted(order) == list(range(10))
        orders.append(list(order))
        np.testing.assert_array_equal(got, labels[order])
        assert [f.shape for f in feats] == [(lengths[j], CONFIG.n_features) for j in order]
        data.on_epoch_end()
    assert orders[0] != orders[1] != orders[2]
    assert orders == [list(np.random.default_rng([3, 5, e]).permutation(10)) for e in range(3)]


def test_each_utterance_draws_from_its_own_seeded_generator_and_seek_goes_anywhere():
    pytest.importorskip("librosa")  # frequency_warp
    x, lengths, labels = _padded()

    def reference(epoch, j):  # an utterance's draws: (seed, 6, epoch, utterance), nothing else
        rng = np.random.default_rng([7, 6, epoch, j])
        one = frequency_warp(x[j:j + 1, :lengths[j]], lengths[j:j + 1], rng, CONFIG, 0.1)
        return spec_augment(one, lengths[j:j + 1], rng)[0]

    data = recipes._AugmentedBatches([x[i, :n] for i, n in enumerate(lengths)], labels, 4, seed=7, config=CONFIG, masking=True, warp=0.1)
    served = []
    for epoch in range(3):
        order, feats, _ = _epoch(data)
        for j, f in zip(order, feats):
            np.testing.assert_array_equal(f, reference(epoch, j))
        assert not all(np.array_equal(f, x[j, :lengths[j]]) for j, f in zip(order, feats))
        served.append(feats)
        data.on_epoch_end()
    resumed = recipes._AugmentedBatches([x[i, :n] for i, n in enumerate(lengths)], labels, 4, seed=7, config=CONFIG, masking=True, warp=0.1)
    for epoch in (2, 1, 2):  # fit(initial_epoch=2), and back: nothing is drawn ahead
        resumed.seek(epoch)
        feats = _epoch(resumed)[1]
        for a, b in zip(feats, served[epoch]):
            np.testing.assert_array_equal(a, b)


def _tones(n_per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(2000) / 8000
    waves, labels = [], []
    for label, hz in enumerate((300, 800, 1800)):
        for _ in range(n_per_class):
            waves.append((0.3 * np.sin(2 * np.pi * hz * (1 + 0.03 * rng.normal()) * t)
                          + 0.02 * rng.normal(size=t.size)).astype(np.float32))
            labels.append(label)
    n = len(waves)
    return AudioDataset(waveforms=waves, sample_rates=np.full(n, 8000), labels=np.array(labels),
                        label_names=["low", "mid", "high"], speakers=[None] * n, takes=np.full(n, -1),
                        sources=[f"tone:{i}" for i in range(n)])


def test_train_classifier_is_reproducible_from_its_seed_with_fresh_augmentation_each_epoch(monkeypatch):
    pytest.importorskip("librosa")
    train, test = _tones(), _tones(2, seed=1)
    masks = []
    real = recipes.spec_augment

    def spy(batch, lengths, rng, *args, **kwargs):
        out = real(batch, lengths, rng, *args, **kwargs)
        masks.append(out)
        return out

    monkeypatch.setattr(recipes, "spec_augment", spy)

    def run(seed):
        result = recipes.train_classifier(train, test, CONFIG, hidden=4, epochs=3, batch_size=5, seed=seed,
                                          verbose=0)
        return result.history, result.classifier.model.get_weights()

    n = len(train)  # each utterance is augmented on its own (its own seeded draws)
    h1, w1 = run(3)
    assert len(masks) == 3 * n
    epoch_sums = [sum(float(m.sum()) for m in masks[e * n:(e + 1) * n]) for e in range(3)]
    assert len(set(epoch_sums)) == 3  # new masks every epoch
    h2, w2 = run(3)
    assert h1 == h2 and all(np.array_equal(a, b) for a, b in zip(w1, w2))
    np.testing.assert_array_equal(masks[0], masks[3 * n])
    h3, w3 = run(4)
    assert h3 != h1
    assert len(h1["loss"]) == 3 and set(h1) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_train_classifier_continues_a_model_exactly(tmp_path):
    """2 epochs, save, load, continue to 3 with model= and initial_epoch=: the weights of 3 straight epochs."""
    pytest.importorskip("librosa")
    train, test = _tones(), _tones(2, seed=1)
    kw = dict(hidden=4, batch_size=5, seed=2, verbose=0)
    whole = recipes.train_classifier(train, test, CONFIG, epochs=3, **kw)
    path = str(tmp_path / "half.rnk")
    half = recipes.train_classifier(train, test, CONFIG, epochs=2, save=path, **kw)
    model = recipes.AudioClassifier.load(path).model
    rest = recipes.train_classifier(train, test, CONFIG, epochs=3, model=model, initial_epoch=2,
                                    resumed_from=path, **kw)
    assert rest.classifier.model is model and model.epochs_trained == 3
    assert rest.report["epochs"] == 1 and len(rest.history["loss"]) == 1
    assert rest.history["loss"][0] == whole.history["loss"][2]
    for a, b in zip(model.get_weights(), whole.classifier.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(half.classifier.model.get_weights(), whole.classifier.model.get_weights()))
    with pytest.raises(ValueError, match="initial_epoch"):
        recipes.train_classifier(train, test, CONFIG, epochs=3, model=model, initial_epoch=3, **kw)
