"""The CIFAR-10 reader refuses what it would otherwise misread: labels that are not integers already."""
import pickle
import re

import numpy as np
import pytest

pytest.importorskip("mmpretrain")

from mixer_zoo.mmpretrain.cifar import BASE_FOLDER, load_split, write_cifar10  # noqa: E402


def _root(tmp_path, labels):
    images = np.zeros((10, 32, 32, 3), np.uint8)
    root = tmp_path / "data"
    write_cifar10(root, (images, list(range(10))), (images[:3], [0, 1, 2]))
    test_batch = root / BASE_FOLDER / "test_batch"
    batch = pickle.loads(test_batch.read_bytes(), encoding="latin1")
    batch["labels"] = labels
    test_batch.write_bytes(pickle.dumps(batch, protocol=2))
    return root, test_batch


@pytest.mark.parametrize("labels, words", [
    ([0, 1.7, 2], "found 1.7"),
    ([0, 1, True], "found True"),
    ([0, "1", 2], "found '1'"),
    (np.array([0.0, 1.0, 2.0]), "found 0.0"),
])
def test_non_integer_labels_are_refused_not_truncated(tmp_path, labels, words):
    root, path = _root(tmp_path, labels)
    with pytest.raises(ValueError) as err:
        load_split(root, "test")
    message = str(err.value)
    assert re.match(rf"{re.escape(str(path))}: 'labels' must be \d+ integers", message) and words in message
    assert "\n" not in message


def test_integer_labels_of_any_integer_type_load(tmp_path):
    root, _ = _root(tmp_path, np.array([7, 8, 9], dtype=np.uint8))
    _, labels = load_split(root, "test")
    assert labels.dtype == np.int64 and labels.tolist() == [7, 8, 9]
