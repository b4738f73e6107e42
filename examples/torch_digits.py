"""A plain PyTorch training script, before and after ``rnnkernels.torch.convert``.

A bidirectional LSTM classifies the embedded Free Spoken Digit recordings
(MFCC features, variable lengths, fed as PackedSequences). The same script
trains twice from the same initial weights and batch order: once with
torch.nn's LSTM, once after ``convert(model)`` swapped in rnnkernels'. It
prints the loss per epoch, the test accuracy and the training time of each;
the two runs alternate epoch by epoch (each with its own random state, so
each draws what it would draw alone), so a busy machine's load hits both alike.

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


class Run:
    """One model's training state: its optimizer, its batch order and its own
    torch random state (the dropout masks), so that two runs interleaved epoch
    by epoch draw exactly what each would draw alone."""

    def __init__(self, model, seed):
        self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=3e-3)
        self.rng = np.random.default_rng(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.torch_state = torch.get_rng_state()

    def epoch(self, train_set, test_set, batch_size):
        """One epoch: (mean training loss, test accuracy, seconds of training)."""
        with torch.random.fork_rng():
            torch.set_rng_state(self.torch_state)
            self.model.train()
            start, losses = time.perf_counter(), []
            for x, y in batches(*train_set, batch_size, self.rng):
                self.opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.model(x), y)
                loss.backward()
                self.opt.step()
                losses.append(loss.item())
            seconds = time.perf_counter() - start
            self.torch_state = torch.get_rng_state()
        self.model.eval()
        with torch.no_grad():
            x = pack_sequence(test_set[0], enforce_sorted=False)
            accuracy = (self.model(x).argmax(1) == test_set[1]).float().mean().item()
        return float(np.mean(losses)), accuracy, seconds


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
    converted = convert(copy.deepcopy(model))  # the same initial weights
    print(f"before: model.rnn is {type(model.rnn).__module__}.{type(model.rnn).__name__}; "
          f"after convert: {type(converted.rnn).__module__}.{type(converted.rnn).__name__}")
    runs = {"torch.nn": Run(model, args.seed), "converted": Run(converted, args.seed)}
    # The two train in lockstep, epoch by epoch, in alternating order: a shared
    # machine's changing load then falls on both alike.
    print("epoch   torch.nn: loss  accuracy  seconds   converted: loss  accuracy  seconds   time ratio")
    totals = dict.fromkeys(runs, 0.0)
    for epoch in range(1, args.epochs + 1):
        names = list(runs) if epoch % 2 else list(runs)[::-1]
        results = {name: runs[name].epoch(train_set, test_set, args.batch_size) for name in names}
        (l0, a0, s0), (l1, a1, s1) = results["torch.nn"], results["converted"]
        totals["torch.nn"] += s0
        totals["converted"] += s1
        print(f"{epoch:5d}   {l0:14.4f}  {a0:8.3f}  {s0:7.2f}   {l1:15.4f}  {a1:8.3f}  {s1:7.2f}   {s1 / s0:9.2f}x")
    print(f"training time: torch.nn {totals['torch.nn']:.1f} s, after convert {totals['converted']:.1f} s "
          f"({totals['converted'] / totals['torch.nn']:.2f}x)")


if __name__ == "__main__":
    main()
