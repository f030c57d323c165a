"""``python -m ppml.bench``."""

import sys

from ppml.bench.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
