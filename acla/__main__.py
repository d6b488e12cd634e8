"""``python -m acla``: see ``acla.cli``."""

import sys

from acla.cli import main

sys.exit(main())
