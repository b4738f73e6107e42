"""A plain PyTorch training script, before and after ``rnnkernels.torch.convert``.

A bidirectional LSTM classifies the embedded Free Spoken Digit recordings
(MFCC features, variable lengths, fed as PackedSequences). The same script
trains twice from the same initial weights and batch order: once with
torch.nn's LSTM, once after ``convert(model)`` swapped in rnnkernels'. It
prints the loss per epoch, the test accuracy and the training time of each.

    PYTHONPATH=. python examples/torch_digits.py --epochs 8
"""
import argparse
import copy
import time

import numpy as np
import torch
from torch.nn.utils.rnn import pack_sequence

from rnnkernels.audio.datasets import load_spoken_digits, official_split
from rnnkernels.audio.recipes import DEFAULT_FEATURES, featurize
from rnnkernels.torch import convert


class DigitNet(torch.nn.Module):
    def __init__(self, n_features, hidden=64, classes=10):
        super().__init__()
        self.rnn = torch.nn.LSTM(n_features, hidden, num_layers=2, bidirectional=True, dropout=0.1)
        self.head = torch.nn.Linear(2 * hidden, classes)

    def forward(self, packed):
        _, (h, _) = self.rnn(packed)
        return self.head(torch.cat([h[-2], h[-1]], 1))  # last layer, both directions


def batches(feats, labels, batch_size, rng):
    order = rng.permutation(len(feats))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield pack_sequence([feats[i] for i in idx], enforce_sorted=False), labels[idx]


def train(model, train_set, test_set, epochs, batch_size, seed, label):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the same dropout masks in both runs
    total = 0.0
    print(f"--- {label}: {type(model.rnn).__module__}.{type(model.rnn).__name__}")
    for epoch in range(1, epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        for x, y in batches(*train_set, batch_size, rng):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        total += seconds
        model.eval()
        with torch.no_grad():
            x = pack_sequence(test_set[0], enforce_sorted=False)
            accuracy = (model(x).argmax(1) == test_set[1]).float().mean().item()
        print(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  test accuracy {accuracy:.3f}  {seconds:6.2f} s")
    print(f"{label}: {total:.2f} s training in all")
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = load_spoken_digits()
    train_idx, test_idx = official_split(data)
    feats = [torch.from_numpy(f) for f in featurize(data, DEFAULT_FEATURES)]
    labels = torch.from_numpy(data.labels)
    mean = torch.cat([feats[i] for i in train_idx]).mean(0)
    std = torch.cat([feats[i] for i in train_idx]).std(0)
    feats = [(f - mean) / std for f in feats]
    train_set = ([feats[i] for i in train_idx], labels[train_idx])
    test_set = ([feats[i] for i in test_idx], labels[test_idx])
    lengths = [len(f) for f in feats]
    print(f"{len(train_idx)} training, {len(test_idx)} test recordings; {feats[0].shape[1]} MFCC features; "
          f"{min(lengths)}-{max(lengths)} frames; {args.threads} threads")

    torch.manual_seed(args.seed)
    model = DigitNet(feats[0].shape[1])
    same_start = copy.deepcopy(model)
    before = train(model, train_set, test_set, args.epochs, args.batch_size, args.seed, "torch.nn")
    after = train(convert(same_start), train_set, test_set, args.epochs, args.batch_size, args.seed,
                  "after convert")
    print(f"training time after convert / before: {after / before:.2f}x")


if __name__ == "__main__":
    main()
