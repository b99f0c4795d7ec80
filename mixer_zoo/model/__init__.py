"""Layer 1: the Mixer itself (one model class, timm's state-dict layout) and the paper's variants as data.

The variants (:mod:`.architectures`) are plain data and load at once; the model (:mod:`.mixer`, which needs
torch) loads when one of its names is first asked for, so that ``mixer-zoo list`` does not wait for torch.
"""
from typing import Any

from .architectures import ARCHITECTURES, TIMM_EQUIVALENTS, closed_form_macs, param_count

_MODEL_NAMES = ("GELU_APPROXIMATIONS", "Mixer", "MixerBlock", "gelu_approximation")


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from . import mixer

        return getattr(mixer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHITECTURES", "TIMM_EQUIVALENTS", "GELU_APPROXIMATIONS", "Mixer", "MixerBlock", "closed_form_macs",
           "gelu_approximation", "param_count"]
