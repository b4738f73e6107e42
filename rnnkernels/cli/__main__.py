"""``python -m rnnkernels.cli``: the ``rnnkernels`` command line."""
import sys

from . import main

sys.exit(main())
