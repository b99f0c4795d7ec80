"""Higher-resolution fine-tuning on real CIFAR-10 images (``tools/higher_resolution.py``, ``finetune/cifar10_64px.py``).

A 32 px Mixer trained on real images (conftest's short run of the shipped scratch config), converted, then expanded
with ``mixer-zoo convert --img-size 64``: at step 0 it classifies a 64 px image made of 2x2 copies of a test image
exactly as the 32 px model classifies that image, and an upsampled image exactly as the mean of the 32 px model
over its four tiles; the 64 px config then fine-tunes from those very weights with a falling loss. Skipped, saying
why, where the real images (the repository's ../shared/data) are missing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmpretrain")

import timm  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

from conftest import CLI_THREADS, REAL_CIFAR, cifar_data_options, needs_real_cifar  # noqa: E402
from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.mmpretrain import CONFIG_DIR, load_split  # noqa: E402
from mixer_zoo.model.resolution import expand_token_mixing  # noqa: E402
from mixer_zoo.tools.higher_resolution import larger_input, normalized, predict, step0_rows  # noqa: E402
from mixer_zoo.tools.training_curve import step_losses, validation_curve  # noqa: E402

pytestmark = needs_real_cifar

FINETUNE_64 = CONFIG_DIR / "finetune" / "cifar10_64px.py"
IDENTITY = 1e-5
"""Largest logit difference from the tile mean, relative to the largest logit: float32 rounding, not a model error."""


@pytest.fixture(scope="module")
def folders(cifar32_scratch_run, tmp_path_factory):
    """The trained 32 px checkpoint -> a converted folder -> the same model expanded to 64 px, by the CLI."""
    _, work_dir = cifar32_scratch_run
    root = tmp_path_factory.mktemp("hires")
    assert cli_main(["convert", str(work_dir / "epoch_4.pth"), "--out", str(root / "c10_32px"), "--quiet"]) == 0
    assert cli_main(["convert", str(root / "c10_32px"), "--img-size", "64", "--out", str(root / "c10_64px")]) == 0
    return root / "c10_32px", root / "c10_64px"


@pytest.fixture(scope="module")
def test_images():
    """Every fourth real test image (500, all classes whatever the order of the batch file)."""
    images, labels = load_split(REAL_CIFAR, "test")
    return images[::4], labels[::4]


@pytest.fixture(scope="module")
def models(folders):
    f32, f64 = folders
    return (timm.create_model(f"local-dir:{f32}", pretrained=True).eval(),
            timm.create_model(f"local-dir:{f64}", pretrained=True).eval())


def test_the_expanded_folder_is_a_64px_model_that_says_where_it_comes_from(folders):
    f32, f64 = folders
    source, config = (json.loads((f / "config.json").read_text()) for f in folders)
    assert config["model_args"]["img_size"] == 64 and config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert config["model_args"]["tokens_mlp_dim"] == 4 * source["model_args"]["tokens_mlp_dim"]
    assert {k: config["model_args"][k] for k in ("patch_size", "embed_dim", "channels_mlp_dim", "act_layer")} == \
        {k: source["model_args"][k] for k in ("patch_size", "embed_dim", "channels_mlp_dim", "act_layer")}
    # the source's evaluation preprocessing (no crop at CIFAR's size), not Google's 224 px ImageNet crop
    assert config["pretrained_cfg"]["crop_pct"] == source["pretrained_cfg"]["crop_pct"] == 1.0
    card = (f64 / "README.md").read_text()
    assert "trained at 32 px, not fine-tuned" in card and "3x64x64" in card and "block-diagonal" in card


def test_other_sizes_and_files_are_refused_with_one_line(folders, tmp_path, capsys):
    f32, _ = folders
    assert cli_main(["convert", str(f32), "--img-size", "48", "--out", str(tmp_path / "x")]) == 2
    assert "not an integer multiple" in capsys.readouterr().err
    assert cli_main(["convert", str(f32 / "model.safetensors"), "--img-size", "64", "--out", str(tmp_path / "y")]) == 2
    assert "--img-size expands a converted folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_step0_at_64px_matches_32px_where_the_expansion_is_exact(models, test_images):
    """Tiled inputs: the same top-1 and the same prediction for every image as the 32 px model; upsampled inputs:
    exactly the mean of the 32 px model over the four magnified quarters (their accuracy is measured, not equal)."""
    base, expanded = models
    images, labels = test_images
    rows = step0_rows(base, expanded, images, labels)
    at_32, by_input = rows[0], {r["input"]: r for r in rows[1:]}
    assert at_32["top1"] > 20.0, at_32  # trained on real images (chance: 10 %)
    tiles = by_input["tiles"]
    one_image = 100.0 / len(labels)  # a near-tie may flip in float32; none did when this was written
    assert tiles["tile_mean_rel_error"] < IDENTITY
    assert tiles["same_prediction_as_base"] >= 100.0 - one_image and abs(tiles["top1"] - at_32["top1"]) <= one_image
    for kind in ("nearest", "bilinear"):
        assert by_input[kind]["tile_mean_rel_error"] < IDENTITY, by_input[kind]


def test_the_check_fails_for_a_wrong_expansion(models, test_images):
    """The same 32 px weights expanded over strided token subsets instead of the paper's tiles: a tiled image is no
    longer classified as the 32 px model classifies it."""
    base, expanded = models
    images, labels = test_images
    wrong = timm.create_model("mixer_custom_zoo", img_size=64, num_classes=10, act_layer=expanded.act_layer,
                              patch_size=4, num_blocks=len(base.blocks), embed_dim=base.embed_dim,
                              tokens_mlp_dim=expanded.blocks[0].mlp_tokens.fc1.out_features,
                              channels_mlp_dim=base.blocks[0].mlp_channels.fc1.out_features)
    wrong.load_state_dict(expand_token_mixing(base.state_dict(), 2, layout="strided"))
    tiles = step0_rows(base, wrong, images, labels, kinds=("tiles",))[1]
    assert tiles["tile_mean_rel_error"] > 100 * IDENTITY and tiles["same_prediction_as_base"] < 95.0, tiles


START = {}


@HOOKS.register_module(force=True)
class RecordExpandedStartHook(Hook):
    """Logits of the model the Runner is about to fine-tune, on real test images upsampled to 64 px (bilinear)."""

    def before_train(self, runner) -> None:
        images, _ = load_split(REAL_CIFAR, "test")
        raw = F.interpolate(torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float(), scale_factor=2,
                            mode="bilinear", align_corners=False)
        model = runner.model
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor({"inputs": list(raw)}, False)
            START["logits"] = model(data["inputs"], mode="tensor").clone()
        model.train()


def test_the_64px_config_fine_tunes_the_expanded_model_with_falling_loss(folders, models, tmp_path):
    """``mixer-zoo train finetune/cifar10_64px.py --load-from local-dir:EXPANDED`` on 100 real images (so that a
    few steps are several passes): it starts from exactly the expanded model's logits, trains with the paper's
    recipe (lr 0.05 instead of 0.03 for so short a run) and the loss falls."""
    _, f64 = folders
    steps = 16
    config = tmp_path / "ft64.py"
    config.write_text(f"""_base_ = [{str(FINETUNE_64)!r}]
{cifar_data_options(10, 10, batch_size=50)}
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
                   dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=2, end={steps})]
train_cfg = dict(max_iters={steps}, val_interval={steps})
default_hooks = dict(checkpoint=None, logger=dict(interval=1))
custom_hooks = [dict(type='RecordExpandedStartHook')]
""")
    START.clear()
    work_dir = tmp_path / "work"
    assert cli_main(["train", str(config), "--load-from", f"local-dir:{f64}", "--work-dir", str(work_dir),
                     *CLI_THREADS]) == 0
    _, expanded = models
    images, _ = load_split(REAL_CIFAR, "test")
    expected = predict(expanded, larger_input(normalized(images[:8]), 2, "bilinear"))
    torch.testing.assert_close(START["logits"], expected, rtol=IDENTITY, atol=IDENTITY * float(expected.abs().max()))
    # mmengine logs each loss averaged over the last (up to) 10 steps: the first is step 1's own
    losses = [s["loss"] for s in step_losses(work_dir)]
    assert len(losses) == steps and np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0] - 0.1 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    assert [c["step"] for c in validation_curve(work_dir)] == [steps]  # validated after the last step, logged by it
