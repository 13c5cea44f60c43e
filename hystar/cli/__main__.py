"""`python -m hystar.cli`."""

import sys

from . import main

sys.exit(main())
