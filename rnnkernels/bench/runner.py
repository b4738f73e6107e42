"""One benchmark run: every case timed interleaved across the contenders, results collected."""
import datetime
import sys
import tempfile

import numpy as np


from .cases import GEMM_N, MODES, QUICK_GEMM_N, QUICK_SIZES, SCHEMA, SIZES, case_seed, gemm_flops, make_inputs, plan_cases, tokens_of
from .contenders import Unavailable, available_systems, build_contenders
from .machine import machine_info, measure_gemm_peak
from .targets import evaluate_targets, summary_rows
from .variants import measure_variants
from .workers import KerasWorker, WorkerError, measure_memory


def time_case(contenders, repeats, warmup, progress=None):
    """Set up, then run every contender ``warmup + repeats`` times in both modes,
    round-robin (the order rotates each repetition); fills ``samples`` (ms).

    Each contender's timed runs follow one untimed forward pass of its own.
    A library's OpenMP threads keep spinning for a few milliseconds after its
    call returns, on the cores the next call needs, so whatever runs right
    after PyTorch runs slower (docs/benchmarks.md, "Method").  With the
    rotation alone, one contender still followed another system in most
    repetitions, so the order decided ratios.  The
    settling pass puts every system in its own steady state, as in a training
    loop, where a step follows a step of the same library."""
    outputs = {}
    for c in contenders:
        try:
            outputs[c] = c.setup()
        except Unavailable as exc:
            c.status, c.reason = "unavailable", str(exc)
        except Exception as exc:
            c.status, c.reason = "error", f"setup: {type(exc).__name__}: {exc}"
    _check_outputs(contenders, outputs)
    active = [c for c in contenders if c.status == "ok"]
    for rep in range(warmup + repeats):
        shift = rep % len(active) if active else 0
        for c in active[shift:] + active[:shift]:
            for mode in ("settle",) + MODES:
                if c.status != "ok":
                    break
                try:
                    seconds = c.run("fwd" if mode == "settle" else mode)
                except Exception as exc:
                    c.status, c.reason = "error", f"{mode}: {type(exc).__name__}: {exc}"
                    break
                if rep >= warmup and mode != "settle":
                    c.samples[mode].append(seconds * 1e3)
        if progress is not None:
            progress.update(1)
    for c in contenders:
        try:
            c.close()
        except Exception:
            pass  # a dead worker is reported by the next case's setup


def _check_outputs(contenders, outputs):
    """Max |y - y_rnnkernels| per contender, against the rnnkernels contender
    with the same length semantics and thread count (or any thread count)."""
    for c in outputs:
        twins = [o for o in outputs if o.system == "rnnkernels" and o.uses_lengths == c.uses_lengths]
        twins.sort(key=lambda o: o.threads != c.threads)
        if twins and twins[0] is not c:
            c.max_abs_diff = float(np.max(np.abs(outputs[c] - outputs[twins[0]]), initial=0.0))


def run_benchmark(options):
    """Everything one invocation measures, as a JSON-ready dict."""
    systems, notes = available_systems(options.systems)
    report = {
        "schema": SCHEMA,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "options": {k: v for k, v in vars(options).items()
                    if not k.startswith("_") and k not in ("json", "run", "command")},
        "sizes": {name: size.__dict__ for name, size in (QUICK_SIZES if options.quick else SIZES).items()
                  if name in options.sizes},
        "notes": notes,
        "gemm_peak": [],
        "results": [],
        "memory": [],
    }
    report["variants"] = []
    variants_only = getattr(options, "variants", False) and not options.targets
    cases = [] if variants_only else plan_cases(options)
    all_threads = sorted({t for c in cases for t in c.threads + c.extra_threads})
    gemm_n = QUICK_GEMM_N if options.quick else GEMM_N
    for dtype in options.dtype:
        for threads in all_threads:
            gflops, numpy_gflops, kernel_gflops = measure_gemm_peak(dtype, threads, gemm_n, options.repeats)
            report["gemm_peak"].append({"dtype": dtype, "threads": threads, "n": gemm_n, "gflops": gflops,
                                        "gflops_start": gflops, "numpy_gflops": [numpy_gflops],
                                        "kernel_gflops": [kernel_gflops]})
    keras_workers = {}
    if "keras" in systems:
        for threads in sorted({t for c in cases for t in c.threads}):
            try:
                keras_workers[threads] = worker = KerasWorker(threads)
                report["machine"]["tensorflow"] = worker.info.get("tensorflow")
                report["machine"]["keras"] = worker.info.get("keras")
            except (WorkerError, OSError) as exc:
                notes.append(f"keras: skipped at {threads} thread(s) ({exc})")
    try:
        from tqdm import tqdm
        progress = tqdm(total=len(cases) * (options.warmup + options.repeats), desc="bench",
                        unit="rep", file=sys.stderr, disable=None, leave=False)
    except ImportError:
        progress = None
    try:
        with tempfile.TemporaryDirectory(prefix="rnnkernels-bench-") as exchange_dir:
            for case in cases:
                data = make_inputs(case.cell, case.size, case.dtype,
                                   case_seed(options.seed, case.cell, case.size_name), case.varlen)
                contenders = build_contenders(case, data, systems, options.impl, keras_workers, exchange_dir)
                time_case(contenders, options.repeats, options.warmup, progress)
                report["results"].extend(_result_entries(case, data, contenders))
    finally:
        if progress is not None:
            progress.close()
        for worker in keras_workers.values():
            worker.close()
    # Measured again at the end, the best of the two counting: on a shared
    # host one measurement can fall in a busy spell, and a low peak would
    # flatter every percentage.
    for g in report["gemm_peak"]:
        g["gflops_end"], numpy_gflops, kernel_gflops = measure_gemm_peak(g["dtype"], g["threads"], g["n"],
                                                                         options.repeats)
        g["numpy_gflops"].append(numpy_gflops)
        g["kernel_gflops"].append(kernel_gflops)
        g["gflops"] = max(g["gflops_start"], g["gflops_end"])
    _apply_peaks(report["results"], report["gemm_peak"])
    if options.memory:
        report["memory"] = _memory_entries(options, systems)
    report["rows"] = summary_rows(report)
    report["targets"] = evaluate_targets(report) if options.targets else []
    if getattr(options, "variants", False):
        report["variants"], variant_targets = measure_variants(options, "torch" in systems)
        report["targets"] += variant_targets
    return report


def _apply_peaks(results, gemm_peaks):
    """Percent of the GEMM peak (same dtype and thread count) for every result."""
    for entry in results:
        peak = next((g["gflops"] for g in gemm_peaks
                     if g["dtype"] == entry["dtype"] and g["threads"] == entry["threads"]), None)
        for mode in MODES:
            gflops = entry[f"{mode}_gflops"]
            entry[f"{mode}_pct_peak"] = 100.0 * gflops / peak if gflops and peak else None


def _result_entries(case, data, contenders):
    tokens = tokens_of(data)
    padded_tokens = case.size.T * case.size.B
    entries = []
    for c in contenders:
        entry = {"cell": c.cell, "size": case.size_name, **case.size.__dict__, "dtype": case.dtype,
                 "varlen": case.varlen, "threads": c.threads, "system": c.system, "variant": c.variant,
                 "status": c.status, "reason": c.reason, "tokens": tokens if c.uses_lengths else padded_tokens,
                 "max_abs_diff": c.max_abs_diff}
        for mode in MODES:
            samples = c.samples[mode]
            ms = float(np.median(samples)) if samples and c.status == "ok" else None
            gflops = gemm_flops(c.cell, case.size, mode, entry["tokens"]) / (ms * 1e6) if ms else None
            entry[f"{mode}_ms"] = ms
            # interquartile range over the median: how much to trust the median
            entry[f"{mode}_iqr_pct"] = (100.0 * float(np.subtract(*np.percentile(samples, [75, 25]))) / ms
                                        if ms and len(samples) >= 3 else None)
            entry[f"{mode}_samples_ms"] = [round(s, 6) for s in samples]
            entry[f"{mode}_gflops"] = gflops
        entries.append(entry)
    return entries


def _memory_entries(options, systems):
    sizes = QUICK_SIZES if options.quick else SIZES
    entries = []
    for dtype in options.dtype:
        for cell in options.cells:
            for size_name in options.sizes:
                for system in ("rnnkernels", "torch"):
                    if system not in systems:
                        continue
                    entry = {"cell": cell, "size": size_name, "dtype": dtype, "system": system}
                    try:
                        entry.update(measure_memory(cell, size_name, sizes[size_name], dtype, system,
                                                    options.impl, options.threads[0], options.seed))
                        entry["peak_increase_mib"] = entry["peak_increase_kib"] / 1024.0
                    except WorkerError as exc:
                        entry.update(peak_increase_kib=None, peak_increase_mib=None, error=str(exc))
                    entries.append(entry)
    return entries
