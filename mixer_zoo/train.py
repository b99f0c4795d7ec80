"""``python -m mixer_zoo.train`` (also under torchrun): the same command as ``mixer-zoo train``."""
import sys

from .cli.train import main

if __name__ == "__main__":
    sys.exit(main())
