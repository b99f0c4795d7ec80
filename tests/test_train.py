"""CIFAR-10 fine-tuning with mmengine: the safe CIFAR reader, one process, two processes under torchrun
(gloo on CPU), checkpoints read back by ``mixer_zoo.test``, and clear errors for bad input."""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

pytest.importorskip("mmpretrain")

from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.mmpretrain import CONFIG_DIR, load_split, read_batch, write_cifar10  # noqa: E402

FINETUNE = CONFIG_DIR / "finetune" / "cifar10.py"


def synthetic_split(n: int, seed: int):
    """Noise images with a bright bar whose position is the class: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 5)
        image[row * 16:(row + 1) * 16, col * 6:col * 6 + 6] = 255
    return images, labels


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, synthetic_split(320, 0), synthetic_split(60, 1))
    return root


def tiny_config(folder: Path, data_root: Optional[Path], iters: int = 40) -> Path:
    """The shipped fine-tuning config with a 2-block Mixer on 32x32 images and a short schedule (``data_root``
    None: the shipped default, for ``--data-root``)."""
    path = folder / "tiny_cifar10.py"
    root = "" if data_root is None else f"data_root={str(data_root)!r}, "
    path.write_text(f"""
_base_ = [{str(FINETUNE)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, patch_size=8, num_blocks=2, embed_dim=32, tokens_mlp_dim=16,
                            channels_mlp_dim=64), img_size=32, pretrained=False),
    head=dict(in_channels=32))
train_pipeline = [dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(batch_size=16, num_workers=0, dataset=dict({root}pipeline=train_pipeline))
val_dataloader = dict(batch_size=20, num_workers=0, dataset=dict({root}pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
                   dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=5, end={iters})]
train_cfg = dict(max_iters={iters}, val_interval={iters})
default_hooks = dict(checkpoint=dict(interval={iters}), logger=dict(interval=5))
""")
    return path


def logged_losses(work_dir: Path) -> list:
    """Training losses from mmengine's LocalVisBackend (vis_data/scalars.json), in order."""
    files = sorted(work_dir.glob("*/vis_data/scalars.json"))
    assert files, f"no scalars.json under {work_dir}"
    rows = [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


# ---- the CIFAR-10 files ------------------------------------------------------------------------------

def test_written_batches_have_the_official_format(cifar_root):
    folder = cifar_root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    raw = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="latin1")  # our own file
    assert {"data", "labels", "batch_label", "filenames"} <= set(raw) and all(isinstance(k, str) for k in raw)
    assert raw["data"].dtype == np.uint8 and raw["data"].shape == (64, 3072)
    assert read_batch(folder / "batches.meta")["label_names"][0] == "airplane"
    images, labels = load_split(cifar_root, "train")
    expected_images, expected_labels = synthetic_split(320, 0)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_reader_refuses_to_run_code_from_a_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR-10 batch file: .*refusing to load .*system"):
        read_batch(path)


def test_a_subset_with_fewer_training_batches_loads(tmp_path):
    """The layout of ../shared/data/cifar10-real: data_batch_1 alone ("training batch 1 of 1") and test_batch."""
    write_cifar10(tmp_path, synthetic_split(50, 0), synthetic_split(20, 1), train_batches=1)
    assert not (tmp_path / "cifar-10-batches-py" / "data_batch_2").exists()
    images, labels = load_split(tmp_path, "train")
    expected_images, expected_labels = synthetic_split(50, 0)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def _rewrite(path: Path, **changes) -> None:
    batch = pickle.loads(path.read_bytes(), encoding="latin1")  # our own file
    batch.update(changes)
    path.write_bytes(pickle.dumps(batch, protocol=2))


BAD_BATCHES = {
    # name: (how the folder is broken, exception type, pattern of the one-line message)
    "gap": (lambda f: (f / "data_batch_2").unlink(), FileNotFoundError,
            r"cifar-10-batches-py: not the standard CIFAR-10 layout, missing data_batch_2$"),
    "no_training_batch": (lambda f: [(f / f"data_batch_{i}").unlink() for i in range(1, 6)], FileNotFoundError,
                          r"missing data_batch_1$"),
    "announced_batch_missing": (lambda f: [(f / f"data_batch_{i}").unlink() for i in range(3, 6)], FileNotFoundError,
                                r"cifar-10-batches-py: missing data_batch_3 \(data_batch_1 says 'training batch 1 of 5'\)"),
    "truncated": (lambda f: (f / "data_batch_4").write_bytes((f / "data_batch_4").read_bytes()[:-100]), ValueError,
                  r"data_batch_4: truncated or corrupt CIFAR-10 batch file \(UnpicklingError"),
    "label_out_of_range": (lambda f: _rewrite(f / "data_batch_2", labels=[10] * 64), ValueError,
                           r"data_batch_2: 'labels' must be 64 integers in 0\.\.9 \(one per image\)"),
    "label_count": (lambda f: _rewrite(f / "data_batch_3", labels=[1] * 63), ValueError,
                    r"data_batch_3: 'labels' must be 64 integers in 0\.\.9"),
    "labels_not_integers": (lambda f: _rewrite(f / "data_batch_3", labels=["cat"] * 64), ValueError,
                            r"data_batch_3: 'labels' must be 64 integers"),
    "test_batch_as_training": (lambda f: _rewrite(f / "data_batch_5", batch_label="testing batch 1 of 1"), ValueError,
                               r"data_batch_5: batch_label 'testing batch 1 of 1' says it is a testing batch, "
                               r"not a train one"),
    "other_class_names": (lambda f: _rewrite(f / "batches.meta", label_names=["apple"] * 10), ValueError,
                          r"batches.meta: label_names \['apple'.* are not CIFAR-10's classes"),
    "meta_missing": (lambda f: (f / "batches.meta").unlink(), FileNotFoundError, r"missing batches.meta$"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_a_broken_batch_file_is_one_clear_error(tmp_path, case):
    breaks, error, pattern = BAD_BATCHES[case]
    write_cifar10(tmp_path, synthetic_split(320, 0), synthetic_split(20, 1))
    breaks(tmp_path / "cifar-10-batches-py")
    with pytest.raises(error, match=pattern) as info:
        load_split(tmp_path, "train")
    assert "\n" not in str(info.value)


def test_a_truncated_batch_stops_mixer_zoo_train_with_one_line(tmp_path, capsys):
    write_cifar10(tmp_path / "data", synthetic_split(40, 0), synthetic_split(10, 1), train_batches=1)
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    config = tiny_config(tmp_path, tmp_path / "data")
    assert cli_main(["train", str(config), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixer-zoo train: error: ")
    assert f"{batch}: truncated or corrupt CIFAR-10 batch file" in err[0]


def test_per_class_keeps_a_balanced_subset_of_a_class_sorted_file(tmp_path):
    from mixer_zoo.mmpretrain import ZooCIFAR10

    images, labels = synthetic_split(200, 0)
    order = np.argsort(labels, kind="stable")  # sorted by class, as the real subset's data_batch_1
    write_cifar10(tmp_path, (images[order], labels[order]), synthetic_split(10, 1), train_batches=1)
    dataset = ZooCIFAR10(data_root=str(tmp_path), split="train", per_class=3, pipeline=[])
    kept = [dataset[i]["gt_label"] for i in range(len(dataset))]
    assert sorted(kept) == sorted(list(range(10)) * 3)
    first = next(i for i in range(len(dataset)) if dataset[i]["gt_label"] == 7)
    np.testing.assert_array_equal(dataset[first]["img"], images[order][labels[order] == 7][0])
    with pytest.raises(ValueError, match="per_class must be a positive number"):
        ZooCIFAR10(data_root=str(tmp_path), split="train", per_class=0)


# ---- training and testing ----------------------------------------------------------------------------

def test_one_process_fine_tune_then_test(tmp_path, cifar_root, capsys):
    config = tiny_config(tmp_path, cifar_root)
    work_dir = tmp_path / "work"
    assert cli_main(["train", str(config), "--work-dir", str(work_dir)]) == 0
    losses = logged_losses(work_dir)
    assert len(losses) == 8 and np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.2, losses
    checkpoint = work_dir / "iter_40.pth"
    assert checkpoint.is_file()

    out = tmp_path / "metrics.json"
    capsys.readouterr()
    assert cli_main(["test", str(config), str(checkpoint), "--work-dir", str(tmp_path / "test"),
                     "--json", str(out)]) == 0
    assert "accuracy/top1" in capsys.readouterr().out
    accuracy = json.loads(out.read_text())[0]["accuracy/top1"]
    assert 20.0 < accuracy <= 100.0  # well above chance (10 %) after 40 steps on the synthetic classes

    # --resume continues from the work dir's last checkpoint
    assert cli_main(["train", str(config), "--work-dir", str(work_dir), "--resume",
                     "--cfg-options", "train_cfg.max_iters=45", "default_hooks.checkpoint.interval=45"]) == 0
    assert (work_dir / "iter_45.pth").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_torchrun_gloo(tmp_path, cifar_root):
    config = tiny_config(tmp_path, cifar_root, iters=20)
    work_dir = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "mixer_zoo.train", str(config), "--launcher", "pytorch",
               "--work-dir", str(work_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = "".join(p.read_text() for p in work_dir.glob("*/*.log"))
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    losses = logged_losses(work_dir)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    checkpoint = work_dir / "iter_20.pth"
    assert checkpoint.is_file()
    assert cli_main(["test", str(config), str(checkpoint), "--work-dir", str(tmp_path / "test")]) == 0


# ---- errors --------------------------------------------------------------------------------------------

def test_wrong_config_path_is_one_clear_line(tmp_path, capsys):
    assert cli_main(["train", str(tmp_path / "missing.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mixer-zoo train: error: config") and "missing.py' not found" in err[-1]


def test_unknown_tag_is_a_clear_error(tmp_path, cifar_root, capsys):
    config = tiny_config(tmp_path, cifar_root)
    assert cli_main(["test", str(config), "zoo://mixer_b16_zoo.no_such_tag", "--work-dir", str(tmp_path / "w")]) == 2
    assert "unknown weights tag 'mixer_b16_zoo.no_such_tag'" in capsys.readouterr().err


def test_dataset_in_the_wrong_layout_is_a_clear_error(tmp_path, cifar_root, capsys):
    broken = tmp_path / "broken"
    write_cifar10(broken, synthetic_split(20, 0), synthetic_split(10, 1))
    (broken / "cifar-10-batches-py" / "data_batch_3").unlink()
    config = tiny_config(tmp_path, broken)
    assert cli_main(["train", str(config), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "not the standard CIFAR-10 layout, missing data_batch_3" in err

    flat = tmp_path / "flat"
    flat.mkdir()
    config = tiny_config(tmp_path, flat)
    assert cli_main(["train", str(config), "--work-dir", str(tmp_path / "w2")]) == 2
    assert "no cifar-10-batches-py/ folder" in capsys.readouterr().err


# ---- checkpoints of mixer-zoo train: strict loading, conversion, converted folders back in -------------------

def test_a_checkpoint_of_another_shape_is_refused_in_one_line(tmp_path, cifar_root, capsys):
    """mmengine would warn and evaluate a half-loaded model; the zoo's Runner refuses."""
    import torch

    from mixer_zoo.formats.mmpretrain_layout import timm_to_zoo_classifier
    from mixer_zoo.model import Mixer

    other = Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=48, tokens_mlp_dim=16,
                  channels_mlp_dim=64)
    bad = tmp_path / "other_shape.pth"
    torch.save({"state_dict": timm_to_zoo_classifier(other.state_dict())}, bad)
    config = tiny_config(tmp_path, cifar_root)
    assert cli_main(["test", str(config), str(bad), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mixer-zoo test: error: {bad}: does not match the model: ")
    assert "backbone.stem.proj.weight" in err[0]


def test_local_dir_without_a_converted_folder_is_a_clear_error(tmp_path, cifar_root, capsys):
    config = tiny_config(tmp_path, cifar_root)
    assert cli_main(["test", str(config), f"local-dir:{tmp_path / 'nothing'}", "--work-dir", str(tmp_path / "w")]) == 2
    assert "no converted folder with a model.safetensors" in capsys.readouterr().err


def test_a_trained_checkpoint_converts_and_loads_back(tmp_path, cifar_root):
    """mixer-zoo train's checkpoint (a MixerZoo classifier with mmengine's bookkeeping) -> mixer-zoo convert ->
    a timm folder whose logits are the trained model's, and which loads back through local-dir:."""
    import timm
    import torch
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    from safetensors.torch import load_file

    from mixer_zoo.mmpretrain.weights import load_from_local_dir
    from mixer_zoo.model import ARCHITECTURES

    shape = dict(ARCHITECTURES["mixer_s32_zoo"])  # a paper shape at 32 px: one token, cheap to train
    config = tiny_config(tmp_path, cifar_root, iters=6)
    config.write_text(config.read_text().replace(
        "arch=dict(_delete_=True, patch_size=8, num_blocks=2, embed_dim=32, tokens_mlp_dim=16,\n"
        "                            channels_mlp_dim=64)", f"arch=dict(_delete_=True, **{shape!r})").replace(
        "head=dict(in_channels=32)", "head=dict(in_channels=512, init_cfg=None)"))
    work_dir = tmp_path / "work"
    assert cli_main(["train", str(config), "--work-dir", str(work_dir), "--no-validate"]) == 0
    folder = tmp_path / "converted"
    assert cli_main(["convert", str(work_dir / "iter_6.pth"), "--out", str(folder)]) == 0

    trained = torch.load(work_dir / "iter_6.pth", map_location="cpu", weights_only=True)["state_dict"]
    converted = load_file(str(folder / "model.safetensors"))
    assert len(converted) == len(trained)
    for key, value in converted.items():
        source = f"head.fc.{key[5:]}" if key.startswith("head.") else f"backbone.{key}"
        assert torch.equal(value, trained[source]), key

    model = MODELS.build(Config.fromfile(str(config)).model).eval()
    model.load_state_dict(load_from_local_dir(f"local-dir:{folder}")["state_dict"], strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x, mode="tensor")
        got = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# ---- every checkpoint path loads every weight or stops in one line ------------------------------------------

TINY_SHAPE = dict(patch_size=8, num_blocks=2, embed_dim=32, tokens_mlp_dim=16, channels_mlp_dim=64)
"""The backbone of ``tiny_config``."""


def tiny_weights(folder: Path, seed: int = 0, num_classes: int = 10):
    """Converted weights of the tiny config's shape (``model.safetensors``, timm layout); returns the model."""
    import torch
    from safetensors.torch import save_file

    from conftest import randomize_
    from mixer_zoo.model import Mixer

    model = randomize_(Mixer(num_classes=num_classes, img_size=32, **TINY_SHAPE), seed).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    return model


def load_classifier(config: Path, checkpoint: Path):
    """The config's mmpretrain model with every weight of ``checkpoint`` (strict), for comparing logits."""
    import torch
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    model = MODELS.build(Config.fromfile(str(config)).model).eval()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"], strict=True)
    return model


@pytest.mark.parametrize("form", ["folder", "file"])
def test_load_from_takes_a_converted_folder_or_safetensors_file(tmp_path, cifar_root, form):
    """The weights trained from are the converted ones (lr 0 keeps them): same logits as the source model."""
    import torch

    source = tiny_weights(tmp_path / "converted")
    arg = tmp_path / "converted" if form == "folder" else tmp_path / "converted" / "model.safetensors"
    config = tiny_config(tmp_path, cifar_root, iters=6)
    work = tmp_path / "work"
    assert cli_main(["train", str(config), "--load-from", str(arg), "--work-dir", str(work), "--no-validate",
                     "--cfg-options", "optim_wrapper.optimizer.lr=0.0"]) == 0
    trained = load_classifier(config, work / "iter_6.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
        torch.testing.assert_close(trained(x, mode="tensor"), expected, rtol=1e-5, atol=1e-6)
    assert expected.abs().max() > 0.1


def test_a_checkpoint_in_mlpmixer_layout_is_refused_naming_file_and_keys(tmp_path, cifar_root, capsys):
    """What `convert --to mmpretrain` once wrote for every model: mmengine loaded none of it and only warned."""
    import torch

    from mixer_zoo.formats.mmpretrain_layout import timm_to_stock_classifier

    bad = tmp_path / "mlpmixer_layout.pth"
    torch.save({"state_dict": timm_to_stock_classifier(tiny_weights(tmp_path / "w").state_dict())}, bad)
    config = tiny_config(tmp_path, cifar_root)
    for argv in (["test", str(config), str(bad)], ["train", str(config), "--load-from", str(bad)]):
        assert cli_main([*argv, "--work-dir", str(tmp_path / "work")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{bad}: does not match the model: " in err[0], err
        assert "missing (backbone.stem.proj.weight" in err[0]
        assert "unexpected (backbone.patch_embed.projection.weight" in err[0] and "MlpMixer layout" in err[0]


def test_a_class_count_mismatch_is_one_line(tmp_path, cifar_root, capsys):
    config = tiny_config(tmp_path, cifar_root)
    cases = [
        (["model.head.num_classes=5"], "model.head.num_classes=5 but model.data_preprocessor.num_classes=10"),
        (["model.head.num_classes=5", "model.data_preprocessor.num_classes=5"],
         "train_dataloader's ZooCIFAR10 has 10 classes but model.head.num_classes=5"),
    ]
    for options, message in cases:
        assert cli_main(["train", str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options", *options]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    tiny_weights(tmp_path / "c100", num_classes=100)  # a checkpoint whose head has another class count
    assert cli_main(["test", str(config), str(tmp_path / "c100"), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head.fc.weight (100, 32) in the file, (10, 32) in the model" in err[0], err
    assert "a head for another number of classes" in err[0]


def test_the_cifar_config_takes_its_data_root_from_the_command_line(tmp_path, cifar_root, capsys):
    config = tiny_config(tmp_path, None, iters=6)  # the shipped default data_root (data/cifar10), absent here
    work = tmp_path / "work"
    assert cli_main(["train", str(config), "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no cifar-10-batches-py/ folder (set data_root, or mixer-zoo's --data-root" in err[0]
    assert cli_main(["train", str(config), "--work-dir", str(work), "--data-root", str(cifar_root)]) == 0
    capsys.readouterr()
    assert cli_main(["test", str(config), str(work / "iter_6.pth"), "--data-root", str(cifar_root),
                     "--work-dir", str(tmp_path / "test")]) == 0
    assert "accuracy/top1" in capsys.readouterr().out
    assert cli_main(["test", str(config), str(work / "iter_6.pth"), "--data-root", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"mixer-zoo test: error: --data-root {tmp_path / 'nowhere'}: no such folder"


# ---- a plain mmengine Runner: only the config's custom_imports ---------------------------------------------

PLAIN_RUNNER = r"""
import json, sys
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

config, work, first, resume, last = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:5]), sys.argv[5]
cfg = Config.fromfile(config)  # custom_imports = mixer_zoo.mmpretrain: nothing else of the project is imported
cfg.merge_from_dict(first)
cfg.work_dir = work
Runner.from_cfg(cfg).train()
cfg.merge_from_dict(resume)
cfg.resume = True
Runner.from_cfg(cfg).train()
checkpoint = torch.load(f"{work}/{last}", map_location="cpu")  # weights_only, torch's default
test = Config.fromfile(config)
test.merge_from_dict(first)
test.work_dir, test.load_from = f"{work}/test", f"{work}/{last}"
runner = Runner.from_cfg(test)
metrics = runner.test()
expected = MODELS.build(test.model).eval()
expected.load_state_dict(checkpoint["state_dict"], strict=True)
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    diff = (runner.model.eval()(x, mode="tensor") - expected(x, mode="tensor")).abs().max().item()
print(json.dumps(dict(metrics={k: float(v) for k, v in metrics.items()}, logits_diff=diff,
                      resumed=[checkpoint["meta"]["epoch"], checkpoint["meta"]["iter"]],
                      launcher=sorted(m for m in sys.modules if m.startswith(("mixer_zoo.cli", "mixer_zoo.mmpretrain.launch"))))))
"""


def _roots(root: Path) -> dict:
    return {f"{loader}.dataset.data_root": str(root) for loader in ("train_dataloader", "val_dataloader",
                                                                     "test_dataloader")}


PLAIN_CASES = {
    # config: (first run's options, the resumed run's options, its last checkpoint, expected [epoch, iter])
    "tiny finetune/cifar10.py": ({}, {"train_cfg.max_iters": 8, "default_hooks.checkpoint.interval": 8}, "iter_8.pth",
                                 [0, 8]),
    "scratch/cifar10_32px.py": ({"train_dataloader.batch_size": 64, "val_dataloader.batch_size": 60,
                                 "test_dataloader.batch_size": 60, "train_cfg.max_epochs": 1},
                                {"train_cfg.max_epochs": 2}, "epoch_2.pth", [2, 10]),
    "finetune/cifar10_32px.py": ({"train_dataloader.batch_size": 32, "val_dataloader.batch_size": 60,
                                  "test_dataloader.batch_size": 60, "train_cfg.max_iters": 4,
                                  "train_cfg.val_interval": 4, "default_hooks.checkpoint.interval": 4},
                                 {"train_cfg.max_iters": 6, "default_hooks.checkpoint.interval": 6}, "iter_6.pth",
                                 [0, 6]),
}


@pytest.mark.parametrize("case", sorted(PLAIN_CASES))
def test_a_plain_runner_trains_resumes_and_tests_a_shipped_config(tmp_path, cifar_root, case):
    """As mmpretrain's own tools/train.py and tools/test.py do it: Config.fromfile + Runner.from_cfg, in a fresh
    process, so the checkpoint allow-list and the exact-load hook can only come from custom_imports."""
    first, resume, last, resumed = PLAIN_CASES[case]
    config = tiny_config(tmp_path, cifar_root, iters=6) if case.startswith("tiny") else CONFIG_DIR / case
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", PLAIN_RUNNER, str(config), str(tmp_path / "work"),
                           json.dumps({**_roots(cifar_root), **first}), json.dumps(resume), last],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["launcher"] == [], result  # neither the project's launcher nor its CLI
    assert result["resumed"] == resumed
    assert result["logits_diff"] == 0.0  # the tested model holds every weight of the checkpoint
    assert 0.0 <= result["metrics"]["accuracy/top1"] <= 100.0
