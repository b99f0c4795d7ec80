"""Download checkpoints into a cache: resumable (HTTP ``Range``), with a progress bar and a sha256 check.

Partial downloads live next to their destination as ``*.part`` and are resumed by the next call; a file
only takes its final name once complete (and verified, when its sha256 is known).
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]
CHUNK = 1 << 20


def cache_dir() -> Path:
    """``$MIXER_ZOO_CACHE``, else ``$XDG_CACHE_HOME/mixer-zoo``, else ``~/.cache/mixer-zoo``."""
    if os.environ.get("MIXER_ZOO_CACHE"):
        return Path(os.environ["MIXER_ZOO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixer-zoo"


def cached_path(url: str, root: Optional[PathLike] = None) -> Path:
    """Where ``url`` is cached: host and path kept, since releases share file names across folders
    (``imagenet1k/Mixer-B_16.npz`` and ``sam/Mixer-B_16.npz``)."""
    parsed = urllib.parse.urlparse(url)
    parts = [p for p in [parsed.netloc, *parsed.path.split("/")] if p and p not in (".", "..")]
    if not parts:
        raise ValueError(f"{url}: URL has no file name")
    return Path(root or cache_dir()).joinpath(*(re.sub(r"[^A-Za-z0-9._+-]", "_", p) for p in parts))


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _total_size(response, start: int) -> Optional[int]:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return start + int(length) if length is not None else None


def _fetch_into(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One request, appending to ``part`` from where it ends; True when the file is complete."""
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left past what we have
            return True
        raise
    with response:
        status = getattr(response, "status", 200)
        if start and status != 206:  # the server ignored the range: start over
            start = 0
        total = _total_size(response, start)
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=f"downloading {part.name[:-5]}",
                disable=not progress or None, leave=False) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    return total is None or part.stat().st_size >= total


def download(url: str, sha256: Optional[str] = None, cache_dir: Optional[PathLike] = None, dest: Optional[PathLike] = None,
             progress: bool = True, retries: int = 3, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into the cache (or ``dest``) unless already there; resume after interruptions."""
    dest = Path(dest) if dest else cached_path(url, cache_dir)
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        dest.unlink()  # a stale or corrupted cache entry
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error: Optional[BaseException] = None
    for _ in range(retries + 1):
        try:
            if _fetch_into(url, part, timeout, progress):
                break
            error = None
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, HTTPException, OSError) as e:
            error = e  # interrupted: the next attempt resumes from the .part file
    else:
        reason = f": {error}" if error else " (incomplete)"
        raise RuntimeError(f"{url}: download failed after {retries + 1} attempts{reason}; "
                           f"the partial file {part} will be resumed next time")
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise RuntimeError(f"{url}: sha256 mismatch: expected {sha256}, got {got} (download removed)")
    os.replace(part, dest)
    return dest
