#!/usr/bin/env python
"""Regenerate this folder's fixture: a tiny 32 px Mixer saved by MindSpore's own ``save_checkpoint`` (model.ckpt) and
MindSpore's logits for eight real CIFAR-10 test images (logits.npy), which tests/test_mindspore_ckpt.py converts and
compares with, without MindSpore.

    python tests/data/mindspore/make_fixture.py PYTHON_WITH_MINDSPORE [CIFAR_ROOT]

Run it with mixer-zoo's Python (it reads the images with the zoo's checked CIFAR reader); the MindSpore side runs
in the other interpreter (tests/mindspore_reference.py).
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mixer_zoo.mmpretrain.cifar import load_split

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
INDICES = list(range(0, 2000, 250))


def main() -> None:
    python = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else str(REPO.parent / "shared" / "data" / "cifar10-real")
    images, _ = load_split(root, "test")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "images.npy", images[INDICES])
        subprocess.run([python, str(REPO / "tests" / "mindspore_reference.py"), "--images", str(Path(tmp) / "images.npy"),
                        "--out", tmp, "--img-size", "32", "--patch", "4"], check=True)
        for name in ("model.ckpt", "logits.npy"):
            shutil.copy(Path(tmp) / name, HERE / name)
        facts = json.loads((Path(tmp) / "facts.json").read_text())
    facts["cifar_test_indices"] = INDICES
    (HERE / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"wrote {HERE}/model.ckpt, logits.npy, facts.json (MindSpore {facts['mindspore']})")


if __name__ == "__main__":
    main()
