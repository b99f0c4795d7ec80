"""PyTorch weight files in timm layout: ``.pth`` (read weights-only, never unpickling objects), ``.safetensors``
and converted folders; an mmpretrain-layout ``.pth`` is renamed on the way in."""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Dict

import torch

from ..util.report import error_summary, first_line
from ..weights.integrity import IntegrityError, verify_safetensors
from .keys import ConversionError, CorruptFileError, PathLike
from .mmpretrain_layout import is_mmpretrain_layout, mmpretrain_to_timm


def check_zip_crcs(path: PathLike) -> None:
    """A zip-format ``.pth`` (what ``torch.save`` writes) against the CRC-32 of each member, which
    ``torch.load`` does not check: a flipped bit would load as a silently different weight."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return  # the legacy (pre-zip) format: torch.load is all there is
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except OSError:
        raise
    except Exception as e:  # zipfile raises many types for a damaged archive
        raise CorruptFileError(f"{path}: damaged zip archive: {error_summary(e)}") from None
    if bad is not None:
        raise CorruptFileError(f"{path}: member {bad!r} fails its zip CRC-32 check: the file is corrupted")


def load_torch_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """A ``.pth`` state dict, read with ``weights_only=True`` (never unpickles arbitrary objects) after its zip
    CRC-32s are checked; mmengine checkpoints (``{"state_dict": ..., "meta": ...}``) and timm ``train.py`` ones
    (``{"state_dict": ..., "args": Namespace(...)}``: an attribute bag, the one class allowed) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    check_zip_crcs(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe pickles
        raise ConversionError(f"{path}: not a loadable weights-only PyTorch checkpoint: {first_line(e)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors")
    return dict(obj)


def load_timm_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """A timm-layout state dict from a converted folder, a ``.safetensors`` file (checked against its content
    record) or a ``.pth`` (timm or mmpretrain layout)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            verify_safetensors(path)  # its content record, when it carries one
        except IntegrityError as e:
            raise CorruptFileError(str(e)) from None
        try:
            return load_file(str(path))
        except Exception as e:
            raise CorruptFileError(f"{path}: not a readable safetensors file: {first_line(e)}") from None
    state_dict = load_torch_state_dict(path)
    if is_mmpretrain_layout(state_dict):
        return mmpretrain_to_timm(state_dict, str(path))
    return state_dict
