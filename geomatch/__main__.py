"""``python -m geomatch``: the command line (see :mod:`geomatch.cli`)."""
import sys

from .cli import main

sys.exit(main())
