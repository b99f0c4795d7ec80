"""MindSpore ``.ckpt`` <-> timm folder: the release's parameter names, GELU and LayerNorm epsilon, proved against
MindSpore's own forward pass (a fixture MindSpore wrote, committed, and live when an interpreter with ``mindspore`` is
named by ``$MIXER_ZOO_MINDSPORE_PYTHON``); the round trip through our writer; and every kind of bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from conftest import randomize_
from mixer_zoo.cli import main
from mixer_zoo.formats.keys import MINDSPORE_TO_TIMM, TIMM_TO_MINDSPORE, renamed
from mixer_zoo.formats.mindspore_ckpt import load_ckpt_state_dict, messages, read_ckpt_index, write_ckpt
from mixer_zoo.model.mixer import Mixer
from mixer_zoo.tools.convert import convert_ckpt, export_mindspore, export_mmpretrain

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "mindspore"
REAL = REPO.parent / "shared" / "data" / "cifar10-real"
MINDSPORE_PYTHON = os.environ.get("MIXER_ZOO_MINDSPORE_PYTHON")
TINY = dict(img_size=32, patch_size=4, embed_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32, num_blocks=2)
needs_real_cifar = pytest.mark.skipif(not (REAL / "cifar-10-batches-py").is_dir(),
                                      reason=f"real CIFAR-10 images not found: no {REAL}/cifar-10-batches-py")


def tiny_mixer(seed: int = 0, **shape) -> Mixer:
    """A 10-class Mixer computing what MindSpore's does (tanh GELU, LayerNorm epsilon 1e-7), random weights."""
    return randomize_(Mixer(num_classes=10, act_layer="gelu_tanh", norm_eps=1e-7, **{**TINY, **shape}), seed).eval()


def save_ckpt(path: Path, state_dict, **kwargs) -> Path:
    with open(path, "wb") as f:
        write_ckpt(state_dict, f, **kwargs)
    return path


def record(tag: str, array: np.ndarray, tensor_type: str = "Float32", dims=None) -> bytes:
    """One parameter record as MindSpore's save_checkpoint writes it."""
    checkpoint_class, _ = messages()
    message = checkpoint_class()
    value = message.value.add(tag=tag)
    value.tensor.dims.extend(array.shape if dims is None else dims)
    value.tensor.tensor_type = tensor_type
    value.tensor.tensor_content = np.ascontiguousarray(array).tobytes()
    return message.SerializeToString()


def mindspore_arrays(model: torch.nn.Module) -> dict:
    return {renamed(k, TIMM_TO_MINDSPORE): v.detach().numpy() for k, v in model.state_dict().items()}


def write_records(path: Path, arrays: dict, types: dict = None) -> Path:
    path.write_bytes(b"".join(record(tag, a, (types or {}).get(tag, "Float32")) for tag, a in arrays.items()))
    return path


def logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy().astype(np.float64)


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- our writer and reader --------------------------------------------------------------------------------------

def test_round_trip_keeps_the_logits_and_records_mindspores_gelu_and_epsilon(tmp_path):
    model = tiny_mixer()
    ckpt = save_ckpt(tmp_path / "tiny.ckpt", model.state_dict())
    folder = convert_ckpt(ckpt, tmp_path / "folder", progress=False)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "mixer_custom_zoo"
    assert (config["model_args"]["act_layer"], config["model_args"]["norm_eps"]) == ("gelu_tanh", 1e-7)
    assert config["pretrained_cfg"]["mean"] == pytest.approx([126.1 / 255, 123.7 / 255, 114.6 / 255])
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert loaded.blocks[0].norm1.eps == loaded.norm.eps == 1e-7 and loaded.act_layer == "gelu_tanh"
    x = torch.randn(3, 3, 32, 32)
    np.testing.assert_array_equal(logits(loaded, x), logits(model, x))
    back = export_mindspore(folder, tmp_path / "back.ckpt")
    assert back.read_bytes() == ckpt.read_bytes()  # the same records, names, order and bytes


@pytest.mark.parametrize("backbone", ["MixerZoo", "MlpMixer"])
def test_to_mmpretrain_keeps_mindspores_layernorm_epsilon(tmp_path, backbone):
    """A MindSpore folder exported for mmpretrain: the config mmpretrain builds computes the same function, the
    LayerNorm epsilon of 1e-7 included (with 1e-6 the logits of these weights move by ~1e-4)."""
    pytest.importorskip("mmpretrain")
    import mixer_zoo.mmpretrain  # noqa: F401  (registers MixerZoo)
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    shape = dict(img_size=224, patch_size=32, embed_dim=512, tokens_mlp_dim=256, channels_mlp_dim=2048, num_blocks=8)
    folder = convert_ckpt(save_ckpt(tmp_path / "s.ckpt", tiny_mixer(**shape).state_dict()), tmp_path / "folder",
                          progress=False)
    model_cfg = export_mmpretrain(folder, tmp_path / "mm.pth", backbone=backbone)
    model = MODELS.build(model_cfg).eval()
    load_checkpoint(model, str(tmp_path / "mm.pth"), strict=True)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {m.eps for m in norms} == {1e-7}
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert max_rel(model(x, mode="tensor").numpy().astype(np.float64), logits(reference, x)) < 1e-5


def test_the_release_names_are_read_and_a_large_parameter_spans_several_records(tmp_path):
    model = tiny_mixer()
    ckpt = save_ckpt(tmp_path / "sliced.ckpt", model.state_dict(), slice_bytes=256)
    index = read_ckpt_index(ckpt)
    assert "backbone.mixer_blocks.layers.1.channel_mixer.channel_mixing_mlp.dense2.weight" in index.params
    assert "head.dense.bias" in index.params and "backbone.norm.gamma" in index.params
    assert len(index.params["backbone.patch_embedding.conv.weight"].records) == 768 * 4 // 256
    state_dict = load_ckpt_state_dict(ckpt)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(state_dict[key], value, rtol=0, atol=0)


def test_mindspores_crc_trailer_is_checked(tmp_path):
    model = tiny_mixer()
    ckpt = save_ckpt(tmp_path / "crc.ckpt", model.state_dict(), crc_check=True)
    assert ckpt.read_bytes()[-17:-10] == b"crc_num" and read_ckpt_index(ckpt).crc_checked
    assert not read_ckpt_index(save_ckpt(tmp_path / "plain.ckpt", model.state_dict())).crc_checked
    loaded = timm.create_model(f"local-dir:{convert_ckpt(ckpt, tmp_path / 'out', progress=False)}", pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    np.testing.assert_array_equal(logits(loaded.eval(), x), logits(model, x))


def test_half_precision_parameters_are_widened_to_float32(tmp_path):
    model = tiny_mixer()
    arrays = mindspore_arrays(model)
    arrays["head.dense.weight"] = arrays["head.dense.weight"].astype(np.float16)
    bf16_bits = (torch.from_numpy(arrays["backbone.norm.gamma"]).to(torch.bfloat16).view(torch.int16).numpy())
    arrays["backbone.norm.gamma"] = bf16_bits
    path = write_records(tmp_path / "half.ckpt", arrays,
                         {"head.dense.weight": "Float16", "backbone.norm.gamma": "BFloat16"})
    state_dict = load_ckpt_state_dict(path)
    assert state_dict["head.weight"].dtype == torch.float32
    torch.testing.assert_close(state_dict["head.weight"], model.head.weight.detach().half().float(), rtol=0, atol=0)
    torch.testing.assert_close(state_dict["norm.weight"], model.norm.weight.detach().bfloat16().float(), rtol=0, atol=0)


def test_optimiser_state_saved_by_model_checkpoint_is_left_out_and_counted(tmp_path, capsys):
    model = tiny_mixer()
    arrays = mindspore_arrays(model)
    arrays["moment1.head.dense.weight"] = np.zeros((10, 16), np.float32)
    arrays["global_step"] = np.array([7], np.int32)
    path = write_records(tmp_path / "train.ckpt", arrays, {"global_step": "Int32"})
    assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "left out 2 optimiser/training-state entries" in capsys.readouterr().out
    loaded = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    np.testing.assert_array_equal(logits(loaded, x), logits(model, x))


def test_both_converter_commands_take_a_ckpt(tmp_path):
    ckpt = save_ckpt(tmp_path / "tiny.ckpt", tiny_mixer().state_dict())
    result = subprocess.run([sys.executable, str(REPO / "converters" / "jax_to_torch.py"), str(ckpt), "--out",
                             str(tmp_path / "script"), "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert main(["convert", str(ckpt), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    for name in ("script", "cli"):
        assert {p.name for p in (tmp_path / name).iterdir()} == {"model.safetensors", "config.json", "README.md"}


# ---- bad input: one line naming the file and the parameter, no output ----------------------------------------

def _good(tmp_path):
    return mindspore_arrays(tiny_mixer())


def _drop(arrays, tag):
    arrays.pop(tag)
    return arrays


def _set(arrays, tag, value):
    arrays[tag] = value
    return arrays


def _poison(arrays, tag, value):
    arrays[tag] = arrays[tag].copy()
    arrays[tag].flat[3] = value
    return arrays


def _flip_a_weight_byte(path, arrays):
    save_ckpt(path, {renamed(k, MINDSPORE_TO_TIMM): torch.from_numpy(v) for k, v in arrays.items()}, crc_check=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a weight: still a valid record, a different number
    path.write_bytes(bytes(data))


BAD_INPUTS = {
    "crc mismatch": (_flip_a_weight_byte, "fails its CRC-32 check"),
    "truncated": (lambda p, a: p.write_bytes(write_records(p, a).read_bytes()[:-5000]), "truncated"),
    "not protobuf": (lambda p, a: p.write_text("a plain text file, not a checkpoint\n"), "not a MindSpore checkpoint"),
    "zip file": (lambda p, a: p.write_bytes(b"PK\x03\x04" + bytes(200)), "not a MindSpore checkpoint"),
    "empty": (lambda p, a: p.write_bytes(b""), "empty file"),
    "unknown name": (lambda p, a: write_records(p, _set(a, "backbone.extra.weight", np.ones(3, np.float32))),
                     "unexpected parameter 'backbone.extra.weight'"),
    "missing name": (lambda p, a: write_records(p, _drop(a, "head.dense.bias")), "missing key 'head.dense.bias'"),
    "wrong shape": (lambda p, a: write_records(p, _set(a, "head.dense.weight", np.ones((10, 15), np.float32))),
                    "'head.dense.weight' has shape (10, 15); expected (10, 16)"),
    "nan": (lambda p, a: write_records(p, _poison(a, "backbone.norm.gamma", np.nan)),
            "'backbone.norm.gamma' contains 1 NaN/Inf"),
    "inf": (lambda p, a: write_records(p, _poison(a, "head.dense.weight", np.inf)), "'head.dense.weight' contains 1"),
    "unknown dtype": (lambda p, a: write_records(p, a, {"head.dense.bias": "Int32"}),
                      "'head.dense.bias' has tensor_type 'Int32'"),
    "content short of its shape": (lambda p, a: p.write_bytes(
        b"".join(record(t, v if t != "head.dense.bias" else v[:7], dims=v.shape) for t, v in a.items())),
        "'head.dense.bias' declares shape (10,)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_checkpoints_are_one_line_naming_file_and_parameter_and_write_nothing(tmp_path, capsys, case):
    make, words = BAD_INPUTS[case]
    src, out = tmp_path / "bad.ckpt", tmp_path / "out"
    make(src, _good(tmp_path))
    assert main(["convert", str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(src) in err and words in err, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.ckpt"]


# ---- against MindSpore --------------------------------------------------------------------------------------

def cifar_images(indices):
    from mixer_zoo.mmpretrain.cifar import load_split

    images, labels = load_split(REAL, "test")
    return images[list(indices)], labels[list(indices)]


def our_inputs(folder: Path, images: np.ndarray) -> torch.Tensor:
    """The converted folder's own evaluation preprocessing (timm's, from its config), as ``mixer-zoo eval`` runs it."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    transform = create_transform(**resolve_data_config(model=model), is_training=False)
    return torch.stack([transform(Image.fromarray(image)) for image in images])


def check_against_mindspore(ms_dir: Path, images: np.ndarray, tmp_path: Path, same_inputs: bool) -> dict:
    """Convert MindSpore's checkpoint and compare logits with MindSpore's (≤ 1e-5 relative): on MindSpore's own
    preprocessed batch when it is there, else through our preprocessing. The erf GELU must be visibly worse."""
    folder = convert_ckpt(ms_dir / "model.ckpt", tmp_path / "converted", progress=False)
    expected = np.load(ms_dir / "logits.npy").astype(np.float64)
    ours = our_inputs(folder, images)
    x = torch.from_numpy(np.load(ms_dir / "inputs.npy")) if same_inputs else ours
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    erf = timm.create_model(f"local-dir:{folder}", pretrained=True, act_layer="gelu").eval()
    eps6 = timm.create_model(f"local-dir:{folder}", pretrained=True, norm_eps=1e-6).eval()
    facts = dict(ours=max_rel(logits(model, x), expected), erf_gelu=max_rel(logits(erf, x), expected),
                 eps_1e6=max_rel(logits(eps6, x), expected),
                 end_to_end=max_rel(logits(model, ours), expected),
                 top1_agreement=float((logits(model, ours).argmax(1) == expected.argmax(1)).mean()))
    print({k: f"{v:.3g}" for k, v in facts.items()})
    assert facts["ours"] <= 1e-5
    assert facts["erf_gelu"] > 10 * max(facts["ours"], 1e-7)
    return facts


@needs_real_cifar
def test_a_checkpoint_written_by_mindspore_gives_mindspores_logits(tmp_path):
    """The committed fixture (tests/data/mindspore, made by make_fixture.py with MindSpore's save_checkpoint): a
    32 px Mixer, so the release's Resize is the identity and our preprocessing must match MindSpore's exactly."""
    facts = json.loads((FIXTURE / "facts.json").read_text())
    assert facts["gelu_approximate"] is True and facts["layer_norm_epsilon"] == 1e-7 and facts["mindspore"]
    images, _ = cifar_images(facts["cifar_test_indices"])
    check_against_mindspore(FIXTURE, images, tmp_path, same_inputs=False)


@pytest.mark.skipif(not MINDSPORE_PYTHON, reason="MindSpore is not installed here: set MIXER_ZOO_MINDSPORE_PYTHON to "
                    "a Python that has mindspore (README: 'MindSpore checkpoints'); the round trip and the committed "
                    "MindSpore fixture still run")
@needs_real_cifar
@pytest.mark.parametrize("size, patch", [(32, 4), (224, 16)])
def test_live_mindspore_save_checkpoint_and_forward(tmp_path, size, patch):
    indices = list(range(0, 2000, 250))
    images, _ = cifar_images(indices)
    np.save(tmp_path / "images.npy", images)
    crc = ["--crc-check"] if size == 224 else []  # MindSpore's optional CRC trailer, read and checked
    result = subprocess.run([MINDSPORE_PYTHON, str(REPO / "tests" / "mindspore_reference.py"), "--images",
                             str(tmp_path / "images.npy"), "--out", str(tmp_path / "ms"), "--img-size", str(size),
                             "--patch", str(patch), *crc], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads((tmp_path / "ms" / "facts.json").read_text())
    assert (facts["gelu_approximate"], facts["layer_norm_epsilon"]) == (True, 1e-7)
    assert read_ckpt_index(tmp_path / "ms" / "model.ckpt").crc_checked == bool(crc)
    compared = check_against_mindspore(tmp_path / "ms", images, tmp_path, same_inputs=True)
    inputs = np.load(tmp_path / "ms" / "inputs.npy")
    pixels = float(np.abs(our_inputs(tmp_path / "converted", images).numpy() - inputs).max() * 61.9)
    print(f"{size} px: preprocessing differs from MindSpore's by at most {pixels:.3g} grey levels")
    if size == 32:
        assert compared["end_to_end"] <= 1e-5  # Resize(32) of a 32 px image is the identity on both sides
    else:
        assert pixels <= 1.01 and compared["top1_agreement"] == 1.0  # PIL and MindSpore round bilinear apart
