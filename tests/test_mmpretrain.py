"""mmpretrain integration: the MixerZoo backbone, zoo:// weights, the model-index and the shipped configs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmpretrain")

import huggingface_hub.constants as hf_constants  # noqa: E402
import timm  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmpretrain import ImageClassificationInferencer, get_model, list_models  # noqa: E402
from mmpretrain.registry import MODELS, TRANSFORMS  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import mixer_zoo.mmpretrain as zoo_mm  # noqa: E402
from mixer_zoo.model.architectures import param_count  # noqa: E402
from mixer_zoo.weights.manifest import ManifestError, weights_entries  # noqa: E402
from mixer_zoo.mmpretrain import metafile  # noqa: E402
from mixer_zoo.mmpretrain.weights import load_from_zoo  # noqa: E402
from conftest import randomize_  # noqa: E402

TINY = dict(patch_size=8, num_blocks=2, embed_dim=32, tokens_mlp_dim=16, channels_mlp_dim=64)


def write_hub_snapshot(cache: Path, repo_id: str, state_dict) -> Path:
    """A huggingface_hub cache entry as a download leaves it: refs/main -> snapshots/<rev>/model.safetensors."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache in tmp with offline mode on (read at call time by huggingface_hub)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def publish_random_weights(cache: Path, key: str, seed: int = 0) -> dict:
    """Random weights for ``arch.tag`` in its (fake) Hub repo; returns the state dict."""
    entry = weights_entries()[key]
    model = timm.create_model(entry["architecture"], num_classes=entry["num_classes"])
    state_dict = randomize_(model, seed).state_dict()
    write_hub_snapshot(cache, entry["hf_hub_id"], state_dict)
    return state_dict


# ---- registry and backbone -----------------------------------------------------------------------------

def test_backbone_is_registered_and_takes_gelu_flavour_from_the_tag():
    tagged = MODELS.build(dict(type="MixerZoo", arch="mixer_s32_zoo.gsam_in1k"))
    assert tagged.act_layer == "gelu_tanh"
    assert MODELS.build(dict(type="MixerZoo", arch="mixer_s32_zoo.gsam_in1k", act_layer="gelu")).act_layer == "gelu"
    assert MODELS.build(dict(type="MixerZoo", arch=TINY, img_size=32)).act_layer == "gelu"
    names = dict(tagged.named_parameters())
    assert "stem.proj.weight" in names and "blocks.7.mlp_tokens.fc1.weight" in names and "norm.weight" in names


def test_backbone_out_indices_and_out_types():
    x = torch.randn(2, 3, 32, 32)
    grid = 32 // TINY["patch_size"]
    feats = MODELS.build(dict(type="MixerZoo", arch=TINY, img_size=32, out_indices=(0, -1), out_type="featmap"))(x)
    assert [f.shape for f in feats] == [torch.Size([2, 32, grid, grid])] * 2
    raw = MODELS.build(dict(type="MixerZoo", arch=TINY, img_size=32, out_type="raw"))(x)
    assert raw[0].shape == (2, grid * grid, 32)
    avg = MODELS.build(dict(type="MixerZoo", arch=TINY, img_size=32))(x)
    assert avg[0].shape == (2, 32)


def test_backbone_matches_timm_forward_intermediates():
    """Block outputs equal timm's API on the same model: out_indices pick the same blocks."""
    backbone = randomize_(MODELS.build(dict(type="MixerZoo", arch=TINY, img_size=32, out_indices=(0, 1),
                                            out_type="featmap", final_norm=False))).eval()
    model = timm.create_model("mixer_s16_zoo", img_size=32, num_classes=0, act_layer="gelu",
                              **{k: v for k, v in TINY.items()}).eval()
    model.load_state_dict(backbone.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = backbone(x)
        theirs = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("config, message", [
    (dict(arch="mixer_q16_zoo"), "unknown Mixer architecture 'mixer_q16_zoo'"),
    (dict(arch="mixer_b16_zoo.no_such_tag"), "unknown weights tag 'mixer_b16_zoo.no_such_tag'"),
    (dict(arch="mixer_s16_zoo.gsam_in1k", pretrained=True, img_size=384), "was trained at 224x224"),
    (dict(arch=TINY, img_size=32, out_indices=5), "out_indices 5 is out of range for 2 blocks"),
    (dict(arch=TINY, img_size=32, out_type="cls_token"), "out_type must be one of"),
    (dict(arch=dict(TINY, embed_dims=64), img_size=32), "arch dict has unknown keys ['embed_dims']"),
])
def test_backbone_rejects_bad_arguments(config, message):
    with pytest.raises((ValueError, ManifestError), match=re.escape(message)):
        MODELS.build(dict(type="MixerZoo", **config))


# ---- weights by tag ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["mixer_s32_zoo.gsam_in1k", "mixer_b16_zoo.goog_in21k"])
def test_get_model_pretrained_equals_timm_on_the_same_weights(offline_hub, key):
    state_dict = publish_random_weights(offline_hub, key)
    entry = weights_entries()[key]
    mm = get_model(metafile.mm_model_name(key), pretrained=True)
    ours_timm = timm.create_model(key, pretrained=True).eval()
    assert ours_timm.act_layer == entry["act_layer"] == mm.backbone.act_layer
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = mm(x, mode="tensor")
        expected = ours_timm(x)
    assert logits.shape == (2, entry["num_classes"])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    # and timm's own MlpMixer (another implementation) with the same weights and the tag's GELU
    twin = zoo_mm_timm_twin(entry, state_dict)
    if twin is not None:
        with torch.no_grad():
            torch.testing.assert_close(logits, twin(x), rtol=1e-4, atol=1e-4)


def zoo_mm_timm_twin(entry, state_dict):
    from timm.layers import GELUTanh

    from mixer_zoo.zoo import TIMM_EQUIVALENTS

    name = TIMM_EQUIVALENTS.get(entry["architecture"])
    if name is None:
        return None
    act = GELUTanh if entry["act_layer"] == "gelu_tanh" else torch.nn.GELU
    model = timm.create_model(name, num_classes=entry["num_classes"], act_layer=act).eval()
    model.load_state_dict(state_dict)
    return model


def test_init_cfg_pretrained_loads_the_backbone_only(offline_hub):
    key = "mixer_s32_zoo.gsam_in1k"
    state_dict = publish_random_weights(offline_hub, key, seed=3)
    classifier = MODELS.build(dict(
        type="ImageClassifier",
        backbone=dict(type="MixerZoo", arch=key, pretrained=True),
        head=dict(type="LinearClsHead", num_classes=10, in_channels=512)))
    classifier.init_weights()
    for name, tensor in classifier.backbone.state_dict().items():
        torch.testing.assert_close(tensor, state_dict[name])
    assert classifier.head.fc.weight.shape == (10, 512)


def test_zoo_scheme_errors_name_the_problem(offline_hub):
    with pytest.raises(ManifestError, match="unknown weights tag 'mixer_b16_zoo.nope'.*weights_manifest.json"):
        load_from_zoo("zoo://mixer_b16_zoo.nope")
    with pytest.raises(RuntimeError, match="weights of mixer_s16_zoo.gsam_in1k: cannot get model.safetensors "
                                           "from Hub repo mixer-zoo/mixer_s16_zoo.gsam_in1k"):
        load_from_zoo("zoo://mixer_s16_zoo.gsam_in1k")  # offline and not in the cache


def test_zoo_checkpoint_is_in_classifier_layout(offline_hub):
    key = "mixer_s32_zoo.gsam_in1k"
    state_dict = publish_random_weights(offline_hub, key)
    checkpoint = load_from_zoo(f"zoo://{key}")
    assert set(checkpoint["state_dict"]) == {("head.fc." + k[5:] if k.startswith("head.") else "backbone." + k)
                                             for k in state_dict}
    assert len(checkpoint["meta"]["dataset_meta"]["classes"]) == 1000


def test_inferencer_knows_the_tag_and_its_classes(offline_hub, tmp_path):
    import numpy as np

    key = "mixer_s32_zoo.gsam_in1k"
    publish_random_weights(offline_hub, key)
    inferencer = ImageClassificationInferencer(metafile.mm_model_name(key), pretrained=True)
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    result = inferencer(image)[0]
    assert result["pred_scores"].shape == (1000,)
    assert result["pred_class"] in inferencer.classes


# ---- model-index ---------------------------------------------------------------------------------------

def test_list_models_has_every_manifest_tag():
    expected = sorted(metafile.mm_model_name(k) for k in weights_entries())
    assert sorted(list_models("*zoo*")) == expected
    assert "mixer-b16-zoo_goog-in21k-ft-in1k" in expected


def test_model_index_params_and_flops_match_the_real_model():
    from mmengine.analysis import get_model_complexity_info

    index = {m["Name"]: m for m in metafile.build_model_index()["Models"]}
    for key in ("mixer_s32_zoo.gsam_in1k", "mixer_b16_zoo.goog_in21k"):
        meta = index[metafile.mm_model_name(key)]["Metadata"]
        entry = weights_entries()[key]
        model = timm.create_model(key)
        assert meta["Parameters"] == sum(p.numel() for p in model.parameters()) == param_count(
            entry["architecture"], entry["num_classes"])
    model = timm.create_model("mixer_s32_zoo").eval()
    counted = get_model_complexity_info(model, input_shape=(3, 224, 224), show_table=False, show_arch=False)["flops"]
    flops = index[metafile.mm_model_name("mixer_s32_zoo.gsam_in1k")]["Metadata"]["FLOPs"]
    assert abs(flops - counted) / counted < 0.01  # mmengine counts norms and GELUs too


def test_model_index_results_come_from_the_manifest(monkeypatch):
    entry = dict(weights_entries()["mixer_b16_zoo.goog_in1k"])
    entry["metrics"] = {"reported": {"imagenet_top1": 76.4, "imagenet_top5": 92.1, "source": "x"},
                        "measured": {"imagenet_val": {"top1": 76.5, "top5": 92.0}}}
    model = metafile.model_entry("mixer_b16_zoo.goog_in1k", entry)
    assert model["Results"] == [dict(Task="Image Classification", Dataset="ImageNet-1k",
                                     Metrics={"Top 1 Accuracy": 76.5, "Top 5 Accuracy": 92.0})]
    entry["metrics"] = {"reported": {}, "measured": {}}
    assert "Results" not in metafile.model_entry("mixer_b16_zoo.goog_in1k", entry)
    assert model["Weights"] == "zoo://mixer_b16_zoo.goog_in1k"


# ---- shipped configs -----------------------------------------------------------------------------------

def test_eval_configs_are_generated_from_the_manifest():
    assert metafile.stale_eval_configs() == [], "run `python -m mixer_zoo.mmpretrain --write`"


SHIPPED = sorted(p for p in zoo_mm.CONFIG_DIR.rglob("*.py") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(zoo_mm.CONFIG_DIR)))
def test_every_shipped_config_builds_its_model_and_pipelines(path):
    cfg = Config.fromfile(str(path))
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == "MixerZoo"
    assert model.head.fc.in_features == model.backbone.embed_dims
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            for step in cfg[loader].dataset.pipeline:
                TRANSFORMS.build(step)


def test_eval_config_preprocessing_follows_the_manifest():
    key = "mixer_b16_zoo.goog_in21k_ft_in1k"
    entry = weights_entries()[key]
    cfg = Config.fromfile(str(zoo_mm.CONFIG_DIR / "eval" / f"{metafile.mm_model_name(key)}.py"))
    assert cfg.model.data_preprocessor.mean == [255 * m for m in entry["mean"]]
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.scale == int(224 / entry["crop_pct"]) and resize.interpolation == entry["interpolation"]
    assert cfg.model.head.num_classes == entry["num_classes"] and cfg.load_from == f"zoo://{key}"


def test_package_data_covers_the_configs():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = [p for pkg, pats in pyproject["tool"]["setuptools"]["package-data"].items()
                for p in pats if pkg in ("mixer_zoo", "mixer_zoo.mmpretrain")]
    package = Path(zoo_mm.__file__).parents[1]
    covered = {p for pat in patterns for p in package.glob(pat)} | {
        p for pat in pyproject["tool"]["setuptools"]["package-data"].get("mixer_zoo.mmpretrain", [])
        for p in Path(zoo_mm.__file__).parent.glob(pat)}
    assert set(zoo_mm.CONFIG_DIR.rglob("*.py")) <= covered


def test_zoo_weights_go_through_the_hub_sha256_check(offline_hub, tmp_path, monkeypatch):
    import json

    from mixer_zoo.weights.hub_cache import WeightsError
    from mixer_zoo.weights.manifest import load_manifest

    key = "mixer_s32_zoo.gsam_in1k"
    publish_random_weights(offline_hub, key)
    manifest = json.loads(json.dumps(load_manifest()))
    manifest["weights"][key]["converted"]["sha256"] = "0" * 64
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(path))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_from_zoo(f"zoo://{key}")


def test_a_plain_runner_tests_an_eval_config_with_every_weight(tmp_path):
    """Runner.from_cfg on a generated eval config (ImageNet val with its annotation file): the tested model holds
    every weight of the checkpoint (its logits are timm's on the same weights) and a checkpoint of another shape
    stops the run in one line naming the file."""
    import numpy as np
    from mmengine.runner import Runner
    from PIL import Image

    key = "mixer_s32_zoo.gsam_in1k"
    root = tmp_path / "imagenet"
    (root / "meta").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(["n01440764", "n01443537"]):
        (root / "val" / wnid).mkdir(parents=True)
        image = np.random.default_rng(i).integers(0, 255, (240, 260, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "val" / wnid / f"{i}.JPEG")
        lines.append(f"{wnid}/{i}.JPEG {i}")
    (root / "meta" / "val.txt").write_text("\n".join(lines) + "\n")
    weights = tmp_path / "weights"
    weights.mkdir()
    source = randomize_(timm.create_model(key), seed=2).eval()
    save_file(source.state_dict(), str(weights / "model.safetensors"))

    cfg = Config.fromfile(str(zoo_mm.CONFIG_DIR / "eval" / f"{metafile.mm_model_name(key)}.py"))
    cfg.test_dataloader.dataset.data_root = str(root)
    cfg.test_dataloader.num_workers = 0
    cfg.work_dir, cfg.load_from = str(tmp_path / "work"), f"local-dir:{weights}"
    runner = Runner.from_cfg(cfg)
    assert set(runner.test()) == {"accuracy/top1", "accuracy/top5"}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(runner.model.eval()(x, mode="tensor"), source(x), rtol=1e-5, atol=1e-5)

    other = randomize_(timm.create_model("mixer_s32_zoo", num_classes=10), seed=3)
    save_file(other.state_dict(), str(weights / "model.safetensors"))
    cfg.work_dir = str(tmp_path / "work2")
    with pytest.raises(ValueError, match=re.escape(f"local-dir:{weights}: does not match the model: 2 of another "
                                                   "shape (head.fc.weight (10, 512) in the file, (1000, 512)")):
        Runner.from_cfg(cfg).test()


def test_every_shipped_config_imports_the_zoo_and_loads_checkpoints_exactly():
    for path in SHIPPED:
        cfg = Config.fromfile(str(path))
        assert "mixer_zoo.mmpretrain" in cfg.custom_imports.imports, path
        assert dict(type="ExactCheckpointHook") in cfg.custom_hooks, path


def test_pretrained_init_cfg_must_fill_the_backbone(tmp_path):
    """mmengine's Pretrained init loads what matches and logs the rest; MixerZoo's refuses, naming file and keys."""
    weights = tmp_path / "w"
    weights.mkdir()
    save_file(randomize_(timm.create_model("mixer_s32_zoo", num_classes=10)).state_dict(),
              str(weights / "model.safetensors"))
    good = MODELS.build(dict(type="MixerZoo", arch="mixer_s32_zoo", init_cfg=dict(
        type="Pretrained", checkpoint=f"local-dir:{weights}", prefix="backbone.")))
    good.init_weights()
    expected = load_file_state(weights)
    for name, tensor in good.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    wrong = MODELS.build(dict(type="MixerZoo", arch="mixer_s16_zoo", init_cfg=dict(
        type="Pretrained", checkpoint=f"local-dir:{weights}", prefix="backbone.")))
    with pytest.raises(ValueError, match=re.escape(f"local-dir:{weights} (prefix 'backbone.'): does not match the "
                                                   "model: 25 of another shape (stem.proj.weight (512, 3, 32, 32) in the file")):
        wrong.init_weights()
    with pytest.raises(ValueError, match="no key starts with prefix 'neck.'"):
        MODELS.build(dict(type="MixerZoo", arch="mixer_s32_zoo", init_cfg=dict(
            type="Pretrained", checkpoint=f"local-dir:{weights}", prefix="neck."))).init_weights()


def load_file_state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
