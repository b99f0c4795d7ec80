"""CIFAR-10 in the standard ``cifar-10-batches-py`` layout, read without trusting the pickles.

The official batches are Python-2 pickles (``data`` uint8 (N, 3072), ``labels``, ``batch_label``,
``filenames``; ``batches.meta`` has ``label_names``). mmpretrain's ``CIFAR10`` unpickles them freely and
re-downloads whenever an md5 differs; ``ZooCIFAR10`` checks the layout instead and lets the unpickler
build only dicts, lists, strings, numbers and numpy arrays.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import numpy as np
from mmpretrain.datasets.base_dataset import BaseDataset
from mmpretrain.datasets.categories import CIFAR10_CATEGORIES
from mmpretrain.registry import DATASETS

from ..util.report import atomic_write

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
IMAGE_BYTES = 3 * 32 * 32

_ALLOWED_GLOBALS = {
    # what numpy arrays pickle to (numpy 1.x and 2.x module names)
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers; refuses any other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode  # how Python 3 writes bytes at protocol 2 (numpy array buffers)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Union[str, Path]) -> Dict[str, Any]:
    """One CIFAR pickle as a dict with ``str`` keys (the files are Python-2 pickles: latin-1)."""
    path = Path(path)
    try:
        data = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a CIFAR-10 batch file: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch file: holds a {type(data).__name__}, expected a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in data.items()}


def batches_dir(data_root: Union[str, Path]) -> Path:
    """``data_root/cifar-10-batches-py`` (or ``data_root`` itself when it is that folder), checked complete."""
    root = Path(data_root)
    folder = root if root.name == BASE_FOLDER else root / BASE_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{root}: no {BASE_FOLDER}/ folder; expected the standard CIFAR-10 layout "
            f"{BASE_FOLDER}/{{{','.join(TRAIN_FILES + TEST_FILES)},{META_FILE}}}")
    missing = [n for n in TRAIN_FILES + TEST_FILES + (META_FILE,) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not the standard CIFAR-10 layout, missing {', '.join(missing)}")
    return folder


def _integer_labels(labels: Any, path: Path) -> np.ndarray:
    """Labels as int64, refusing anything that is not an integer already (1.7 must not become class 1)."""
    values = labels.tolist() if isinstance(labels, np.ndarray) else labels
    if not isinstance(values, list):
        raise ValueError(f"{path}: 'labels' must be a list of integers, got {type(labels).__name__}")
    bad = next((v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))), None)
    if bad is not None:
        raise ValueError(f"{path}: 'labels' must be integers in 0..9, found {bad!r}")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{path}: 'labels' must be integers in 0..9, found one beyond int64") from None


def load_split(data_root: Union[str, Path], split: str) -> tuple:
    """Images (N, 32, 32, 3) uint8 RGB and labels (N,) int64 of ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    folder = batches_dir(data_root)
    images, labels = [], []
    for name in TRAIN_FILES if split == "train" else TEST_FILES:
        path = folder / name
        batch = read_batch(path)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{path}: missing key 'data' or 'labels' (has {sorted(batch)})")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
            raise ValueError(f"{path}: 'data' must be uint8 (N, {IMAGE_BYTES}), got {data.dtype} {data.shape}")
        lab = _integer_labels(batch["labels"], path)
        if lab.shape != (data.shape[0],) or (lab.size and (lab.min() < 0 or lab.max() > 9)):
            raise ValueError(f"{path}: 'labels' must be {data.shape[0]} integers in 0..9")
        images.append(data)
        labels.append(lab)
    images_hwc = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images_hwc), np.concatenate(labels)


def write_cifar10(root: Union[str, Path], train: tuple, test: tuple,
                  label_names: Sequence[str] = CIFAR10_CATEGORIES) -> Path:
    """Write ``(images (N,32,32,3) uint8, labels)`` pairs as the official files (protocol 2, str keys).

    The training images are split over the five ``data_batch_*`` files like the real set.
    """
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: Sequence[int]) -> None:
        data = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(images), -1)
        batch = {"batch_label": name, "labels": [int(v) for v in labels], "data": data,
                 "filenames": [f"{name}_{i:05d}.png" for i in range(len(images))]}
        atomic_write(folder / name, lambda f: pickle.dump(batch, f, protocol=2))

    images, labels = train
    for i, part in enumerate(np.array_split(np.arange(len(images)), len(TRAIN_FILES))):
        dump(TRAIN_FILES[i], images[part], np.asarray(labels)[part])
    dump(TEST_FILES[0], *test)
    meta = {"num_cases_per_batch": len(images) // len(TRAIN_FILES), "label_names": list(label_names),
            "num_vis": IMAGE_BYTES}
    atomic_write(folder / META_FILE, lambda f: pickle.dump(meta, f, protocol=2))
    return folder


@DATASETS.register_module()
class ZooCIFAR10(BaseDataset):
    """CIFAR-10 from a ``cifar-10-batches-py`` folder (no download, no md5, restricted unpickling)."""

    METAINFO = {"classes": CIFAR10_CATEGORIES}

    def __init__(self, data_root: str = "", split: str = "train", **kwargs: Any) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"ZooCIFAR10 split must be 'train' or 'test', got {split!r}")
        if not data_root:
            raise ValueError("ZooCIFAR10 needs data_root (the folder holding cifar-10-batches-py/)")
        self.split = split
        super().__init__(ann_file="", data_root=data_root, data_prefix=dict(root=""),
                         test_mode=split == "test", **kwargs)

    def load_data_list(self) -> List[Dict[str, Any]]:
        images, labels = load_split(self.data_prefix["root"], self.split)
        return [{"img": img, "gt_label": int(lab)} for img, lab in zip(images, labels)]
