"""mixer-zoo: every MLP-Mixer for timm and mmpretrain. Importing it registers the models with timm.

The package is layered; each layer imports only the ones below it (tests/test_layers.py checks this):
util -> model -> weights -> zoo -> formats (+ reference) -> mmpretrain -> tools -> cli.
"""
from ._version import __version__
from .model import ARCHITECTURES, TIMM_EQUIVALENTS, Mixer, MixerBlock
from . import zoo as _zoo  # noqa: F401,E402  (registers the models with timm)

__all__ = ["Mixer", "MixerBlock", "ARCHITECTURES", "TIMM_EQUIVALENTS", "__version__"]
