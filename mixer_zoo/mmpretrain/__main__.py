"""``python -m mixer_zoo.mmpretrain [--write|--check|--model-index PATH]``: see ``metafile.main``."""
import sys

from .metafile import main

sys.exit(main())
