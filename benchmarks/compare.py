"""The comparison runner, from a source checkout: ``python3 benchmarks/compare.py --help``.

A thin wrapper around :func:`rnnkernels.bench.main` (also ``rnnkernels bench``
and ``python -m rnnkernels.bench``); see docs/benchmarks.md.
"""
import os
import sys

if __name__ == "__main__":
    # Run as a script, sys.path[0] is benchmarks/: make the checkout's package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rnnkernels.bench import main
    sys.exit(main())
