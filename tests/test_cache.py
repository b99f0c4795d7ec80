"""``mixer-zoo cache verify`` / ``cache clean`` on real cache layouts: a Hub snapshot installed by
``publish --local-cache`` and a source download, each intact, damaged, and removed."""
import json

import huggingface_hub.constants
import pytest

from integrity_helpers import TAG, make_tiny_npz, one_line_error, tiny_architecture
from mixer_zoo.cli import main
from mixer_zoo.tools.cache import clean_cache, verify_cache
from mixer_zoo.tools.convert import convert_tag
from mixer_zoo.tools.publish import install_in_cache
from mixer_zoo.weights.download import cached_path
from mixer_zoo.weights.manifest import get_entry

REPO = get_entry(TAG)["hf_hub_id"]


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """(hub cache, download cache) holding TAG's snapshot and source, both intact."""
    pytest.importorskip("flax")
    hub, downloads = tmp_path / "hub", tmp_path / "downloads"
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(downloads))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    with tiny_architecture():
        make_tiny_npz(cached_path(get_entry(TAG)["source"]["url"], downloads), seed=6)
        folder = convert_tag(TAG, tmp_path / "converted", cache_dir=downloads, progress=False)
        install_in_cache(folder, REPO, cache_dir=hub)
        yield hub, downloads


def _flip(path, offset_from_end=100):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(raw))


def _status(rows, cache):
    return [r["status"] for r in rows if r["cache"] == cache]


def test_verify_passes_intact_copies_and_names_damaged_ones(caches, capsys):
    hub, downloads = caches
    rows = verify_cache([TAG], hub, downloads)
    assert _status(rows, "hub") == ["ok"] and _status(rows, "download") == ["ok"]
    assert "content record" in rows[0]["detail"] and "config record" in rows[0]["detail"]
    assert main(["cache", "verify", TAG, "--hub-cache", str(hub), "--download-cache", str(downloads)]) == 0

    weights = next(hub.rglob("model.safetensors"))
    _flip(weights)
    source = cached_path(get_entry(TAG)["source"]["url"], downloads)
    _flip(source, source.stat().st_size // 2)
    rows = verify_cache([TAG], hub, downloads)
    assert _status(rows, "hub") == ["CORRUPT"] and "content sha256 mismatch" in rows[0]["detail"]
    assert _status(rows, "download") == ["CORRUPT"] and "CRC" in rows[1]["detail"]
    assert main(["cache", "verify", TAG, "--hub-cache", str(hub), "--download-cache", str(downloads)]) == 2
    line = one_line_error(capsys.readouterr().err, "cache")
    assert line and str(weights) in line and f"mixer-zoo cache clean {TAG}" in line


def test_a_damaged_config_is_reported(caches):
    hub, downloads = caches
    config = next(hub.rglob("config.json"))
    data = json.loads(config.read_text())
    data["pretrained_cfg"]["crop_pct"] = 0.5
    config.write_text(json.dumps(data))
    rows = verify_cache([TAG], hub, downloads)
    assert _status(rows, "hub") == ["CORRUPT"] and "config sha256 mismatch" in rows[0]["detail"]


def test_clean_removes_every_copy_and_partial(caches, capsys):
    hub, downloads = caches
    source = cached_path(get_entry(TAG)["source"]["url"], downloads)
    source.with_name(source.name + ".part").write_bytes(b"half")
    assert main(["cache", "clean", TAG, "--hub-cache", str(hub), "--download-cache", str(downloads)]) == 0
    out = capsys.readouterr().out
    assert "models--" in out and source.name in out
    assert not list(hub.glob("models--*")) and not source.exists()
    assert not source.with_name(source.name + ".part").exists()
    rows = verify_cache([TAG], hub, downloads)
    assert {r["status"] for r in rows} == {"not cached"}
    assert clean_cache([TAG], hub, downloads) == []  # nothing left to remove


def test_clean_needs_a_tag_and_unknown_tags_are_one_line(capsys):
    assert main(["cache", "clean"]) == 2
    assert one_line_error(capsys.readouterr().err, "cache")
    assert main(["cache", "verify", "mixer_b16_zoo.nope"]) == 2
    line = one_line_error(capsys.readouterr().err, "cache")
    assert line and "unknown weights tag 'mixer_b16_zoo.nope'" in line
