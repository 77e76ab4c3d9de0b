"""`python -m edge.cli` is `gatehouse`."""

import sys

from edge.cli import main

sys.exit(main())
