"""``python -m adabench`` (and ``torchrun -m adabench compare ...``): the ``adabench`` command line."""

import sys

from adabench.cli import main

sys.exit(main())
