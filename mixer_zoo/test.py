"""``python -m mixer_zoo.test`` (also under torchrun): the same command as ``mixer-zoo test``."""
import sys

from .cli.test import main

if __name__ == "__main__":
    sys.exit(main())
