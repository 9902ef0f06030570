"""``python -m magedit``: the command line (see ``magedit.cli``)."""

import sys

from magedit.cli import main

if __name__ == "__main__":
    sys.exit(main())
