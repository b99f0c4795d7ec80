"""Download checkpoints into a cache: resumable (HTTP ``Range``), with a progress bar and a sha256 check.

One process at a time writes a destination (a ``filelock`` lock per file, under ``CACHE/.locks``); the others
wait and then find the finished file. A partial download lives next to its destination as ``*.part``
(opened without following symlinks) and is resumed by the next call. A file only takes its final name once
it is complete, which needs proof: its sha256 when known, else the size the server declared (asked again
with a ``Range`` probe when a response carried none), and the caller's format check. Redirects are followed
only within the same origin, or over https to a known release-asset host.
"""
from __future__ import annotations

import hashlib
import os
import re
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

from ..util.files import fsync_dir, is_regular_file, lock_file_for, locked, named

PathLike = Union[str, Path]
CHUNK = 1 << 20
LOCKS = ".locks"

REDIRECT_HOSTS = ("objects.githubusercontent.com", "release-assets.githubusercontent.com")
"""Where GitHub sends release downloads (the manifest's ``.pth`` sources): the only other origins a download
may be redirected to, and only over https."""


class DownloadError(RuntimeError):
    """A download failed or could not be proved complete; the message names the URL and what to do."""


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


def lock_path(dest: PathLike, root: Optional[PathLike] = None) -> Path:
    """The lock every writer of ``dest`` (download, ``cache clean``) takes."""
    return lock_file_for(dest, Path(root or cache_dir()) / LOCKS, "download-")


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _origin(url: str) -> Tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme.lower(), (parsed.netloc or "").lower()


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect within the URL's origin (or to https on its host), or over https to a release-asset
    host; anything else (another origin, ``ftp://``, ``file://``, a downgrade to http) is an error."""

    def __init__(self, url: str) -> None:
        self.origin = _origin(url)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme, host = _origin(newurl)
        hostname = (urllib.parse.urlparse(newurl).hostname or "").lower()
        same = (scheme, host) == self.origin or (scheme == "https" and host == self.origin[1])
        if not same and not (scheme == "https" and hostname in REDIRECT_HOSTS):
            raise DownloadError(f"{req.full_url}: redirected ({code}) to {newurl}, outside the URL's origin; "
                                "refusing to follow")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _content_range(response_or_error) -> Tuple[Optional[int], Optional[int]]:
    """``(first byte, total size)`` of a ``Content-Range`` header (None where absent or ``*``)."""
    value = response_or_error.headers.get("Content-Range") or ""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    return first, int(m.group(2)) if m.group(2) != "*" else None


def _open_part(part: Path, append: bool) -> int:
    """The ``.part`` file, never through a symlink; a planted link or non-file is removed and started afresh."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    try:
        fd = os.open(part, flags, 0o644)
    except OSError:
        if os.path.lexists(part) and not is_regular_file(part):
            os.unlink(part)  # a symlink (ELOOP) or something else planted at our name
            fd = os.open(part, flags & ~os.O_APPEND | os.O_TRUNC, 0o644)
        else:
            raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DownloadError(f"{part}: not a regular file; remove it and download again")
    return fd


def _size(path: Path) -> int:
    return os.lstat(path).st_size if is_regular_file(path) else 0


def _fetch_into(url: str, part: Path, timeout: float, progress: bool) -> Optional[int]:
    """One request, appending to ``part`` from where it ends. Returns the file's total size when the server
    declared one (the caller compares), None when it did not; ``part`` is emptied when it cannot be continued."""
    from tqdm.auto import tqdm

    start = _size(part)
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    opener = urllib.request.build_opener(_SameOriginRedirects(url))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing at or past `start`: complete if the total says so, else stale
            _, total = _content_range(e)
            if total != start:
                os.close(_open_part(part, append=False))
            return total
        raise
    with response:
        status = getattr(response, "status", 200)
        first, total = _content_range(response)
        if status == 206 and first != start:  # not the bytes we asked for: start over
            response.close()
            os.close(_open_part(part, append=False))
            return None
        if status != 206:
            start = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
        fd = _open_part(part, append=bool(start))
        with os.fdopen(fd, "wb") as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                            desc=f"downloading {part.name[:-5]}", disable=not progress or None,
                                            leave=False) as bar:
            written = start
            while chunk := response.read(CHUNK):
                written += len(chunk)
                if total is not None and written > total:
                    f.truncate(0)
                    raise DownloadError(f"{url}: the server sent more than the {total} bytes it declared")
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    return total


def _cached_is_good(dest: Path, sha256: Optional[str], validate: Optional[Callable[[Path], None]]) -> bool:
    if not dest.is_file():  # (a link the user made to a file is read, never written through)
        return False
    if sha256 is not None:
        return sha256_of(dest) == sha256
    if validate is not None:
        try:
            validate(dest)
        except Exception:
            return False
    return True


def download(url: str, sha256: Optional[str] = None, cache_dir: Optional[PathLike] = None,
             dest: Optional[PathLike] = None, progress: bool = True, retries: int = 3, timeout: float = 60.0,
             validate: Optional[Callable[[Path], None]] = None, lock_timeout: Optional[float] = None) -> Path:
    """Fetch ``url`` into the cache (or ``dest``) unless a good copy is there; resume after interruptions.

    ``validate(path)`` raises when a file is not what the caller expects (a format check); a cached file that
    fails it is fetched again, a fresh download that fails it is removed and reported."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded")
    root = Path(cache_dir) if cache_dir else None
    dest = Path(dest) if dest else cached_path(url, root)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise named(e, dest.parent) from None
    with locked(lock_path(dest, root), str(dest), timeout=lock_timeout, quiet=not progress):
        if _cached_is_good(dest, sha256, validate):
            return dest
        if os.path.lexists(dest):
            os.unlink(dest)  # a stale, corrupted or planted cache entry
        part = dest.with_name(dest.name + ".part")
        try:
            _download_part(url, part, sha256, progress, retries, timeout)
        except OSError as e:
            raise named(e, part) from None
        if sha256 is not None:
            got = sha256_of(part)
            if got != sha256:
                os.unlink(part)
                raise DownloadError(f"{url}: sha256 mismatch: expected {sha256}, got {got} (download removed)")
        if validate is not None:
            try:
                validate(part)
            except Exception as e:
                os.unlink(part)
                raise DownloadError(f"{url}: the downloaded file is not usable ({e}); it was removed, "
                                    "run again to download it anew") from None
        os.replace(part, dest)
        fsync_dir(dest.parent)
    return dest


def _download_part(url: str, part: Path, sha256: Optional[str], progress: bool, retries: int, timeout: float) -> None:
    """Fill ``part`` until it is complete (see the module doc for what proves that)."""
    error: Optional[BaseException] = None
    unknown = 0  # responses that declared no size
    requests = retries + 2  # one more than the attempts: the Range probe after a response without a size
    for _ in range(requests):
        try:
            total = _fetch_into(url, part, timeout, progress)
            error = None
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, ssl.SSLError) as e:
            error = e  # interrupted: the next attempt resumes from the .part file
            continue
        size = _size(part)
        if total is not None and size == total:
            return
        if total is None and size:
            unknown += 1
            if sha256 is not None:
                return  # the sha256 decides
            if unknown > 1:  # the probe got no size either: nothing can tell a cut from the end
                break
    reason = f": {error}" if error else " (the server never confirmed the file's size)"
    raise DownloadError(f"{url}: download incomplete after {requests} requests{reason}; "
                        f"the partial file {part} will be resumed next time")
