"""``python -m geomatch``: the same as the ``geomatch`` command."""
import sys

from .cli import main

sys.exit(main())
