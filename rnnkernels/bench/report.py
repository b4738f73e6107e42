"""The run rendered as tables, and as JSON (schema ``rnnkernels-bench/2``)."""



from .cases import CHECK_TOLERANCE, MODES, MODE_TITLES, NOISY_IQR_PCT, SYSTEMS, Size
from .machine import _cpu_line
from .variants import render_variants


# ----------------------------------------------------------------- printing
def _fmt(value, spec=".2f", suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(header, rows, groups=None, left=4):
    """Plain-text table, the first ``left`` columns left-aligned, the rest right.
    ``groups`` is an optional row of titles, each spanning the columns up to
    the next title (widened where a title is longer than its span)."""
    width = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    if groups:
        starts = [i for i, title in enumerate(groups) if title] + [len(groups)]
        for start, end in zip(starts, starts[1:]):
            span = sum(width[start:end]) + 2 * (end - start - 1)
            width[end - 1] += max(0, len(groups[start]) + 1 - span)
        lines.append("".join(str(title).ljust(w + 2) for title, w in zip(groups, width)).rstrip())
    cells = lambda r: "  ".join(str(v).ljust(w) if i < left else str(v).rjust(w)
                                for i, (v, w) in enumerate(zip(r, width))).rstrip()
    lines += [cells(header), "  ".join("-" * w for w in width)] + [cells(r) for r in rows]
    return "\n".join(lines)


def render(report):
    """The human-readable report."""
    out = []
    m = report["machine"]
    out.append(f"rnnkernels bench  {report['created']}  impl={report['options']['impl']}")
    out.append(f"machine: {_cpu_line(m)}, {m['cpus']} CPUs; python {m['python']}, "
               f"numpy {m['numpy']}, torch {m.get('torch', '-')}, tensorflow {m.get('tensorflow', '-')}")
    if m.get("plan"):
        out.append(f"kernels: {m['plan']}")
    out.append("sizes: " + "; ".join(f"{n} = {Size(**s)}" for n, s in report["sizes"].items()))
    for g in report["gemm_peak"]:
        both = (f"; best of {g['gflops_start']:.1f} before and {g['gflops_end']:.1f} after the cases"
                if "gflops_end" in g else "")
        which = ""
        if g.get("numpy_gflops") and g.get("kernel_gflops"):
            which = (f"; numpy's BLAS {max(g['numpy_gflops']):.1f}, "
                     f"rnnkernels' GEMM {max(g['kernel_gflops']):.1f}")
        out.append(f"GEMM peak: {g['gflops']:.1f} GFLOP/s ({g['dtype']} {g['n']}x{g['n']}, "
                   f"{g['threads']} thread{'s' if g['threads'] > 1 else ''}{both}{which})")
    out.extend(f"note: {n}" for n in report["notes"])
    rows = [r for r in report["rows"] if not r["varlen"]]
    if rows:
        labels = [s for s in SYSTEMS if any(s in r["ms"] for r in rows)]
        head1 = ["", "", "", ""] + [MODE_TITLES[mode] if i == 0 else "" for mode in MODES
                                    for i in range(len(labels))] + ["vs best peer", "", "rnnkernels f+b", ""]
        head2 = ["cell", "size", "dtype", "thr"] + labels * 2 + ["fwd", "f+b", "GFLOP/s", "%peak"]
        body = [[r["cell"], r["size"], r["dtype"], r["threads"]]
                + [_fmt(r["ms"].get(s, {}).get(mode)) for mode in MODES for s in labels]
                + [_fmt(r["ratio"][mode], ".2f", "x") for mode in MODES]
                + [_fmt(r.get("gflops", {}).get("fwdbwd"), ".1f"), _fmt(r.get("pct_peak", {}).get("fwdbwd"), ".0f", "%")]
                for r in rows]
        out += ["", format_table(head2, body, head1)]
    vrows = [r for r in report["rows"] if r["varlen"]]
    if vrows:
        labels = ["rnnkernels varlen", "rnnkernels", "torch packed"]
        head1 = ["variable length", "", "", ""] + [MODE_TITLES[mode] if i == 0 else "" for mode in MODES
                                                   for i in range(3)] + ["varlen / padded", "", "work", "vs torch"]
        head2 = ["cell", "size", "dtype", "thr"] + ["varlen", "padded", "torch"] * 2 + ["fwd", "f+b", "share", "f+b"]
        body = [[r["cell"], r["size"], r["dtype"], r["threads"]]
                + [_fmt(r["ms"].get(s, {}).get(mode)) for mode in MODES for s in labels]
                + [_fmt(r["varlen_over_padded"][mode], ".2f", "x") for mode in MODES]
                + [_fmt(r.get("work_share"), ".3f"), _fmt(r["ratio"]["fwdbwd"], ".2f", "x")] for r in vrows]
        out += ["", format_table(head2, body, head1)]
    scaling = _thread_scaling(rows)
    if scaling:
        out += ["", format_table(["thread scaling", "size", "dtype", "", "system", "threads", "f+b ms",
                                               "speed-up"], scaling)]
    if report["memory"]:
        body = []
        for m_ in report["memory"]:
            body.append([m_["cell"], m_["size"], m_["dtype"], "", m_["system"],
                         _fmt(m_.get("peak_increase_mib"), ".1f"), m_.get("method") or m_.get("error", "")])
        out += ["", format_table(["memory", "size", "dtype", "", "system", "peak MiB", "method"], body)]
    problems = [r for r in report["results"] if r["status"] != "ok"]
    for r in problems:
        out.append(f"{r['status']}: {r['system']} {r['variant']} {r['cell']}/{r['size']}/{r['dtype']}/"
                   f"{r['threads']}t: {r['reason']}")
    for r in report["results"]:
        if r["max_abs_diff"] is not None and r["max_abs_diff"] > CHECK_TOLERANCE[r["dtype"]]:
            out.append(f"WARNING: {r['system']} {r['cell']}/{r['size']}/{r['dtype']} output differs from "
                       f"rnnkernels by {r['max_abs_diff']:.2e}: not the same computation")
    spreads = [r[f"{mode}_iqr_pct"] for r in report["results"] for mode in MODES
               if r.get(f"{mode}_iqr_pct") is not None]
    noisy = sum(v > NOISY_IQR_PCT for v in spreads)
    if noisy:
        out.append(f"note: {noisy} of {len(spreads)} medians have an interquartile range above "
                   f"{NOISY_IQR_PCT}% of the median: the machine was busy; rerun when it is quiet")
    out.extend(render_variants(report.get("variants", []), format_table))
    if report["targets"]:
        out.append("")
        if report["options"]["quick"]:
            out.append("targets (--quick sizes: the verdicts below exercise the code, they mean nothing)")
        body = [[t["status"], t["name"], t["goal"], _fmt(t["measured"], ".3f"), t["detail"]]
                for t in report["targets"]]
        out.append(format_table(["status", "target", "goal", "measured", "detail"], body, left=5))
    return "\n".join(out)


def _thread_scaling(rows):
    """Speed-up of each system's fwd+bwd relative to its fewest-thread run,
    for cases measured at more than one thread count."""
    body = []
    groups = {}
    for r in rows:
        groups.setdefault((r["cell"], r["size"], r["dtype"]), []).append(r)
    for (cell, size, dtype), group in groups.items():
        if len(group) < 2:
            continue
        for system in SYSTEMS:
            timed = sorted((r["threads"], r["ms"][system]["fwdbwd"]) for r in group
                           if r["ms"].get(system, {}).get("fwdbwd"))
            for threads, ms in timed[1:] if len(timed) > 1 else []:
                body.append([cell, size, dtype, "", system, f"{timed[0][0]}->{threads}", _fmt(ms),
                             _fmt(timed[0][1] / ms, ".2f", "x")])
    return body


# ------------------------------------------------------- drop-in training steps
_DROPIN_COLUMNS = (("framework", "framework", None), ("name", "case", None), ("size", "size", None),
                   ("cell", "cell", None), ("layers", "layers", None), ("bidirectional", "bidir", None),
                   ("input", "input", None), ("dtype", "dtype", None), ("threads", "thr", None),
                   ("peer", "peer", None), ("peer_ms", "peer ms", ".2f"), ("ours_ms", "ours ms", ".2f"),
                   ("ratio", "ours/peer", ".2f"), ("peer_cpu_ms", "peer cpu ms", ".2f"),
                   ("ours_cpu_ms", "ours cpu ms", ".2f"), ("cpu_ratio", "cpu ours/peer", ".2f"),
                   ("peer_test_accuracy", "peer acc", ".4f"), ("ours_test_accuracy", "ours acc", ".4f"),
                   ("max_abs_diff", "max|diff|", ".1e"))
_DROPIN_LEFT = ("framework", "name", "size", "cell", "layers", "bidirectional", "input", "dtype")
_RATIOS = ("ratio", "cpu_ratio")


def _dropin_cell(row, key, spec):
    v = row.get(key)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):  # a size: {"B": 32, "T": 100, ...}
        return " ".join(f"{k}{x}" for k, x in v.items())
    if isinstance(v, float) and spec is None:
        spec = ".3g"
    return f"{v:{spec}}" + ("x" if key in _RATIOS else "") if spec else str(v)


def render_dropin(rows):
    """The drop-in tables (``rnnkernels bench --dropin``): one per framework,
    one row per case of :mod:`rnnkernels.bench.dropin_torch` / ``dropin_keras``
    (medians of training steps, the ratio ours / the framework's own layer).
    Scalar keys a framework's rows have beyond the known ones are shown in
    extra columns; lists and per-run records stay in the JSON."""
    if not rows:
        return "drop-in: no rows"
    known = [k for k, _, _ in _DROPIN_COLUMNS]
    specs = {k: (title, spec) for k, title, spec in _DROPIN_COLUMNS}
    frameworks = list(dict.fromkeys(r.get("framework", "-") for r in rows))
    tables = []
    for framework in frameworks:
        mine = [r for r in rows if r.get("framework", "-") == framework]
        keys = [k for k in known if any(k in r for r in mine)]
        extra = []
        for r in mine:
            extra += [k for k, v in r.items() if k not in keys and k not in extra
                      and not isinstance(v, (list, tuple, dict))]
        header = [specs.get(k, (k, None))[0] for k in keys + extra]
        body = [[_dropin_cell(r, k, specs.get(k, (k, None))[1]) for k in keys + extra] for r in mine]
        left = sum(1 for k in keys if k in _DROPIN_LEFT)
        tables.append(format_table(header, body, left=left))
    return "drop-in training steps (forward, loss, backward, optimizer step; medians, interleaved)\n" + \
        "\n\n".join(tables)
