"""The zoo model does everything timm's ``MlpMixer`` does (script, trace, FX, export, ONNX, features, factory
kwargs, pretrained loading), with the same logits on the same weights on every path."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch
from conftest import randomize_
from timm.layers import GELUTanh
from torch import nn

from mixer_zoo.model import kernels
from mixer_zoo.tools.bench import forced_cpu_path

SIZE = 64  # S/32 at 64 px: 4 tokens, every code path of the full model in a fraction of a second
GELUS = {"gelu": nn.GELU, "gelu_tanh": GELUTanh}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.double()).abs().max() / b.double().abs().max())


def pair(act_layer: str = "gelu"):
    """Ours and timm's S/32 with the same random weights (a non-zero head, so logits differ per class)."""
    ours = randomize_(timm.create_model("mixer_s32_zoo", img_size=SIZE, act_layer=act_layer)).eval()
    theirs = timm.create_model("mixer_s32_224", img_size=SIZE, act_layer=GELUS[act_layer]).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("act_layer", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("path", ["fused", "plain", "auto"])
def test_every_eager_path_matches_timm_within_1e_6(act_layer, path, images):
    ours, theirs = pair(act_layer)
    with torch.no_grad():
        reference = theirs(images)
        with forced_cpu_path(path):
            inference = ours(images)
    training_mode = ours(images)  # grad enabled: the autograd path
    assert rel(inference, reference) <= 1e-6
    assert rel(training_mode, reference) <= 1e-6


def test_the_measured_choice_is_made_once_and_forced_paths_win(images):
    ours, _ = pair()
    y = torch.randn(8, 512)
    fc1, fc2 = ours.blocks[0].mlp_channels.fc1, ours.blocks[0].mlp_channels.fc2
    with forced_cpu_path("plain"):
        assert kernels.channel_path(y, y, fc1, fc2, "none") == "plain"
    with forced_cpu_path("auto"):
        first = kernels.channel_path(y, y, fc1, fc2, "none")
        assert first in ("fused", "plain")
        key = next(k for k in kernels.chosen_paths() if k[2:] == (8, 512, 2048, "none"))
        assert kernels.chosen_paths()[key] == first == kernels.channel_path(y, y, fc1, fc2, "none")
    with pytest.raises(ValueError, match="cpu path must be auto, fused or plain"):
        with forced_cpu_path("bogus"):
            pass
    monkey = pytest.MonkeyPatch()
    monkey.setenv(kernels.PATH_ENV, "bogus")
    try:
        with pytest.raises(ValueError, match="MIXER_ZOO_CPU_PATH must be auto, fused or plain"):
            kernels.channel_path(y, y, fc1, fc2, "none")
    finally:
        monkey.undo()


@pytest.mark.parametrize("grad", [False, True])
def test_script_trace_fx_and_export_give_eager_logits(grad, images):
    ours, theirs = pair("gelu_tanh")
    with torch.no_grad():
        reference = theirs(images)
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("ignore")
        graphs = {
            "script": torch.jit.script(ours),
            "trace": torch.jit.trace(ours, images),
            "fx": torch.fx.symbolic_trace(ours),
            "export": torch.export.export(ours, (images,)).module(),
        }
        for name, graph in graphs.items():
            error = rel(graph(images), reference)
            assert error <= 1e-6, (name, error)


def test_fx_and_hook_features_have_timms_layout_and_values(images, tmp_path):
    from safetensors.torch import save_file

    ours, _ = pair()
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for feature_cls in ("hook", "fx", "getter"):
        kwargs = dict(features_only=True, feature_cls=feature_cls, out_indices=(1, 3), img_size=SIZE, pretrained=True,
                      pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"), input_size=(3, SIZE, SIZE)))
        mine = timm.create_model("mixer_s32_zoo", act_layer="gelu", **kwargs).eval()
        twin = timm.create_model("mixer_s32_224", **kwargs).eval()
        with torch.no_grad():
            got, want = mine(images), twin(images)
        assert [t.shape for t in got] == [t.shape for t in want], feature_cls
        assert all(rel(g, w) <= 1e-6 for g, w in zip(got, want)), feature_cls


def test_device_and_dtype_factory_kwargs():
    meta = timm.create_model("mixer_b16_zoo", device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    half = timm.create_model("mixer_s32_zoo", dtype=torch.bfloat16, img_size=SIZE)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_onnx_export_runs_in_onnxruntime_with_eager_logits(dynamo, grad, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    ours, _ = pair("gelu_tanh")
    with torch.no_grad():
        eager = ours(images)
    path = tmp_path / "mixer.onnx"
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("ignore")
        torch.onnx.export(ours, (images,), str(path), dynamo=dynamo, input_names=["x"], output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": images.numpy()})
    assert rel(torch.from_numpy(logits), eager) <= 1e-5


@pytest.mark.parametrize("bad, message", [
    (torch.randn(1, 3, 96, 96), r"input size \(96, 96\) does not match the model's img_size \(64, 64\)"),
    (torch.randn(1, 1, SIZE, SIZE), "input has 1 channels; the model expects 3"),
])
def test_bad_images_are_one_line_errors_eager_scripted_and_exported(bad, message, images):
    ours, _ = pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(ours)
        exported = torch.export.export(ours, (images,)).module()
    for model in (ours, scripted):
        with pytest.raises(Exception, match=message) as caught:
            model(bad)
        assert message.split(" ")[0] in str(caught.value).splitlines()[-1]
    with pytest.raises(Exception, match=r"shape|size|dim|expected"):  # the exported graph guards its input shape
        exported(bad)


def test_pretrained_true_skips_the_init_and_loads_every_weight(tmp_path, images):
    from safetensors.torch import save_file

    ours, _ = pair()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(path))
    overlay = dict(file=str(path), input_size=(3, SIZE, SIZE))  # the file's own size: no expansion
    calls = []
    init = type(ours).init_weights  # wrapped to record where it runs, then called as it is
    type(ours).init_weights = lambda self: (calls.append(next(self.parameters()).device.type), init(self))[1]
    try:
        loaded = timm.create_model("mixer_s32_zoo", pretrained=True, img_size=SIZE, act_layer="gelu",
                                   pretrained_cfg_overlay=overlay)
    finally:
        type(ours).init_weights = init
    assert calls == ["meta"]  # the only init ran on the meta device: nothing was computed
    assert not any(p.is_meta for p in loaded.parameters())
    with torch.no_grad():
        assert rel(loaded.eval()(images), ours(images)) <= 1e-6
    ten = timm.create_model("mixer_s32_zoo", pretrained=True, img_size=SIZE, num_classes=10,
                            pretrained_cfg_overlay=overlay)
    assert ten.head.weight.shape == (10, 512) and not ten.head.weight.is_meta
    assert torch.equal(ten.blocks[0].mlp_tokens.fc1.weight, ours.blocks[0].mlp_tokens.fc1.weight)
