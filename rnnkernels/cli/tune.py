"""``rnnkernels tune``: measure this machine's tuning plan and keep it in the
user cache directory, where every later process on this CPU finds it
(rnnkernels/_core/tuning.py says what a plan holds and where one comes from).
Nothing else ever measures: without this command the plan is CPUID's defaults."""
import json
import os

from .common import CommandError, apply_threads, check_writable


def add_parser(sub):
    p = sub.add_parser("tune", help="measure this machine's kernel plan (build, GEMM blocking, tiles) and keep it",
                       description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--show", action="store_true", help="print the plan in use and where it comes from; measure nothing")
    what.add_argument("--reset", action="store_true", help="delete this CPU's saved plan (back to the CPUID defaults)")
    p.add_argument("--output", metavar="FILE",
                   help="write the plan to FILE instead of the user cache (for RNNKERNELS_PLAN=FILE)")
    p.add_argument("--dry-run", action="store_true", help="measure and print, save nothing")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per candidate (median; default 7)")
    p.add_argument("--threads", type=int, help="kernel threads to tune for (default: the configured count)")
    p.set_defaults(run=run)
    return p


def run(args):
    from .._core import tuning

    if args.show:
        plan = tuning.current()
        print(tuning.describe(plan))
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    path = args.output or tuning.cache_path()
    if args.reset:
        if os.path.exists(path):
            os.remove(path)
            print(f"removed {path}: the CPUID defaults apply")
        else:
            print(f"no saved plan at {path}: the CPUID defaults apply")
        return 0
    if args.repeats < 3:
        raise CommandError(f"--repeats: expected at least 3 (a median of fewer is noise), got {args.repeats}")
    if not args.dry_run and args.output:
        check_writable(args.output, "--output")
    if os.environ.get(tuning.ENV):
        raise CommandError(f"{tuning.ENV} is set ({os.environ[tuning.ENV]!r}): unset it to tune, "
                           f"the plan it names would override the tuned one")
    apply_threads(args)
    from ..bench.tune import tune

    print(f"tuning on {tuning.describe(tuning.defaults())}")
    plan, _ = tune(repeats=args.repeats)
    print(f"plan: {tuning.describe(plan)}")
    if args.dry_run:
        return 0
    saved = tuning.save(plan, path)
    print(f"saved {saved}" + ("" if args.output else " (used by every rnnkernels process on this CPU)"))
    return 0
