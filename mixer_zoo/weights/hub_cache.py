"""Pretrained weights through the Hugging Face cache: timm's ``pretrained=True`` with the manifest's sha256.

timm does the download and the caching (huggingface_hub's cache, offline mode honoured) and loads the file
with safetensors; this module adds what timm cannot know: the sha256 the manifest records for the file, the
integrity records the converter sealed into it (checked on every load, so a flipped byte never loads even when
the manifest records no sha256), and errors that name the tag, the repo or file and what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ..model.resolution import expand_to_model
from ..util.report import error_summary, first_line
from .digest_memo import file_digests
from .integrity import CONTENT_KEY, IntegrityError, check_config_pairing, config_record, read_safetensors_header
from .manifest import entry_for_hub_id, manifest_path

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


class WeightsError(RuntimeError):
    """Pretrained weights are missing or are not the ones the manifest describes."""


class ManifestMismatch(IntegrityError):
    """The whole file's sha256 is not the one expected (``got`` holds what it is)."""

    def __init__(self, message: str, got: str) -> None:
        super().__init__(message)
        self.got = got


def _split_revision(hub_id: str) -> tuple:
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def cached_hub_file(repo_id: str, filename: str, cache_dir: Optional[PathLike] = None,
                    revision: Optional[str] = None) -> Optional[Path]:
    """The file of ``repo_id`` in the local Hugging Face cache (``refs/main`` unless a revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def recovery_hint(name: str, repo: Optional[str] = None, folder: Optional[PathLike] = None) -> str:
    """What to run when a copy of ``name``'s weights is damaged."""
    if repo:
        return (f"check the cache with `mixer-zoo cache verify {name}`, remove the damaged copy with "
                f"`mixer-zoo cache clean {name}`, then load again (online, or after `mixer-zoo publish DIR "
                f"--repo-id {repo} --local-cache`)")
    if folder:
        return f"convert it again (`mixer-zoo convert SRC --out {folder} --force`)"
    return "replace the file with an intact copy"


def check_weights_file(path: PathLike, config: Optional[PathLike] = None, want_sha256: Optional[str] = None,
                       use_memo: Optional[bool] = False) -> Dict[str, Any]:
    """Check a ``model.safetensors`` against every record there is: ``want_sha256`` (the manifest's, for the
    whole file), its own content record, and the record of ``config`` (the ``config.json`` that goes with it,
    when there is one); returns what was checked. The file is read only when some record needs a digest, and
    with ``use_memo`` not even then if it was hashed before in its current state
    (:mod:`mixer_zoo.weights.digest_memo`; ``None``: unless ``$MIXER_ZOO_VERIFY=always``).

    Raises :class:`~mixer_zoo.weights.integrity.IntegrityError` naming the file."""
    header, _ = read_safetensors_header(path)
    recorded = (header.get("__metadata__") or {}).get(CONTENT_KEY)
    recorded = recorded if isinstance(recorded, str) else None
    record = config_record(config) if config and Path(config).is_file() else None
    digests, from_memo = file_digests(path, sha256=bool(want_sha256), content=bool(recorded or record),
                                      use_memo=use_memo)
    computed = digests.get("content_sha256")
    if want_sha256 and digests["sha256"] != want_sha256:
        raise ManifestMismatch(f"{path}: sha256 mismatch: got {digests['sha256']}, expected {want_sha256}",
                               got=digests["sha256"])
    if recorded is not None and recorded != computed:
        raise IntegrityError(f"{path}: content sha256 mismatch: the file records {recorded}, its bytes give "
                             f"{computed} (corrupted after it was written)")
    if record is not None:
        check_config_pairing(config, record, computed)
    return dict(file=str(path), content_sha256=computed, sha256=digests.get("sha256"), recorded=recorded is not None,
                config=record is not None, from_memo=from_memo)


def _locate(cfg: Mapping[str, Any], cache_dir: Optional[PathLike]) -> Optional[tuple]:
    """``(weights file, its config.json or None, hub repo or None, local folder or None)`` of what timm loads
    for this pretrained cfg; None for a state dict passed in memory."""
    if cfg.get("state_dict") is not None:
        return None
    if cfg.get("source") == "local-dir" and cfg.get("file"):
        folder = Path(cfg["file"])
        return folder / WEIGHTS_FILE, folder / CONFIG_FILE, None, folder
    if cfg.get("file") and cfg.get("source") != "hf-hub":
        path = Path(cfg["file"])
        return path, path.with_name(CONFIG_FILE) if path.name == WEIGHTS_FILE else None, None, None
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    repo, revision = _split_revision(hub_id)
    return (cached_hub_file(repo, WEIGHTS_FILE, cache_dir, revision),
            cached_hub_file(repo, CONFIG_FILE, cache_dir, revision), repo, None)


def verify_loaded_weights(cfg: Mapping[str, Any], name: str, cache_dir: Optional[PathLike] = None,
                          manifest: Optional[PathLike] = None) -> Optional[Path]:
    """Check the file timm loads for ``cfg``: the manifest's ``converted.sha256`` (Hub repos of the manifest)
    and the file's own integrity records. Returns the checked file, None when there is none to check."""
    located = _locate(cfg, cache_dir)
    if located is None:
        return None
    weights, config, repo, folder = located
    if repo and weights is None:
        raise WeightsError(f"{name}: {WEIGHTS_FILE} of hf-hub repo {repo} is not in the Hugging Face cache after "
                           f"the download; load it again (online), or pass pretrained_cfg_overlay=dict(file=PATH)")
    if weights is None or weights.suffix != ".safetensors" or not weights.is_file():
        return None  # timm loads another file (or fails on its own); nothing of ours to check
    want = None
    if repo:
        entry = entry_for_hub_id(repo, manifest)
        want = entry and entry["converted"]["sha256"]
    try:
        check_weights_file(weights, config, want_sha256=want or None, use_memo=None)
    except ManifestMismatch as e:
        raise WeightsError(
            f"{name}: sha256 mismatch for {weights} (hf-hub repo {repo}): got {e.got}, the manifest "
            f"{manifest_path(manifest)} expects {want}; the cached file is corrupted or from another release: "
            f"delete that snapshot (`mixer-zoo cache clean {name}` or `hf cache delete`) and load again online") \
            from None
    except IntegrityError as e:
        where = f" (hf-hub repo {repo})" if repo else ""
        raise WeightsError(f"{name}: {e}{where}; {recovery_hint(name, repo, folder)}") from None
    return weights


def verify_cached_weights(hub_id: str, name: str, cache_dir: Optional[PathLike] = None,
                          manifest: Optional[PathLike] = None) -> Optional[Path]:
    """:func:`verify_loaded_weights` for the cached ``model.safetensors`` of a Hub repo (``zoo://`` uses it)."""
    return verify_loaded_weights({"hf_hub_id": hub_id, "source": "hf-hub"}, name, cache_dir, manifest)


def sha256_filter(name: str, cache_dir: Optional[PathLike] = None) -> Callable[[Dict[str, Any], Any], Dict[str, Any]]:
    """A timm ``pretrained_filter_fn``: it runs right after timm read the file and before the weights go into
    the model, so the file it checks is the one timm just read. The checked weights are then expanded when the
    model was built at K times their resolution (:func:`mixer_zoo.model.resolution.expand_to_model`)."""
    def check(state_dict: Dict[str, Any], model: Any) -> Dict[str, Any]:
        verify_loaded_weights(getattr(model, "pretrained_cfg", None) or {}, name, cache_dir)
        return expand_to_model(state_dict, model)

    return check


def _download_errors() -> tuple:
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    return EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError


def _weights_source(cfg: Mapping[str, Any]) -> Optional[str]:
    """The Hub repo timm loads the weights from for this cfg, or None for a local file / state dict."""
    if cfg.get("source") == "local-dir" or cfg.get("state_dict") is not None:
        return None
    if cfg.get("file") and cfg.get("source") != "hf-hub":
        return None
    return cfg.get("hf_hub_id") or None


def build_pretrained(build: Callable[..., Any], name: str, cfg: Mapping[str, Any],
                     cache_dir: Optional[PathLike] = None) -> Any:
    """Run timm's builder with the integrity checks; a Hub failure or an unreadable file becomes one line
    naming tag, repo or file, and the remedy."""
    from safetensors import SafetensorError

    try:
        return build(pretrained_filter_fn=sha256_filter(name, cache_dir))
    except _download_errors() as e:
        repo = _weights_source(cfg) or "-"
        raise WeightsError(
            f"{name}: cannot get {WEIGHTS_FILE} from hf-hub repo {repo} ({error_summary(e)}); "
            f"go online (unset HF_HUB_OFFLINE) so timm can download it, publish it with `mixer-zoo publish DIR "
            f"--repo-id {repo}`, or load a local file with pretrained_cfg_overlay=dict(file=PATH)") from None
    except SafetensorError as e:  # a header safetensors cannot parse: say which file and what to do
        located = _locate(cfg, cache_dir)
        weights, repo, folder = (located[0], located[2], located[3]) if located else (None, None, None)
        where = f"{weights}" + (f" (hf-hub repo {repo})" if repo else "") if weights else "its weights file"
        raise WeightsError(f"{name}: {where} is not a readable safetensors file ({first_line(e)}); "
                           f"{recovery_hint(name, repo, folder)}") from None
