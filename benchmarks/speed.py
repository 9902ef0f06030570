"""Speed and memory benchmark (see ``magedit/speed.py`` or ``--help``): prints JSON lines."""

import sys

from magedit.speed import main

if __name__ == "__main__":
    sys.exit(main())
