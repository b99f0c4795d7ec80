"""mixer_zoo.tools.bench: counts equal the closed form, a tiny run fills every field, outputs are written."""
import csv
import json
import shutil

import pytest
import timm
import torch

from mixer_zoo.model.architectures import closed_form_macs
from mixer_zoo.tools.bench import benchmark_models, build_contenders, counted_macs, time_interleaved
from mixer_zoo.util.hardware import PeakMemory
from mixer_zoo.weights.manifest import update_measured_metrics
from mixer_zoo.cli import main
from mixer_zoo.model.architectures import param_count
from mixer_zoo.weights.manifest import MANIFEST_ENV, MANIFEST_PATH, ManifestError, validate_manifest, weights_entries
from mixer_zoo.zoo import ARCHITECTURES, TIMM_EQUIVALENTS

TIMM_CSV_COLUMNS = ("model", "param_count", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
                    "infer_img_size", "infer_gmacs", "train_samples_per_sec", "train_step_time", "train_batch_size")


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_counted_flops_and_params_equal_the_closed_form(arch):
    assert counted_macs(arch) == closed_form_macs(arch)
    with torch.device("meta"):
        model = timm.create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == param_count(arch)


@pytest.mark.parametrize("arch", list(TIMM_EQUIVALENTS))
def test_timm_twin_counts_the_same_macs(arch):
    assert counted_macs(TIMM_EQUIVALENTS[arch]) == closed_form_macs(arch)


def test_closed_form_counts_the_head_for_other_class_counts():
    assert counted_macs("mixer_s32_zoo", num_classes=10) == closed_form_macs("mixer_s32_zoo", num_classes=10)


def test_contenders_share_weights_and_compute_the_same_function():
    contenders = build_contenders("mixer_s32_zoo", torch.device("cpu"), mmpretrain=True)
    assert [c.impl for c in contenders] == ["mixer_zoo", "timm", "mmpretrain"]
    x = torch.randn(2, 3, 224, 224)
    for c in contenders:
        c.module.eval()
    with torch.inference_mode():
        outputs = [c.forward(x) for c in contenders]
    assert outputs[0].abs().max() > 0.1  # the head is not the zero init
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=1e-4, atol=1e-4)


def test_time_interleaved_alternates_and_times_every_step():
    calls = []
    steps = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = time_interleaved(steps, torch.device("cpu"), repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times] == [3, 3] and all(s > 0 for t in times for s in t)


def test_peak_memory_sees_a_step_allocation_but_not_an_idle_one():
    with PeakMemory(torch.device("cpu")) as big:
        buf = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        del buf
    with PeakMemory(torch.device("cpu")) as idle:
        pass
    assert big.extra_bytes >= 60 * 2 ** 20
    assert idle.extra_bytes < 16 * 2 ** 20


def test_tiny_benchmark_run_fills_every_field():
    rows = benchmark_models(["mixer_s32_zoo"], device="cpu", batch_size=1, warmup=1, repeats=2, mmpretrain=True,
                            progress=False)
    assert [r["impl"] for r in rows] == ["mixer_zoo", "timm", "mmpretrain"]
    assert [r["model"] for r in rows][:2] == ["mixer_s32_zoo", "mixer_s32_224"]
    for r in rows:
        assert set(TIMM_CSV_COLUMNS) <= set(r)
        assert all(r[k] is not None for k in r), [k for k in r if r[k] is None]
        assert r["param_count"] == param_count("mixer_s32_zoo")
        assert r["infer_gmacs"] == round(closed_form_macs("mixer_s32_zoo") / 1e9, 3)
        assert r["infer_samples_per_sec"] == pytest.approx(1e3 / r["infer_step_time"], rel=1e-3)
        assert r["train_samples_per_sec"] > 0 and r["infer_peak_mem_mb"] > r["param_count"] * 4 / 2 ** 20
        assert r["train_peak_mem_mb"] > r["infer_peak_mem_mb"]  # gradients and momentum at least
        assert 0 < r["infer_mfu"] < 2 and r["hardware"] and r["device"] == "cpu"
        assert len(r["infer_step_times_ms"]) == len(r["train_step_times_ms"]) == 2
    assert rows[1]["speedup_vs_timm"] == 1.0 and rows[1]["train_speedup_vs_timm"] == 1.0
    assert rows[0]["speedup_vs_timm"] > 0


def test_unknown_model_is_a_clear_cli_error(capsys):
    assert main(["bench", "--models", "mixer_b16_zoo,resnet50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "resnet50" in err and "mixer_b16_zoo" in err


def test_cli_bench_writes_json_csv_plot_and_the_manifest(tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "weights_manifest.json"
    shutil.copy(MANIFEST_PATH, manifest)
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    out = tmp_path / "out"
    rc = main(["bench", "--models", "mixer_s32_zoo", "--device", "cpu", "--batch-size", "1", "--warmup", "1",
               "--repeats", "1", "--no-train", "--json", str(out / "b.json"), "--csv", str(out / "b.csv"),
               "--plot", str(out / "b.png"), "--update-manifest"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "mixer_s32_224" in table and "speedup_vs_timm" in table
    rows = json.loads((out / "b.json").read_text())
    assert [r["model"] for r in rows] == ["mixer_s32_zoo", "mixer_s32_224"]
    with open(out / "b.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert float(csv_rows[0]["infer_samples_per_sec"]) == rows[0]["infer_samples_per_sec"]
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    measured = json.loads(manifest.read_text())["weights"]["mixer_s32_zoo.gsam_in1k"]["metrics"]["measured"]
    assert measured["benchmark"]["infer_samples_per_sec"] == rows[0]["infer_samples_per_sec"]
    assert measured["benchmark"]["hardware"] == rows[0]["hardware"] and measured["benchmark"]["date"]
    assert sorted(p.name for p in out.iterdir()) == ["b.csv", "b.json", "b.png"]  # no temp files left
    validate_manifest(manifest)  # what was written follows the manifest's schema


def test_update_manifest_keeps_the_rest_of_the_file_and_its_formatting(tmp_path):
    manifest = tmp_path / "weights_manifest.json"
    original = MANIFEST_PATH.read_text(encoding="utf-8")
    manifest.write_text(original, encoding="utf-8")
    measured = {"imagenet_val": {"top1": 76.5, "top5": 93.0, "images": 50000, "hardware": "x", "date": "2026-01-01"}}
    update_measured_metrics({"mixer_b16_zoo.goog_in1k": measured}, path=manifest)
    validate_manifest(manifest)
    after = manifest.read_text(encoding="utf-8")
    data = json.loads(after)
    assert data["weights"]["mixer_b16_zoo.goog_in1k"]["metrics"]["measured"] == measured
    data["weights"]["mixer_b16_zoo.goog_in1k"]["metrics"]["measured"] = {}
    assert json.dumps(data, indent=2, ensure_ascii=False) + "\n" == original
    assert set(data["weights"]) == set(weights_entries())


def test_update_manifest_rejects_an_unknown_entry_and_leaves_the_file(tmp_path):
    manifest = tmp_path / "weights_manifest.json"
    shutil.copy(MANIFEST_PATH, manifest)
    before = manifest.read_bytes()
    with pytest.raises(ManifestError, match="mixer_x9_zoo.nope"):
        update_measured_metrics({"mixer_x9_zoo.nope": {"benchmark": {}}}, path=manifest)
    assert manifest.read_bytes() == before


ISA_PROBE = """
import torch
from mixer_zoo.util.hardware import cpu_isa, isa_cap
torch.ops.mkldnn._linear_pointwise(torch.randn(64, 256), torch.randn(128, 256), None, "none", [], "")
print("RESULT", torch.backends.cpu.get_cpu_capability(), isa_cap(), cpu_isa(), sep="|")
"""


def test_isa_cap_reaches_aten_and_onednn_in_a_fresh_process():
    """The AVX2 cap that benchmarks/model_paths.py --isa-cap uses must change the kernels, not just the label."""
    import os
    import subprocess
    import sys

    from mixer_zoo.util.hardware import ISA_CAPS, cpu_isa_flags

    if "avx2" not in cpu_isa_flags().split():
        pytest.skip("this CPU has no AVX2 to cap at")
    env = dict(os.environ, ONEDNN_VERBOSE="1", **ISA_CAPS["avx2"])
    out = subprocess.run([sys.executable, "-c", ISA_PROBE], env=env, capture_output=True, text=True, check=True).stdout
    capability, cap, isa = next(line for line in out.splitlines() if line.startswith("RESULT")).split("|")[1:]
    assert capability == "AVX2" and cap == "avx2" and isa.startswith("avx2")
    if "avx512f" in cpu_isa_flags().split():
        assert isa == "avx2 (capped, cpu avx512)"
    onednn_isa = [line for line in out.splitlines() if "isa:" in line]
    assert onednn_isa and all("AVX-512" not in line and "AVX512" not in line for line in onednn_isa), onednn_isa


def test_load_time_row_times_a_sealed_file_and_leaves_the_environment_alone():
    import os

    from mixer_zoo.tools.load_time import LOAD_TIME_COLUMNS, load_time_vs_timm

    before = os.environ.get("MIXER_ZOO_CACHE")
    row = load_time_vs_timm("mixer_s32_zoo", repeats=1)
    assert set(LOAD_TIME_COLUMNS) <= set(row) and row["timm_model"] == "mixer_s32_224"
    assert min(row["first_load_s"], row["load_s"], row["timm_load_s"]) > 0
    # the ratio comes from the unrounded times; the seconds are rounded to ms
    assert row["load_time_vs_timm"] == pytest.approx(row["load_s"] / row["timm_load_s"], abs=1e-3 / row["timm_load_s"] + 1e-3)
    assert os.environ.get("MIXER_ZOO_CACHE") == before
