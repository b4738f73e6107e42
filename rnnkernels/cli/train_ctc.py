"""``rnnkernels train --task ctc``: the speech-recognition half of the train command.

With no ``--data``: connected digits made from the embedded FSDD recordings (the split's
recordings never cross: ``official`` tests on takes 0-4, ``speaker`` on a speaker never
heard).  ``--data DIR``: a folder with ``transcripts.tsv`` (split ``speaker`` or
``random``), or a Common Voice release (its own train and test lists).
"""
import sys

from .._version import __version__
from .common import CommandError, check_writable, feature_config, write_outputs


def _datasets(args):
    from ..asr import corpus

    if args.data is None:
        from ..audio.datasets import load_spoken_digits

        if args.test_data:
            raise CommandError("--test-data needs --data (the training folder)")
        split = args.split or "official"
        if args.test_speaker and split != "speaker":
            raise CommandError("--test-speaker needs --split speaker")
        if split not in corpus.CONNECTED_SPLITS:
            raise CommandError(f"--split {split}: connected digits keep FSDD's splits, choose official or speaker")
        recordings = load_spoken_digits()
        train, test = corpus.connected_digit_split(recordings, split, n_train=args.utterances,
                                                   n_test=args.test_utterances, seed=args.seed,
                                                   test_speaker=args.test_speaker)
        desc = ("connected digits (1-7 per utterance, one speaker each) from the embedded spoken digits "
                "(FSDD, CC BY-SA 4.0)")
        split_desc = "official: test from takes 0-4" if split == "official" else \
            f"speaker: test from {', '.join(test.speaker_names)}"
        return train, test, desc, split_desc
    if args.test_speaker and (args.split or "speaker") != "speaker":
        raise CommandError("--test-speaker needs --split speaker")
    if corpus.is_common_voice(args.data) and not args.test_data:
        sets = corpus.load_common_voice(args.data, splits=("train", "test"))
        if "train" not in sets or "test" not in sets:
            raise CommandError(f"--data {args.data!r}: the Common Voice train.tsv and test.tsv gave no clips")
        return sets["train"], sets["test"], f"{args.data} (Common Voice)", "Common Voice train/test"
    full = corpus.load_transcribed_folder(args.data)
    if args.test_data:
        test = corpus.load_transcribed_folder(args.test_data)
        return full, test, f"{args.data}; test: {args.test_data}", "separate test folder"
    split = args.split or "speaker"
    if split not in ("speaker", "random"):
        raise CommandError(f"--split {split}: a transcribed folder splits by speaker or random")
    train_idx, test_idx = corpus.split_speech(full, split, seed=args.seed, test_fraction=args.test_fraction,
                                              test_speakers=args.test_speaker)
    train, test = full.subset(train_idx), full.subset(test_idx)
    desc = f"{split}" + (f" (test: {', '.join(test.speaker_names[:5])}"
                         f"{' ...' if len(test.speaker_names) > 5 else ''})" if split == "speaker" else "")
    return train, test, args.data, desc


def run_ctc(args, strategy=None):
    """``train --task ctc``; under mpiexec (``strategy``) every rank trains, rank 0 alone
    prints and writes the report, the plot and the model."""
    from .._core.threads import get_num_threads
    from ..asr import recipes

    if args.resume:
        raise CommandError("--resume is for --task classify; a CTC run trains from the start")
    for option in ("save", "report", "plot"):
        check_writable(getattr(args, option), f"--{option}")
    from .common import apply_threads
    apply_threads(args)
    features = feature_config(args, recipes.DEFAULT_FEATURES)
    train_set, test_set, data_desc, split_desc = _datasets(args)
    chief = strategy is None or strategy.is_chief
    ranks = "" if strategy is None else f"{strategy.size} MPI ranks x "
    if not args.quiet and chief:
        print(f"rnnkernels {__version__}: {len(train_set)} training and {len(test_set)} test utterances "
              f"({split_desc}), {ranks}{get_num_threads()} threads")
    result = recipes.train_recognizer(
        train_set, test_set, features, stack=args.stack, cell=args.cell, hidden=args.hidden,
        layers=args.layers, bidirectional=args.bidirectional, augment=args.augment, warp=args.warp,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, beam=args.beam,
        save=args.save, verbose=0 if args.quiet else 1, describe=dict(data=data_desc, split=split_desc))
    result.report["command_options"] = {k: v for k, v in vars(args).items() if k not in ("command", "run")}
    if not chief:
        return 0
    _print_summary(result.report, sys.stdout)
    from .plots import ctc_training_figure
    write_outputs(args, result.report, ctc_training_figure)
    return 0


def _print_summary(r, out):
    rows = [
        ("data", r["data"]),
        ("split", r["split"]),
        ("model", r["model"]),
        ("features", r["features_summary"]),
        ("train / test utterances", f"{r['n_train']} / {r['n_test']} ({r['train_audio_seconds']:.0f} s of "
                                    f"training audio)"),
        ("epochs", str(r["epochs"])),
        ("threads", str(r["threads"])),
        ("train time", f"{r['train_seconds']:.1f} s ({r['train_utterances_per_second']:.0f} utterances/s)"
                       f" + features {r['feature_seconds']:.1f} s"),
        ("final train loss", f"{r['history']['loss'][-1]:.4f}"),
        ("test loss", f"{r['history']['val_loss'][-1]:.4f}"),
        ("decoder", r["decoder"]),
        ("test CER", f"{r['test_cer']:.2%} (greedy {r['test_greedy_cer']:.2%})"),
        ("test WER", f"{r['test_wer']:.2%} (greedy {r['test_greedy_wer']:.2%}); "
                     f"{r['n_test_wrong']} of {r['n_test']} transcripts wrong"),
        ("note", r["metric_note"]),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    print(line, file=out)
    for k, v in rows:
        print(f"{k:<{width}} | {v}", file=out)
    print(line, file=out)
    out.flush()
