"""``python -m rnnkernels.bench``: the same as ``rnnkernels bench``."""
import sys

from . import main

sys.exit(main())
