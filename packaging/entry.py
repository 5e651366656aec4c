"""Entry point of the frozen app (PyInstaller)."""

import sys

from neurolens.cli import main

if __name__ == "__main__":
    sys.exit(main())
