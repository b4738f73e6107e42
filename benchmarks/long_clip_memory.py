"""Peak memory of `rnnkernels train` on a folder of short clips, with and without one long
recording among them (issue 22: every batch holding the long clip was padded to it).

Each run is a fresh `python -m rnnkernels train` child; its peak resident memory is read
with resource.getrusage(RUSAGE_CHILDREN) after it exits (one child per measuring process,
so the figure is that run's own).  Usage:

    python benchmarks/long_clip_memory.py [--minutes 10] [--epochs 1] [--extra=--bucket] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def _measure(folder, epochs, extra):
    """One training run in a child of a fresh measuring process: (peak RSS MiB, seconds, status)."""
    code = f"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run([sys.executable, "-m", "rnnkernels", "train", "--data", {folder!r}, "--epochs", "{epochs}",
                    "--threads", "1", "--quiet", "--report", {os.path.join(folder, "..", "r.json")!r}] + {extra!r},
                   capture_output=True, text=True)
print(json.dumps({{"maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t, "status": p.returncode, "stderr": p.stderr[-500:]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                             [os.path.join(HERE, "..")] + [os.environ.get("PYTHONPATH", "")])))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with open(os.path.join(folder, "..", "r.json")) as fh:
        report = json.load(fh)
    result["test_accuracy"] = report["test_accuracy"]
    return result


def main():
    from helpers.audio import tone_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--takes", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--extra", default="", help="more train options, e.g. --bucket")
    ap.add_argument("--json")
    args = ap.parse_args()
    extra = args.extra.split()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        from pathlib import Path
        short = tone_folder(Path(root) / "short" / "data", seconds=args.seconds, takes=args.takes)
        long = tone_folder(Path(root) / "long" / "data", seconds=args.seconds, takes=args.takes,
                           long_clip_seconds=60 * args.minutes)
        for name, folder in (("short clips only", short), (f"+ one {args.minutes:g}-minute clip", long)):
            r = _measure(str(folder), args.epochs, extra)
            r["data"] = name
            rows.append(r)
            print(f"{name:28s} peak RSS {r['maxrss_mib']:8.1f} MiB  {r['seconds']:6.1f} s  "
                  f"exit {r['status']}  test accuracy {r['test_accuracy']:.3f}", flush=True)
    ratio = rows[1]["maxrss_mib"] / rows[0]["maxrss_mib"]
    print(f"ratio (with / without the long clip): {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "ratio": ratio, "options": vars(args),
                       "command": " ".join(sys.argv)}, fh, indent=1)


if __name__ == "__main__":
    main()
