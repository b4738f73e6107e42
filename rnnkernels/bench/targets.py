"""The performance targets, evaluated on one run's results."""


from .cases import CELLS, DTYPES, MODES, PEERS, SIZES, geometric_mean


# ------------------------------------------------------------------ analysis
def summary_rows(report):
    """One row per cell x size x dtype x varlen x threads: median ms per
    contender label and mode, the rnnkernels/best-peer ratios, and
    rnnkernels' GFLOP/s and percent of the GEMM peak."""
    rows = {}
    for r in report["results"]:
        key = (r["cell"], r["size"], r["dtype"], r["varlen"], r["threads"])
        row = rows.setdefault(key, {"cell": r["cell"], "size": r["size"], "dtype": r["dtype"],
                                    "varlen": r["varlen"], "threads": r["threads"], "ms": {}})
        label = r["system"] if r["variant"] == "padded" else f"{r['system']} {r['variant']}"
        row["ms"][label] = {mode: r[f"{mode}_ms"] for mode in MODES}
        if r.get("tokens"):
            row.setdefault("tokens", {})[label] = r["tokens"]
        if r["system"] == "rnnkernels" and r["variant"] in ("padded", "varlen") and \
                (r["variant"] == "varlen") == r["varlen"]:
            row["gflops"] = {mode: r[f"{mode}_gflops"] for mode in MODES}
            row["pct_peak"] = {mode: r[f"{mode}_pct_peak"] for mode in MODES}
    for row in rows.values():
        ours_label = "rnnkernels varlen" if row["varlen"] else "rnnkernels"
        ours = row["ms"].get(ours_label, {})
        peers = {k: v for k, v in row["ms"].items() if k.split()[0] in PEERS}
        row["best_peer"], row["ratio"] = {}, {}
        for mode in MODES:
            timed = {k: v[mode] for k, v in peers.items() if v[mode]}
            best = min(timed, key=timed.get) if timed else None
            row["best_peer"][mode] = best
            row["ratio"][mode] = ours[mode] / timed[best] if best and ours.get(mode) else None
        if row["varlen"]:
            padded = row["ms"].get("rnnkernels", {})
            row["varlen_over_padded"] = {mode: ours[mode] / padded[mode] if ours.get(mode) and padded.get(mode)
                                         else None for mode in MODES}
            tokens = row.get("tokens", {})
            # The ratio that work alone would give: sum(lengths) / (T*B).
            row["work_share"] = (tokens[ours_label] / tokens["rnnkernels"]
                                 if ours_label in tokens and "rnnkernels" in tokens else None)
    return sorted(rows.values(), key=lambda r: (r["varlen"], DTYPES.index(r["dtype"]), CELLS.index(r["cell"]),
                                                list(SIZES).index(r["size"]), r["threads"]))


def _target(name, goal, measured, ok, detail=""):
    status = "SKIP" if measured is None else ("PASS" if ok else "FAIL")
    return {"name": name, "goal": goal, "measured": measured, "status": status, "detail": detail}


def evaluate_targets(report):
    """The issue's targets, each PASS/FAIL with the measured value (SKIP when
    this run did not measure it). Evaluated on float32 at the default thread
    count (or the largest one measured)."""
    rows = [r for r in report["rows"] if r["dtype"] == "float32"]
    thread_counts = sorted({r["threads"] for r in rows if not r["varlen"] and r["ratio"]["fwdbwd"]})
    default = report["machine"].get("default_threads")
    main_threads = default if default in thread_counts else (thread_counts[-1] if thread_counts else None)
    main = [r for r in rows if not r["varlen"] and r["threads"] == main_threads]
    targets = []

    ratios = {(r["cell"], r["size"]): r["ratio"] for r in main}
    fb = {k: v["fwdbwd"] for k, v in ratios.items() if v["fwdbwd"]}
    worst = max(fb, key=fb.get) if fb else None
    over = [f"{c}/{s} {v:.2f}x" for (c, s), v in sorted(fb.items()) if v > 0.8]
    targets.append(_target("fwd+bwd vs best peer, every cell x size", "<= 0.80x",
                           fb[worst] if worst else None, bool(fb) and not over,
                           f"worst {worst[0]}/{worst[1]} of {len(fb)} cases" + (f"; over: {', '.join(over)}"
                                                                                 if over else "") if worst else
                           "no case timed against a peer"))
    targets.append(_target("fwd+bwd vs best peer, geometric mean", "<= 0.60x",
                           geometric_mean(fb.values()) if fb else None,
                           bool(fb) and geometric_mean(fb.values()) <= 0.6, f"over {len(fb)} cases"))
    fw = {k: v["fwd"] for k, v in ratios.items() if v["fwd"]}
    worst_f = max(fw, key=fw.get) if fw else None
    behind = [f"{c}/{s} {v:.2f}x" for (c, s), v in sorted(fw.items()) if v > 1.0]
    targets.append(_target("forward-only vs best peer, every cell x size", "<= 1.00x",
                           fw[worst_f] if worst_f else None, bool(fw) and not behind,
                           (f"worst {worst_f[0]}/{worst_f[1]} of {len(fw)} cases"
                            + (f"; behind: {', '.join(behind)}" if behind else "")) if worst_f else ""))
    targets.append(_target("forward-only vs best peer, geometric mean", "<= 0.70x",
                           geometric_mean(fw.values()) if fw else None,
                           bool(fw) and geometric_mean(fw.values()) <= 0.7, f"over {len(fw)} cases"))

    large = next((r for r in main if (r["cell"], r["size"]) == ("lstm", "large")), None)
    pct = large["pct_peak"]["fwdbwd"] if large and large.get("pct_peak") else None
    targets.append(_target("large LSTM fwd+bwd, share of GEMM peak", ">= 85%", pct,
                           pct is not None and pct >= 85.0, "percent of the GEMM peak in this run"))

    by_threads = {r["threads"]: r["ms"].get("rnnkernels", {}).get("fwdbwd") for r in rows
                  if not r["varlen"] and (r["cell"], r["size"]) == ("lstm", "medium")}
    speedup = by_threads[1] / by_threads[2] if by_threads.get(1) and by_threads.get(2) else None
    targets.append(_target("medium LSTM fwd+bwd, 2 threads vs 1", ">= 1.70x", speedup,
                           speedup is not None and speedup >= 1.7, "time(1 thread) / time(2 threads)"))

    varlen = {(r["cell"], r["size"]): r["varlen_over_padded"]["fwdbwd"] for r in rows
              if r["varlen"] and r["threads"] == main_threads and r["varlen_over_padded"]["fwdbwd"]}
    worst_v = max(varlen, key=varlen.get) if varlen else None
    targets.append(_target("variable-length fwd+bwd vs fully padded", "<= 0.70x",
                           varlen[worst_v] if worst_v else None, bool(varlen) and max(varlen.values()) <= 0.7,
                           f"worst {worst_v[0]}/{worst_v[1]} of {len(varlen)} cases" if worst_v else ""))

    mem = {}
    for m in report["memory"]:
        if m["dtype"] == "float32" and m.get("peak_increase_kib") is not None:
            mem.setdefault((m["cell"], m["size"]), {})[m["system"]] = m["peak_increase_kib"]
    mem_ratio = {k: v["rnnkernels"] / max(v["torch"], 1) for k, v in mem.items() if len(v) == 2}
    worst_m = max(mem_ratio, key=mem_ratio.get) if mem_ratio else None
    targets.append(_target("training-step peak memory vs torch", "<= 1.00x",
                           mem_ratio[worst_m] if worst_m else None,
                           bool(mem_ratio) and max(mem_ratio.values()) <= 1.0,
                           f"worst {worst_m[0]}/{worst_m[1]} of {len(mem_ratio)} cases" if worst_m else ""))
    return targets
