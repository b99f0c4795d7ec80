"""mixer-zoo: every MLP-Mixer for timm and mmpretrain. Importing it registers the models with timm."""
from .model import Mixer, MixerBlock
from .zoo import ARCHITECTURES, TIMM_EQUIVALENTS

__version__ = "0.1.0"
__all__ = ["Mixer", "MixerBlock", "ARCHITECTURES", "TIMM_EQUIVALENTS", "__version__"]
