"""PyTorch weight files in timm layout: ``.pth`` (read weights-only, never unpickling objects), ``.safetensors``
and converted folders; an mmpretrain-layout ``.pth`` is renamed on the way in."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from ..util.report import first_line
from .keys import ConversionError, PathLike
from .mmpretrain_layout import is_mmpretrain_layout, mmpretrain_to_timm


def load_torch_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """A ``.pth`` state dict, read with ``weights_only=True`` (never unpickles arbitrary objects); mmengine
    checkpoints (``{"state_dict": ..., "meta": ...}``) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe pickles
        raise ConversionError(f"{path}: not a loadable weights-only PyTorch checkpoint: {first_line(e)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors")
    return dict(obj)


def load_timm_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """A timm-layout state dict from a converted folder, a ``.safetensors`` file or a ``.pth`` (timm or
    mmpretrain layout)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file: {e}") from None
    state_dict = load_torch_state_dict(path)
    if is_mmpretrain_layout(state_dict):
        return mmpretrain_to_timm(state_dict, str(path))
    return state_dict
