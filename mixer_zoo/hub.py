"""Weights on the Hugging Face Hub: checked ``pretrained=True`` loading, publishing a converted folder, and
converting + publishing every manifest tag in one run.

timm does the download and the caching (huggingface_hub's cache, offline mode honoured) and loads the file
with safetensors; this module adds what timm cannot know: the sha256 the manifest records for the file, and
errors that name the tag, the repo and what to do.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from .download import sha256_of
from .manifest import ManifestError, entry_for_hub_id, manifest_path, weights_entries
from .report import error_summary, first_line

PathLike = Union[str, Path]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
PUBLISHED_FILES = {
    CONFIG_FILE: "architecture, model_args and pretrained cfg (read first by local-dir: and hf-hub:)",
    WEIGHTS_FILE: "weights, loaded with safetensors (pretrained=True, local-dir:, hf-hub:)",
    CARD_FILE: "model card with YAML metadata (the Hub page; timm does not read it)",
}
"""Exactly what a published repo holds; ``NEEDED_TO_LOAD`` is what timm opens to build and load the model."""
NEEDED_TO_LOAD = (CONFIG_FILE, WEIGHTS_FILE)
CARD_REQUIRED_METADATA = ("library_name", "license", "tags", "datasets")


class WeightsError(RuntimeError):
    """Pretrained weights are missing or are not the ones the manifest describes."""


class PublishError(ValueError):
    """A folder cannot be published as it is (or the upload failed)."""


# ---- loading: timm's pretrained=True path ------------------------------------------------------------------

def _split_revision(hub_id: str) -> tuple:
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def verify_cached_weights(hub_id: str, name: str, cache_dir: Optional[PathLike] = None,
                          manifest: Optional[PathLike] = None) -> Optional[str]:
    """sha256 of the cached ``model.safetensors`` of ``hub_id`` against the manifest's ``converted.sha256``.

    Returns the checked file, or None when the manifest records no sha256 for that repo (nothing to check).
    """
    from huggingface_hub import try_to_load_from_cache

    entry = entry_for_hub_id(hub_id, manifest)
    want = entry and entry["converted"]["sha256"]
    if not want:
        return None
    repo, revision = _split_revision(hub_id)
    cached = try_to_load_from_cache(repo, WEIGHTS_FILE, cache_dir=cache_dir, revision=revision)
    if not isinstance(cached, str):
        raise WeightsError(f"{name}: {WEIGHTS_FILE} of hf-hub repo {repo} is not in the Hugging Face cache after "
                           f"the download; load it again (online), or pass pretrained_cfg_overlay=dict(file=PATH)")
    got = sha256_of(cached)
    if got != want:
        raise WeightsError(
            f"{name}: sha256 mismatch for {cached} (hf-hub repo {repo}): got {got}, the manifest "
            f"{manifest_path(manifest)} expects {want}; the cached file is corrupted or from another release: "
            f"delete that snapshot (`hf cache delete` or rm the file) and load again online")
    return cached


def _weights_source(cfg: Mapping[str, Any]) -> Optional[str]:
    """The Hub repo timm loads the weights from for this cfg, or None for a local file / state dict."""
    if cfg.get("source") == "local-dir" or cfg.get("state_dict") is not None:
        return None
    if cfg.get("file") and cfg.get("source") != "hf-hub":
        return None  # pretrained_cfg_overlay=dict(file=...): the user's own file, nothing in the manifest to match
    return cfg.get("hf_hub_id") or None


def sha256_filter(name: str, cache_dir: Optional[PathLike] = None) -> Callable[[Dict[str, Any], Any], Dict[str, Any]]:
    """A timm ``pretrained_filter_fn``: it runs right after timm's download, so the file it checks is the
    one timm just read."""
    def check(state_dict: Dict[str, Any], model: Any) -> Dict[str, Any]:
        hub_id = _weights_source(getattr(model, "pretrained_cfg", None) or {})
        if hub_id:
            verify_cached_weights(hub_id, name, cache_dir)
        return state_dict

    return check


def _download_errors() -> tuple:
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    return EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError


def build_pretrained(build: Callable[..., Any], name: str, cfg: Mapping[str, Any],
                     cache_dir: Optional[PathLike] = None) -> Any:
    """Run timm's builder with the sha256 check; a Hub failure becomes one line naming tag, repo and remedy."""
    try:
        return build(pretrained_filter_fn=sha256_filter(name, cache_dir))
    except _download_errors() as e:
        repo = _weights_source(cfg) or "-"
        raise WeightsError(
            f"{name}: cannot get {WEIGHTS_FILE} from hf-hub repo {repo} ({error_summary(e)}); "
            f"go online (unset HF_HUB_OFFLINE) so timm can download it, publish it with `mixer-zoo publish DIR "
            f"--repo-id {repo}`, or load a local file with pretrained_cfg_overlay=dict(file=PATH)") from None


# ---- publishing ------------------------------------------------------------------------------------------------

def _read_config(path: Path) -> Dict[str, Any]:
    from .zoo import ARCHITECTURES

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PublishError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(config, dict):
        raise PublishError(f"{path}: expected a JSON object")
    for key in ("architecture", "num_classes", "pretrained_cfg"):
        if key not in config:
            raise PublishError(f"{path}: missing key {key!r} (timm reads it to build the model)")
    if config["architecture"] not in ARCHITECTURES:
        raise PublishError(f"{path}: architecture {config['architecture']!r} is not a mixer-zoo architecture "
                           f"({', '.join(ARCHITECTURES)})")
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
        model = timm.create_model(config["architecture"], num_classes=config["num_classes"],
                                  **(config.get("model_args") or {}))
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


def install_in_cache(folder: PathLike, repo_id: str, cache_dir: Optional[PathLike] = None,
                     manifest: Optional[PathLike] = None) -> Path:
    """Put a validated converted folder into the local huggingface_hub cache as ``repo_id``'s ``main``, so
    ``pretrained=True`` works offline (air-gapped machines, CI) exactly as after a download.

    The snapshot revision is derived from the files' sha256, so installing the same folder twice is a no-op.
    """
    import hashlib

    from huggingface_hub import constants

    from .report import atomic_write_text

    rows = publish_plan(folder, repo_id, manifest)
    revision = hashlib.sha1("".join(r["sha256"] for r in rows).encode()).hexdigest()
    repo_dir = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for row in rows:
        target = snapshot / row["file"]
        if not target.is_file() or sha256_of(target) != row["sha256"]:
            tmp = target.with_name(f".{row['file']}.partial")
            shutil.copyfile(Path(folder) / row["file"], tmp)
            os.replace(tmp, target)
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
    return all((folder / name).is_file() for name in PUBLISHED_FILES)


def record_converted(updates: Mapping[str, Mapping[str, Any]], manifest: Optional[PathLike] = None) -> Path:
    """Write ``{"arch.tag": {"sha256", "size_bytes"}}`` into ``converted`` of each entry, atomically; a
    recorded sha256 is never overwritten with a different one."""
    from .manifest import _load_cached
    from .report import atomic_write_text

    target = manifest_path(manifest).resolve()  # write through the package's symlink
    data = json.loads(target.read_text(encoding="utf-8"))
    for key, converted in updates.items():
        if key not in data["weights"]:
            raise ManifestError(f"{target}: no weights entry {key!r} to record the converted file in")
        old = data["weights"][key]["converted"]["sha256"]
        if old and old != converted["sha256"]:
            raise ManifestError(f"{target}: {key}.converted.sha256 is {old}, the new conversion gives "
                                f"{converted['sha256']}; refusing to overwrite a recorded hash")
        data["weights"][key]["converted"] = dict(sha256=converted["sha256"], size_bytes=converted["size_bytes"])
    atomic_write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _load_cached.cache_clear()
    return target


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

    from .convert import convert_tag

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


# ---- command line: ``mixer-zoo publish`` and ``mixer-zoo convert-all`` ----------------------------------------

def _configure_publish(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a converted folder (mixer-zoo convert)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub, NAME being architecture.tag")
    parser.add_argument("--dry-run", action="store_true", help="validate and list what would be uploaded; upload nothing")
    parser.add_argument("--local-cache", action="store_true",
                        help="install into the local huggingface_hub cache ($HF_HUB_CACHE) instead of uploading")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _run_publish(args: argparse.Namespace) -> int:
    from .report import format_table

    if args.local_cache:
        snapshot = install_in_cache(args.folder, args.repo_id)
        print(f"installed {', '.join(PUBLISHED_FILES)} as {args.repo_id} in the local Hub cache: {snapshot}")
        return 0
    result = publish_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private,
                            commit_message=args.message)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result["files"], ["file", "bytes", "sha256", "needed_to_load", "role"]))
    if args.dry_run:
        print(f"dry run: {len(result['files'])} files validated for {args.repo_id}; nothing uploaded")
    else:
        print(f"uploaded {len(result['files'])} files to {args.repo_id}: {result['commit_url']}")
    return 0


def _configure_convert_all(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="one folder per tag is written under OUT")
    parser.add_argument("--tags", help="comma-separated arch.tag names (default: every tag with a source)")
    parser.add_argument("--publish", action="store_true", help="upload each folder to its manifest hf_hub_id")
    parser.add_argument("--org", help="publish under ORG/arch.tag instead of the manifest's hf_hub_id")
    parser.add_argument("--dry-run", action="store_true", help="with --publish: validate, upload nothing")
    parser.add_argument("--force", action="store_true", help="convert again even when up to date")
    parser.add_argument("--verify", action="store_true", help="compare each JAX conversion with Flax ([jax] extra)")
    parser.add_argument("--cache-dir", help="download cache for the source files (default: mixer-zoo's)")
    parser.add_argument("--update-manifest", action="store_true",
                        help="record converted.sha256/size_bytes of each converted tag in the manifest")
    parser.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the summary as CSV")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_convert_all(args: argparse.Namespace) -> int:
    from .report import format_table, write_csv, write_json

    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    rows = convert_all(args.out, tags, publish=args.publish, org=args.org, dry_run=args.dry_run, force=args.force,
                       verify=args.verify, cache_dir=args.cache_dir, update_manifest=args.update_manifest,
                       progress=not args.quiet)
    table = [dict(r, sha256=r["sha256"][:12]) for r in rows]
    print(format_table(table, ["tag", "converted", "sha256", "bytes", "published", "error"]))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    failed = [r for r in rows if r["error"]]
    if failed:
        raise WeightsError(f"{len(failed)} of {len(rows)} tags failed; first: {failed[0]['tag']}: {failed[0]['error']}")
    return 0


_COMMANDS = {"publish": (_configure_publish, _run_publish), "convert-all": (_configure_convert_all, _run_convert_all)}
"""This module serves two subcommands of ``mixer-zoo``; argparse names the parser ``mixer-zoo <command>``."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    _COMMANDS[parser.prog.split()[-1]][0](parser)


def run(args: argparse.Namespace) -> int:
    return _COMMANDS[args.command][1](args)
