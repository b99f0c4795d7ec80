"""Publishing converted folders: validation, upload as a timm-compatible Hub repo, a local Hub cache install,
and ``convert-all`` (convert + publish every manifest tag in one run)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from ..model.architectures import ARCHITECTURES, CUSTOM_ARCHITECTURE
from ..util.files import atomic_copy, atomic_write_text, locked, remove_temps
from ..util.report import error_summary, first_line
from ..weights.download import sha256_of
from ..weights.hub_cache import (CARD_FILE, CONFIG_FILE, NEEDED_TO_LOAD, PUBLISHED_FILES, WEIGHTS_FILE, WeightsError,
                                 check_weights_file)
from ..weights.integrity import IntegrityError
from ..weights.manifest import ManifestError, manifest_path, record_converted, weights_entries
from .convert import convert_tag

PathLike = Union[str, Path]

CARD_REQUIRED_METADATA = ("library_name", "pipeline_tag", "license", "tags")
"""What timm's own cards (``push_to_hf_hub``) always carry; ``datasets`` only when the training data is known."""


class PublishError(ValueError):
    """A folder cannot be published as it is (or the upload failed)."""


# ---- publishing ------------------------------------------------------------------------------------------------

def _read_config(path: Path) -> Dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PublishError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(config, dict):
        raise PublishError(f"{path}: expected a JSON object")
    for key in ("architecture", "num_classes", "pretrained_cfg"):
        if key not in config:
            raise PublishError(f"{path}: missing key {key!r} (timm reads it to build the model)")
    if config["architecture"] not in (*ARCHITECTURES, CUSTOM_ARCHITECTURE):
        raise PublishError(f"{path}: architecture {config['architecture']!r} is not a mixer-zoo architecture "
                           f"({', '.join(ARCHITECTURES)}, {CUSTOM_ARCHITECTURE})")
    act = (config.get("model_args") or {}).get("act_layer")
    if act not in ("gelu", "gelu_tanh"):
        raise PublishError(f"{path}: model_args.act_layer must be \"gelu\" or \"gelu_tanh\", got {act!r}")
    return config


def _check_weights(path: Path, config: Mapping[str, Any]) -> None:
    """Keys and shapes of the safetensors file against the model config.json describes (built on meta)."""
    import timm
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise PublishError(f"{path}: not a readable safetensors file: {first_line(e)}") from None
    with torch.device("meta"):
        model_args = {**(config.get("model_args") or {}), "num_classes": config["num_classes"]}  # as timm reads it
        model = timm.create_model(config["architecture"], **model_args)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    if missing or extra:
        key = (missing or extra)[0]
        raise PublishError(f"{path}: key {key!r} {'missing' if missing else 'unexpected'} for "
                           f"{config['architecture']} ({len(missing)} missing, {len(extra)} unexpected)")
    for k, shape in want.items():
        if shapes[k] != shape:
            raise PublishError(f"{path}: key {k!r} has shape {shapes[k]}, {config['architecture']} with "
                               f"{config['num_classes']} classes needs {shape}")


def _check_card(path: Path) -> Dict[str, Any]:
    from huggingface_hub import ModelCard

    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        raise PublishError(f"{path}: the model card needs YAML front matter (---) for the Hub's metadata")
    try:
        data = ModelCard(text, ignore_metadata_errors=False).data.to_dict()
    except Exception as e:
        raise PublishError(f"{path}: invalid YAML metadata: {first_line(e)}") from None
    for key in CARD_REQUIRED_METADATA:
        if not data.get(key):
            raise PublishError(f"{path}: YAML metadata lacks {key!r}")
    if data["library_name"] != "timm":
        raise PublishError(f"{path}: library_name is {data['library_name']!r}; the Hub shows timm usage only for 'timm'")
    return data


def publish_plan(folder: PathLike, repo_id: str, manifest: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Validate a converted folder for ``repo_id``; one row per file that would be uploaded (nothing else is)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--repo-id {repo_id!r}: {first_line(e)}") from None
    if "/" not in repo_id:
        raise PublishError(f"--repo-id {repo_id!r}: must be ORG/NAME (NAME: architecture.tag)")
    if not folder.is_dir():
        raise PublishError(f"{folder}: no such folder")
    for name in PUBLISHED_FILES:
        if not (folder / name).is_file():
            raise PublishError(f"{folder / name}: missing ({name} is part of every published repo: "
                               f"{PUBLISHED_FILES[name]})")
    config = _read_config(folder / CONFIG_FILE)
    _check_weights(folder / WEIGHTS_FILE, config)
    _check_card(folder / CARD_FILE)
    rows = [dict(file=name, bytes=(folder / name).stat().st_size, sha256=sha256_of(folder / name),
                 needed_to_load="yes" if name in NEEDED_TO_LOAD else "no", role=role)
            for name, role in PUBLISHED_FILES.items()]

    name = repo_id.split("/", 1)[1]
    entry = weights_entries(manifest).get(name)
    if entry is not None:
        where = f"{folder / CONFIG_FILE}"
        for key, got in (("architecture", config["architecture"]), ("num_classes", config["num_classes"]),
                         ("act_layer", config["model_args"]["act_layer"])):
            if entry[key] != got:
                raise PublishError(f"{where}: {key} is {got!r} but manifest tag {name} has {entry[key]!r}")
        want = entry["converted"]["sha256"]
        got = next(r["sha256"] for r in rows if r["file"] == WEIGHTS_FILE)
        if want and got != want:
            raise PublishError(f"{folder / WEIGHTS_FILE}: sha256 {got} but manifest tag {name} records {want}; "
                               f"re-convert, or update converted.sha256 in {manifest_path(manifest)}")
    return rows


def commit_operations(folder: PathLike, rows: Iterable[Mapping[str, Any]]) -> List[Any]:
    """huggingface_hub ``CommitOperationAdd`` per planned file; their own sha256 must match the plan's (the
    folder did not change between validation and upload)."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    ops = []
    for row in rows:
        op = CommitOperationAdd(path_in_repo=row["file"], path_or_fileobj=str(folder / row["file"]))
        if op.upload_info.sha256.hex() != row["sha256"]:
            raise PublishError(f"{folder / row['file']}: changed after validation; run publish again")
        ops.append(op)
    return ops


def _scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def publish_folder(folder: PathLike, repo_id: str, dry_run: bool = False, token: Optional[str] = None,
                   private: bool = False, commit_message: Optional[str] = None,
                   manifest: Optional[PathLike] = None) -> Dict[str, Any]:
    """Upload ``config.json``, ``model.safetensors`` and ``README.md`` of ``folder`` to ``repo_id`` in one commit.

    ``token=None`` lets huggingface_hub find it (``HF_TOKEN``, ``hf auth login``); it is never printed.
    With ``dry_run`` nothing leaves the machine: the folder is validated and the plan returned.
    """
    rows = publish_plan(folder, repo_id, manifest)
    result: Dict[str, Any] = dict(repo_id=repo_id, files=rows, dry_run=dry_run, commit_url=None)
    if dry_run:
        return result
    from huggingface_hub import HfApi

    ops = commit_operations(folder, rows)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo_id, ops, commit_message=commit_message or f"mixer-zoo: publish {Path(folder).name}")
    except (OSError, ValueError, RuntimeError) as e:  # HfHubHTTPError and OfflineModeIsEnabled are OSErrors
        raise PublishError(f"{repo_id}: upload failed: {_scrub(error_summary(e), token)}") from None
    result["commit_url"] = info.commit_url
    return result


def hub_repo_dir(repo_id: str, cache_dir: Optional[PathLike] = None) -> Path:
    """``models--ORG--NAME`` of ``repo_id`` in the huggingface_hub cache."""
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def hub_install_lock(repo_id: str, cache_dir: Optional[PathLike] = None) -> Path:
    """The lock installs and ``cache clean`` take for a repo, in the Hub cache's own ``.locks`` folder."""
    repo_dir = hub_repo_dir(repo_id, cache_dir)
    return repo_dir.parent / ".locks" / repo_dir.name / "mixer-zoo-install.lock"


def install_in_cache(folder: PathLike, repo_id: str, cache_dir: Optional[PathLike] = None,
                     manifest: Optional[PathLike] = None) -> Path:
    """Put a validated converted folder into the local huggingface_hub cache as ``repo_id``'s ``main``, so
    ``pretrained=True`` works offline (air-gapped machines, CI) exactly as after a download.

    The snapshot revision is derived from the files' sha256, so installing the same folder twice is a no-op.
    One install of a repo at a time (a lock in the cache's ``.locks``); each file is copied to a unique temp
    name, checked against the sha256 validated, and renamed into place; ``refs/main`` moves last.
    """
    import hashlib

    rows = publish_plan(folder, repo_id, manifest)
    revision = hashlib.sha1("".join(r["sha256"] for r in rows).encode()).hexdigest()
    repo_dir = hub_repo_dir(repo_id, cache_dir)
    snapshot = repo_dir / "snapshots" / revision
    with locked(hub_install_lock(repo_id, cache_dir), f"{repo_dir} ({repo_id})", quiet=True):
        for row in rows:
            target = snapshot / row["file"]
            remove_temps(snapshot, row["file"])  # what a killed install left
            if not target.is_file() or sha256_of(target) != row["sha256"]:
                try:
                    atomic_copy(Path(folder) / row["file"], target, sha256=row["sha256"])
                except ValueError as e:
                    raise PublishError(str(e)) from None
        remove_temps(repo_dir / "refs", "main")
        atomic_write_text(repo_dir / "refs" / "main", revision)
    return snapshot


def remote_weights_sha256(repo_id: str, token: Optional[str] = None) -> Optional[str]:
    """sha256 of ``model.safetensors`` on the Hub (its LFS pointer), or None when the repo or file is absent."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        infos = HfApi(token=token).get_paths_info(repo_id, [WEIGHTS_FILE])
    except RepositoryNotFoundError:
        return None
    lfs = getattr(infos[0], "lfs", None) if infos else None
    return getattr(lfs, "sha256", None)


# ---- convert-all ------------------------------------------------------------------------------------------------

def _folder_is_complete(folder: Path) -> bool:
    """Every published file is there and the weights and config pass their integrity records."""
    if not all((folder / name).is_file() for name in PUBLISHED_FILES):
        return False
    try:
        check_weights_file(folder / WEIGHTS_FILE, folder / CONFIG_FILE)
    except IntegrityError:
        return False
    return True


def convert_all(out_dir: PathLike, tags: Optional[Iterable[str]] = None, publish: bool = False,
                org: Optional[str] = None, dry_run: bool = False, force: bool = False, verify: bool = False,
                cache_dir: Optional[PathLike] = None, token: Optional[str] = None, update_manifest: bool = False,
                manifest: Optional[PathLike] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """Convert (and with ``publish``, upload) every manifest tag that has a source; one summary row per tag.

    A folder that is complete and matches the manifest's sha256 (when recorded) is up to date and not
    converted again; a Hub repo whose ``model.safetensors`` already has the local sha256 is not uploaded
    again. A failing tag is reported in its row and the others go on.
    """
    from tqdm.auto import tqdm

    entries = weights_entries(manifest)
    wanted = list(tags) if tags else [k for k, e in entries.items() if e.get("source")]
    unknown = [t for t in wanted if t not in entries]
    if unknown:
        raise ManifestError(f"unknown weights tag {unknown[0]!r} in {manifest_path(manifest)}")
    out_dir = Path(out_dir)
    rows: List[Dict[str, Any]] = []
    updates: Dict[str, Dict[str, Any]] = {}
    for key in tqdm(wanted, desc="convert-all", unit="tag", disable=not progress or None):
        entry = entries[key]
        folder = out_dir / key
        row: Dict[str, Any] = dict(tag=key, folder=str(folder), converted="-", sha256="-", bytes=None,
                                   published="-", error="")
        rows.append(row)
        try:
            if not entry.get("source"):
                raise WeightsError("no source in the manifest (nothing released)")
            want = entry["converted"]["sha256"]
            current = sha256_of(folder / WEIGHTS_FILE) if not force and _folder_is_complete(folder) else None
            if current and (not want or current == want):
                row["converted"] = "up to date"
            else:
                convert_tag(key, folder, verify=verify, force=True, cache_dir=cache_dir, progress=False)
                row["converted"] = "converted"
                current = sha256_of(folder / WEIGHTS_FILE)
            row["sha256"] = current
            row["bytes"] = (folder / WEIGHTS_FILE).stat().st_size
            if want and row["sha256"] != want:
                raise WeightsError(f"{folder / WEIGHTS_FILE}: sha256 {row['sha256']} differs from the manifest's {want}")
            updates[key] = dict(sha256=row["sha256"], size_bytes=row["bytes"])
            if publish:
                repo_id = f"{org}/{key}" if org else entry["hf_hub_id"]
                if dry_run:
                    publish_folder(folder, repo_id, dry_run=True, manifest=manifest)
                    row["published"] = f"dry run ok: {repo_id}"
                elif remote_weights_sha256(repo_id, token) == row["sha256"]:
                    row["published"] = f"up to date: {repo_id}"
                else:
                    publish_folder(folder, repo_id, token=token, manifest=manifest)
                    row["published"] = f"uploaded: {repo_id}"
        except Exception as e:  # one tag's failure is reported in its row; the run goes on
            row["error"] = _scrub(first_line(e), token)
    if update_manifest and updates:
        record_converted(updates, manifest)
    return rows
