"""Registration with timm: names, exact parameter counts, tags carrying their GELU, timm's builder."""
import pytest
import timm
import torch

from mixer_zoo import ARCHITECTURES
from mixer_zoo.model.architectures import param_count
from mixer_zoo.weights.manifest import weights_entries

PAPER_PARAMS = {
    "mixer_s32_zoo": 19_104_624, "mixer_s16_zoo": 18_528_264, "mixer_s8_zoo": 20_646_504,
    "mixer_b32_zoo": 60_293_428, "mixer_b16_zoo": 59_880_472, "mixer_l32_zoo": 206_939_264,
    "mixer_l16_zoo": 208_196_168, "mixer_h14_zoo": 432_350_952,
}


def test_all_eight_architectures_and_the_generic_one_are_listed_by_timm():
    assert sorted(timm.list_models("*_zoo")) == sorted([*PAPER_PARAMS, "mixer_custom_zoo"])


def test_the_generic_architecture_takes_any_shape_and_needs_all_of_it():
    shape = dict(patch_size=4, num_blocks=4, embed_dim=128, tokens_mlp_dim=64, channels_mlp_dim=512, img_size=32)
    model = timm.create_model("mixer_custom_zoo", num_classes=10, **shape)
    assert sum(p.numel() for p in model.parameters()) == 569_994  # stem 6272 + 4 x (512 + 8320 + 131712) + 256 + 1290
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 32, 32)
    with pytest.raises(TypeError, match="mixer_custom_zoo needs the Mixer's shape: missing tokens_mlp_dim"):
        timm.create_model("mixer_custom_zoo", **{k: v for k, v in shape.items() if k != "tokens_mlp_dim"})


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_exact_parameter_counts_with_a_1000_class_head(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]
    assert param_count(name) == PAPER_PARAMS[name]


def test_create_model_with_num_classes_and_timm_pretrained_cfg():
    model = timm.create_model("mixer_b16_zoo", num_classes=10)
    assert model.get_classifier().out_features == 10
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["first_conv"] == "stem.proj" and cfg["classifier"] == "head"
    assert cfg["license"] == "apache-2.0"
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 224, 224) and data_cfg["crop_pct"] == 0.875


def test_every_manifest_tag_is_a_timm_pretrained_cfg_with_the_manifest_values():
    for name, entry in weights_entries().items():
        cfg = timm.get_pretrained_cfg(name)
        assert cfg is not None, name
        assert cfg.num_classes == entry["num_classes"] and cfg.hf_hub_id == entry["hf_hub_id"], name


def test_the_weights_tag_decides_the_gelu_flavour():
    goog = timm.create_model("mixer_b16_zoo.goog_in21k")
    assert goog.act_layer == "gelu_tanh" and goog.blocks[0].approximate == "tanh"
    assert goog.get_classifier().out_features == 21843
    untrained = timm.create_model("mixer_h14_zoo.untrained")
    assert untrained.act_layer == "gelu"
    explicit = timm.create_model("mixer_b16_zoo.goog_in21k", act_layer="gelu")
    assert explicit.act_layer == "gelu"


def test_pretrained_cfg_overlay_is_honoured():
    model = timm.create_model("mixer_s32_zoo", pretrained_cfg_overlay=dict(crop_pct=1.0))
    assert model.pretrained_cfg["crop_pct"] == 1.0


def test_features_only_returns_block_maps():
    model = timm.create_model("mixer_s32_zoo", features_only=True, out_indices=(1, 3))
    assert model.feature_info.channels() == [512, 512]
    with torch.inference_mode():
        feats = model.eval()(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in feats] == [(1, 512, 7, 7), (1, 512, 7, 7)]


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("mixer_x99_zoo")


def test_architectures_follow_the_paper_table():
    for name, a in ARCHITECTURES.items():
        assert a["tokens_mlp_dim"] * 2 == a["embed_dim"] and a["channels_mlp_dim"] == 4 * a["embed_dim"], name


@pytest.mark.parametrize("order", ["mixer_zoo first", "timm first", "find_spec between"])
def test_importing_mixer_zoo_registers_the_models_whenever_timm_comes(order):
    """``import mixer_zoo`` does not import torch or timm (the CLI answers at once); the models are registered
    with timm all the same, whether timm is imported before it, after it, or only looked up in between."""
    import subprocess
    import sys

    steps = {"mixer_zoo first": "import mixer_zoo\nheavy = 'torch' in sys.modules or 'timm' in sys.modules\nimport timm",
             "timm first": "import timm\nimport mixer_zoo\nheavy = False",
             "find_spec between": "import mixer_zoo, importlib.util\nimportlib.util.find_spec('timm')\n"
                                  "heavy = 'timm' in sys.modules\nimport timm"}[order]
    code = (f"import sys\n{steps}\n"
            "m = timm.create_model('mixer_s32_zoo.gsam_in1k')\n"
            "print(heavy, type(m).__module__, m.act_layer, mixer_zoo.Mixer is type(m))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "mixer_zoo.model.mixer", "gelu_tanh", "True"]
