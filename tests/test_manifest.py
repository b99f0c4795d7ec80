"""The weights manifest: schema, cross-checks with the code, the env override and ``mixer-zoo manifest check``."""
import copy
import json

import pytest
import timm
import torch

from mixer_zoo.cli import main
from mixer_zoo.tools.manifest_check import check_manifest
from mixer_zoo.weights.manifest import entry_for_hub_id, get_entry, MANIFEST_PATH, ManifestError, validate_manifest, weights_entries

PACKAGED = json.loads(MANIFEST_PATH.read_text())
B16 = "mixer_b16_zoo.goog_in21k_ft_in1k"


def write(tmp_path, data, name="weights_manifest.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def mutated(change):
    data = copy.deepcopy(PACKAGED)
    change(data)
    return data


def test_the_packaged_manifest_validates_and_agrees_with_the_code():
    validate_manifest()
    assert check_manifest() == []


def test_every_released_tag_is_listed_by_timm_with_pretrained_weights():
    released = {k for k, e in weights_entries().items() if e["hf_hub_id"]}
    assert set(timm.list_models("*_zoo", pretrained=True)) == released
    assert len(released) == 20


@pytest.mark.parametrize("key", list(PACKAGED["weights"]))
def test_num_params_is_the_real_models(key):
    entry = PACKAGED["weights"][key]
    with torch.device("meta"):
        model = timm.create_model(key)
    assert model.num_classes == entry["num_classes"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]


def test_first_tag_of_each_architecture_is_the_default():
    assert timm.create_model("mixer_b16_zoo").pretrained_cfg["tag"] == "goog_in21k_ft_in1k"
    assert timm.create_model("mixer_s16_zoo").pretrained_cfg["tag"] == "gsam_in1k"
    assert get_entry("mixer_b16_zoo")["tag"] == "goog_in21k_ft_in1k"


def test_gelu_flavour_follows_who_trained_the_weights():
    for key, entry in weights_entries().items():
        if entry["tag"].startswith(("goog_", "sam_", "gsam_")):
            assert entry["act_layer"] == "gelu_tanh", key  # Flax's nn.gelu
        if entry["tag"].startswith("miil_"):
            assert entry["act_layer"] == "gelu", key  # trained in PyTorch with nn.GELU
    miil = get_entry("mixer_b16_zoo.miil_in21k_ft_in1k")
    assert (miil["mean"], miil["std"], miil["interpolation"]) == ([0.0] * 3, [1.0] * 3, "bilinear")
    assert get_entry("mixer_b16_zoo.miil_in21k")["num_classes"] == 11221


def test_no_invented_hashes_or_metrics():
    for key, entry in weights_entries().items():
        if entry["source"]:
            assert entry["source"]["sha256"] == "unverified" and entry["source"]["listed_in"], key
        assert entry["converted"] == {"sha256": None, "size_bytes": None}, key  # nothing converted from a real file yet
        reported = entry["metrics"]["reported"]
        if reported:
            where = "mlpMixer/readme.md" if entry["label_set"] == "cifar-10" else "results-imagenet.csv"
            assert where in reported["source"], key


MINDSPORE_REPORTED = {"mixer_b16_zoo": (96.06, 99.85), "mixer_b32_zoo": (93.64, 99.33), "mixer_s16_zoo": (96.06, 99.85),
                      "mixer_s32_zoo": (91.75, 99.08), "mixer_s8_zoo": (92.91, 99.08)}


def test_mindspores_cifar10_release_has_five_entries_with_its_preprocessing_and_reported_accuracy():
    entries = {e["architecture"]: e for e in weights_entries().values() if e["tag"] == "gsam_in1k_ft_cifar10"}
    assert set(entries) == set(MINDSPORE_REPORTED)
    for arch, e in entries.items():
        name = arch.split("_")[1]
        assert e["source"]["url"] == f"https://download.mindspore.cn/vision/mlpmixer/gsam_Mixer-{name[0].upper()}_{name[1:]}.ckpt"
        assert (e["source"]["format"], e["source"]["sha256"]) == ("mindspore_ckpt", "unverified")
        assert (e["num_classes"], e["label_set"], len(e["label_names"])) == (10, "cifar-10", 10)
        assert e["label_names"][0] == "airplane" and e["label_names"][-1] == "truck"
        assert (e["act_layer"], e["norm_eps"], e["input_size"], e["crop_pct"]) == ("gelu_tanh", 1e-7, [3, 224, 224], 1.0)
        assert [round(255 * m, 4) for m in e["mean"]] == [126.1, 123.7, 114.6]
        assert [round(255 * s, 4) for s in e["std"]] == [62.9, 61.9, 66.7]
        reported = e["metrics"]["reported"]
        assert (reported["cifar10_top1"], reported["cifar10_top5"]) == MINDSPORE_REPORTED[arch]
        assert ("copy error" in reported["source"]) == (arch in ("mixer_s16_zoo", "mixer_b16_zoo"))


def test_entry_for_hub_id_ignores_a_revision():
    assert entry_for_hub_id(f"mixer-zoo/{B16}@main")["tag"] == "goog_in21k_ft_in1k"
    assert entry_for_hub_id("someone/else") is None


def test_the_env_var_points_lookups_at_another_manifest(tmp_path, monkeypatch):
    path = write(tmp_path, mutated(lambda d: d["weights"][B16].update(description="private mirror")))
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(path))
    assert get_entry(B16)["description"] == "private mirror"
    monkeypatch.delenv("MIXER_ZOO_MANIFEST")
    assert get_entry(B16)["description"] != "private mirror"


def _set(path, value):
    def change(data):
        *parents, last = path
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return change


@pytest.mark.parametrize("change, pointer", [
    (_set(["weights", B16, "act_layer"], "relu"), f"/weights/{B16}/act_layer"),
    (_set(["weights", B16, "source", "sha256"], "abc"), f"/weights/{B16}/source/sha256"),
    (_set(["weights", B16, "num_classes"], "1000"), f"/weights/{B16}/num_classes"),
    (_set(["weights", B16, "label_set"], "imagenet"), f"/weights/{B16}/label_set"),
    (_set(["weights", B16, "metrics", "reported"], {"imagenet_top1": 80.0}), f"/weights/{B16}/metrics/reported"),
    (_set(["weights", B16, "metrics", "measured"], {"imagenet_val": {"top1": 180}}), f"/weights/{B16}/metrics/measured"),
    (_set(["weights", B16, "colour"], "blue"), f"/weights/{B16}"),
    (_set(["weights", B16, "hf_hub_id"], "no-org"), f"/weights/{B16}/hf_hub_id"),
    (_set(["weights", B16, "provenance", "trained_on"], ["imagenet-21k-p-typo"]), f"/weights/{B16}/provenance/trained_on"),
    (_set(["weights", B16, "provenance", "sources"], []), f"/weights/{B16}/provenance/sources"),
])
def test_the_schema_rejects_bad_values_naming_file_and_key(tmp_path, change, pointer):
    path = write(tmp_path, mutated(change))
    with pytest.raises(ManifestError) as err:
        validate_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {pointer}") and "\n" not in message


@pytest.mark.parametrize("change, words", [
    (_set(["weights", B16, "num_classes"], 21843), "label_set imagenet-1k has 1000 classes"),
    (_set(["weights", B16, "num_params"], 59_880_473), "num_params 59880473 but mixer_b16_zoo"),
    (_set(["weights", B16, "hf_hub_id"], "mixer-zoo/mixer_b16_zoo.other"), "must end in /" + B16),
    (_set(["weights", B16, "act_layer"], "gelu"), "tags are Google's JAX weights: act_layer must be gelu_tanh"),
    (_set(["weights", "mixer_b16_zoo.goog_in1k", "source", "url"],
          "https://storage.googleapis.com/mixer_models/imagenet1k/Mixer-L_16.npz"), "Mixer-B_16.npz"),
    (_set(["weights", B16, "paper", "arxiv"], "2101.00001"), "has no BibTeX"),
    (_set(["weights", "mixer_s16_zoo.gsam_in1k_ft_cifar10", "norm_eps"], 1e-6), "norm_eps must be 1e-7"),
    (_set(["weights", "mixer_s16_zoo.gsam_in1k_ft_cifar10", "source", "url"],
          "https://download.mindspore.cn/vision/mlpmixer/gsam_Mixer-B_16.ckpt"), "file is gsam_Mixer-S_16.ckpt"),
    (_set(["weights", "mixer_s16_zoo.gsam_in1k_ft_cifar10", "label_names"], ["a"] * 10), "label_names must be"),
    (_set(["weights", B16, "converted"], {"sha256": "0" * 64, "size_bytes": None}), "set together"),
    (lambda d: d["weights"].pop("mixer_h14_zoo.untrained"), "mixer_h14_zoo: architecture has no manifest entry"),
    (_set(["weights", B16, "provenance", "trained_on"], ["imagenet-1k", "imagenet-21k"]),
     "provenance.trained_on ends with imagenet-21k but the head's classes are imagenet-1k"),
    (_set(["weights", "mixer_h14_zoo.untrained", "provenance"],
          {"trained_on": ["imagenet-1k"], "certainty": "unknown", "notes": "x", "sources": ["y"]}),
     "lists data but no weights were released"),
])
def test_cross_checks_catch_what_the_schema_cannot(tmp_path, change, words):
    path = write(tmp_path, mutated(change))
    validate_manifest(path)  # schema-valid: only the code knows better
    problems = check_manifest(path, build_models=False)
    assert any(words in p for p in problems), problems
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_unknown_architecture_is_reported(tmp_path):
    def rename(data):
        entry = data["weights"].pop("mixer_l32_zoo.untrained")
        data["weights"]["mixer_x9_zoo.untrained"] = dict(entry, architecture="mixer_x9_zoo")
    problems = check_manifest(write(tmp_path, mutated(rename)), build_models=False)
    assert any("'mixer_x9_zoo' is not in mixer_zoo.zoo.ARCHITECTURES" in p for p in problems)


def test_measured_metrics_in_the_shape_the_eval_and_bench_helpers_write_validate(tmp_path):
    # mixer-zoo eval/bench --update-manifest write these groups into metrics.measured
    measured = {
        "imagenet_val": dict(top1=76.5, top5=92.1, images=50000, dataset="/data/val", dtype="fp32",
                             hardware="2-core CPU", date="2025-01-01"),
        "benchmark": dict(param_count=59.88, infer_samples_per_sec=5.1, speedup_vs_timm=1.3,
                          hardware="2-core CPU", date="2025-01-01"),
    }
    path = write(tmp_path, mutated(_set(["weights", B16, "metrics", "measured"], measured)))
    validate_manifest(path)
    assert check_manifest(path, build_models=False) == []
    undated = dict(measured, imagenet_val={k: v for k, v in measured["imagenet_val"].items() if k != "date"})
    with pytest.raises(ManifestError, match="'date' is a required property"):
        validate_manifest(write(tmp_path, mutated(_set(["weights", B16, "metrics", "measured"], undated))))


def test_manifest_check_cli(tmp_path, capsys):
    assert main(["manifest", "check"]) == 0
    out = capsys.readouterr().out
    assert B16 in out and "schema valid, consistent with the code" in out
    bad = write(tmp_path, mutated(_set(["weights", B16, "num_classes"], 21843)))
    assert main(["manifest", "check", "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mixer-zoo manifest: error: {bad}: {B16}: ")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["manifest", "check", "--manifest", str(broken)]) == 2
    assert "invalid JSON at line 1" in capsys.readouterr().err


# ---- manifest trust (issue 14) --------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://evil.example.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/x.pth",
    "https://github.com.evil.example.com/rwightman/pytorch-image-models/releases/download/v0.1/x.pth",
    "https://github.com/someone/else/releases/download/v1/x.pth",
    "https://github.com/rwightman/pytorch-image-models/releases/download/../../../evil/x.pth",
])
def test_a_pth_source_must_come_from_timms_releases(tmp_path, url):
    path = write(tmp_path, mutated(_set(["weights", B16, "source", "url"], url)))
    validate_manifest(path)  # https: the schema alone lets it through
    problems = check_manifest(path, build_models=False)
    assert any(f"{B16}: source.url {url} is not a timm_pth release location" in p for p in problems), problems


def test_an_http_override_manifest_is_refused_before_anything_is_downloaded(tmp_path, monkeypatch, capsys):
    from integrity_helpers import LocalServer

    server = LocalServer({"/x.pth": b"never fetched"})
    try:
        url = server.url("/x.pth")
        path = write(tmp_path, mutated(_set(["weights", B16, "source", "url"], url)))
        monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(path))
        with pytest.raises(ManifestError, match=f"{path}: /weights/{B16}/source/url"):
            get_entry(B16)
        assert main(["convert", B16, "--out", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}: /weights/{B16}/source/url" in err[0]
        assert server.requests == []
    finally:
        server.close()


@pytest.mark.parametrize("change", [
    lambda d: d.update(weights=[]),
    lambda d: d["weights"][B16].pop("architecture"),
    lambda d: d["weights"][B16].update(converted=None),
    lambda d: d["weights"][B16].update(source="https://example.com/x.pth"),
])
def test_a_schema_breaking_override_is_one_line_in_every_command(tmp_path, monkeypatch, capsys, change):
    path = write(tmp_path, mutated(change))
    monkeypatch.setenv("MIXER_ZOO_MANIFEST", str(path))
    for argv in (["convert", B16, "--out", str(tmp_path / "out")], ["cache", "verify", B16],
                 ["convert-all", "--out", str(tmp_path / "all"), "--tags", B16, "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0], (argv, err)


@pytest.mark.parametrize("key", ["mixer_b16_zoo.goog_in21k_ft_in1k", "mixer_l16_zoo.goog_in21k_ft_in1k"])
def test_timms_goog_in21k_ft_in1k_tags_record_their_imagenet_1k_provenance_with_sources(key):
    """timm's tag name is kept, but the manifest records that the evidence says ImageNet-1k only (PR #651, the
    rename commit, Google's bucket) and does not call them 21k->1k fine-tunes."""
    entry = weights_entries()[key]
    provenance = entry["provenance"]
    assert provenance["trained_on"] == ["imagenet-1k"] and provenance["certainty"] == "likely"
    sources = " ".join(provenance["sources"])
    for evidence in ("pull request #651", "b1206099", "2d8b09fe", "gs://mixer_models"):
        assert evidence in sources
    assert "Not settled" in provenance["notes"]
    assert "fine-tuned on ImageNet-1k by Google" not in entry["description"]
