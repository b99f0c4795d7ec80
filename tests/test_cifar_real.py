"""Real CIFAR-10 images end to end (``../shared/data/cifar10-real``): the shipped 32 px from-scratch config learns
through ``mixer-zoo train`` and ``mixer-zoo test``, and the paper's fine-tuning recipe starts from a converted
folder with exactly its logits. Skipped, saying why, where the images are not next to the repository."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmpretrain")

from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

from conftest import REAL_CIFAR as REAL, THREADS, cifar_data_options as data_options  # noqa: E402
from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.mmpretrain import CONFIG_DIR, load_split  # noqa: E402
from mixer_zoo.model import architectures  # noqa: E402
from mixer_zoo.tools.training_curve import epoch_curve, step_losses  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (REAL / "cifar-10-batches-py").is_dir(),
    reason=f"real CIFAR-10 images not found: no {REAL}/cifar-10-batches-py (the repository's ../shared/data)")

FINETUNE = CONFIG_DIR / "finetune" / "cifar10_32px.py"


def test_the_scratch_config_learns_real_images(scratch_run):
    _, work_dir = scratch_run
    losses = [s["loss"] for s in step_losses(work_dir)]
    curve = epoch_curve(work_dir)
    assert [e["epoch"] for e in curve] == [4]
    assert len(losses) >= 9 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    # chance is 10 %; 300 test images give a standard error of under 3 points
    assert curve[-1]["val_top1"] > 25.0, curve


def test_mixer_zoo_test_prints_top1_and_top5_of_the_checkpoint(scratch_run, tmp_path, capsys):
    config, work_dir = scratch_run
    out = tmp_path / "metrics.json"
    capsys.readouterr()
    assert cli_main(["test", str(config), str(work_dir / "epoch_4.pth"), "--work-dir", str(tmp_path / "t"),
                     "--json", str(out), *THREADS]) == 0
    printed = capsys.readouterr().out
    assert "accuracy/top1" in printed and "accuracy/top5" in printed
    metrics = json.loads(out.read_text())[0]
    # the same weights on the same 300 images: what validation measured after the last epoch
    assert metrics["accuracy/top1"] == pytest.approx(epoch_curve(work_dir)[-1]["val_top1"], abs=1e-3)
    assert metrics["accuracy/top1"] <= metrics["accuracy/top5"] <= 100.0


# ---- the seed recipe from a converted checkpoint -------------------------------------------------------------

START = {}


@HOOKS.register_module(force=True)
class RecordStartLogitsHook(Hook):
    """Logits of the model the Runner is about to train, on the first real test images, before step 0; and
    its patch embedding once training is over."""

    def __init__(self, count: int = 8) -> None:
        self.count = count

    def before_train(self, runner) -> None:
        images, _ = load_split(REAL, "test")
        model = runner.model
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor(
                {"inputs": [torch.from_numpy(img).permute(2, 0, 1) for img in images[:self.count]]}, False)
            START["logits"] = model(data["inputs"], mode="tensor").clone()
        model.train()
        optimizer = runner.optim_wrapper.optimizer
        START["recipe"] = dict(optimizer=type(optimizer).__name__, momentum=optimizer.defaults["momentum"],
                               weight_decay=optimizer.defaults["weight_decay"],
                               clip=runner.optim_wrapper.clip_grad_kwargs.get("max_norm"))

    def after_train(self, runner) -> None:
        START["stem_after"] = runner.model.backbone.stem.proj.weight.detach().clone()


def reference_logits(folder: Path, count: int = 8) -> torch.Tensor:
    """The converted folder through timm (``local-dir:``), on the same images, normalised as the config does."""
    import timm

    images, _ = load_split(REAL, "test")
    x = (torch.from_numpy(images[:count]).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    with torch.no_grad():
        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)


def fine_tune_from(folder: Path, shape: dict, act_layer: str, tmp_path: Path, steps: int = 3,
                   batch_size: int = 512) -> Path:
    """The shipped fine-tuning config (SGD 0.9, batch 512, warm-up + cosine, clipping 1, no weight decay) started
    from ``local-dir:folder`` with ``--load-from``, for a few steps on 600 real images."""
    config = tmp_path / "finetune.py"
    config.write_text(f"""_base_ = [{str(FINETUNE)!r}]
model = dict(backbone=dict(arch=dict(_delete_=True, **{shape!r}), act_layer={act_layer!r}),
             head=dict(in_channels={shape['embed_dim']}))
{data_options(60, 20, batch_size=batch_size)}
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end={steps}),
                   dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin={steps}, end={2 * steps})]
train_cfg = dict(max_iters={steps}, val_interval={steps})
default_hooks = dict(checkpoint=None, logger=dict(interval=1))
custom_hooks = [dict(type='RecordStartLogitsHook')]
""")
    work_dir = tmp_path / "work"
    START.clear()
    assert cli_main(["train", str(config), "--load-from", f"local-dir:{folder}", "--work-dir", str(work_dir),
                     *THREADS]) == 0
    return work_dir


def check_fine_tune(folder: Path, work_dir: Path, steps: int = 3) -> None:
    from safetensors.torch import load_file

    # loaded exactly: the Runner's model gives the converted model's logits before the first step
    expected = reference_logits(folder)
    assert expected.abs().max() > 1e-3  # not an untrained zero head
    torch.testing.assert_close(START["logits"], expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # with the paper's fine-tuning recipe
    assert START["recipe"] == dict(optimizer="SGD", momentum=0.9, weight_decay=0.0, clip=1.0)
    # and then trained: the steps ran, with finite losses, and moved the weights
    losses = [s["loss"] for s in step_losses(work_dir)]
    assert len(losses) == steps and np.isfinite(losses).all(), losses
    start = load_file(str(folder / "model.safetensors"))["stem.proj.weight"]
    assert START["stem_after"].shape == start.shape and not torch.equal(START["stem_after"], start)


def test_seed_recipe_fine_tunes_from_a_converted_official_npz(tmp_path):
    """A generated checkpoint in Google's npz layout (an S/32 shape at 32 px, 10 classes) -> ``mixer-zoo convert``
    -> the fine-tuning recipe on real images."""
    pytest.importorskip("jax")
    from mixer_zoo.reference.flax_mixer import make_official_npz

    shape = dict(architectures.ARCHITECTURES["mixer_s32_zoo"])
    npz = make_official_npz(tmp_path / "s32_32px.npz", dict(shape, img_size=32), num_classes=10)
    folder = tmp_path / "converted"
    assert cli_main(["convert", str(npz), "--out", str(folder), "--act-layer", "gelu", "--quiet"]) == 0
    # batch 128, not the recipe's 512: this start is 55 times the size of the 32 px model (512 wide, 8 blocks)
    check_fine_tune(folder, fine_tune_from(folder, shape, "gelu", tmp_path, batch_size=128))


@pytest.mark.skipif(not hasattr(architectures, "CUSTOM_ARCHITECTURE"),
                    reason="converting a Mixer outside the paper's sizes needs mixer_custom_zoo (issue 16, part 1)")
def test_seed_recipe_fine_tunes_the_trained_32px_model_after_conversion(scratch_run, tmp_path):
    """The model trained above -> ``mixer-zoo convert`` (its mmengine checkpoint) -> the fine-tuning recipe."""
    _, work_dir = scratch_run
    folder = tmp_path / "converted"
    assert cli_main(["convert", str(work_dir / "epoch_4.pth"), "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    shape = {k: config["model_args"][k] for k in ("patch_size", "num_blocks", "embed_dim", "tokens_mlp_dim",
                                                  "channels_mlp_dim")}
    assert config["model_args"]["img_size"] == 32 and config["num_classes"] == 10
    check_fine_tune(folder, fine_tune_from(folder, shape, config["model_args"]["act_layer"], tmp_path))
