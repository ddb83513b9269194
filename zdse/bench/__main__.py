"""``python -m zdse.bench``: the same as ``zdse-bench``."""

import sys

from zdse.bench.cli import main

sys.exit(main())
