"""Converters: official JAX npz <-> timm folder (parity with the Flax model), mmpretrain <-> timm, bad input."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import randomize_
from mixer_zoo.cli import main as cli_main
from mixer_zoo.formats.keys import ConversionError, expected_official_shapes, infer_architecture
from mixer_zoo.formats.mmpretrain_layout import STOCK_ARCHS, mmpretrain_to_timm, timm_to_stock_classifier
from mixer_zoo.formats.npz import npz_to_timm_state_dict, timm_to_npz_arrays
from mixer_zoo.tools.convert import (CONVERTER_VERSION, PARITY_FACTOR, PARITY_FLOOR, convert_npz, convert_tag,
                                     export_mmpretrain, parity_rows, verify_against_flax)
from mixer_zoo.weights.download import cached_path
from mixer_zoo.reference.flax_mixer import load_official_npz, make_official_npz
from mixer_zoo.weights.manifest import get_entry
from mixer_zoo.zoo import ARCHITECTURES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s32_npz(tmp_path_factory):
    """An official-layout S/32 checkpoint with a 10-class head and random weights everywhere."""
    pytest.importorskip("flax")
    return make_official_npz(tmp_path_factory.mktemp("npz") / "Mixer-S_32.npz", "mixer_s32_zoo", 10, seed=1)


@pytest.fixture(scope="module")
def s32_folder(s32_npz, tmp_path_factory):
    return convert_npz(s32_npz, tmp_path_factory.mktemp("converted") / "s32", progress=False)


def _print_rows(name, rows):
    for r in rows:
        print(f"{name} {r['model']} {r['dtype']} gelu={r['gelu']} vs {r['versus']}: max abs {r['max_abs_diff']:.3g}, "
              f"max rel {r['max_rel_diff']:.3g}, top-1 agreement {r['top1_agreement']:.2f}")


def _assert_float64_parity(rows):
    """Against float64 JAX: ours in float64 is the same function (rounding of 1e-16), ours in float32 is as close
    as JAX's own float32 model (the --verify gate), and the erf GELU would be visibly further."""
    r = parity_rows(rows, "gelu_tanh")
    assert r["ours64"]["max_rel_diff"] < 1e-12
    assert r["ours32"]["max_rel_diff"] <= PARITY_FACTOR * r["jax32"]["max_rel_diff"] + PARITY_FLOOR
    assert r["ours32"]["top1_agreement"] == 1.0
    erf = next(x for x in rows if x["gelu"] == "gelu" and x["versus"] == "jax float64")
    assert erf["max_rel_diff"] > 10 * r["ours32"]["max_rel_diff"]  # the GELU flavour is visible in the logits


# ---- parity with the JAX model -------------------------------------------------------------------------------

def test_s32_ten_classes_matches_flax_with_tanh_gelu(s32_npz, s32_folder):
    rows = verify_against_flax(s32_npz, s32_folder, batch_size=2)
    _print_rows("S/32 10 classes", rows)
    _assert_float64_parity(rows)


def test_b16_matches_flax_with_tanh_gelu(tmp_path):
    pytest.importorskip("flax")
    npz = make_official_npz(tmp_path / "Mixer-B_16.npz", "mixer_b16_zoo", 1000, seed=2)
    out = convert_npz(npz, tmp_path / "b16", progress=False)
    rows = verify_against_flax(npz, out, batch_size=2)
    _print_rows("B/16 1000 classes", rows)
    _assert_float64_parity(rows)


def test_readme_command_converts_verifies_and_timm_loads(s32_npz, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "converters" / "jax_to_torch.py"), str(s32_npz), "--out", str(out), "--verify",
         "--quiet"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "gelu_tanh" in result.stdout and "max_rel_diff" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    expected = npz_to_timm_state_dict(load_official_npz(s32_npz))
    assert model.act_layer == "gelu_tanh" and model.num_classes == 10
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


# ---- the output folder ----------------------------------------------------------------------------------------

def test_folder_has_float32_safetensors_with_provenance(s32_npz, s32_folder):
    path = s32_folder / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F32"}
    assert meta["source_file"] == "Mixer-S_32.npz"
    assert meta["source_sha256"] == hashlib.sha256(s32_npz.read_bytes()).hexdigest()
    assert meta["converter"] == CONVERTER_VERSION


def test_config_json_is_timms_hub_format(s32_folder):
    config = json.loads((s32_folder / "config.json").read_text())
    assert config["architecture"] == "mixer_s32_zoo"
    assert config["num_classes"] == 10 and config["num_features"] == 512 and config["global_pool"] == "avg"
    assert config["model_args"] == dict(ARCHITECTURES["mixer_s32_zoo"], img_size=224, num_classes=10,
                                        act_layer="gelu_tanh", in_chans=3, global_pool="avg")
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5] and config["pretrained_cfg"]["num_classes"] == 10
    assert config["pretrained_cfg"]["tag"] == "local"


def test_config_json_is_what_timms_save_for_hf_writes_for_the_loaded_model(s32_folder, tmp_path):
    """Loaded through timm and exported again with timm's own ``save_config_for_hf``, the folder's config comes
    back unchanged but for the integrity record and the two fields mixer-zoo keeps its way."""
    from timm.models._hub import save_config_for_hf

    ours = json.loads((s32_folder / "config.json").read_text())
    model = timm.create_model(f"local-dir:{s32_folder}", pretrained=True)
    save_config_for_hf(model, str(tmp_path / "config.json"))
    theirs = json.loads((tmp_path / "config.json").read_text())
    assert theirs["model_args"].pop("img_size") == [224, 224] and ours["model_args"].pop("img_size") == 224
    assert ours["pretrained_cfg"].pop("hf_hub_filename") == "model.safetensors"  # safetensors only on hf-hub:
    ours.pop("integrity")
    assert ours == theirs


def test_folder_loads_into_timms_own_mlp_mixer(s32_folder):
    state_dict = load_file(str(s32_folder / "model.safetensors"))
    theirs = timm.create_model("mixer_s32_224", num_classes=10).eval()
    theirs.load_state_dict(state_dict, strict=True)
    ours = timm.create_model(f"local-dir:{s32_folder}", pretrained=True, act_layer="gelu").eval()  # timm's is erf
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_infer_architecture_from_shapes_for_every_variant():
    for arch, dims in ARCHITECTURES.items():
        for num_classes in (1000, 21843, 10):
            shapes = expected_official_shapes(dict(dims, img_size=224), num_classes)
            assert infer_architecture(shapes) == arch
    odd = expected_official_shapes(dict(ARCHITECTURES["mixer_s32_zoo"], embed_dim=320, img_size=224), 10)
    assert infer_architecture(odd) == "mixer_custom_zoo"  # any other shape: the generic architecture


# ---- round trips ----------------------------------------------------------------------------------------------

def test_npz_to_safetensors_to_npz_is_bit_exact(s32_npz, s32_folder, tmp_path):
    back = tmp_path / "back.npz"
    assert cli_main(["convert", str(s32_folder), "--to", "npz", "--out", str(back)]) == 0
    original, exported = load_official_npz(s32_npz), load_official_npz(back)
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype and np.array_equal(exported[key], value), key


def test_in_memory_round_trip_is_bit_exact(s32_npz):
    arrays = load_official_npz(s32_npz)
    again = timm_to_npz_arrays(npz_to_timm_state_dict(arrays))
    assert all(np.array_equal(again[k], v) for k, v in arrays.items()) and again.keys() == arrays.keys()


def test_torch_to_jax_script_exports_a_model_the_flax_reference_runs(s32_npz, s32_folder, tmp_path):
    pytest.importorskip("flax")
    from mixer_zoo.reference.flax_mixer import flax_logits

    out = tmp_path / "exported.npz"
    result = subprocess.run([sys.executable, str(REPO / "converters" / "torch_to_jax.py"), str(s32_folder),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    images = np.random.default_rng(5).standard_normal((1, 224, 224, 3), dtype=np.float32)
    np.testing.assert_array_equal(flax_logits(load_official_npz(out), images),
                                  flax_logits(load_official_npz(s32_npz), images))


# ---- mmpretrain -----------------------------------------------------------------------------------------------

def _mmpretrain_classifier(num_classes=10):
    pytest.importorskip("mmpretrain")
    from mmpretrain.models import build_classifier

    model = build_classifier(dict(
        type="ImageClassifier",
        backbone=dict(type="MlpMixer", arch="s", img_size=224, patch_size=32, norm_cfg=dict(type="LN", eps=1e-6)),
        neck=dict(type="GlobalAveragePooling", dim=1),
        head=dict(type="LinearClsHead", num_classes=num_classes, in_channels=512,
                  loss=dict(type="CrossEntropyLoss"))))
    return randomize_(model, seed=4).eval()


def test_mmpretrain_state_dict_converts_both_ways_with_same_logits():
    mm = _mmpretrain_classifier()
    mm_state = mm.state_dict()
    timm_state = mmpretrain_to_timm(mm_state)
    ours = timm.create_model("mixer_s32_zoo", num_classes=10, act_layer="gelu").eval()  # mmpretrain's GELU is erf
    ours.load_state_dict(timm_state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), mm(x, mode="tensor"), rtol=1e-4, atol=1e-4)
    back = timm_to_stock_classifier(ours.state_dict())
    assert back.keys() == mm_state.keys()
    assert all(torch.equal(back[k], mm_state[k]) for k in mm_state)


def test_mmpretrain_checkpoint_file_to_folder_and_back(tmp_path):
    mm = _mmpretrain_classifier()
    pth = tmp_path / "mixer-s32_mmpretrain.pth"
    torch.save({"state_dict": mm.state_dict(), "meta": {"epoch": 3}}, pth)
    assert cli_main(["convert", str(pth), "--out", str(tmp_path / "folder")]) == 0
    model = timm.create_model(f"local-dir:{tmp_path / 'folder'}", pretrained=True).eval()
    assert model.act_layer == "gelu"
    export_mmpretrain(tmp_path / "folder", tmp_path / "back.pth", backbone="MlpMixer")
    fresh = _mmpretrain_classifier()
    fresh.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"], strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x, mode="tensor"), mm(x, mode="tensor"), rtol=0, atol=0)
        torch.testing.assert_close(model(x), mm(x, mode="tensor"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backbone", ["MixerZoo", "MlpMixer"])
def test_to_mmpretrain_fills_its_backbone_exactly_with_the_timm_logits(s32_folder, tmp_path, capsys, backbone):
    """The default is the zoo's MixerZoo (what the shipped configs build); MlpMixer on request. Either way the
    printed model config, built by mmpretrain, takes every weight (strict) and gives the timm model's logits."""
    pytest.importorskip("mmpretrain")
    import mixer_zoo.mmpretrain  # noqa: F401  (registers MixerZoo)
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    out = tmp_path / "s32.pth"
    chosen = [] if backbone == "MixerZoo" else ["--backbone", backbone]
    assert cli_main(["convert", str(s32_folder), "--to", "mmpretrain", "--out", str(out), *chosen]) == 0
    model_cfg = torch.load(out, weights_only=True)["meta"]["model"]
    assert model_cfg["backbone"]["type"] == backbone and repr(model_cfg) in capsys.readouterr().out
    model = MODELS.build(model_cfg).eval()
    load_checkpoint(model, str(out), strict=True)
    timm_model = timm.create_model(f"local-dir:{s32_folder}", pretrained=True).eval()
    assert timm_model.act_layer == "gelu_tanh"  # a JAX conversion: mmpretrain's MlpMixer needs the tanh GELU too
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = timm_model(x)
        torch.testing.assert_close(model(x, mode="tensor"), expected, rtol=1e-4, atol=1e-4)


def test_to_mmpretrain_mlpmixer_refuses_a_width_it_lacks_in_one_line(tiny, tmp_path, capsys):
    folder = convert_npz(tiny, tmp_path / "tiny", progress=False)
    out = tmp_path / "tiny.pth"
    code, err = _cli(capsys, "convert", str(folder), "--to", "mmpretrain", "--backbone", "MlpMixer", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    assert "mmpretrain's MlpMixer has no arch of width" in err and "write the MixerZoo layout instead" in err
    code, err = _cli(capsys, "convert", str(folder), "--to", "npz", "--backbone", "MlpMixer", "--out", str(out))
    assert code == 2 and "--backbone MlpMixer applies to --to mmpretrain only" in err


def test_stock_archs_are_mmpretrains():
    mlp_mixer = pytest.importorskip("mmpretrain.models.backbones.mlp_mixer")
    assert {k: v for k, v in mlp_mixer.MlpMixer.arch_zoo.items() if len(k) == 1} == STOCK_ARCHS


# ---- manifest tags (the download itself is tested in test_download.py) ----------------------------------------

def test_tag_conversion_uses_the_manifest_entry(s32_npz, tmp_path):
    tag = "mixer_s32_zoo.gsam_in1k"
    entry = get_entry(tag)
    npz = make_official_npz(cached_path(entry["source"]["url"], tmp_path / "cache"), "mixer_s32_zoo", 1000, seed=7)
    out = convert_tag(tag, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained_cfg"]["tag"] == "gsam_in1k"
    assert config["model_args"]["act_layer"] == entry["act_layer"]
    assert config["pretrained_cfg"]["license"] == entry["license"]
    assert entry["source"]["url"] in (out / "README.md").read_text()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["source_sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()


def test_timm_pth_tag_is_read_weights_only(tmp_path):
    tag = "mixer_b16_zoo.goog_in21k_ft_in1k"
    entry = get_entry(tag)
    assert entry["source"]["format"] == "timm_pth"
    source = randomize_(timm.create_model("mixer_b16_zoo"), seed=9).state_dict()
    path = cached_path(entry["source"]["url"], tmp_path / "cache")
    path.parent.mkdir(parents=True)
    torch.save(source, path)
    out = convert_tag(tag, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.act_layer == "gelu_tanh"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


# ---- bad input ------------------------------------------------------------------------------------------------

def _save(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _with(arrays, **changes):
    out = dict(arrays)
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def s32_arrays(s32_npz):
    return load_official_npz(s32_npz)


def _nan(a, index=0, value=np.nan):
    a = a.copy()
    a.flat[index] = value
    return a


BAD_NPZ = {
    "missing key": (lambda a: _with(a, MixerBlock_3__LayerNorm_1__bias=None),
                    "missing key 'MixerBlock_3/LayerNorm_1/bias'"),
    "extra key": (lambda a: _with(a, MixerBlock_3__extra__kernel=np.zeros(3, np.float32)),
                  "unexpected key 'MixerBlock_3/extra/kernel'"),
    "wrong shape": (lambda a: _with(a, MixerBlock_2__channel_mixing__Dense_1__kernel=np.zeros((2048, 500), np.float32)),
                    r"key 'MixerBlock_2/channel_mixing/Dense_1/kernel' has shape \(2048, 500\); expected \(2048, 512\)"),
    "nan": (lambda a: _with(a, MixerBlock_5__token_mixing__Dense_0__bias=_nan(a["MixerBlock_5/token_mixing/Dense_0/bias"])),
            "key 'MixerBlock_5/token_mixing/Dense_0/bias' contains 1 NaN/Inf"),
    "inf": (lambda a: _with(a, **{"head__kernel": _nan(a["head/kernel"], 17, np.inf)}),
            "key 'head/kernel' contains 1 NaN/Inf"),
    "pickled objects": (lambda a: _with(a, stem__bias=np.array([{"x": 1}] * 512, dtype=object)),
                        "key 'stem/bias' holds pickled Python objects"),
    "integer dtype": (lambda a: _with(a, stem__bias=np.zeros(512, np.int32)),
                      "key 'stem/bias' has dtype int32; expected floating point"),
}


def _assert_clean_failure(capsys, argv, out, pattern, where):
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("mixer-zoo convert: error: "), err
    import re
    assert re.search(pattern, err[0]), err[0]
    assert str(where) in err[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging left


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_is_rejected_in_one_line_leaving_nothing(case, s32_arrays, tmp_path, capsys):
    make, pattern = BAD_NPZ[case]
    src = _save(tmp_path / "bad.npz", make(s32_arrays))
    out = tmp_path / "out"
    _assert_clean_failure(capsys, ["convert", str(src), "--out", str(out), "--quiet"], out, pattern, src)


def test_truncated_and_non_zip_files_are_rejected(s32_npz, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(s32_npz.read_bytes()[: s32_npz.stat().st_size // 2])
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint\n")
    for src in (truncated, text):
        _assert_clean_failure(capsys, ["convert", str(src), "--out", str(tmp_path / "out")], tmp_path / "out",
                              "not a readable .npz", src)


def test_unknown_tag_and_wrong_arch_are_rejected(s32_npz, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_clean_failure(capsys, ["convert", "mixer_b16_zoo.nope", "--out", str(out)], out,
                          "unknown weights tag 'mixer_b16_zoo.nope'", "mixer_b16_zoo.nope")
    _assert_clean_failure(capsys, ["convert", str(s32_npz), "--out", str(out), "--arch", "mixer_b16_zoo"], out,
                          "patch_size=32 but mixer_b16_zoo has patch_size=16", s32_npz)


def test_existing_output_needs_force(s32_npz, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("keep me")
    assert cli_main(["convert", str(s32_npz), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "use --force" in err and str(out) in err and len(err.splitlines()) == 1
    assert (out / "model.safetensors").read_text() == "keep me"
    assert cli_main(["convert", str(s32_npz), "--out", str(out), "--quiet", "--force"]) == 0
    assert load_file(str(out / "model.safetensors"))["head.bias"].shape == (10,)


def test_pickled_pth_is_refused_without_unpickling(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": Path("/")}, evil)  # a non-allowlisted class
    out = tmp_path / "out"
    _assert_clean_failure(capsys, ["convert", str(evil), "--out", str(out)], out, "not a loadable weights-only", evil)


# ---- integrity under faults (issue 14), on a tiny Mixer ----------------------------------------------------------

import os  # noqa: E402
import tracemalloc  # noqa: E402
import zipfile  # noqa: E402

from integrity_helpers import TINY, leftovers, make_tiny_npz, one_line_error, tiny_architecture  # noqa: E402
from mixer_zoo.formats import timm_folder  # noqa: E402
from mixer_zoo.weights.integrity import verify_config, verify_safetensors  # noqa: E402


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny official npz (its architecture stands in for mixer_s32_zoo) and a private lock/cache folder."""
    pytest.importorskip("flax")
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with tiny_architecture():
        yield make_tiny_npz(tmp_path / "src" / "Mixer-T.npz", num_classes=10, seed=3)


def _cli(capsys, *argv):
    code = cli_main(list(argv))
    return code, capsys.readouterr().err


def _assert_complete(folder, npz):
    weights = folder / "model.safetensors"
    content = verify_safetensors(weights)
    assert content and verify_config(folder / "config.json", content)
    expected = npz_to_timm_state_dict(load_official_npz(npz))
    got = load_file(str(weights))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


def test_a_flipped_byte_inside_a_kernel_fails_the_zip_crc(tiny, tmp_path, capsys):
    members = {i.filename: i for i in zipfile.ZipFile(tiny).infolist()}
    info = members["MixerBlock_1/channel_mixing/Dense_0/kernel.npy"]
    raw = bytearray(tiny.read_bytes())
    middle = info.header_offset + 30 + len(info.filename) + 128 + info.file_size // 2
    raw[middle] ^= 0x04
    raw[middle + 1] ^= 0x40  # still finite floats: only the CRC can tell
    bitrot = tmp_path / "bitrot.npz"
    bitrot.write_bytes(bytes(raw))
    out = tmp_path / "out"
    code, err = _cli(capsys, "convert", str(bitrot), "--out", str(out), "--quiet")
    line = one_line_error(err, "convert")
    assert code == 2 and line and str(bitrot) in line and "CRC-32" in line and "channel_mixing/Dense_0/kernel" in line
    assert not out.exists() and leftovers(tmp_path) == []


def _zip_with(path, name, header_shape, data=b"\0" * 64, compress=zipfile.ZIP_STORED, dtype="<f4"):
    header = {"descr": dtype, "fortran_order": False, "shape": header_shape}
    with zipfile.ZipFile(path, "w", compress) as zf, zf.open(name, "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)
    return path


def test_sizes_declared_in_headers_are_checked_before_allocating(tmp_path, capsys):
    cases = {"stored": _zip_with(tmp_path / "stored.npz", "stem/kernel.npy", (65536, 65536)),
             "deflated": _zip_with(tmp_path / "deflated.npz", "stem/kernel.npy", (65536, 65536),
                                   compress=zipfile.ZIP_DEFLATED)}
    for name, path in cases.items():
        assert path.stat().st_size < 30_000  # a small file declaring 16 GiB
        tracemalloc.start()
        code, err = _cli(capsys, "convert", str(path), "--out", str(tmp_path / name), "--quiet")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        line = one_line_error(err, "convert")
        assert code == 2 and line and str(path) in line and "stem/kernel" in line, err
        assert peak < 64 << 20, f"{name}: {peak} bytes allocated"


@pytest.mark.parametrize("dtype, words", [(">f4", "big-endian"), ("<f16", "float128"), ("<f2", None)])
def test_unsupported_float_dtypes_are_one_line(tiny, tmp_path, capsys, dtype, words):
    arrays = load_official_npz(tiny)
    arrays["stem/bias"] = arrays["stem/bias"].astype(np.dtype(dtype))
    src = _save(tmp_path / "odd.npz", arrays)
    code, err = _cli(capsys, "convert", str(src), "--out", str(tmp_path / "out"), "--quiet")
    if words is None:  # float16 converts (to float32)
        assert code == 0, err
        return
    line = one_line_error(err, "convert")
    assert code == 2 and line and words in line and "stem/bias" in line and str(src) in line


def test_a_head_with_zero_classes_is_rejected(tiny, tmp_path, capsys):
    arrays = load_official_npz(tiny)
    arrays["head/kernel"] = np.zeros((TINY["embed_dim"], 0), np.float32)
    arrays["head/bias"] = np.zeros((0,), np.float32)
    src = _save(tmp_path / "headless.npz", arrays)
    code, err = _cli(capsys, "convert", str(src), "--out", str(tmp_path / "out"), "--quiet")
    line = one_line_error(err, "convert")
    assert code == 2 and line and "0 classes" in line and not (tmp_path / "out").exists()



def test_export_onto_a_folder_is_one_line(tiny, tmp_path, capsys):
    folder = convert_npz(tiny, tmp_path / "folder", progress=False)
    for to in ("mmpretrain", "npz"):
        code, err = _cli(capsys, "convert", str(folder), "--to", to, "--out", str(tmp_path))
        line = one_line_error(err, "convert")
        assert code == 2 and line and "is a folder" in line and str(tmp_path) in line


def test_out_dot_in_an_empty_folder(tiny, tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, err = _cli(capsys, "convert", str(tiny), "--out", ".", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in here.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    _assert_complete(here, tiny)


def test_stale_staging_of_a_killed_run_is_removed_by_the_next(tiny, tmp_path):
    out = tmp_path / "out"
    beside = tmp_path / ".out.k1ll3d_x.partial"  # what mkdtemp made beside a new output
    beside.mkdir()
    (beside / "model.safetensors").write_bytes(b"\0" * 1000)
    unrelated = tmp_path / ".out.x.abcdefgh.partial"  # staging of an output named "out.x": not ours to remove
    unrelated.mkdir()
    convert_npz(tiny, out, progress=False)
    assert not beside.exists() and unrelated.exists()
    inside = out / (timm_folder.STAGING_PREFIX + "k1ll3d_.partial")
    inside.mkdir()
    convert_npz(tiny, out, force=True, progress=False)
    assert not inside.exists()
    _assert_complete(out, tiny)


def test_force_never_leaves_old_config_with_new_weights(tiny, tmp_path, monkeypatch):
    out = convert_npz(tiny, tmp_path / "out", progress=False)
    other = make_tiny_npz(tmp_path / "src" / "other.npz", num_classes=10, seed=4)
    real_replace = os.replace
    calls = []

    def fail_after_the_weights(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "README.md":
            raise OSError(5, "Input/output error")  # a rename failing midway through the commit
        return real_replace(src, dst)

    monkeypatch.setattr(timm_folder.os, "replace", fail_after_the_weights)
    with pytest.raises(OSError):
        convert_npz(other, out, force=True, progress=False)
    monkeypatch.setattr(timm_folder.os, "replace", real_replace)
    assert calls[0] == "model.safetensors"
    assert not (out / "config.json").exists()  # removed before the new weights went in: never a mixed pair
    with pytest.raises(FileNotFoundError):
        timm.create_model(f"local-dir:{out}", pretrained=True)
    convert_npz(other, out, force=True, progress=False)
    _assert_complete(out, other)
    assert leftovers(tmp_path) == []


def _mount_tmpfs(path, options):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root")


@pytest.fixture
def mounts(tmp_path):
    mounted = []

    def mount(name, options):
        path = tmp_path / name
        _mount_tmpfs(path, options)
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_mount_point_as_out(tiny, mounts, capsys):
    point = mounts("mnt", "size=4m")
    code, err = _cli(capsys, "convert", str(tiny), "--out", str(point), "--quiet")
    assert code == 0, err
    _assert_complete(point, tiny)
    assert leftovers(point) == []


def test_read_only_and_full_destinations_are_one_line_and_leave_nothing(tiny, mounts, capsys):
    read_only = mounts("ro", "ro,size=1m")
    code, err = _cli(capsys, "convert", str(tiny), "--out", str(read_only / "out"), "--quiet")
    line = one_line_error(err, "convert")
    assert code == 2 and line and "Read-only file system" in line and str(read_only) in line
    full = mounts("full", "size=64k")  # the tiny weights alone are about 200 KB
    code, err = _cli(capsys, "convert", str(tiny), "--out", str(full / "out"), "--quiet")
    line = one_line_error(err, "convert")
    assert code == 2 and line and "No space left on device" in line and str(full / "out") in line
    assert list(full.iterdir()) == []
