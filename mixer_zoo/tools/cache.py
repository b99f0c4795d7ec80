"""``mixer-zoo cache verify`` / ``cache clean``: check every cached copy of a tag's files, and remove them.

A tag has two caches: its converted weights as a huggingface_hub snapshot (what ``pretrained=True`` loads)
and its source download (what ``convert TAG`` reads). ``verify`` checks each copy against every record there
is (the manifest's sha256, the integrity records a conversion sealed in, the zip CRC-32 of a source) and
reports leftovers of interrupted writers; ``clean`` removes a tag's copies under the same locks the writers
take, so it never races a download or an install.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..formats.keys import ConversionError, PathLike
from ..formats.mindspore_ckpt import read_ckpt_index
from ..formats.npz import read_npz_index
from ..formats.torch_files import check_zip_crcs
from ..util.files import is_temp_name, locked, remove_temps, remove_tree
from ..util.report import first_line
from ..weights.download import cached_path, lock_path as download_lock, sha256_of
from ..weights.hub_cache import CONFIG_FILE, WEIGHTS_FILE, check_weights_file
from ..weights.integrity import IntegrityError
from ..weights.manifest import get_entry, weights_entries
from .publish import hub_install_lock, hub_repo_dir


OK, CORRUPT = "ok", "CORRUPT"


def _tags(tags: Optional[Iterable[str]], manifest: Optional[PathLike]) -> List[str]:
    if tags:
        return [f"{get_entry(t, manifest)['architecture']}.{get_entry(t, manifest)['tag']}" for t in tags]
    return [k for k, e in weights_entries(manifest).items() if e.get("hf_hub_id") or e.get("source")]


def _row(tag: str, cache: str, path: Path, status: str, detail: str = "") -> Dict[str, Any]:
    return dict(tag=tag, cache=cache, file=str(path), status=status, detail=detail)


def _check_snapshot(tag: str, snapshot: Path, want_sha256: Optional[str]) -> List[Dict[str, Any]]:
    weights, config = snapshot / WEIGHTS_FILE, snapshot / CONFIG_FILE
    rows = [_row(tag, "hub", snapshot / p.name, "leftover", "temp file of an interrupted install")
            for p in snapshot.iterdir() if is_temp_name(p.name)]
    if not weights.is_file():
        return rows + [_row(tag, "hub", weights, "missing", "snapshot without weights")]
    try:
        checked = check_weights_file(weights, config if config.is_file() else None, want_sha256=want_sha256,
                                     use_memo=False)  # verify always re-reads the bytes
    except (IntegrityError, OSError) as e:
        return rows + [_row(tag, "hub", weights, CORRUPT, first_line(e))]
    records = [r for r, on in (("manifest sha256", want_sha256), ("content record", checked["recorded"]),
                               ("config record", checked["config"])) if on]
    detail = "checked: " + ", ".join(records) if records else "no record to check against (older conversion)"
    return rows + [_row(tag, "hub", weights, OK, detail)]


def _check_source(tag: str, path: Path, entry: Dict[str, Any]) -> Dict[str, Any]:
    known = entry["source"].get("sha256")
    try:
        if known and known != "unverified":
            if sha256_of(path) != known:
                raise IntegrityError(f"{path}: sha256 differs from the manifest's {known}")
            return _row(tag, "download", path, OK, "checked: manifest sha256")
        if entry["source"]["format"] == "mindspore_ckpt":
            index = read_ckpt_index(path)  # every record parsed and every size checked; the CRC-32 when it has one
            return _row(tag, "download", path, OK, "checked: every parameter record"
                        + (" and the CRC-32" if index.crc_checked else ""))
        if entry["source"]["format"] == "jax_npz":
            read_npz_index(path)
        check_zip_crcs(path)
    except (ConversionError, IntegrityError, OSError) as e:
        return _row(tag, "download", path, CORRUPT, first_line(e))
    return _row(tag, "download", path, OK, "checked: zip CRC-32 of every member")


def verify_cache(tags: Optional[Iterable[str]] = None, hub_cache: Optional[PathLike] = None,
                 downloads: Optional[PathLike] = None, manifest: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """One row per cached copy (or leftover) of each tag's files: status ``ok``, ``CORRUPT``, ``missing``,
    ``partial`` (a download to resume) or ``leftover``."""
    rows: List[Dict[str, Any]] = []
    for tag in _tags(tags, manifest):
        entry = get_entry(tag, manifest)
        if entry.get("hf_hub_id"):
            repo_dir = hub_repo_dir(entry["hf_hub_id"], hub_cache)
            snapshots = sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []
            for snapshot in snapshots:
                rows += _check_snapshot(tag, snapshot, entry["converted"]["sha256"])
            if not snapshots:
                rows.append(_row(tag, "hub", repo_dir, "not cached"))
        if entry.get("source") and entry["source"].get("url"):
            path = cached_path(entry["source"]["url"], downloads)
            part = path.with_name(path.name + ".part")
            if path.is_file():
                rows.append(_check_source(tag, path, entry))
            if part.exists():
                rows.append(_row(tag, "download", part, "partial", "resumed by the next download"))
            if not path.is_file() and not part.exists():
                rows.append(_row(tag, "download", path, "not cached"))
    return rows


def clean_cache(tags: Iterable[str], hub_cache: Optional[PathLike] = None, downloads: Optional[PathLike] = None,
                manifest: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Remove every cached copy of each tag (Hub snapshot folder and source download, partial ones included),
    each under the lock its writers take; one row per path removed."""
    rows: List[Dict[str, Any]] = []
    for tag in _tags(tags, manifest):
        entry = get_entry(tag, manifest)
        if entry.get("hf_hub_id"):
            repo_dir = hub_repo_dir(entry["hf_hub_id"], hub_cache)
            with locked(hub_install_lock(entry["hf_hub_id"], hub_cache), str(repo_dir), quiet=True):
                if repo_dir.exists():
                    remove_tree(repo_dir)
                    rows.append(dict(tag=tag, cache="hub", removed=str(repo_dir)))
        if entry.get("source") and entry["source"].get("url"):
            path = cached_path(entry["source"]["url"], downloads)
            with locked(download_lock(path, downloads), str(path), quiet=True):
                for item in (path, path.with_name(path.name + ".part")):
                    if item.exists() or item.is_symlink():
                        remove_tree(item)
                        rows.append(dict(tag=tag, cache="download", removed=str(item)))
                remove_temps(path.parent, path.name)
    return rows
