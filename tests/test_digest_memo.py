"""The digest memo: a warm ``pretrained=True`` skips re-reading a file hashed before in its current state, and
any change to the file (in place, renamed over, racily new) makes the next load read it again."""
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import timm
import torch

from integrity_helpers import TAG, make_tiny_npz, tiny_architecture
from mixer_zoo.tools.cache import verify_cache
from mixer_zoo.tools.convert import convert_tag
from mixer_zoo.weights import digest_memo
from mixer_zoo.weights.download import cached_path
from mixer_zoo.weights.hub_cache import WeightsError, check_weights_file
from mixer_zoo.weights.integrity import IntegrityError, content_sha256
from mixer_zoo.weights.manifest import get_entry

SETTLE = 0.2


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """A private memo folder, and a short racy window so a test can wait it out."""
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "zoo-cache"))
    monkeypatch.delenv(digest_memo.ENV, raising=False)
    monkeypatch.setattr(digest_memo, "RACY_SECONDS", SETTLE)
    return tmp_path / "zoo-cache" / "digests"


@pytest.fixture
def folder(tmp_path, memo):
    """A converted tiny folder (sealed content record + config record), settled past the racy window."""
    pytest.importorskip("flax")
    with tiny_architecture():
        make_tiny_npz(cached_path(get_entry(TAG)["source"]["url"], tmp_path / "downloads"), seed=3)
        out = convert_tag(TAG, tmp_path / "converted", cache_dir=tmp_path / "downloads", progress=False)
        time.sleep(SETTLE * 1.5)
        yield out


@pytest.fixture
def reads(monkeypatch):
    """How many times a weights file was actually hashed (the real hashing still runs)."""
    calls = []
    real = digest_memo._hash

    def counting(path, sha256, content):
        calls.append(str(path))
        return real(path, sha256, content)

    monkeypatch.setattr(digest_memo, "_hash", counting)
    return calls


def load(folder):
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.inference_mode():
        return model(torch.ones(1, 3, 224, 224))


def rewrite_one_float(path, value=7.0):
    """Same size, one weight changed, written in place (the inode stays)."""
    raw = bytearray(path.read_bytes())
    raw[-4:] = np.float32(value).tobytes()
    with open(path, "r+b") as f:
        f.write(bytes(raw))


def test_one_read_gives_both_digests_equal_to_hashlib_and_content_sha256(folder, memo):
    weights = folder / "model.safetensors"
    digests, from_memo = digest_memo.file_digests(weights, sha256=True, content=True)
    assert not from_memo
    assert digests["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digests["content_sha256"] == content_sha256(weights)[0]
    assert digest_memo.file_digests(weights, sha256=True, content=True) == (digests, True)


def test_a_warm_load_reads_the_file_once_and_gives_the_same_logits(folder, memo, reads):
    with tiny_architecture():
        first = load(folder)
        second = load(folder)
        third = load(folder)
    assert len(reads) == 1, reads
    assert torch.equal(first, second) and torch.equal(first, third)
    assert len(list(memo.glob("*.json"))) == 1


def test_a_file_changed_in_place_after_it_was_remembered_is_read_again_and_refused(folder, memo, reads):
    weights = folder / "model.safetensors"
    with tiny_architecture():
        load(folder)
        rewrite_one_float(weights)
        with pytest.raises(WeightsError) as err:
            load(folder)
    assert len(reads) == 2
    assert "content sha256 mismatch" in str(err.value) and str(weights) in str(err.value)


def test_a_file_renamed_over_it_is_read_again(folder, memo, reads, tmp_path):
    weights = folder / "model.safetensors"
    with tiny_architecture():
        load(folder)
        other = tmp_path / "other.safetensors"
        shutil.copyfile(weights, other)
        rewrite_one_float(other)
        os.utime(other, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns))  # same size and mtime
        os.replace(other, weights)
        with pytest.raises(WeightsError, match="content sha256 mismatch"):
            load(folder)
    assert len(reads) == 2


def test_a_racily_new_file_is_not_remembered(folder, memo, reads, monkeypatch):
    monkeypatch.setattr(digest_memo, "RACY_SECONDS", 3600.0)
    with tiny_architecture():
        load(folder)
        load(folder)
    assert len(reads) == 2 and not memo.exists()


def test_verify_always_reads_every_time(folder, memo, reads, monkeypatch):
    monkeypatch.setenv(digest_memo.ENV, "always")
    with tiny_architecture():
        load(folder)
        load(folder)
    assert len(reads) == 2


def test_a_memo_for_another_state_or_garbage_is_ignored(folder, memo, reads):
    weights = folder / "model.safetensors"
    with tiny_architecture():
        load(folder)
        (entry,) = memo.glob("*.json")
        saved = json.loads(entry.read_text())
        entry.write_text(json.dumps(dict(saved, stamps=[0, 0, 0, 0, 0], content_sha256="0" * 64)))
        load(folder)
        entry.write_text("{not json")
        load(folder)
    assert len(reads) == 3
    assert json.loads(entry.read_text())["content_sha256"] == content_sha256(weights)[0]  # rewritten


def test_an_unwritable_memo_folder_warns_once_and_the_load_still_checks(folder, memo, reads, monkeypatch):
    memo.parent.mkdir(parents=True, exist_ok=True)  # the conversion took its locks there
    memo.write_text("a file where the folder should be")
    with tiny_architecture():
        with pytest.warns(RuntimeWarning, match="cannot remember weights digests"):
            load(folder)
        load(folder)
    assert len(reads) == 2


def test_the_manifest_sha256_is_checked_against_the_remembered_digest(folder, memo, reads):
    weights = folder / "model.safetensors"
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert check_weights_file(weights, folder / "config.json", want_sha256=good, use_memo=True)["sha256"] == good
    checked = check_weights_file(weights, folder / "config.json", want_sha256=good, use_memo=True)
    assert checked["from_memo"] and checked["recorded"] and checked["config"]
    with pytest.raises(IntegrityError, match=f"sha256 mismatch: got {good}, expected {'1' * 64}"):
        check_weights_file(weights, want_sha256="1" * 64, use_memo=True)
    assert len(reads) == 1


def test_a_file_with_no_record_to_compare_is_not_read(tmp_path, memo, reads):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4)}, str(path))
    assert check_weights_file(path, use_memo=True)["content_sha256"] is None
    assert reads == []


def test_cache_verify_reads_the_file_even_when_it_is_remembered(folder, memo, reads, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hf" / f"models--{get_entry(TAG)['hf_hub_id'].replace('/', '--')}" / "snapshots" / "a"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(folder / name, snapshot / name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    time.sleep(SETTLE * 1.5)
    check_weights_file(snapshot / "model.safetensors", snapshot / "config.json", use_memo=True)  # remembered
    assert check_weights_file(snapshot / "model.safetensors", snapshot / "config.json", use_memo=True)["from_memo"]
    rows = [r for r in verify_cache([TAG], hub_cache=tmp_path / "hf") if r["cache"] == "hub"]
    assert [r["status"] for r in rows] == ["ok"] and "content record" in rows[0]["detail"]
    assert len(reads) == 2
