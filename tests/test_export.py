"""mixer_zoo.tools.export (``mixer-zoo export``): every format reloads with the eager model's logits, runs where
mixer_zoo is not installed, records its preprocessing, and a damaged file is a one-line error; int8 agrees with
the fp32 model on real CIFAR-10 test images, for a model trained on real images in the test session."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from conftest import REAL_CIFAR, randomize_

from mixer_zoo.cli import main
from mixer_zoo.formats.keys import CorruptFileError
from mixer_zoo.tools.export import (FORMATS, FP32_TOLERANCE, INT8_FORMATS, load_model, open_exported, read_record,
                                    relative_difference, sidecar_path)
from mixer_zoo.tools.runtimes import normalise_images, score_paths

SIZE, CLASSES = 64, 10  # neither the architecture's 224 px nor 1000 classes
INT8_REL_TOLERANCE = 0.05
STATIC_INT8_REL_TOLERANCE = 0.08  # activations calibrated on 6 random images of a random model: 0.058 measured
"""int8 logits on random weights and images: max |int8 - fp32| / max |fp32| (a wrong graph gives about 1)."""
ONNX = ("onnx", "int8")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A converted folder (``mixer-zoo convert`` of a .pth) of S/32 at 64 px with 10 classes, random weights."""
    tmp = tmp_path_factory.mktemp("source")
    model = randomize_(timm.create_model("mixer_s32_zoo", img_size=SIZE, num_classes=CLASSES))
    torch.save(model.state_dict(), tmp / "s32_64px.pth")
    assert main(["convert", str(tmp / "s32_64px.pth"), "--out", str(tmp / "folder")]) == 0
    return tmp / "folder"


def images(count: int, size: int = SIZE, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size), dtype=np.float32)


def eager_logits(folder, x: np.ndarray, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return load_model(str(folder), **kwargs)(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "int8-static"])  # int8-static: below
def test_every_format_reloads_with_the_eager_logits_at_any_batch_size(fmt, folder, tmp_path, capsys):
    if fmt in ONNX:
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"s32{'.onnx' if fmt in ONNX else '.pt'}"
    assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    run = open_exported(out)
    for batch in (1, 5):  # the export traced batch 2: the batch dimension is dynamic
        x = images(batch)
        got, want = run(x), eager_logits(folder, x)
        assert got.shape == (batch, CLASSES)
        diff = relative_difference(got, want)
        assert diff <= (INT8_REL_TOLERANCE if fmt in INT8_FORMATS else FP32_TOLERANCE), (fmt, batch, diff)
        if fmt in INT8_FORMATS:
            assert diff > 0  # really quantized, not the fp32 graph under another name
    record = read_record(out)
    assert record["format"] == fmt and record["check"]["max_rel_diff"] <= INT8_REL_TOLERANCE
    assert record["preprocessing"]["input_size"] == [3, SIZE, SIZE]
    assert record["preprocessing"]["mean"] == pytest.approx([0.5] * 3)  # a .pth source: Google's (x - 0.5) / 0.5
    assert record["model"]["num_classes"] == CLASSES and record["output"]["shape"] == ["batch", CLASSES]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, sidecar_path(out).name])  # no temp left


def test_another_class_count_and_image_size_at_export(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "s32_128px_7.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out), "--img-size", str(2 * SIZE),
                 "--num-classes", "7"]) == 0
    x = images(2, 2 * SIZE)
    got = open_exported(out)(x)
    want = eager_logits(folder, x, img_size=2 * SIZE, num_classes=7)
    assert got.shape == (2, 7) and relative_difference(got, want) <= FP32_TOLERANCE
    record = read_record(out)
    assert record["preprocessing"]["input_size"] == [3, 2 * SIZE, 2 * SIZE] and record["model"]["num_classes"] == 7


@pytest.mark.parametrize("fmt", ONNX)
def test_exported_onnx_runs_in_onnxruntime_without_mixer_zoo_or_torch(fmt, folder, tmp_path):
    """A clean interpreter (``-I``: no PYTHONPATH, no user site, no current folder on sys.path) that imports only
    numpy, json and onnxruntime preprocesses 8-bit images as the record says and gets the logits we get."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    script = """
import json, sys
import numpy as np
import onnxruntime as ort
record = json.load(open("model.onnx.json"))
pre = record["preprocessing"]
x = np.load("pixels.npy").astype(np.float32) / 255.0
x = ((x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)).transpose(0, 3, 1, 2)
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
np.save("logits.npy", session.run(None, {record["input"]["name"]: np.ascontiguousarray(x)})[0])
print(sorted(m for m in ("mixer_zoo", "torch", "timm") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    got = np.load(tmp_path / "logits.npy")
    x = normalise_images(pixels, read_record(out)["preprocessing"])
    want = open_exported(out)(x) if fmt == "int8" else eager_logits(folder, x)
    assert relative_difference(got, want) <= FP32_TOLERANCE


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_truncated_or_altered_export_is_a_one_line_error_naming_the_file(fmt, folder, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated") as caught:
        open_exported(out)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match="sha256 differs") as caught2:
        open_exported(out)
    sidecar_path(out).unlink()  # without its record the runtime itself must refuse the truncated file
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="not a loadable") as caught3:
        open_exported(out, fmt=fmt)
    for error in (caught, caught2, caught3):
        assert str(out) in str(error.value) and "\n" not in str(error.value)


def test_export_refuses_to_overwrite_and_writes_nothing_on_error(folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists (use --force" in capsys.readouterr().err
    assert main(["export", "mixer_q99_zoo.nope", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mixer_q99_zoo.nope" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_int8_static_calibrates_on_a_folder_of_images_and_is_refused_where_it_computes_wrongly(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    pictures = tmp_path / "calibration" / "some_class"
    pictures.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(pictures / f"{i}.png")
    (pictures / "notes.txt").write_text("not an image, not read")
    out = tmp_path / "static.onnx"
    assert main(["export", str(folder), "--format", "int8-static", "--out", str(out), "--calibration",
                 str(tmp_path / "calibration")]) == 0
    record = read_record(out)
    assert record["quantization"]["calibration_images"] == 6 and record["runtimes"] == ["onnxruntime"]
    pixels = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)  # images like the calibration ones
    x = normalise_images(pixels, record["preprocessing"])
    assert 0 < relative_difference(open_exported(out)(x), eager_logits(folder, x)) <= STATIC_INT8_REL_TOLERANCE
    with pytest.raises(ValueError, match="runs in onnxruntime, not openvino"):
        open_exported(out, runtime="openvino")
    assert main(["export", str(folder), "--format", "int8-static", "--out", str(tmp_path / "x.onnx")]) == 2
    assert main(["export", str(folder), "--format", "int8-static", "--out", str(tmp_path / "x.onnx"),
                 "--calibration", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "x.onnx").exists()


# ---- int8 on real images -----------------------------------------------------------------------------------------

INT8_MIN_AGREEMENT = 97.5
INT8_MAX_TOP1_DROP = 1.0
"""For the small model trained in the test session (4 short epochs on 2,000 images, about 29 % top-1: low confidence,
so more predictions sit near a class boundary than for the benchmark's model at 52 %, measured against the issue's
99 % and 0.5 points in benchmarks/cpu_deployment.py). Measured here: 98.65 % agreement, top-1 +0.1."""


def test_int8_agrees_with_fp32_on_the_real_test_images(cifar32_scratch_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from mixer_zoo.mmpretrain import load_split

    _, work_dir = cifar32_scratch_run
    folder = tmp_path / "trained"
    assert main(["convert", str(work_dir / "epoch_4.pth"), "--out", str(folder)]) == 0
    out = tmp_path / "trained_int8.onnx"
    assert main(["export", str(folder), "--format", "int8", "--out", str(out)]) == 0
    pixels, labels = load_split(REAL_CIFAR, "test")
    x = normalise_images(pixels, read_record(out)["preprocessing"])
    model = load_model(str(folder))

    def eager(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    fp32, int8 = score_paths({"fp32": eager, "int8": open_exported(out)}, "fp32", x, labels)
    assert fp32["images"] == 2000 and fp32["top1"] > 25.0  # it learned something (chance: 10 %)
    assert int8["agreement"] >= INT8_MIN_AGREEMENT, int8
    assert int8["top1_drop"] <= INT8_MAX_TOP1_DROP, int8
