"""``mixer-zoo eval``: ImageNet top-1 / top-5 of a weights tag, with the tag's own preprocessing; and CIFAR-10
top-1 / top-5 of a CIFAR tag or converted folder on a ``cifar-10-batches-py`` test split (what the MindSpore
release's ``eval.py`` reports).

The validation set is either a class-per-folder tree named by WordNet ids (``n01440764/…``) or a flat
folder of images plus a label file. Labels are indices into the tag's label set (timm's synset lists),
so a subset of the classes still scores against the right logits. Launched with ``torchrun``, each
process scores its own share of the images and the counts are summed.
"""
from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..util.hardware import hardware_name, resolve_device
from ..weights.manifest import ManifestError, get_entry
from ..zoo import pretrained_cfg_from_entry
from .bench import DTYPES, counted_macs

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
WNID = re.compile(r"^n\d{8}$")
LABEL_SET_SYNSETS = {"imagenet-1k": "imagenet-1k", "imagenet-21k": "imagenet-21k-goog",
                     "imagenet-21k-p": "imagenet-21k-miil"}
"""Manifest ``label_set`` -> timm's ``ImageNetInfo`` subset whose order the logits follow."""

Sample = Tuple[Union[Path, np.ndarray], int]
"""An image file, or an image already decoded (HWC uint8 RGB, as CIFAR's batches hold them), and its label."""


class ValidationSetError(ValueError):
    """The validation directory or label file is missing or not in a form this module reads."""


def class_index(label_set: str) -> Dict[str, int]:
    """WordNet id -> logit index for a manifest label set."""
    from timm.data import ImageNetInfo

    if label_set not in LABEL_SET_SYNSETS:
        raise ValidationSetError(f"no WordNet-id list for label set {label_set!r}; "
                                 f"known: {', '.join(LABEL_SET_SYNSETS)}")
    return {wnid: i for i, wnid in enumerate(ImageNetInfo(LABEL_SET_SYNSETS[label_set]).label_names())}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def class_folder_samples(root: Path, wnid_to_index: Dict[str, int]) -> List[Sample]:
    """``root/<wnid>/<image>`` -> (path, label), sorted for a reproducible order."""
    samples: List[Sample] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in wnid_to_index:
            what = "not a WordNet id" if not WNID.match(folder.name) else "not a class of this label set"
            raise ValidationSetError(f"{folder}: class folder name {folder.name!r} is {what}")
        samples.extend((p, wnid_to_index[folder.name]) for p in sorted(folder.iterdir()) if _is_image(p))
    return samples


def label_file_samples(root: Path, label_file: Path, wnid_to_index: Dict[str, int],
                       num_classes: int) -> List[Sample]:
    """A flat folder plus a label file of ``<image> <label>`` lines (space, tab or comma separated).

    ``<image>`` may omit its extension (Kaggle's ``LOC_val_solution.csv``); ``<label>`` is a WordNet id
    or a 0-based logit index; only the first token after the image name is read. One header line
    (a label that is neither) is skipped.
    """
    if not label_file.is_file():
        raise ValidationSetError(f"{label_file}: label file not found")
    by_stem = {}
    for p in root.iterdir():
        if _is_image(p):
            by_stem[p.name] = p
            by_stem.setdefault(p.stem, p)
    samples: List[Sample] = []
    first = True
    for lineno, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        is_first, first = first, False
        fields = re.split(r"[\s,]+", line.strip())
        if len(fields) < 2:
            raise ValidationSetError(f"{label_file}:{lineno}: expected '<image> <label>', got {line.strip()!r}")
        name, label = fields[0], fields[1]
        if WNID.match(label):
            if label not in wnid_to_index:
                raise ValidationSetError(f"{label_file}:{lineno}: {label} is not a class of this label set")
            index = wnid_to_index[label]
        elif label.isdigit():
            index = int(label)
            if index >= num_classes:
                raise ValidationSetError(
                    f"{label_file}:{lineno}: label {index} is out of range for {num_classes} classes")
        elif is_first:
            continue  # a header such as "ImageId,PredictionString"
        else:
            raise ValidationSetError(
                f"{label_file}:{lineno}: label {label!r} is neither a WordNet id nor a class index")
        if name not in by_stem:
            raise ValidationSetError(f"{label_file}:{lineno}: image {name!r} not found in {root}")
        samples.append((by_stem[name], index))
    return samples


def validation_samples(val_dir: str, label_set: str = "imagenet-1k", label_file: Optional[str] = None,
                       num_classes: int = 1000) -> List[Sample]:
    """Every (image, label) of a validation directory, or a one-line error saying what is wrong."""
    root = Path(val_dir)
    if not root.exists():
        raise ValidationSetError(f"{root}: validation directory not found")
    if not root.is_dir():
        raise ValidationSetError(f"{root}: not a directory")
    wnid_to_index = class_index(label_set)
    if label_file:
        samples = label_file_samples(root, Path(label_file), wnid_to_index, num_classes)
    else:
        if any(_is_image(p) for p in root.iterdir()) and not any(p.is_dir() for p in root.iterdir()):
            raise ValidationSetError(f"{root}: a flat folder of images needs --label-file "
                                     "(or use one sub-folder per WordNet id)")
        samples = class_folder_samples(root, wnid_to_index)
    if not samples:
        raise ValidationSetError(f"{root}: no images found (expected {'/'.join(IMAGE_EXTENSIONS[:3])} files "
                                 "in one sub-folder per WordNet id, or a flat folder plus --label-file)")
    return samples


class ImageList(Dataset):
    """(path, label) pairs -> (transformed RGB tensor, label); a broken image names its file."""

    def __init__(self, samples: Sequence[Sample], transform: Any) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        if isinstance(path, np.ndarray):
            return self.transform(Image.fromarray(np.ascontiguousarray(path))), label
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB")), label
        except UnidentifiedImageError:
            raise ValidationSetError(f"{path}: cannot read image: not an image format PIL knows") from None
        except OSError as e:
            raise ValidationSetError(f"{path}: cannot read image: {e.strerror or e}") from None


def data_config_for(entry: Dict[str, Any]) -> Dict[str, Any]:
    """timm's eval data config (size, crop_pct, interpolation, mean/std) for a manifest entry."""
    from timm.data import resolve_data_config

    return resolve_data_config(pretrained_cfg=pretrained_cfg_from_entry(entry))


def _distributed() -> Tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group) under torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    return dist.get_rank(), dist.get_world_size(), started


def evaluate_model(model: nn.Module, samples: Sequence[Sample], data_config: Dict[str, Any], batch_size: int = 256,
                   workers: int = 4, device: str = "auto", dtype: str = "fp32", progress: bool = True,
                   ) -> Dict[str, Any]:
    """Top-1 / top-5 (percent) of ``model`` on ``samples``; shards the images under torchrun."""
    import torch.distributed as dist
    from timm.data import create_transform
    from tqdm.auto import tqdm

    rank, world, started = _distributed()
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    transform = create_transform(**data_config, is_training=False)
    shard = list(samples)[rank::world]
    loader = DataLoader(ImageList(shard, transform), batch_size=batch_size, num_workers=workers,
                        pin_memory=dev.type == "cuda")
    model = model.to(dev).eval()
    low = DTYPES[dtype]
    counts = torch.zeros(3, dtype=torch.float64)  # top-1 hits, top-5 hits, images
    try:
        with torch.inference_mode():
            for images, labels in tqdm(loader, desc="eval", unit="batch", disable=not progress or rank != 0):
                images, labels = images.to(dev), labels.to(dev)
                with torch.autocast(dev.type, dtype=low, enabled=low != torch.float32):
                    logits = model(images)
                k = min(5, logits.shape[-1])
                top = logits.float().topk(k, dim=-1).indices
                hits = top == labels[:, None]
                counts += torch.tensor([hits[:, 0].sum().item(), hits.any(dim=-1).sum().item(), len(labels)],
                                       dtype=torch.float64)
    except (ValidationSetError, RuntimeError) as e:
        if "DataLoader worker" not in str(e):
            raise
        # A worker re-raises with the whole traceback as its message: keep the one line that says why.
        last = [line for line in str(e).splitlines() if line.strip()][-1]
        raise ValidationSetError(re.sub(r"^[\w.]+(Error|Exception): ", "", last)) from None
    if world > 1:
        dist.all_reduce(counts)  # gloo and nccl both sum float64 on the CPU/GPU it lives on
        if started:
            dist.destroy_process_group()
    top1, top5, n = counts.tolist()
    return dict(top1=round(100 * top1 / n, 3), top5=round(100 * top5 / n, 3), images=int(n),
                top1_correct=int(top1), top5_correct=int(top5), world_size=world)


def build_pretrained(name: str, checkpoint: Optional[str] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """timm model with the tag's released weights (Hub cache, or a local safetensors file) and its entry."""
    import timm

    entry = get_entry(name)
    tag = f"{entry['architecture']}.{entry['tag']}"
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"{checkpoint}: checkpoint file not found")
        overlay = dict(file=str(checkpoint))
    elif entry.get("hf_hub_id"):
        overlay = None
    else:
        raise ManifestError(f"{tag} has no released weights to evaluate (no hf_hub_id); pass --checkpoint")
    model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay)
    return model, entry


def evaluate(name: str, val_dir: str, label_file: Optional[str] = None, checkpoint: Optional[str] = None,
             batch_size: int = 256, workers: int = 4, device: str = "auto", dtype: str = "fp32",
             progress: bool = True) -> Dict[str, Any]:
    """One result row for a weights tag on a validation directory (what ``mixer-zoo eval`` prints)."""
    entry = get_entry(name)
    samples = validation_samples(val_dir, entry["label_set"], label_file, entry["num_classes"])
    model, entry = build_pretrained(name, checkpoint)
    result = evaluate_model(model, samples, data_config_for(entry), batch_size=batch_size, workers=workers,
                            device=device, dtype=dtype, progress=progress)
    macs = counted_macs(entry["architecture"], num_classes=entry["num_classes"])
    return dict(model=f"{entry['architecture']}.{entry['tag']}", arch=entry["architecture"], impl="mixer_zoo",
                **result, param_count=sum(p.numel() for p in model.parameters()), infer_gmacs=round(macs / 1e9, 3),
                dataset=str(val_dir), dtype=dtype, hardware=hardware_name(resolve_device(device)),
                date=datetime.date.today().isoformat())


def cifar10_model(name: str, checkpoint: Optional[str] = None) -> Tuple[nn.Module, str, Dict[str, Any]]:
    """``(model, key, timm data config)`` of a CIFAR-10 weights tag (with ``checkpoint``: local safetensors) or of
    a converted folder; its preprocessing is the one its weights came with."""
    import json

    import timm
    from timm.data import resolve_data_config

    folder = Path(name)
    if folder.is_dir():
        if checkpoint:
            raise ValidationSetError(f"{folder}: a converted folder brings its own weights; drop --checkpoint")
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        key = f"{config['architecture']}.{config.get('pretrained_cfg', {}).get('tag') or 'local'}"
        data_config = resolve_data_config(model=model)
    else:
        entry = get_entry(name)
        key = f"{entry['architecture']}.{entry['tag']}"
        if entry["label_set"] != "cifar-10":
            raise ValidationSetError(f"{key}: its head follows {entry['label_set']}, not CIFAR-10")
        model, entry = build_pretrained(name, checkpoint)
        data_config = data_config_for(entry)
    if getattr(model, "num_classes", None) != 10:
        raise ValidationSetError(f"{name}: a {getattr(model, 'num_classes', '?')}-class head; CIFAR-10 needs 10")
    return model, key, data_config


def evaluate_cifar10(name: str, data_root: str, checkpoint: Optional[str] = None, batch_size: int = 256,
                     workers: int = 4, device: str = "auto", dtype: str = "fp32", progress: bool = True
                     ) -> Dict[str, Any]:
    """One result row for a CIFAR-10 tag or converted folder on the test split of ``data_root`` (the folder that
    holds ``cifar-10-batches-py``, or that folder itself), read with the CIFAR reader's checks."""
    from ..mmpretrain.cifar import load_split

    model, key, data_config = cifar10_model(name, checkpoint)
    images, labels = load_split(data_root, "test")
    result = evaluate_model(model, list(zip(images, labels.tolist())), data_config, batch_size=batch_size,
                            workers=workers, device=device, dtype=dtype, progress=progress)
    return dict(model=key, source=str(name), **result, param_count=sum(p.numel() for p in model.parameters()),
                dataset=str(data_root), dtype=dtype, hardware=hardware_name(resolve_device(device)),
                date=datetime.date.today().isoformat())
