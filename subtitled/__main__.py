"""`python -m subtitled` is the `subtitled` console script."""

import sys

from subtitled.cli import main

sys.exit(main())
