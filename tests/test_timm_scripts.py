"""timm's own scripts with the zoo's models: ``mixer-zoo timm SCRIPT ARGS``.

The runner is proved on small scripts of its own. timm's real ``train.py``, ``validate.py``, ``inference.py`` and
``benchmark.py`` ship neither in timm's wheel nor in its source distribution on PyPI, so they come from a checkout
of timm's repository named by ``$MIXER_ZOO_TIMM_SCRIPTS``, or ``../shared/timm-scripts/<timm version>/`` beside the
repository; where neither has them those tests are skipped, saying so. They run on real CIFAR-10 images
(``../shared/data/cifar10-real``): timm's ``train.py`` trains a small zoo Mixer from a ``local-dir:`` folder,
``mixer-zoo convert`` turns its checkpoint into a folder, and ``validate.py`` / ``inference.py`` on that folder
(``local-dir:`` and ``hf-hub:``) must agree with the project's own evaluation image for image.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from mixer_zoo.cli import main as cli_main
from mixer_zoo.tools.timm_scripts import SCRIPTS, SCRIPTS_ENV, find_script

CLI = Path(sys.executable).with_name("mixer-zoo")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "cifar10-real"
TINY = dict(patch_size=4, num_blocks=4, embed_dim=64, tokens_mlp_dim=32, channels_mlp_dim=256, img_size=32)
"""A Mixer small enough to train on two CPU cores in seconds: 64 tokens of 4x4 patches of a 32 px image."""


def run_cli(*args, env=None):
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "mixer_zoo.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


# ---- the runner, on scripts of its own ------------------------------------------------------------------------

PROBE = """import json, sys, timm
print(json.dumps(dict(argv=sys.argv[1:], zoo=timm.is_model("mixer_s32_zoo"), name=__name__, path0=sys.path[0])))
sys.exit(3)
"""


def test_a_script_runs_as_python_runs_it_but_with_the_zoo_registered(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    plain = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True)
    assert json.loads(plain.stdout)["zoo"] is False  # what timm's scripts see without mixer-zoo
    result = run_cli("timm", probe, "--model", "mixer_s32_zoo", "--pretrained")
    assert result.returncode == 3, result.stderr
    seen = json.loads(result.stdout)
    assert seen == dict(argv=["--model", "mixer_s32_zoo", "--pretrained"], zoo=True, name="__main__",
                        path0=str(tmp_path))


def test_a_script_named_without_a_path_is_found_in_the_scripts_dir_then_the_env(tmp_path, monkeypatch, capsys):
    for folder in ("given", "env"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "validate.py").write_text(f"print('{folder}')\n")
    monkeypatch.setenv(SCRIPTS_ENV, str(tmp_path / "env"))
    assert find_script("validate") == tmp_path / "env" / "validate.py"
    capsys.readouterr()
    assert cli_main(["timm", "--scripts-dir", str(tmp_path / "given"), "validate.py"]) == 0
    assert capsys.readouterr().out == "given\n"


def test_a_missing_script_is_one_line_saying_where_it_looked_and_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(SCRIPTS_ENV, raising=False)
    assert cli_main(["timm", "--scripts-dir", str(tmp_path), "train.py", "--model", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mixer-zoo timm: error: train.py: timm script not found in {tmp_path}")
    assert f"--branch v{timm.__version__}" in err and "--scripts-dir DIR" in err
    assert cli_main(["timm", "no/such/validate.py"]) == 2
    assert capsys.readouterr().err == "mixer-zoo timm: error: no/such/validate.py: no such file\n"


# ---- timm's real scripts on real images -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def timm_scripts():
    """timm's scripts for the installed version: $MIXER_ZOO_TIMM_SCRIPTS, else ../shared/timm-scripts/VERSION."""
    places = [Path(os.environ[SCRIPTS_ENV])] if os.environ.get(SCRIPTS_ENV) else []
    places.append(SHARED / "timm-scripts" / timm.__version__)
    for folder in places:
        if all((folder / n).is_file() for n in SCRIPTS):
            return folder
    pytest.skip(f"timm {timm.__version__}'s scripts ({', '.join(SCRIPTS)}) not found in {', '.join(map(str, places))}: "
                f"neither timm's wheel nor its PyPI source distribution ships them; set ${SCRIPTS_ENV} to a checkout "
                f"of timm's repository at v{timm.__version__}")


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory):
    """An ImageFolder tree of real CIFAR-10 images: train/ 100 a class, validation/ 20 a class (test split)."""
    if not (REAL / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR-10 images not found: no {REAL}/cifar-10-batches-py (the repository's ../shared/data)")
    pytest.importorskip("mmpretrain")
    from PIL import Image

    from mixer_zoo.mmpretrain import load_split

    root = tmp_path_factory.mktemp("cifar")
    for split, folder, per_class in (("train", "train", 100), ("test", "validation", 20)):
        images, labels = load_split(REAL, split)
        for c in range(10):
            (root / folder / f"class_{c}").mkdir(parents=True)
            for i in [i for i, label in enumerate(labels) if label == c][:per_class]:
                Image.fromarray(images[i]).save(root / folder / f"class_{c}" / f"{folder}_{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def trained(timm_scripts, cifar_tree, tmp_path_factory):
    """A random tiny zoo Mixer as a converted folder, trained by timm's own train.py from ``local-dir:``, and its
    last checkpoint converted back into a folder by ``mixer-zoo convert``."""
    work = tmp_path_factory.mktemp("timm-train")
    model = timm.create_model("mixer_custom_zoo", num_classes=10, **TINY)
    torch.save(model.state_dict(), work / "start.pth")
    assert cli_main(["convert", str(work / "start.pth"), "--out", str(work / "start"), "--quiet"]) == 0
    result = run_cli("timm", "--scripts-dir", timm_scripts, "train.py", "--data-dir", cifar_tree,
                     "--model", f"local-dir:{work / 'start'}", "--pretrained", "--num-classes", "10",
                     "--epochs", "8", "-b", "32", "--opt", "adamw", "--lr", "5e-3", "--weight-decay", "0.05",
                     "--warmup-epochs", "0", "--sched", "cosine", "--scale", "0.8", "1.0", "--color-jitter", "0",
                     "--workers", "0",
                     "--device", "cpu", "--seed", "0", "--output", work / "out", "--experiment", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    run = work / "out" / "tiny"
    summary = list(csv.DictReader(open(run / "summary.csv")))
    assert cli_main(["convert", str(run / "last.pth.tar"), "--out", str(work / "trained"), "--quiet"]) == 0
    return work / "trained", summary


def test_timms_train_py_trains_a_zoo_model_from_a_local_dir_folder(trained):
    _, summary = trained
    losses = [float(row["train_loss"]) for row in summary]
    assert len(summary) == 8 and losses[-1] < losses[0] - 0.1, summary
    assert float(summary[-1]["eval_top1"]) > 20.0, summary  # chance is 10 % (2 points of error on 200 images)


def _our_evaluation(folder, cifar_tree):
    """The project's own evaluation (``tools.evaluate.evaluate_model``) of a folder, plus its top-1 per file."""
    from timm.data import create_transform, resolve_data_config

    from mixer_zoo.tools.evaluate import evaluate_model

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = resolve_data_config({}, model=model)
    samples = [(p, int(p.parent.name.split("_")[1])) for p in sorted((cifar_tree / "validation").glob("*/*.png"))]
    result = evaluate_model(model, samples, config, batch_size=50, workers=0, device="cpu", progress=False)
    transform = create_transform(**config)
    from PIL import Image

    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in samples])
        predicted = model(batch).argmax(-1).tolist()
    return result, {p.name: c for (p, _), c in zip(samples, predicted)}


def test_validate_py_on_the_folder_matches_the_projects_evaluation_and_train_py(timm_scripts, cifar_tree, trained,
                                                                               tmp_path):
    folder, summary = trained
    out = tmp_path / "validate.json"
    result = run_cli("timm", "--scripts-dir", timm_scripts, "validate.py", "--data-dir", cifar_tree,
                     "--split", "validation", "--model", f"local-dir:{folder}", "--pretrained", "--workers", "0",
                     "-b", "50", "--device", "cpu", "--results-file", out, "--results-format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(out.read_text())  # one model: one result object
    ours, _ = _our_evaluation(folder, cifar_tree)
    assert ours["images"] == 200
    assert round(row["top1"] * 2) == ours["top1_correct"] and round(row["top5"] * 2) == ours["top5_correct"]
    assert abs(row["top1"] - float(summary[-1]["eval_top1"])) < 1e-3  # train.py's own last evaluation
    print(f"\nvalidate.py top-1 {row['top1']:.2f} %, mixer-zoo's evaluation {ours['top1']:.2f} % (200 real images)")


def test_inference_py_predicts_what_the_project_predicts_for_every_image(timm_scripts, cifar_tree, trained,
                                                                        tmp_path):
    pytest.importorskip("pandas", reason="timm's inference.py needs pandas")
    folder, _ = trained
    result = run_cli("timm", "--scripts-dir", timm_scripts, "inference.py", "--data-dir", cifar_tree,
                     "--split", "validation", "--model", f"local-dir:{folder}", "--workers", "0", "-b", "50",
                     "--device", "cpu", "--topk", "1", "--include-index", "--label-type", "none",
                     "--results-dir", tmp_path, "--results-file", "predictions", "--results-format", "json",
                     "--no-console-results")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "predictions.json").read_text())
    _, ours = _our_evaluation(folder, cifar_tree)
    assert len(rows) == 200 and {name: row["index"] for name, row in rows.items()} == ours


def test_validate_py_loads_the_folder_from_a_hub_cache_as_hf_hub(timm_scripts, cifar_tree, trained, tmp_path):
    folder, summary = trained
    hub = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    repo = "mixer-zoo-tests/mixer_custom_zoo.cifar10_timm_train"
    installed = run_cli("publish", folder, "--repo-id", repo, "--local-cache", env=hub)
    assert installed.returncode == 0, installed.stderr
    out = tmp_path / "validate.json"
    result = run_cli("timm", "--scripts-dir", timm_scripts, "validate.py", "--data-dir", cifar_tree,
                     "--split", "validation", "--model", f"hf-hub:{repo}", "--pretrained", "--workers", "0",
                     "--device", "cpu", "--results-file", out, "--results-format", "json", env=hub)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(out.read_text())  # one model: one result object
    assert abs(row["top1"] - float(summary[-1]["eval_top1"])) < 1e-3


def test_benchmark_py_counts_the_zoo_models_parameters(timm_scripts, trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "bench.json"
    result = run_cli("timm", "--scripts-dir", timm_scripts, "benchmark.py", "--model", f"local-dir:{folder}",
                     "--bench", "inference", "-b", "8", "--num-warm-iter", "1", "--num-bench-iter", "5",
                     "--device", "cpu", "--results-file", out, "--results-format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    row = rows[0] if isinstance(rows, list) else rows
    params = sum(p.numel() for p in timm.create_model("mixer_custom_zoo", num_classes=10, **TINY).parameters())
    assert row["param_count"] == round(params / 1e6, 2) and row["infer_samples_per_sec"] > 0
