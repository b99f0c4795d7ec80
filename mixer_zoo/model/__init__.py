"""Layer 1: the Mixer itself (one model class, timm's state-dict layout) and the paper's variants as data."""
from .architectures import ARCHITECTURES, TIMM_EQUIVALENTS, closed_form_macs, param_count
from .mixer import GELU_APPROXIMATIONS, Mixer, MixerBlock, gelu_approximation

__all__ = ["ARCHITECTURES", "TIMM_EQUIVALENTS", "GELU_APPROXIMATIONS", "Mixer", "MixerBlock", "closed_form_macs",
           "gelu_approximation", "param_count"]
