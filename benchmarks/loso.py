"""Leave-one-speaker-out (LOSO) study of audio recipes: train on all speakers but one, test on it.

For every recipe named (default: all of ``RECIPES``) and every speaker of the data, the
recipe is trained with :func:`rnnkernels.recipes.train_classifier` on the other speakers'
recordings and tested on that speaker's; the table (recipes x speakers, mean) is printed as
markdown and written, with every fold's report summary, to JSON. Features are computed once
per feature setting and shared by the recipes and folds that use it.

    python3 benchmarks/loso.py [--recipes A,E,...] [--threads 1] [--json loso.json]
                               [--markdown loso.md] [--data DIR] [--seed 0]

Recipes are the default recipe (``rnnkernels.recipes.DEFAULT_RECIPE``) with the overrides
listed in ``RECIPES``; ``feature`` overrides change the :class:`FeatureConfig`. With
``--json`` an existing file's results for other recipes are kept (so a study can run in parts),
and the file is rewritten (atomically) after every recipe.
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout: import this tree's rnnkernels
    sys.path.insert(0, ROOT)

from rnnkernels import recipes  # noqa: E402
from rnnkernels.audio import FeatureConfig  # noqa: E402
from rnnkernels._util.atomic import write_json as write_json_atomic  # noqa: E402

# Every lettered recipe spells out what it changes from these, so the letters keep their meaning
# when DEFAULT_RECIPE changes: the previous default's features (40 log-mel, 16 ms hop)...
BASE_FEATURES = dict(kind="logmel", sample_rate=8000, n_mels=40, n_mfcc=20, n_fft=256,
                     hop_length=128, win_length=None, deltas=0, normalize="utterance")
_SEED_LIKE = dict(cell="lstm", hidden=128, bidirectional=False, pooling="last", augment=False)
# ... and its model and augmentation (the previous default, recipe E).
_CURRENT = dict(cell="gru", hidden=64, layers=1, bidirectional=True, pooling="mean", augment=True,
                masking=True, warp=0.0, weight_decay=0.0, epochs=15, batch_size=32, lr=3e-3)

#: name -> (description, overrides of DEFAULT_RECIPE; "features": overrides of its FeatureConfig)
RECIPES = {
    "A": ("seed-like: unnormalised log-mel (dB), LSTM(128), last state, no augmentation",
          dict(_SEED_LIKE, features=dict(normalize="none"))),
    "B": ("A + per-utterance normalisation", dict(_SEED_LIKE)),
    "D": ("per-utterance log-mel, BiGRU(64), mean over time, no augmentation",
          dict(_CURRENT, augment=False)),
    "E": ("D + SpecAugment masks (the previous default)", dict(_CURRENT)),
    "F": ("E + deltas", dict(_CURRENT, features=dict(deltas=1))),
    "G": ("E with 20 MFCCs instead of 40 log-mel", dict(_CURRENT, features=dict(kind="mfcc"))),
    "H": ("E + frequency warp +/-10% (VTLP-style)", dict(_CURRENT, warp=0.1)),
    "I": ("E + frequency warp +/-20%", dict(_CURRENT, warp=0.2)),
    "J": ("E with hidden 128", dict(_CURRENT, hidden=128)),
    "K": ("E, 30 epochs", dict(_CURRENT, epochs=30)),
    "L": ("E, unidirectional GRU(64)", dict(_CURRENT, bidirectional=False)),
    "M": ("E + AdamW weight decay 0.01", dict(_CURRENT, weight_decay=0.01)),
    "N": ("H, 30 epochs", dict(_CURRENT, warp=0.1, epochs=30)),
    "O": ("I, 30 epochs", dict(_CURRENT, warp=0.2, epochs=30)),
    "P": ("I with hidden 128", dict(_CURRENT, warp=0.2, hidden=128)),
    "Q": ("I + deltas", dict(_CURRENT, warp=0.2, features=dict(deltas=1))),
    "R": ("E + frequency warp +/-30%", dict(_CURRENT, warp=0.3)),
    "S": ("E with 20 log-mel bands", dict(_CURRENT, features=dict(n_mels=20))),
    "T": ("E with 13 MFCCs", dict(_CURRENT, features=dict(kind="mfcc", n_mfcc=13))),
    "U": ("E with a 16 ms window (wideband: harmonics of the voice's pitch blur, formants stay)",
          dict(_CURRENT, features=dict(win_length=128))),
    "W": ("G + deltas", dict(_CURRENT, features=dict(kind="mfcc", deltas=1))),
    "X": ("G, 30 epochs", dict(_CURRENT, epochs=30, features=dict(kind="mfcc"))),
    "Y": ("G with a 16 ms window", dict(_CURRENT, features=dict(kind="mfcc", win_length=128))),
    "Z": ("U + frequency warp +/-10%", dict(_CURRENT, warp=0.1, features=dict(win_length=128))),
    "AA": ("G + frequency warp +/-10% (of the cepstral envelope)",
           dict(_CURRENT, warp=0.1, features=dict(kind="mfcc"))),
    "AB": ("G + frequency warp +/-20%", dict(_CURRENT, warp=0.2, features=dict(kind="mfcc"))),
    "default": ("the current DEFAULT_RECIPE (AA since this study)", None),
}


def recipe_settings(overrides):
    """(FeatureConfig, keyword arguments of train_classifier) of a recipe's overrides."""
    settings = {k: v for k, v in recipes.DEFAULT_RECIPE.items() if k != "features"}
    if overrides is None:  # the package's default recipe, whatever it is now
        return recipes.DEFAULT_RECIPE["features"], settings
    settings.update({k: v for k, v in overrides.items() if k != "features"})
    features = FeatureConfig(**dict(BASE_FEATURES, **overrides.get("features", {})))
    return features, settings


def run_recipe(dataset, name, overrides, seed, cache):
    """Train and test ``overrides`` on every leave-one-speaker-out fold; returns a result dict."""
    from rnnkernels.audio.datasets import leave_one_speaker_out

    features, settings = recipe_settings(overrides)
    if features not in cache:
        cache[features] = recipes.featurize(dataset, features)
    every = cache[features]
    folds = {}
    t0 = time.perf_counter()
    for speaker, train_idx, test_idx in leave_one_speaker_out(dataset):
        result = recipes.train_classifier(
            dataset.subset(train_idx), dataset.subset(test_idx), features, seed=seed, verbose=0,
            precomputed=([every[i] for i in train_idx], [every[i] for i in test_idx]), **settings)
        r = result.report
        folds[speaker] = dict(accuracy=r["test_accuracy"], loss=r["test_loss"],
                              n_train=r["n_train"], n_test=r["n_test"],
                              train_seconds=r["train_seconds"],
                              final_train_accuracy=r["history"]["accuracy"][-1])
        print(f"  {name} {speaker:>10}: {100 * r['test_accuracy']:5.1f}%  "
              f"({r['train_seconds']:.1f} s)", flush=True)
    accuracies = [f["accuracy"] for f in folds.values()]
    return dict(description=RECIPES[name][0], features=features.to_dict(), settings=settings,
                seed=seed, folds=folds, mean_accuracy=float(np.mean(accuracies)),
                min_accuracy=float(np.min(accuracies)),
                seconds=round(time.perf_counter() - t0, 1),
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                load_average=[round(v, 2) for v in os.getloadavg()])


def markdown_table(results, speakers):
    """Recipes x speakers (test accuracy) and the mean, one markdown row per recipe."""
    lines = ["| recipe | " + " | ".join(speakers) + " | mean |",
             "| --- | " + " | ".join("---" for _ in speakers) + " | --- |"]
    for name, res in results.items():
        cells = [f"{100 * res['folds'][s]['accuracy']:.1f}%" if s in res["folds"] else "-"
                 for s in speakers]
        lines.append(f"| {name}: {res['description']} | " + " | ".join(cells)
                     + f" | **{100 * res['mean_accuracy']:.1f}%** |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="comma-separated names from: " + ", ".join(RECIPES))
    parser.add_argument("--data", metavar="DIR",
                        help="FSDD-style folder (default: the embedded spoken digits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="kernel threads (default 1: a fair, steady figure on a shared machine)")
    parser.add_argument("--json", metavar="PATH", help="write (and merge into) this JSON file")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table here")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {unknown}; known: {', '.join(RECIPES)}")
    from rnnkernels import set_num_threads
    from rnnkernels.audio.datasets import load_audio_folder, load_spoken_digits

    set_num_threads(args.threads)
    dataset = load_spoken_digits() if args.data is None else load_audio_folder(args.data)
    speakers = list(dataset.speaker_names)
    results = {}
    if args.json and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as fh:
            results = json.load(fh).get("recipes", {})
    cache = {}
    for name in names:
        print(f"{name}: {RECIPES[name][0]}", flush=True)
        results[name] = run_recipe(dataset, name, RECIPES[name][1], args.seed, cache)
        results[name]["threads"] = args.threads
        print(f"  {name} mean {100 * results[name]['mean_accuracy']:.1f}% "
              f"({results[name]['seconds']:.0f} s)", flush=True)
        if args.json:
            write_json_atomic(args.json, dict(speakers=speakers, recipes=results,
                                              data=args.data or "embedded spoken digits"))
    ordered = {n: results[n] for n in RECIPES if n in results}
    table = markdown_table(ordered, speakers)
    print(table)
    if args.markdown:
        tmp = f"{args.markdown}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(table + "\n")
        os.replace(tmp, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
