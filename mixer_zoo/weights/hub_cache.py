"""Pretrained weights through the Hugging Face cache: timm's ``pretrained=True`` with the manifest's sha256.

timm does the download and the caching (huggingface_hub's cache, offline mode honoured) and loads the file
with safetensors; this module adds what timm cannot know: the sha256 the manifest records for the file, and
errors that name the tag, the repo and what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ..model.resolution import expand_to_model
from ..util.report import error_summary
from .download import sha256_of
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
    one timm just read. The checked weights are then expanded when the model was built at K times their
    resolution (:func:`mixer_zoo.model.resolution.expand_to_model`)."""
    def check(state_dict: Dict[str, Any], model: Any) -> Dict[str, Any]:
        hub_id = _weights_source(getattr(model, "pretrained_cfg", None) or {})
        if hub_id:
            verify_cached_weights(hub_id, name, cache_dir)
        return expand_to_model(state_dict, model)

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
