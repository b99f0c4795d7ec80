"""mixer_zoo.tools.runtimes and .sessions: exported models in onnxruntime / OpenVINO and int8 models as contenders
computing the eager model's function; scoring against a reference path; `mixer-zoo bench --dtype int8 --runtime`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from conftest import randomize_

from mixer_zoo.cli import main
from mixer_zoo.tools.bench import benchmark_models
from mixer_zoo.tools.export import FP32_TOLERANCE, export_model, relative_difference
from mixer_zoo.tools.quantize import torch_dynamic_int8
from mixer_zoo.tools.runtimes import (deployed_models, normalise_images, parse_deployments, score_against_reference,
                                      weight_bytes)
from mixer_zoo.tools.sessions import open_onnx

pytest.importorskip("onnxruntime")
SIZE = 64


@pytest.fixture(scope="module")
def pair():
    """Ours and timm's S/32 at 64 px with the same random weights."""
    ours = randomize_(timm.create_model("mixer_s32_zoo", img_size=SIZE)).eval()
    twin = timm.create_model("mixer_s32_224", img_size=SIZE).eval()
    twin.load_state_dict(ours.state_dict())
    return ours, twin


def test_deployed_models_compute_the_eager_function(pair):
    ours, twin = pair
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        want = ours(x).numpy()
    models = deployed_models(ours, twin, [("onnxruntime", "fp32"), ("onnxruntime", "int8")])
    assert [m[:3] for m in models] == [("mixer_zoo", "onnxruntime", "fp32"), ("mixer_zoo", "onnxruntime", "int8"),
                                       ("timm", "eager", "int8")]
    with torch.no_grad():
        got = [m[3](x).numpy() for m in models]
    assert relative_difference(got[0], want) <= FP32_TOLERANCE
    for int8 in got[1:]:
        assert 0 < relative_difference(int8, want) <= 0.05
    fp32_bytes = weight_bytes(ours)
    assert fp32_bytes == sum(p.numel() * 4 for p in ours.parameters())
    assert weight_bytes(models[1][3]) < 0.4 * fp32_bytes  # int8 weights: about a quarter
    assert weight_bytes(models[2][3]) < 0.4 * fp32_bytes


def test_torch_dynamic_int8_leaves_the_model_it_was_given(pair):
    _, twin = pair
    quantized = torch_dynamic_int8(twin)
    assert isinstance(twin.blocks[0].mlp_channels.fc1, torch.nn.Linear)
    assert not isinstance(quantized.blocks[0].mlp_channels.fc1, torch.nn.Linear)


def test_parse_deployments():
    assert parse_deployments("fp32", "eager") == []
    assert parse_deployments("int8", "eager") == [("onnxruntime", "int8")]
    assert parse_deployments("fp32", "onnxruntime,openvino") == [("onnxruntime", "fp32"), ("openvino", "fp32")]
    with pytest.raises(ValueError, match="unknown runtime.*tensorrt"):
        parse_deployments("fp32", "tensorrt")
    with pytest.raises(ValueError, match="not bf16"):
        parse_deployments("bf16", "onnxruntime")


def test_openvino_runs_the_onnx_export_with_the_eager_logits(pair, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'mixer-zoo[openvino]'")
    ours, _ = pair
    export_model(ours, tmp_path / "m.onnx", "onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        want = ours(torch.from_numpy(x)).numpy()
    assert relative_difference(open_onnx(tmp_path / "m.onnx", "openvino")(x), want) <= FP32_TOLERANCE


def test_a_missing_runtime_is_one_line_naming_the_package(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # what an import finds when the package is not installed
    with pytest.raises(RuntimeError, match=r"runtime 'openvino' is not installed: pip install openvino"):
        open_onnx(tmp_path / "m.onnx", "openvino")


def test_scores_count_agreement_and_the_accuracy_drop():
    reference = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    other = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
    row = score_against_reference("x", other, reference, np.array([0, 1, 2, 2]))
    assert row["agreement"] == 75.0 and row["top1"] == 100.0 and row["top1_drop"] == -25.0
    pixels = np.full((1, 2, 2, 3), 255, np.uint8)
    x = normalise_images(pixels, dict(input_size=[3, 2, 2], mean=[0.5] * 3, std=[0.25] * 3))
    assert x.shape == (1, 3, 2, 2) and np.allclose(x, 2.0)
    with pytest.raises(ValueError, match="resize them first"):
        normalise_images(pixels, dict(input_size=[3, 4, 4], mean=[0.5] * 3, std=[0.5] * 3))


def test_bench_times_exported_and_int8_models_beside_timm_in_one_run(tmp_path, capsys):
    rows = benchmark_models(["mixer_s32_zoo"], device="cpu", batch_size=1, warmup=1, repeats=2, progress=False,
                            mfu=False, deployed=[("onnxruntime", "fp32"), ("onnxruntime", "int8")])
    assert [(r["impl"], r["runtime"], r["dtype"]) for r in rows] == [
        ("mixer_zoo", "eager", "fp32"), ("timm", "eager", "fp32"), ("mixer_zoo", "onnxruntime", "fp32"),
        ("mixer_zoo", "onnxruntime", "int8"), ("timm", "eager", "int8")]
    assert rows[1]["speedup_vs_timm"] == 1.0
    for r in rows:
        assert r["infer_samples_per_sec"] > 0 and r["speedup_vs_timm"] > 0 and len(r["infer_step_times_ms"]) == 2
        assert r["param_count"] == rows[0]["param_count"] and "train_samples_per_sec" not in r
    out = tmp_path / "b.json"
    assert main(["bench", "--models", "mixer_s32_zoo", "--device", "cpu", "--batch-size", "1", "--warmup", "1",
                 "--repeats", "1", "--dtype", "int8", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "onnxruntime" in table and "int8" in table and "speedup_vs_timm" in table
    assert [(r["impl"], r["runtime"], r["dtype"]) for r in json.loads(out.read_text())] == [
        ("mixer_zoo", "eager", "fp32"), ("timm", "eager", "fp32"), ("mixer_zoo", "onnxruntime", "int8"),
        ("timm", "eager", "int8")]
