"""The recogniser's recipe, chosen by measurement: variants of the default recipe trained on
connected digits of three FSDD speakers and tested on connected digits of the fourth (a
speaker never heard: on the official split every variant is near 0% CER).

    PYTHONPATH=. python benchmarks/asr_recipes.py --speakers lucas,nicolas [--variants a,b]
        [--json benchmarks/asr-recipes.json]
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rnnkernels._util.atomic import write_json  # noqa: E402
from rnnkernels.asr import corpus, recipes as asr  # noqa: E402
from rnnkernels.audio import FeatureConfig  # noqa: E402
from rnnkernels.audio.datasets import load_spoken_digits  # noqa: E402

_F = asr.DEFAULT_FEATURES.to_dict()
VARIANTS = {  # name: (what changes, train_recognizer overrides)
    "default": ("the default recipe", {}),
    "stack2": ("2 frames stacked (20 ms steps)", dict(stack=2)),
    "stack4": ("4 frames stacked (40 ms steps)", dict(stack=4)),
    "lstm": ("LSTM instead of GRU", dict(cell="lstm")),
    "lstmp": ("LSTM(128) projected to 64", dict(cell="lstm", hidden=128, projection=64)),
    "1layer": ("one bidirectional layer", dict(layers=1)),
    "logmel": ("40 log-mel bands instead of 20 MFCCs", dict(features=FeatureConfig(**dict(_F, kind="logmel")))),
    "noaug": ("no augmentation", dict(augment=False)),
    "nowarp": ("SpecAugment masks, no frequency warp", dict(warp=0.0)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", default="lucas,nicolas")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recordings = load_spoken_digits()
    results = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
    results["command"] = ("PYTHONPATH=. python benchmarks/asr_recipes.py --speakers "
                          f"{args.speakers} --json benchmarks/asr-recipes.json")
    results.setdefault("variants", {})
    for speaker in args.speakers.split(","):
        train, test = corpus.connected_digit_split(recordings, "speaker", seed=args.seed, test_speaker=speaker,
                                                   n_train=asr.DEFAULT_RECIPE["n_train"],
                                                   n_test=asr.DEFAULT_RECIPE["n_test"])
        for name in args.variants.split(","):
            what, overrides = VARIANTS[name]
            entry = results["variants"].setdefault(name, {"what": what, "folds": {}})
            if speaker in entry["folds"]:
                continue
            r = asr.train_recognizer(train, test, seed=args.seed, verbose=0, **overrides).report
            entry["folds"][speaker] = dict(cer=r["test_cer"], wer=r["test_wer"], train_seconds=r["train_seconds"])
            print(f"{name:8s} {speaker:8s} CER {r['test_cer']:.1%} WER {r['test_wer']:.1%} "
                  f"train {r['train_seconds']:.0f} s", flush=True)
            if args.json:
                write_json(args.json, results, indent=1)
    speakers = args.speakers.split(",")
    print("\n| variant | " + " | ".join(f"CER {s}" for s in speakers) + " | mean CER | train s (mean) |")
    print("|---|" + "---|" * (len(speakers) + 2))
    for name, entry in results["variants"].items():
        folds = [entry["folds"].get(s) for s in speakers]
        if None in folds:
            continue
        mean = sum(f["cer"] for f in folds) / len(folds)
        secs = sum(f["train_seconds"] for f in folds) / len(folds)
        print(f"| {name}: {entry['what']} | " + " | ".join(f"{f['cer']:.1%}" for f in folds)
              + f" | {mean:.1%} | {secs:.0f} |")


if __name__ == "__main__":
    main()
