"""The README's main job, end to end on a small setting: convert -> local Hub cache -> pretrained=True -> bench."""
import os

import huggingface_hub.constants
from safetensors.torch import load_file

from mixer_zoo.cli import main
from mixer_zoo.tools.demo import DEMO_TAG, run_pipeline


def test_pipeline_converts_loads_offline_and_benchmarks(tmp_path):
    offline_before, manifest_before = huggingface_hub.constants.HF_HUB_OFFLINE, os.environ.get("MIXER_ZOO_MANIFEST")
    results = run_pipeline(tmp_path, bench_models=["mixer_s32_zoo"], batch_size=2, repeats=1, variants=False)

    folder = tmp_path / results["converted"]["folder"]
    assert results["converted"]["flax_verified"] is True
    assert load_file(folder / "model.safetensors")["head.weight"].shape == (1000, 512)
    snapshots = list((tmp_path / "hf-cache").glob("models--*/snapshots/*/model.safetensors"))
    assert len(snapshots) == 1 and snapshots[0].read_bytes() == (folder / "model.safetensors").read_bytes()
    assert results["pretrained"]["tag"] == DEMO_TAG and results["pretrained"]["max_abs_diff"] == 0.0
    assert results["pretrained"]["gelu"] == "gelu_tanh"  # the tag's flavour, not timm's default
    assert [r["impl"] for r in results["benchmark"]] == ["mixer_zoo", "timm"]
    assert results["benchmark"][0]["speedup_vs_timm"] > 0
    # the offline switch and the manifest copy were for the demo only
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_before
    assert os.environ.get("MIXER_ZOO_MANIFEST") == manifest_before


def test_demo_refuses_a_work_dir_with_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--work-dir", str(tmp_path), "--bench-models", ""]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "must be empty" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_demo_rejects_an_unknown_benchmark_model(capsys):
    assert main(["demo", "--bench-models", "mixer_x99_zoo"]) == 2
    assert "mixer_x99_zoo" in capsys.readouterr().err
