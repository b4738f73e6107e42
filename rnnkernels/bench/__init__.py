"""Side-by-side benchmark of rnnkernels against PyTorch and Keras.

``rnnkernels bench`` / ``python -m rnnkernels.bench`` times the kernels of
docs/kernel-abi.md, ``torch.nn.LSTM/GRU/RNN`` and ``keras.layers.LSTM/GRU/
SimpleRNN`` on identical inputs (same x, weights and output gradient dy, the
outputs checked against each other), forward-only (inference) and
forward+backward (gradients of ``sum(y * dy)`` with respect to every parameter
and the input). See docs/benchmarks.md for the method and every option.

Fairness rules the code follows:
- One run, interleaved: each repetition runs every contender once, in an order
  rotated per repetition, so drifting machine load hits all systems alike; the
  reported time is the median of the repetitions after ``--warmup`` discarded ones.
- Keras runs in a subprocess (a worker fed over a pipe and timing itself), so
  TensorFlow's thread pools never spin next to the others.
- Every system gets the same thread count (``--threads``); TensorFlow's is
  fixed at start-up, so there is one Keras worker per thread count.
- Work is counted as GEMM flops (forward ``2*N*G*H*(I+H)`` for N valid time
  steps x sequences, backward twice that) and set against a large square GEMM
  timed with numpy in the same run at the same thread count and dtype.
"""
import argparse
import datetime
import json
import os
import signal
import sys
from .._util.argtypes import non_negative_int, positive_int
from .cases import CELLS, DTYPES, SIZES, SYSTEMS
from .machine import default_threads, machine_info, results_name
from .._util.atomic import write_json
from .report import render
from .runner import run_benchmark
from .workers import keras_worker, memory_worker


# ---------------------------------------------------------------------- CLI
def _csv(name, choices=None, convert=str, minimum=None):
    """argparse type: a comma-separated list, each item checked."""
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        values = []
        for item in items:
            try:
                value = convert(item)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {convert.__name__} values, got {item!r}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"expected a subset of {','.join(choices)}, got {item!r}")
            if minimum is not None and value < minimum:
                raise argparse.ArgumentTypeError(f"expected values >= {minimum}, got {item!r}")
            if value not in values:
                values.append(value)
        return values
    return parse


DESCRIPTION = ("Time rnnkernels against PyTorch and Keras on identical inputs "
               "(interleaved, median after warm-up) and print a comparison table.")


def add_arguments(p):
    """The bench options, on ``p`` (the ``rnnkernels bench`` subcommand's parser,
    or :func:`build_parser`'s for ``python -m rnnkernels.bench``)."""
    p.add_argument("--cells", type=_csv("--cells", CELLS), default=list(CELLS), help="rnn,lstm,gru (default: all)")
    p.add_argument("--sizes", type=_csv("--sizes", tuple(SIZES)), default=list(SIZES),
                   help="small,medium,large (default: all): " + "; ".join(f"{n} {s}" for n, s in SIZES.items()))
    p.add_argument("--dtype", type=_csv("--dtype", DTYPES), default=["float32"], help="float32 and/or float64")
    p.add_argument("--threads", type=_csv("--threads", convert=int, minimum=1), default=None,
                   help="thread counts, e.g. 1,2 (default: rnnkernels.get_num_threads())")
    p.add_argument("--systems", type=_csv("--systems", SYSTEMS), default=list(SYSTEMS),
                   help="rnnkernels,torch,keras (default: all that are installed)")
    p.add_argument("--impl", choices=("ops", "reference"), default="ops",
                   help="rnnkernels implementation to time (default: ops)")
    p.add_argument("--repeats", type=positive_int, default=None, help="timed repetitions (default 9, quick 3)")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="discarded repetitions (default 2, quick 1)")
    p.add_argument("--varlen", action="store_true",
                   help="also time variable-length batches (lengths evenly spread over [T/4, T], shuffled)")
    p.add_argument("--memory", action="store_true", help="also measure the peak memory of a training step")
    p.add_argument("--targets", action="store_true",
                   help="evaluate the performance targets (implies --varlen and --memory; exit status 1 on FAIL)")
    p.add_argument("--variants", action="store_true",
                   help="time the cell variants' training steps against the plain cells and the projection "
                        "LSTM against torch's proj_size (alone; with --targets, after the main table)")
    p.add_argument("--dropin", action="store_true",
                   help="alone: time training steps (forward, backward, Adam) of the same model with "
                        "torch.nn's LSTM/GRU/RNN and rnnkernels.torch's, padded and PackedSequence, 1-3 layers, "
                        "bidirectional (and Keras's layers against rnnkernels.keras' where that is installed); "
                        "--cells, --dtype, --threads and --repeats apply")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (smoke test)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the results as JSON (atomically); a folder (such as "
                        "benchmarks/results) gets a file named by the run's date and CPU")
    p.add_argument("--_worker", choices=("keras", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    return p


def build_parser(prog="rnnkernels bench"):
    return add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))


def main(argv=None):
    """Entry point of ``python -m rnnkernels.bench``; returns the exit status."""
    return run(build_parser().parse_args(argv))


def run(options):
    """Run the benchmark ``options`` describe (parsed by :func:`add_arguments`'s
    options); returns the exit status."""
    if options._worker == "keras":
        return keras_worker(options.threads[0] if options.threads else 1)
    if options._worker == "memory":
        print(json.dumps(memory_worker(json.loads(options._spec))))
        return 0
    if options.threads is None:
        options.threads = [default_threads()]
    from .._core.threads import max_threads
    too_many = [t for t in options.threads if t > max_threads()]
    if too_many:  # every system would be asked for them (OpenMP cannot start 100,000 threads)
        print(f"rnnkernels bench: error: --threads {too_many[0]}: expected at most {max_threads()} "
              "(see rnnkernels.max_threads())", file=sys.stderr)
        return 2
    if options.repeats is None:
        options.repeats = 3 if options.quick else 9
    if options.warmup is None:
        options.warmup = 1 if options.quick else 2
    if options.targets:
        options.varlen = options.memory = True
    if getattr(options, "dropin", False):
        return _run_dropin(options)
    if options.json:
        directory = os.path.dirname(os.path.abspath(options.json))
        if not os.path.isdir(directory):  # fail now, not after the whole run
            print(f"rnnkernels bench: error: --json: directory {directory!r} does not exist", file=sys.stderr)
            return 2
    try:
        report = run_benchmark(options)
        print(render(report))
        if options.json:
            path = options.json
            if os.path.isdir(path):
                path = os.path.join(path, results_name(report))
            write_json(path, report)
            print(f"results: {path}")
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under the command line (Terminated)
        terminated = getattr(exc, "signum", None) == signal.SIGTERM
        print(f"rnnkernels bench: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"rnnkernels bench: error: {exc}", file=sys.stderr)
        return 1
    return 1 if any(t["status"] == "FAIL" for t in report["targets"]) else 0


def _run_dropin(options):
    """``--dropin``: the drop-in modules' training steps against the frameworks' own."""
    import importlib
    import importlib.util

    from .report import render_dropin

    rows = []
    kw = {}
    if options.quick:
        kw = dict(layers=(1,), bidirectional=(False,), size=dict(B=4, T=10, I=5, H=8))
    try:
        for name in ("dropin_torch", "dropin_keras"):
            if importlib.util.find_spec(f"{__name__}.{name}") is None:
                continue
            module = importlib.import_module(f"{__name__}.{name}")
            for threads in options.threads:
                for dtype in options.dtype:
                    if name == "dropin_torch":
                        if importlib.util.find_spec("torch") is None:
                            print("rnnkernels bench: --dropin: PyTorch is not installed, skipping torch rows",
                                  file=sys.stderr)
                            continue
                        rows += module.rows(options.repeats, threads, dtype, cells=options.cells,
                                            progress=sys.stderr, **kw)
                    else:
                        if importlib.util.find_spec("keras") is None:
                            print("rnnkernels bench: --dropin: Keras is not installed, skipping Keras rows",
                                  file=sys.stderr)
                            continue
                        quick = dict(epochs=1, steps=1, seed_program=False,
                                     step_cases=tuple(module.STEP_CASES)[:1]) if options.quick else {}
                        rows += [dict(row, framework=row.get("framework", "keras"))
                                 for row in module.rows(options.repeats, threads, dtype, **quick)]
        print(render_dropin(rows))
        if options.json:
            report = {"schema": "rnnkernels-dropin/1",
                      "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      "machine": machine_info(), "rows": rows}
            path = options.json
            if os.path.isdir(path):  # one file per run, as the other benchmarks write
                path = os.path.join(path, results_name(report).replace(".json", "-dropin.json"))
            write_json(path, report)
            print(f"results: {path}")
    except KeyboardInterrupt:
        print("rnnkernels bench: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"rnnkernels bench: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
