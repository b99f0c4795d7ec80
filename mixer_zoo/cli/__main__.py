"""``python -m mixer_zoo.cli`` (what ``torchrun -m mixer_zoo.cli eval ...`` runs)."""
import sys

from . import main

sys.exit(main())
