"""Leave one speaker out: the connected-digit recogniser (CTC) against the isolated-digit
classifier, each trained on three FSDD speakers and tested on the fourth.

For each speaker: the classifier (rnnkernels.audio.recipes, its default recipe) is trained
on the other speakers' isolated recordings and tested on the held-out speaker's (error =
1 - accuracy); the recogniser (rnnkernels.asr.recipes, its default recipe) is trained on
connected digits made from the other speakers' recordings and tested on connected digits
of the held-out speaker (CER = digit error rate, WER = utterance error rate).  The target
(issue 19): CER no worse than 1.3 x the classifier's error.

    PYTHONPATH=. python benchmarks/asr_loso.py [--json benchmarks/asr-loso.json] [--epochs N]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rnnkernels._util.atomic import write_json  # noqa: E402
from rnnkernels.asr import corpus, recipes as asr  # noqa: E402
from rnnkernels.audio import recipes as clf  # noqa: E402
from rnnkernels.audio.datasets import load_spoken_digits, speaker_split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--epochs", type=int, default=asr.DEFAULT_RECIPE["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speakers", help="comma-separated (default: all)")
    parser.add_argument("--keep-classifier", action="store_true",
                        help="reuse the classifier's folds already in --json (its recipe and seed unchanged: "
                             "the same bits) and train only the recogniser")
    args = parser.parse_args()
    recordings = load_spoken_digits()
    speakers = args.speakers.split(",") if args.speakers else recordings.speaker_names
    results = json.load(open(args.json)) if args.json and os.path.exists(args.json) else {}
    results.setdefault("folds", {})
    results["command"] = "PYTHONPATH=. python benchmarks/asr_loso.py --json benchmarks/asr-loso.json"
    results["recipes"] = {"classifier": clf.describe_model("gru", 64, 1, True) + ", default augmentation",
                          "recogniser": asr.describe_model(asr.DEFAULT_RECIPE["stack"], "gru", 96, 2, True)
                          + f", {args.epochs} epochs"}
    for s in speakers:
        t0 = time.perf_counter()
        old = results["folds"].get(s)
        if args.keep_classifier and old:
            classifier_error, classifier_seconds = old["classifier_error"], old["classifier_seconds"]
        else:
            train_idx, test_idx = speaker_split(recordings, s)
            c = clf.train_classifier(recordings.subset(train_idx), recordings.subset(test_idx), seed=args.seed,
                                     verbose=0)
            classifier_error = 1 - c.report["test_accuracy"]
            classifier_seconds = round(time.perf_counter() - t0, 1)
        train, test = corpus.connected_digit_split(recordings, "speaker", seed=args.seed, test_speaker=s,
                                                   n_train=asr.DEFAULT_RECIPE["n_train"],
                                                   n_test=asr.DEFAULT_RECIPE["n_test"])
        r = asr.train_recognizer(train, test, epochs=args.epochs, seed=args.seed, verbose=0)
        fold = dict(classifier_error=classifier_error, classifier_seconds=classifier_seconds,
                    cer=r.report["test_cer"], wer=r.report["test_wer"], greedy_cer=r.report["test_greedy_cer"],
                    recogniser_train_seconds=r.report["train_seconds"])
        fold["ratio"] = fold["cer"] / max(fold["classifier_error"], 1e-9)
        results["folds"][s] = fold
        print(f"{s:10s} classifier error {fold['classifier_error']:.1%}  CTC CER {fold['cer']:.1%} "
              f"(WER {fold['wer']:.1%})  ratio {fold['ratio']:.2f}", flush=True)
        if args.json:
            write_json(args.json, results, indent=1)
    folds = results["folds"]
    print("\n| held-out speaker | classifier error (isolated digits) | recogniser CER (connected) | "
          "recogniser WER (utterances) | CER / error |\n|---|---|---|---|---|")
    for s, f in sorted(folds.items()):
        print(f"| {s} | {f['classifier_error']:.1%} | {f['cer']:.1%} | {f['wer']:.1%} | {f['ratio']:.2f} |")
    n = len(folds)
    if n:
        mean = {k: sum(f[k] for f in folds.values()) / n for k in ("classifier_error", "cer", "wer")}
        print(f"| mean | {mean['classifier_error']:.1%} | {mean['cer']:.1%} | {mean['wer']:.1%} | "
              f"{mean['cer'] / mean['classifier_error']:.2f} |")


if __name__ == "__main__":
    main()
