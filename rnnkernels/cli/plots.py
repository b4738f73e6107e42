"""Figures of the command line (matplotlib, Agg: no display needed), written
atomically like every other output."""
import os

import numpy as np

from .._util.atomic import replacing
from .common import CommandError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install 'rnnkernels[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _draw_confusion(ax, confusion, label_names, title):
    confusion = np.asarray(confusion)
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    share = confusion / totals  # colour by the share of each true class, so classes compare
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = len(label_names)
    for i in range(n):
        for j in range(n):
            c = confusion[i, j]
            if c == 0:
                continue
            colour = "white" if share[i, j] > 0.6 else ("#c0392b" if i != j else "black")
            ax.text(j, i, str(c), ha="center", va="center", fontsize=9 if n <= 12 else 6,
                    color=colour, fontweight="bold" if i != j else "normal")
    ax.set_xticks(range(n), label_names, rotation=0 if n <= 12 else 90)
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def _save_figure(fig, path):
    # Atomic like every other output: render to a temporary file, then rename.
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format=fmt, bbox_inches="tight")
    except ValueError as exc:  # unknown image format
        raise CommandError(f"--plot {path!r}: {exc}") from None


def training_figure(report, path):
    """Loss and accuracy per epoch (train and test) and the test confusion matrix, in one image."""
    plt = _pyplot()
    h = report["history"]
    first = 1 + (report.get("resumed_from") or {}).get("epochs_trained", 0)
    epochs = np.arange(first, first + len(h["loss"]))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.05]})
    ax = axes[0]
    ax.plot(epochs, h["loss"], "o-", label="train (augmented, dropout on)")
    if "val_loss" in h:
        ax.plot(epochs, h["val_loss"], "s-", label="test")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    # Plain numbers (0.05, 0.1, 0.2, 0.5, 1, 2) rather than powers of ten.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (log scale)")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    ax = axes[1]
    ax.plot(epochs, 100 * np.asarray(h["accuracy"]), "o-", label="train")
    if "val_accuracy" in h:
        # The final value goes in the legend: a label beside the last point
        # landed on the train curve whenever the two ended close together.
        ax.plot(epochs, 100 * np.asarray(h["val_accuracy"]), "s-",
                label=f"test (last {100 * h['val_accuracy'][-1]:.1f}%)")
    ax.set_ylim(max(0, 100 * min(h["accuracy"] + h.get("val_accuracy", [])) - 5), 100.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_xticks(epochs if len(epochs) <= 20 else np.linspace(first, epochs[-1], 10).astype(int))
    _draw_confusion(axes[2], report["confusion"], report["label_names"],
                    f"test confusion: {report['test_errors']} of {report['n_test']} wrong")
    fig.suptitle(f"{report['model']}  |  {report['features_summary']}\n"
                 f"{report['n_train']} train / {report['n_test']} test ({report['split']}), "
                 f"test accuracy {100 * report['test_accuracy']:.1f}%, "
                 f"{report['train_seconds']:.0f} s on {report['threads']} threads", fontsize=11)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def confusion_figure(confusion, label_names, path, title):
    """A confusion matrix alone (``rnnkernels evaluate --plot``)."""
    plt = _pyplot()
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * n + 2), max(4.5, 0.5 * n + 1.5)))
    _draw_confusion(ax, confusion, label_names, title)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)




def ctc_training_figure(report, path):
    """A CTC run: loss per epoch (train, test), greedy test CER per epoch, and one test
    utterance's per-frame posteriors with the characters the best path emits."""
    plt = _pyplot()
    h = report["history"]
    epochs = np.arange(1, 1 + len(h["loss"]))
    fig = plt.figure(figsize=(16, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(epochs, h["loss"], "o-", label="train (augmented)")
    if "val_loss" in h:
        ax.plot(epochs, h["val_loss"], "s-", label="test")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("CTC loss per utterance (log scale)")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    ax = fig.add_subplot(grid[0, 1])
    if "val_cer" in h:
        cer = 100 * np.asarray(h["val_cer"])
        ax.plot(epochs, cer, "s-", color="C1", label=f"test, greedy (last {cer[-1]:.2f}%)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.axhline(100 * report["test_cer"], color="C2", ls="--",
               label=f"final, {report['decoder']}: {100 * report['test_cer']:.2f}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("character error rate (%, log scale)")
    ax.set_title("test CER")
    ax.legend()
    from matplotlib.ticker import MaxNLocator
    for a_ in fig.axes:
        a_.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    a = report["alignment"]
    post = np.asarray(a["posteriors"]).T  # (C, T')
    ax = fig.add_subplot(grid[1, :])
    seconds = a["frame_seconds"]
    ax.imshow(post, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest",
              extent=(0, post.shape[1] * seconds, post.shape[0] - 0.5, -0.5))
    ax.set_yticks(range(len(a["classes"])), a["classes"])
    for char, frame in a["tokens"]:
        x = (frame + 0.5) * seconds
        ax.axvline(x, color="cyan", lw=0.8, alpha=0.7)
        ax.text(x, -0.7, char, color="black", ha="center", va="bottom", fontsize=11, fontweight="bold",
                clip_on=False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("class")
    ax.set_title(f"alignment: per-frame posteriors of one test utterance ({a['source']}); reference "
                 f"{a['reference']!r}, transcript {a['hypothesis']!r}", pad=18)
    fig.suptitle(f"{report['model']}  |  {report['features_summary']}\n"
                 f"{report['n_train']} train / {report['n_test']} test utterances ({report['split']}), "
                 f"test CER {100 * report['test_cer']:.2f}%, WER {100 * report['test_wer']:.2f}%, "
                 f"{report['train_seconds']:.0f} s on {report['threads']} threads", fontsize=11)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
