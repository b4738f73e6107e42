"""``python -m rnnkernels``: the same command line as the ``rnnkernels`` console script."""
import sys

from .cli import main

sys.exit(main())
