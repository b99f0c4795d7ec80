"""CIFAR-10 in the standard ``cifar-10-batches-py`` layout, read without trusting the pickles.

The official batches are Python-2 pickles (``data`` uint8 (N, 3072), ``labels``, ``batch_label``,
``filenames``; ``batches.meta`` has ``label_names``). mmpretrain's ``CIFAR10`` unpickles them freely and
re-downloads whenever an md5 differs; ``ZooCIFAR10`` checks the layout instead and lets the unpickler
build only dicts, lists, strings, numbers and numpy arrays. A subset in the same layout (``data_batch_1`` ..
``data_batch_k``, k < 5, as ``../shared/data/cifar10-real``) is read too; a gap in the numbering, a batch whose
``batch_label`` announces more files than there are, a truncated file, labels outside 0..9 or a meta file
with other class names are each one error naming the file.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

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
    except (EOFError, pickle.UnpicklingError) as e:
        if "refusing" in str(e):
            raise ValueError(f"{path}: not a CIFAR-10 batch file: {type(e).__name__}: {e}") from None
        raise ValueError(f"{path}: truncated or corrupt CIFAR-10 batch file ({type(e).__name__}: {e})") from None
    except Exception as e:
        raise ValueError(f"{path}: not a CIFAR-10 batch file: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch file: holds a {type(data).__name__}, expected a dict")
    return {_text(k): v for k, v in data.items()}


def _text(value: Any) -> Any:
    """Python-2 ``str`` values come back as bytes or str depending on who wrote the file."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def batches_dir(data_root: Union[str, Path]) -> Path:
    """``data_root/cifar-10-batches-py`` (or ``data_root`` itself when it is that folder), checked complete:
    meta, test batch and ``data_batch_1`` .. ``data_batch_k`` without a gap."""
    root = Path(data_root)
    folder = root if root.name == BASE_FOLDER else root / BASE_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{root}: no {BASE_FOLDER}/ folder (set data_root, or mixer-zoo's --data-root, to the folder that holds "
            f"it); expected the standard CIFAR-10 layout "
            f"{BASE_FOLDER}/{{{','.join(TRAIN_FILES + TEST_FILES)},{META_FILE}}}")
    present = [(folder / n).is_file() for n in TRAIN_FILES]
    count = present.index(False) if False in present else len(present)
    missing = [n for n in TEST_FILES + (META_FILE,) if not (folder / n).is_file()]
    if count == 0 or any(present[count:]):  # data_batch_1 absent, or a gap before a later batch
        missing.append(TRAIN_FILES[count])
    if missing:
        raise FileNotFoundError(f"{folder}: not the standard CIFAR-10 layout, missing {', '.join(missing)}")
    return folder


def _integer_labels(labels: Any, path: Path, count: int) -> np.ndarray:
    """Labels as int64, refusing anything that is not an integer already (1.7 must not become class 1)."""
    values = labels.tolist() if isinstance(labels, np.ndarray) else labels
    if not isinstance(values, list):
        raise ValueError(f"{path}: 'labels' must be {count} integers in 0..9 (a list), got {type(labels).__name__}")
    bad = next((v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))), None)
    if bad is not None:
        raise ValueError(f"{path}: 'labels' must be {count} integers in 0..9, found {bad!r}")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{path}: 'labels' must be {count} integers in 0..9, found one beyond int64") from None


def train_files(folder: Path) -> Tuple[str, ...]:
    """The training batches present: ``data_batch_1`` .. ``data_batch_k`` (``batches_dir`` checked the gaps)."""
    return tuple(n for n in TRAIN_FILES if (folder / n).is_file())


def check_meta(folder: Path) -> None:
    """``batches.meta`` must name CIFAR-10's classes in CIFAR-10's order: the labels mean those classes."""
    path = folder / META_FILE
    names = read_batch(path).get("label_names")
    names = [_text(n) for n in names] if isinstance(names, (list, tuple)) else names
    if names != list(CIFAR10_CATEGORIES):
        raise ValueError(f"{path}: label_names {names!r} are not CIFAR-10's classes {list(CIFAR10_CATEGORIES)}")


_BATCH_LABEL = re.compile(r"(training|testing) batch (\d+) of (\d+)")


def _check_batch_label(path: Path, batch: Dict[str, Any], split: str, num_files: int) -> None:
    """The official ``batch_label`` ("training batch 1 of 5") must agree with the file's name and the folder."""
    match = _BATCH_LABEL.match(str(_text(batch.get("batch_label", ""))))
    if not match:
        return  # files written by other tools carry other labels (write_cifar10: the file name)
    kind, _, total = match.group(1), int(match.group(2)), int(match.group(3))
    if kind != ("training" if split == "train" else "testing"):
        raise ValueError(f"{path}: batch_label {match.group(0)!r} says it is a {kind} batch, not a {split} one")
    if split == "train" and total > num_files:
        raise FileNotFoundError(f"{path.parent}: missing {TRAIN_FILES[num_files]} "
                                f"({path.name} says {match.group(0)!r})")


def load_split(data_root: Union[str, Path], split: str) -> tuple:
    """Images (N, 32, 32, 3) uint8 RGB and labels (N,) int64 of ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    folder = batches_dir(data_root)
    check_meta(folder)
    names = train_files(folder) if split == "train" else TEST_FILES
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = read_batch(path)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{path}: missing key 'data' or 'labels' (has {sorted(batch)})")
        _check_batch_label(path, batch, split, len(names))
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
            described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{path}: 'data' must be uint8 (N, {IMAGE_BYTES}), got {described}")
        lab = _integer_labels(batch["labels"], path, data.shape[0])
        if lab.shape != (data.shape[0],) or (lab.size and (lab.min() < 0 or lab.max() > 9)):
            raise ValueError(f"{path}: 'labels' must be {data.shape[0]} integers in 0..9 (one per image)")
        images.append(data)
        labels.append(lab.astype(np.int64))
    images_hwc = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images_hwc), np.concatenate(labels)


def write_cifar10(root: Union[str, Path], train: tuple, test: tuple,
                  label_names: Sequence[str] = CIFAR10_CATEGORIES, train_batches: int = len(TRAIN_FILES)) -> Path:
    """Write ``(images (N,32,32,3) uint8, labels)`` pairs as the official files (protocol 2, str keys).

    The training images are split over ``train_batches`` ``data_batch_*`` files (five, like the full set;
    fewer, like a subset), each with the official ``batch_label``.
    """
    if not 1 <= train_batches <= len(TRAIN_FILES):
        raise ValueError(f"train_batches must be 1..{len(TRAIN_FILES)}, got {train_batches}")
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, label: str, images: np.ndarray, labels: Sequence[int]) -> None:
        data = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(images), -1)
        batch = {"batch_label": label, "labels": [int(v) for v in labels], "data": data,
                 "filenames": [f"{name}_{i:05d}.png" for i in range(len(images))]}
        atomic_write(folder / name, lambda f: pickle.dump(batch, f, protocol=2))

    images, labels = train
    for i, part in enumerate(np.array_split(np.arange(len(images)), train_batches)):
        dump(TRAIN_FILES[i], f"training batch {i + 1} of {train_batches}", images[part], np.asarray(labels)[part])
    dump(TEST_FILES[0], "testing batch 1 of 1", *test)
    meta = {"num_cases_per_batch": len(images) // train_batches, "label_names": list(label_names),
            "num_vis": IMAGE_BYTES}
    atomic_write(folder / META_FILE, lambda f: pickle.dump(meta, f, protocol=2))
    return folder


@DATASETS.register_module()
class ZooCIFAR10(BaseDataset):
    """CIFAR-10 from a ``cifar-10-batches-py`` folder (no download, no md5, restricted unpickling).

    ``per_class`` keeps the first ``per_class`` images of each class, a balanced subset for short runs (the
    batch files may be sorted by class, so the first N images would not do).
    """

    METAINFO = {"classes": CIFAR10_CATEGORIES}

    def __init__(self, data_root: str = "", split: str = "train", per_class: Optional[int] = None,
                 **kwargs: Any) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"ZooCIFAR10 split must be 'train' or 'test', got {split!r}")
        if not data_root:
            raise ValueError("ZooCIFAR10 needs data_root (the folder holding cifar-10-batches-py/)")
        if per_class is not None and per_class < 1:
            raise ValueError(f"ZooCIFAR10 per_class must be a positive number of images, got {per_class}")
        self.split = split
        self.per_class = per_class
        super().__init__(ann_file="", data_root=data_root, data_prefix=dict(root=""),
                         test_mode=split == "test", **kwargs)

    def load_data_list(self) -> List[Dict[str, Any]]:
        images, labels = load_split(self.data_prefix["root"], self.split)
        keep = np.arange(len(labels))
        if self.per_class is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:self.per_class] for c in range(10)]))
        return [{"img": images[i], "gt_label": int(labels[i])} for i in keep]
