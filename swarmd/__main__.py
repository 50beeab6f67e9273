"""`python -m swarmd` is the same program as `swarmd`."""

import sys

from swarmd.cli import main

sys.exit(main())
