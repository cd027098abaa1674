"""Run the command line as ``python -m torchvat``."""

import sys

from torchvat.cli import main

if __name__ == "__main__":
    sys.exit(main())
