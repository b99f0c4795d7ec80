"""mixer_zoo.tools.evaluate: exact top-1/top-5 on generated images whose answer is known by construction.

The model is built so that its logits rank the classes by the image's colour: the stem copies the
normalised colour ``n`` into channels 0-2 and ``-n`` into 3-5 (so LayerNorm only rescales it), every block
is the identity (zero MLPs), and head row ``j`` is ``[p_j, -p_j, 0...]``. Class ``j``'s logit is then a
positive multiple of ``p_j . n``, and every other class has a bias of -1000.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import ImageNetInfo

from mixer_zoo.cli import main
from mixer_zoo.tools.evaluate import data_config_for, evaluate, evaluate_model, validation_samples, ValidationSetError
from mixer_zoo.weights.manifest import get_entry, MANIFEST_ENV, MANIFEST_PATH, validate_manifest

TAG = "mixer_s32_zoo.gsam_in1k"
WNIDS = ImageNetInfo("imagenet-1k").label_names()
CLASS_INDICES = [3, 17, 100, 251, 388, 512, 730, 999]  # scattered, so the WordNet-id -> index map matters
K = len(CLASS_INDICES)
RNG = np.random.default_rng(292)  # a seed whose class scores are at least 0.02 apart
PROTOTYPES = RNG.normal(size=(K, 3))
PROTOTYPES /= np.linalg.norm(PROTOTYPES, axis=1, keepdims=True)


def image_colour(k: int) -> np.ndarray:
    """uint8 RGB whose normalised value (mean = std = 0.5) points along prototype k."""
    return np.round((0.8 * PROTOTYPES[k] / 2 + 0.5) * 255).astype(np.uint8)


def class_ranking(k: int) -> np.ndarray:
    """Classes (0..K-1) from most to least likely for an image of colour k, from the geometry alone."""
    n = (image_colour(k) / 255.0 - 0.5) / 0.5
    scores = PROTOTYPES @ n
    gaps = np.diff(np.sort(scores))
    assert gaps.min() > 2e-2, "prototypes too close: the construction would be ambiguous"
    return np.argsort(-scores)


# Per colour: one image labelled with its own class (top-1), one with its 3rd most likely class (top-5 only)
# and one with its least likely class (neither): exactly 8/24 top-1 and 16/24 top-5.
DESIGN = [(k, int(class_ranking(k)[rank])) for k in range(K) for rank in (0, 2, K - 1)]
EXPECTED = dict(top1=round(100 * 8 / 24, 3), top5=round(100 * 16 / 24, 3), images=24, top1_correct=8, top5_correct=16)


def colour_classifier() -> torch.nn.Module:
    model = timm.create_model(TAG)  # no weights: they are set below
    c, p = model.embed_dim, model.stem.patch_size[0]
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for i in range(3):
            model.stem.proj.weight[i, i] = 1.0 / (p * p)
            model.stem.proj.weight[3 + i, i] = -1.0 / (p * p)
        model.norm.weight.fill_(1.0)
        model.head.bias.fill_(-1000.0)
        for k, index in enumerate(CLASS_INDICES):
            row = torch.zeros(c)
            row[:3] = torch.tensor(PROTOTYPES[k], dtype=torch.float32)
            row[3:6] = -row[:3]
            model.head.weight[index] = row
            model.head.bias[index] = 0.0
    return model.eval()


def _save_image(path: Path, colour: np.ndarray) -> None:
    Image.fromarray(np.tile(colour, (40, 48, 1))).save(path)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("val_tree")
    for i, (k, label) in enumerate(DESIGN):
        folder = root / WNIDS[CLASS_INDICES[label]]
        folder.mkdir(exist_ok=True)
        _save_image(folder / f"ILSVRC2012_val_{i:08d}.png", image_colour(k))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "colour.safetensors"
    save_file(colour_classifier().state_dict(), str(path))
    return path


def test_design_is_what_the_docstring_says():
    assert all(class_ranking(k)[0] == k for k in range(K))
    assert sum(label == k for k, label in DESIGN) == 8


def test_preprocessing_comes_from_the_manifest_entry():
    entry = get_entry(TAG)
    cfg = data_config_for(entry)
    assert cfg["input_size"] == tuple(entry["input_size"]) and cfg["crop_pct"] == entry["crop_pct"]
    assert cfg["interpolation"] == entry["interpolation"] and cfg["mean"] == tuple(entry["mean"])
    assert cfg["std"] == tuple(entry["std"])


def test_exact_top1_top5_on_class_folders(class_folders):
    samples = validation_samples(str(class_folders))
    assert sorted({label for _, label in samples}) == CLASS_INDICES
    result = evaluate_model(colour_classifier(), samples, data_config_for(get_entry(TAG)), batch_size=5,
                            workers=0, device="cpu", progress=False)
    assert {k: result[k] for k in EXPECTED} == EXPECTED


def test_exact_on_a_flat_folder_with_a_label_file(tmp_path, checkpoint):
    flat = tmp_path / "val"
    flat.mkdir()
    lines = ["ImageId,PredictionString"]  # Kaggle's header, file names without extension
    for i, (k, label) in enumerate(DESIGN):
        _save_image(flat / f"img_{i:03d}.png", image_colour(k))
        index = CLASS_INDICES[label]
        lines.append(f"img_{i:03d},{WNIDS[index]} 0 0 10 10" if i % 2 else f"img_{i:03d} {index}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    row = evaluate(TAG, str(flat), label_file=str(tmp_path / "labels.csv"), checkpoint=str(checkpoint),
                   batch_size=7, workers=0, device="cpu", progress=False)
    assert {k: row[k] for k in EXPECTED} == EXPECTED
    assert row["model"] == TAG and row["param_count"] > 0


def test_cli_eval_loads_a_safetensors_checkpoint_and_writes_json_and_the_manifest(
        class_folders, checkpoint, tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "weights_manifest.json"
    shutil.copy(MANIFEST_PATH, manifest)
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    out = tmp_path / "eval.json"
    rc = main(["eval", TAG, "--imagenet-val", str(class_folders), "--checkpoint", str(checkpoint),
               "--batch-size", "8", "--workers", "1", "--device", "cpu", "--json", str(out),
               "--plot", str(tmp_path / "eval.png"), "--update-manifest"])
    assert rc == 0
    assert "33.33" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert {k: row[k] for k in EXPECTED} == EXPECTED
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    measured = validate_manifest(manifest)["weights"][TAG]["metrics"]["measured"]["imagenet_val"]
    assert (measured["top1"], measured["top5"], measured["images"]) == (EXPECTED["top1"], EXPECTED["top5"], 24)
    assert measured["hardware"] == row["hardware"] and measured["date"] == row["date"]


def test_torchrun_shares_the_images_and_sums_the_counts(class_folders, checkpoint, tmp_path):
    out = tmp_path / "dist.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mixer_zoo.cli", "eval", TAG, "--imagenet-val", str(class_folders), "--checkpoint",
           str(checkpoint), "--batch-size", "4", "--workers", "0", "--device", "cpu", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["world_size"] == 2
    assert {k: row[k] for k in EXPECTED} == EXPECTED


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "validation directory not found"),
    (lambda root: root.write_text("x"), "not a directory"),
    (lambda root: root.mkdir(), "no images found"),
    (lambda root: (root.mkdir(), (root / "cats").mkdir()), "'cats' is not a WordNet id"),
    (lambda root: (root.mkdir(), (root / "n00000001").mkdir()), "not a class of this label set"),
    (lambda root: (root.mkdir(), _save_image(root / "a.png", image_colour(0))), "needs --label-file"),
])
def test_missing_or_malformed_validation_dir_is_a_one_line_cli_error(tmp_path, capsys, make, message):
    root = tmp_path / "val"
    make(root)
    assert main(["eval", TAG, "--imagenet-val", str(root), "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert message in err and str(root) in err


@pytest.mark.parametrize("content, message", [
    ("a.png\n", "1: expected '<image> <label>'"),
    ("a.png n01440764\nb.png n01440764\n", "2: image 'b.png' not found"),
    ("a.png 1000\n", "1: label 1000 is out of range"),
    ("a.png n01440764\na.png cat\n", "2: label 'cat' is neither"),
])
def test_malformed_label_file_names_the_file_and_line(tmp_path, content, message):
    root = tmp_path / "val"
    root.mkdir()
    _save_image(root / "a.png", image_colour(0))
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    with pytest.raises(ValidationSetError) as e:
        validation_samples(str(root), label_file=str(labels))
    assert str(e.value).startswith(str(labels)) and message in str(e.value)


def test_unreadable_image_names_its_file_in_one_line(tmp_path, checkpoint, capsys):
    folder = tmp_path / "val" / WNIDS[0]
    folder.mkdir(parents=True)
    (folder / "broken.jpeg").write_bytes(b"not a jpeg")
    rc = main(["eval", TAG, "--imagenet-val", str(tmp_path / "val"), "--checkpoint", str(checkpoint),
               "--workers", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the progress bar)
    assert rc == 2 and err.startswith("mixer-zoo eval: error: "), err
    assert err.endswith("broken.jpeg: cannot read image: not an image format PIL knows")


def test_tag_without_released_weights_needs_a_checkpoint(class_folders):
    with pytest.raises(ValueError, match="mixer_h14_zoo.untrained has no released weights"):
        evaluate("mixer_h14_zoo", str(class_folders), device="cpu", progress=False)


# ---- CIFAR-10 ------------------------------------------------------------------------------------------------

CIFAR_TAG = "mixer_s32_zoo.gsam_in1k_ft_cifar10"
COLOURS = np.random.default_rng(5).integers(0, 256, size=(12, 3), dtype=np.uint8)
CIFAR_EXPECTED = dict(top1=round(100 * 4 / 12, 3), top5=round(100 * 8 / 12, 3), images=12, top1_correct=4,
                      top5_correct=8)


def cifar_by_construction(model: torch.nn.Module, root: Path) -> Path:
    """A cifar-10-batches-py folder of uniform-colour images (any resize leaves them as they are) whose labels are,
    in turn, the model's 1st, 3rd and 10th choice on them under the release's normalisation: exactly 4/12 top-1 and
    8/12 top-5 hits, known from the model before any evaluation code runs."""
    from mixer_zoo.mmpretrain.cifar import write_cifar10

    mean, std = np.array([126.1, 123.7, 114.6]), np.array([62.9, 61.9, 66.7])
    size = model.stem.img_size[0]
    x = torch.from_numpy(((COLOURS - mean) / std).astype(np.float32))[:, :, None, None].expand(-1, -1, size, size)
    with torch.inference_mode():
        ranking = model.eval()(x.contiguous()).argsort(dim=1, descending=True)
    labels = [int(ranking[i, (0, 2, 9)[i % 3]]) for i in range(len(COLOURS))]
    images = np.ascontiguousarray(np.broadcast_to(COLOURS[:, None, None, :], (len(COLOURS), 32, 32, 3)))
    write_cifar10(root, (images, labels), (images, labels), train_batches=1)
    return root


def test_cifar10_eval_of_a_folder_converted_from_a_mindspore_checkpoint(tmp_path):
    from conftest import randomize_
    from mixer_zoo.formats.mindspore_ckpt import write_ckpt
    from mixer_zoo.model.mixer import Mixer
    from mixer_zoo.tools.convert import convert_ckpt
    from mixer_zoo.tools.evaluate import evaluate_cifar10

    model = randomize_(Mixer(num_classes=10, img_size=224, patch_size=16, embed_dim=16, tokens_mlp_dim=8,
                             channels_mlp_dim=32, num_blocks=2, act_layer="gelu_tanh", norm_eps=1e-7), 3)
    with open(tmp_path / "tiny.ckpt", "wb") as f:
        write_ckpt(model.state_dict(), f)
    folder = convert_ckpt(tmp_path / "tiny.ckpt", tmp_path / "folder", progress=False)
    data = cifar_by_construction(model, tmp_path / "data")
    row = evaluate_cifar10(str(folder), str(data), batch_size=5, workers=0, device="cpu", progress=False)
    assert {k: row[k] for k in CIFAR_EXPECTED} == CIFAR_EXPECTED
    assert row["model"] == "mixer_custom_zoo.local" and row["param_count"] == sum(p.numel() for p in model.parameters())


def test_cli_cifar10_eval_of_a_tag_records_cifar10_test_in_the_manifest(tmp_path, capsys, monkeypatch):
    from conftest import randomize_

    manifest = tmp_path / "weights_manifest.json"
    shutil.copy(MANIFEST_PATH, manifest)
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    model = randomize_(timm.create_model(CIFAR_TAG), 4)
    assert model.blocks[0].norm1.eps == 1e-7 and model.act_layer == "gelu_tanh"  # the tag's MindSpore settings
    save_file(model.state_dict(), str(tmp_path / "s32.safetensors"))
    data = cifar_by_construction(model, tmp_path / "data")
    rc = main(["eval", CIFAR_TAG, "--cifar10", str(data / "cifar-10-batches-py"), "--checkpoint",
               str(tmp_path / "s32.safetensors"), "--batch-size", "6", "--workers", "0", "--device", "cpu",
               "--update-manifest"])
    assert rc == 0
    measured = validate_manifest(manifest)["weights"][CIFAR_TAG]["metrics"]["measured"]["cifar10_test"]
    assert (measured["top1"], measured["top5"], measured["images"]) == (33.333, 66.667, 12)
    assert "33.33" in capsys.readouterr().out


def test_cifar10_eval_refuses_an_imagenet_head(tmp_path, capsys):
    assert main(["eval", TAG, "--cifar10", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "its head follows imagenet-1k, not CIFAR-10" in err and err.count("\n") == 1
