"""How many threads the batch-row split's time loop should take: forward+backward
training calls (float32, T=100, I=40) under the plan's rule (``min_lane_flops`` a
thread of each step, ``min_merged_flops`` of the loop) against the unit split's
rule applied to the row split too (``min_lane_flops = min_step_flops``, which is
what the row split used before it had its own), in alternating child processes
(never two configurations in one process; the machine's noise moves both alike).

    python benchmarks/time_loop_threads.py [--pairs 7] [--calls 100]

Prints, per shape, the time-loop threads each rule gives and the median over the
pairs of (plan's rule / unit split's rule); 1.00 where both give the same count.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = [("rnn", 4, 128), ("rnn", 8, 128), ("rnn", 16, 128), ("rnn", 32, 64),
          ("lstm", 8, 64), ("lstm", 16, 64), ("gru", 8, 128), ("gru", 16, 64)]

CHILD = r'''
import json, statistics, sys, time, types
from rnnkernels import ops
from rnnkernels._core import threads, tuning
from rnnkernels.bench.cases import make_inputs
cell, B, H, calls, rule = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if rule == "unit":
    tuning.use(tuning.current().replace(min_lane_flops=tuning.current().min_step_flops))
d = make_inputs(cell, types.SimpleNamespace(T=100, B=B, I=40, H=H), "float32", seed=0)
fwd, bwd = getattr(ops, cell + "_forward"), getattr(ops, cell + "_backward")
teams = []
for i in range(5 + calls):
    t0 = time.perf_counter()
    out = fwd(d["x"], d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"], training=True)
    teams.append(threads.usage()["last_call"]["time_loop_threads"])
    bwd(out[-1], d["dy"])
    teams.append(threads.usage()["last_call"]["time_loop_threads"])
    if i == 4:
        times = []
    elif i > 4:
        times.append(time.perf_counter() - t0)
print(json.dumps({"ms": 1e3 * statistics.median(times), "forward": teams[-2], "backward": teams[-1]}))
'''


def child(cell, B, H, calls, rule):
    out = subprocess.run([sys.executable, "-c", CHILD, cell, str(B), str(H), str(calls), rule],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"$ python benchmarks/time_loop_threads.py --pairs {args.pairs} --calls {args.calls}")
    print("cell  B   H    threads fwd/bwd (plan's rule, unit split's)   plan's / unit split's, median of pairs")
    for cell, B, H in SHAPES:
        ratios = []
        for _ in range(args.pairs):
            ours, unit = child(cell, B, H, args.calls, "plan"), child(cell, B, H, args.calls, "unit")
            ratios.append(ours["ms"] / unit["ms"])
        print(f"{cell:<5} {B:<3} {H:<4} {ours['forward']}/{ours['backward']}, {unit['forward']}/{unit['backward']}"
              f"{'':30} {statistics.median(ratios):.2f}x  ({' '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
