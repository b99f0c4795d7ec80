"""Hub loading and publishing, offline: a real huggingface_hub cache snapshot of a real conversion.

The checkpoint is a random Mixer-S/32 in the exact layout of Google's npz, converted by ``convert_tag``
(the same code path as a real release), so every test here runs on what users would load.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from mixer_zoo.tools import publish as hub
from mixer_zoo.weights import integrity
from mixer_zoo.cli import main
from mixer_zoo.tools.convert import convert_tag
from mixer_zoo.weights.download import cached_path, sha256_of
from mixer_zoo.reference.flax_mixer import make_official_npz
from mixer_zoo.tools.manifest_check import check_manifest
from mixer_zoo.weights.manifest import get_entry, load_manifest, MANIFEST_PATH

TAG = "mixer_s32_zoo.gsam_in1k"
REPO = get_entry(TAG)["hf_hub_id"]
SECRET = "hf_THISISNOTAREALTOKENbutmustneverbeprinted"


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, files=("config.json", "model.safetensors")) -> Path:
    """huggingface_hub's cache layout: ``models--ORG--NAME/refs/main`` names a snapshot holding the files."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "a" * 40
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(folder / name, snapshot / name)
    return snapshot


def manifest_with(tmp_path: Path, tag: str, **converted) -> Path:
    data = json.loads(MANIFEST_PATH.read_text())
    data["weights"][tag]["converted"].update(converted)
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def corrupt_one_weight(path: Path) -> None:
    """Change one float in the data area: still a valid safetensors file, different weights."""
    raw = bytearray(path.read_bytes())
    raw[-8:-4] = np.float32(123.0).tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(download cache holding the random npz, converted folder of TAG)."""
    root = tmp_path_factory.mktemp("converted")
    downloads = root / "downloads"
    npz = cached_path(get_entry(TAG)["source"]["url"], downloads)
    npz.parent.mkdir(parents=True)
    make_official_npz(npz, "mixer_s32_zoo", num_classes=1000, seed=1)
    folder = convert_tag(TAG, root / "out" / TAG, cache_dir=downloads, progress=False)
    return downloads, folder


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference_logits(converted, images):
    """The converted weights in the tag's model, loaded by hand (strict)."""
    model = timm.create_model(TAG)
    model.load_state_dict(load_file(str(converted[1] / "model.safetensors")), strict=True)
    with torch.inference_mode():
        return model.eval()(images)


def logits(model, images):
    with torch.inference_mode():
        return model.eval()(images)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache with offline mode on (huggingface_hub reads both at call time from its constants)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


# ---- pretrained=True ------------------------------------------------------------------------------------

def test_pretrained_true_loads_a_cached_snapshot_offline_in_a_fresh_process(converted, images, reference_logits,
                                                                           tmp_path):
    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, REPO, converted[1])
    manifest = manifest_with(tmp_path, TAG, sha256=sha256_of(converted[1] / "model.safetensors"),
                             size_bytes=(converted[1] / "model.safetensors").stat().st_size)
    np.save(tmp_path / "images.npy", images.numpy())
    script = (
        "import sys, numpy as np, torch, timm, mixer_zoo\n"
        f"m = timm.create_model({TAG!r}, pretrained=True).eval()\n"
        "assert m.act_layer == 'gelu_tanh', m.act_layer\n"
        "x = torch.from_numpy(np.load(sys.argv[1], allow_pickle=False))\n"
        "with torch.inference_mode():\n"
        "    np.save(sys.argv[2], m(x).numpy())\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), MIXER_ZOO_MANIFEST=str(manifest))
    env.pop("HF_HOME", None)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.from_numpy(np.load(tmp_path / "out.npy", allow_pickle=False))
    # Same weights; each process times its own CPU kernel (fused or plain), which may round differently.
    torch.testing.assert_close(got, reference_logits, rtol=0, atol=1e-6 * float(reference_logits.abs().max()))


def test_a_corrupted_cached_file_is_caught_by_the_sha256_check(converted, offline_cache, tmp_path, monkeypatch):
    snapshot = populate_hub_cache(offline_cache, REPO, converted[1])
    good_sha = sha256_of(converted[1] / "model.safetensors")
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(manifest_with(tmp_path, TAG, sha256=good_sha, size_bytes=1)))
    timm.create_model(TAG, pretrained=True)  # intact: loads
    corrupt_one_weight(snapshot / "model.safetensors")
    with pytest.raises(hub.WeightsError) as err:
        timm.create_model(TAG, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    for part in (TAG, REPO, "sha256 mismatch", good_sha, "delete"):
        assert part in message


def test_without_a_recorded_sha256_the_files_own_record_catches_a_flipped_byte(converted, offline_cache, images,
                                                                               reference_logits):
    assert get_entry(TAG)["converted"]["sha256"] is None  # nothing published yet: the manifest cannot tell
    snapshot = populate_hub_cache(offline_cache, REPO, converted[1])
    torch.testing.assert_close(logits(timm.create_model(TAG, pretrained=True), images), reference_logits,
                               rtol=0, atol=0)
    corrupt_one_weight(snapshot / "model.safetensors")
    with pytest.raises(hub.WeightsError) as err:
        timm.create_model(TAG, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    for part in (TAG, str(snapshot / "model.safetensors"), "content sha256 mismatch", f"mixer-zoo cache verify {TAG}",
                 f"mixer-zoo cache clean {TAG}"):
        assert part in message


def test_a_broken_header_names_the_file_and_the_remedy(converted, offline_cache):
    snapshot = populate_hub_cache(offline_cache, REPO, converted[1])
    raw = bytearray((snapshot / "model.safetensors").read_bytes())
    raw[8] ^= 0xFF  # the header's opening brace: safetensors itself cannot parse it
    (snapshot / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(hub.WeightsError) as err:
        timm.create_model(TAG, pretrained=True)
    message = str(err.value)
    assert "\n" not in message and str(snapshot / "model.safetensors") in message
    assert f"mixer-zoo cache clean {TAG}" in message


def test_a_config_from_another_conversion_is_refused(converted, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(converted[1], folder)
    config = json.loads((folder / "config.json").read_text())
    config["integrity"]["weights_content_sha256"] = "0" * 64
    config["integrity"]["config_sha256"] = integrity.config_sha256(config)  # a well-formed record, other weights
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.WeightsError, match="belongs to other weights") as err:
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert str(folder / "config.json") in str(err.value) and "--force" in str(err.value)
    config["pretrained_cfg"]["crop_pct"] = 0.5  # an edited (or bit-flipped) value breaks its own record
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.WeightsError, match="config sha256 mismatch"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_cache_dir_argument_is_used_for_download_and_check(converted, offline_cache, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    snapshot = populate_hub_cache(other, REPO, converted[1])
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(manifest_with(
        tmp_path, TAG, sha256=sha256_of(converted[1] / "model.safetensors"), size_bytes=1)))
    timm.create_model(TAG, pretrained=True, cache_dir=str(other))
    corrupt_one_weight(snapshot / "model.safetensors")
    with pytest.raises(hub.WeightsError, match="sha256 mismatch"):
        timm.create_model(TAG, pretrained=True, cache_dir=str(other))


def test_a_missing_file_names_the_tag_the_repo_and_what_to_do(offline_cache):
    with pytest.raises(hub.WeightsError) as err:
        timm.create_model(TAG, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    for part in (TAG, REPO, "HF_HUB_OFFLINE", f"mixer-zoo publish DIR --repo-id {REPO}", "pretrained_cfg_overlay"):
        assert part in message


def test_pretrained_cfg_overlay_file_loads_a_local_file(converted, offline_cache, images, reference_logits):
    model = timm.create_model(TAG, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(converted[1] / "model.safetensors")))
    torch.testing.assert_close(logits(model, images), reference_logits, rtol=0, atol=0)


def test_local_dir_and_hf_hub_loading_reproduce_the_logits(converted, offline_cache, images, reference_logits):
    local = timm.create_model(f"local-dir:{converted[1]}", pretrained=True)
    assert local.act_layer == "gelu_tanh"
    torch.testing.assert_close(logits(local, images), reference_logits, rtol=0, atol=0)
    populate_hub_cache(offline_cache, REPO, converted[1])
    remote = timm.create_model(f"hf-hub:{REPO}", pretrained=True)
    assert remote.act_layer == "gelu_tanh"
    torch.testing.assert_close(logits(remote, images), reference_logits, rtol=0, atol=0)


# ---- publishing -----------------------------------------------------------------------------------------

def test_dry_run_lists_exactly_the_files_loading_needs(converted, tmp_path, images, reference_logits):
    folder = tmp_path / "folder"
    shutil.copytree(converted[1], folder)
    (folder / "notes.txt").write_text("not for the Hub")
    torch.save({}, folder / "pytorch_model.bin")  # a stray pickle must not be uploaded
    result = hub.publish_folder(folder, REPO, dry_run=True)
    assert result["commit_url"] is None
    files = {r["file"]: r for r in result["files"]}
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    needed = {name for name, r in files.items() if r["needed_to_load"] == "yes"}
    assert needed == {"config.json", "model.safetensors"}
    assert files["model.safetensors"]["sha256"] == sha256_of(folder / "model.safetensors")

    only_needed = tmp_path / "only-needed"
    only_needed.mkdir()
    for name in needed:
        shutil.copyfile(folder / name, only_needed / name)
    model = timm.create_model(f"local-dir:{only_needed}", pretrained=True)
    torch.testing.assert_close(logits(model, images), reference_logits, rtol=0, atol=0)
    for name, error in (("config.json", FileNotFoundError), ("model.safetensors", RuntimeError)):
        partial = tmp_path / f"without-{name}"
        shutil.copytree(only_needed, partial)
        (partial / name).unlink()
        with pytest.raises(error):
            timm.create_model(f"local-dir:{partial}", pretrained=True)


def _break_act_layer(folder):
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["act_layer"] = "relu"
    (folder / "config.json").write_text(json.dumps(config))


def _wrong_head(folder):
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = 10
    (folder / "config.json").write_text(json.dumps(config))


def _card_without_library(folder):
    text = (folder / "README.md").read_text().replace("library_name: timm\n", "")
    (folder / "README.md").write_text(text)


def _card_without_pipeline_tag(folder):
    text = (folder / "README.md").read_text().replace("pipeline_tag: image-classification\n", "")
    (folder / "README.md").write_text(text)


def _truncate_weights(folder):
    (folder / "model.safetensors").write_bytes(b"\x10\x00")


@pytest.mark.parametrize("breakage, file, words", [
    (lambda f: (f / "README.md").unlink(), "README.md", "missing"),
    (_break_act_layer, "config.json", "act_layer"),
    (_wrong_head, "model.safetensors", "head.weight"),
    (_card_without_library, "README.md", "library_name"),
    (_card_without_pipeline_tag, "README.md", "pipeline_tag"),
    (_truncate_weights, "model.safetensors", "safetensors"),
])
def test_dry_run_rejects_a_broken_folder_in_one_line(converted, tmp_path, breakage, file, words):
    folder = tmp_path / "folder"
    shutil.copytree(converted[1], folder)
    breakage(folder)
    with pytest.raises(hub.PublishError) as err:
        hub.publish_folder(folder, REPO, dry_run=True)
    message = str(err.value)
    assert "\n" not in message and str(folder / file) in message and words in message


def test_dry_run_checks_the_folder_against_the_manifest_tag(converted, tmp_path):
    with pytest.raises(hub.PublishError, match="architecture is 'mixer_s32_zoo' but manifest tag mixer_b16_zoo.goog_in21k"):
        hub.publish_folder(converted[1], "mixer-zoo/mixer_b16_zoo.goog_in21k", dry_run=True)
    manifest = manifest_with(tmp_path, TAG, sha256="0" * 64, size_bytes=1)
    with pytest.raises(hub.PublishError, match="records 0000"):
        hub.publish_folder(converted[1], REPO, dry_run=True, manifest=manifest)
    with pytest.raises(hub.PublishError, match="repo-id"):
        hub.publish_folder(converted[1], "not a repo id", dry_run=True)


def test_publish_cli_dry_run_prints_the_plan_and_never_the_token(converted, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["publish", str(converted[1]), "--repo-id", REPO, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "model.safetensors" in out and "config.json" in out and "README.md" in out and "nothing uploaded" in out
    assert SECRET not in out + err


def test_upload_builds_real_commit_operations_and_fails_cleanly_offline(converted, offline_cache, capsys):
    rows = hub.publish_plan(converted[1], REPO)
    ops = hub.commit_operations(converted[1], rows)
    assert [op.path_in_repo for op in ops] == [r["file"] for r in rows]
    assert [op.upload_info.size for op in ops] == [r["bytes"] for r in rows]
    with pytest.raises(hub.PublishError) as err:
        hub.publish_folder(converted[1], REPO, token=SECRET)
    message = str(err.value)
    assert message.startswith(f"{REPO}: upload failed") and "\n" not in message
    assert SECRET not in message + "".join(capsys.readouterr())


def test_commit_operations_refuse_a_file_changed_after_validation(converted, tmp_path):
    folder = tmp_path / "folder"
    shutil.copytree(converted[1], folder)
    rows = hub.publish_plan(folder, REPO)
    corrupt_one_weight(folder / "model.safetensors")
    with pytest.raises(hub.PublishError, match="changed after validation"):
        hub.commit_operations(folder, rows)


# ---- convert-all ----------------------------------------------------------------------------------------

def test_convert_all_converts_skips_up_to_date_and_records_the_sha256(converted, tmp_path, monkeypatch):
    downloads = converted[0]
    manifest = manifest_with(tmp_path, TAG)
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(manifest))
    out = tmp_path / "all"
    first = hub.convert_all(out, [TAG], publish=True, dry_run=True, cache_dir=downloads, update_manifest=True,
                            progress=False)
    assert [(r["tag"], r["converted"], r["error"]) for r in first] == [(TAG, "converted", "")]
    assert first[0]["published"] == f"dry run ok: {REPO}"
    recorded = load_manifest(manifest)["weights"][TAG]["converted"]
    assert recorded == dict(sha256=sha256_of(out / TAG / "model.safetensors"),
                            size_bytes=(out / TAG / "model.safetensors").stat().st_size)
    assert recorded["sha256"] == sha256_of(converted[1] / "model.safetensors")  # conversion is deterministic
    assert check_manifest(manifest, build_models=False) == []

    second = hub.convert_all(out, [TAG], cache_dir=downloads, progress=False)
    assert second[0]["converted"] == "up to date"

    corrupt_one_weight(out / TAG / "model.safetensors")  # differs from the recorded sha256: converted again
    third = hub.convert_all(out, [TAG], cache_dir=downloads, progress=False)
    assert third[0]["converted"] == "converted" and third[0]["sha256"] == recorded["sha256"]


def test_convert_all_reports_a_failing_tag_and_goes_on(converted, tmp_path):
    rows = hub.convert_all(tmp_path / "all", ["mixer_h14_zoo.untrained", TAG], cache_dir=converted[0], progress=False)
    assert "no source" in rows[0]["error"]
    assert rows[1]["converted"] == "converted" and rows[1]["error"] == ""


def test_convert_all_cli_prints_a_summary_and_writes_json(converted, tmp_path, capsys):
    summary = tmp_path / "summary.json"
    argv = ["convert-all", "--out", str(tmp_path / "all"), "--tags", TAG, "--cache-dir", str(converted[0]),
            "--quiet", "--json", str(summary)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert TAG in out and "converted" in out
    assert json.loads(summary.read_text())[0]["tag"] == TAG
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["convert-all", "--out", str(tmp_path / "x"), "--tags", "mixer_h14_zoo.untrained", "--quiet"]) == 2
    assert "1 of 1 tags failed" in capsys.readouterr().err


def test_install_in_cache_makes_pretrained_true_work_offline(converted, offline_cache, images, reference_logits,
                                                             capsys):
    assert main(["publish", str(converted[1]), "--repo-id", REPO, "--local-cache"]) == 0
    assert "installed" in capsys.readouterr().out
    snapshot = hub.install_in_cache(converted[1], REPO)  # again: the same snapshot, nothing rewritten
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model(TAG, pretrained=True)
    torch.testing.assert_close(logits(model, images), reference_logits, rtol=0, atol=0)


# ---- concurrent and hostile installs (issue 14), on a tiny Mixer ---------------------------------------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from integrity_helpers import leftovers, make_tiny_npz, tiny_architecture  # noqa: E402


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    pytest.importorskip("flax")
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "locks"))
    with tiny_architecture():
        npz = make_tiny_npz(cached_path(get_entry(TAG)["source"]["url"], tmp_path / "downloads"), seed=5)
        yield convert_tag(TAG, tmp_path / "converted", cache_dir=tmp_path / "downloads", progress=False), npz


def test_concurrent_installs_of_one_repo_all_succeed_and_load(tiny_folder, offline_cache):
    folder, _ = tiny_folder
    with ThreadPoolExecutor(4) as pool:
        snapshots = list(pool.map(lambda _: hub.install_in_cache(folder, REPO), range(4)))
    assert len(set(snapshots)) == 1
    assert sorted(p.name for p in snapshots[0].iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = timm.create_model(TAG, pretrained=True)
    want = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    assert leftovers(offline_cache) == []


def test_a_symlink_planted_in_the_snapshot_is_not_written_through(tiny_folder, offline_cache, tmp_path):
    folder, _ = tiny_folder
    rows = hub.publish_plan(folder, REPO)
    revision = __import__("hashlib").sha1("".join(r["sha256"] for r in rows).encode()).hexdigest()
    snapshot = offline_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (snapshot / ".model.safetensors.partial").symlink_to(victim)  # the old fixed temp name
    (snapshot / "model.safetensors").symlink_to(victim)  # and the target itself
    hub.install_in_cache(folder, REPO)
    assert victim.read_text() == "precious"
    assert sha256_of(snapshot / "model.safetensors") == sha256_of(folder / "model.safetensors")
    assert not (snapshot / "model.safetensors").is_symlink()


def test_a_folder_changing_during_install_is_refused(tiny_folder, offline_cache, monkeypatch):
    folder, _ = tiny_folder
    real_plan = hub.publish_plan

    def plan_then_change(*args, **kwargs):
        rows = real_plan(*args, **kwargs)
        corrupt_one_weight(folder / "model.safetensors")  # after validation, before the copy
        return rows

    monkeypatch.setattr(hub, "publish_plan", plan_then_change)
    with pytest.raises(hub.PublishError, match="changed while being copied"):
        hub.install_in_cache(folder, REPO)
    assert leftovers(offline_cache) == []
    assert not list(offline_cache.rglob("model.safetensors"))


def test_convert_all_reconverts_a_damaged_folder_even_without_a_recorded_sha256(tiny_folder, tmp_path):
    assert get_entry(TAG)["converted"]["sha256"] is None
    out = tmp_path / "all"
    first = hub.convert_all(out, [TAG], cache_dir=tmp_path / "downloads", progress=False)
    assert hub.convert_all(out, [TAG], cache_dir=tmp_path / "downloads", progress=False)[0]["converted"] == "up to date"
    corrupt_one_weight(out / TAG / "model.safetensors")  # its own content record no longer matches
    again = hub.convert_all(out, [TAG], cache_dir=tmp_path / "downloads", progress=False)
    assert again[0]["converted"] == "converted" and again[0]["sha256"] == first[0]["sha256"]
