"""Files that are never seen half-written, and one writer at a time per destination.

Every file the zoo hands out is written the same way: a temp file with a unique name in the destination's
folder, created with ``O_EXCL | O_NOFOLLOW`` (a name someone planted, symlink or not, is never opened),
fsynced, then renamed over the destination with ``os.replace`` and the folder fsynced. Concurrent writers of
one destination (downloads, conversions, cache installs) take a ``filelock`` lock on it first.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

PathLike = Union[str, Path]
CHUNK = 1 << 20
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask: temp files are created private, results should not be."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def named(error: OSError, path: PathLike) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a failed write says ENOSPC, not where)."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


def is_temp_name(name: str) -> bool:
    """A temp file of :func:`atomic_file` (``.NAME.<12 hex>.tmp``): a leftover when no writer is running."""
    return bool(_TEMP_NAME.match(name))


def create_exclusive(path: PathLike, mode: int = 0o600) -> int:
    """A new file at ``path``, never an existing one nor the target of a symlink planted there."""
    return os.open(path, _CREATE_FLAGS, mode)


def unique_temp(folder: PathLike, name: str) -> tuple:
    """``(fd, path)`` of a new private file ``.NAME.<random>.tmp`` in ``folder``."""
    for _ in range(100):
        path = Path(folder) / f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            return create_exclusive(path), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: cannot find a free temp name for {name}")


def fsync_dir(folder: PathLike) -> None:
    """Make a rename in ``folder`` durable (some file systems cannot fsync a folder: nothing to do there)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file object whose content becomes ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = unique_temp(path.parent, path.name)
    except OSError as e:
        raise named(e, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise named(e, path) from None
        raise
    fsync_dir(path.parent)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temp file in the same folder, then rename: never a half-written file."""
    with atomic_file(path) as f:
        write(f)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_copy(src: PathLike, dst: PathLike, sha256: Optional[str] = None) -> str:
    """Copy ``src`` to ``dst`` atomically and return the sha256 of what was copied; with ``sha256``, a copy
    that differs (``src`` changed meanwhile) is refused before it takes the name ``dst``."""
    digest = hashlib.sha256()
    with atomic_file(dst) as out, open(src, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ValueError(f"{src}: changed while being copied to {dst} (sha256 {digest.hexdigest()}, "
                             f"expected {sha256}); nothing was written")
    return digest.hexdigest()


def is_regular_file(path: PathLike) -> bool:
    """A regular file, not a symlink to one (nothing planted is trusted as a finished file)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_temps(folder: PathLike, name: str) -> int:
    """Delete leftover temp files of ``name`` in ``folder`` (only under the destination's lock)."""
    removed = 0
    with contextlib.suppress(OSError):
        for item in Path(folder).iterdir():
            if item.name.startswith(f".{name}.") and is_temp_name(item.name):
                with contextlib.suppress(OSError):
                    item.unlink()
                    removed += 1
    return removed


def remove_tree(path: PathLike) -> None:
    """Remove a file or folder (never following a symlink), ignoring what is already gone."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def lock_file_for(target: PathLike, lock_dir: PathLike, kind: str = "") -> Path:
    """Where the lock of ``target`` lives: in ``lock_dir``, named after the target's resolved path."""
    resolved = str(Path(target).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(resolved).name or "root")[:60]
    return Path(lock_dir) / f"{kind}{stem}.{digest}.lock"


@contextlib.contextmanager
def locked(lock_path: PathLike, what: str, timeout: Optional[float] = None, quiet: bool = False) -> Iterator[None]:
    """Hold the ``filelock`` lock at ``lock_path`` (the kernel drops it when a holder dies, even by SIGKILL).

    When another process holds it, say so once on stderr and wait (``timeout`` seconds, None: no limit)."""
    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise named(e, lock_path.parent) from None
    lock = FileLock(str(lock_path), is_singleton=False)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not quiet:
                print(f"waiting for another process writing {what} (lock {lock_path})", file=sys.stderr, flush=True)
            lock.acquire(timeout=-1 if timeout is None else timeout)
    except Timeout:
        raise TimeoutError(f"{what}: still locked by another process after {timeout:g} s (lock {lock_path})") from None
    except OSError as e:
        raise named(e, lock_path) from None
    try:
        yield
    finally:
        lock.release()
