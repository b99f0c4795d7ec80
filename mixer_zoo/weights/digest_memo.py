"""Digests of weights files already hashed on this machine, so a warm ``pretrained=True`` does not re-read
hundreds of megabytes to prove what it proved on the previous load.

A digest is a fact about a file's bytes. The memo ties it to the file's identity and change stamps (device,
inode, size, mtime and ctime in ns): writing the file, truncating it or renaming another file over it
changes at least one of them, and ctime cannot be set back by user-space tools. Timestamps are coarse,
so a file changed within ``RACY_SECONDS`` of being hashed is not remembered (a second write in the same
clock tick could leave every stamp equal: git's "racily clean" rule). The records a digest is compared with
(manifest, content record, config) are compared on every load, memo or not.

What the memo cannot see is a change that bypasses the file system (bit rot on the disk, a raw write to the
device): ``mixer-zoo cache verify`` always re-reads, and ``MIXER_ZOO_VERIFY=always`` makes every load re-read.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

from .integrity import CHUNK, finish_content_sha256, read_safetensors_header

PathLike = Union[str, Path]
RACY_SECONDS = 2.0
"""A file changed this recently when it was hashed is not remembered (FAT's 2 s stamps are the coarsest)."""
KINDS = ("sha256", "content_sha256")
ENV = "MIXER_ZOO_VERIFY"
_warned = set()


def memo_enabled() -> bool:
    """False when ``$MIXER_ZOO_VERIFY`` is ``always``: every load then hashes the whole file again."""
    return os.environ.get(ENV, "").strip().lower() != "always"


def memo_dir() -> Path:
    from .download import cache_dir

    return cache_dir() / "digests"


def _stamps(st: os.stat_result) -> list:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _memo_file(real: str) -> Path:
    return memo_dir() / (hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:40] + ".json")


def _read_memo(real: str, stamps: list) -> Dict[str, str]:
    """The digests remembered for this file in this exact state; empty when none, stale or unreadable."""
    try:
        memo = json.loads(_memo_file(real).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(memo, dict) or memo.get("path") != real or memo.get("stamps") != stamps:
        return {}
    return {k: memo[k] for k in KINDS if isinstance(memo.get(k), str) and len(memo[k]) == 64}


def _write_memo(real: str, stamps: list, digests: Mapping[str, str]) -> None:
    """Remember ``digests`` (a temp file renamed into place: readers see the old memo or the new one). A memo
    that cannot be written only costs the next load a re-read: warned once per folder, never an error."""
    target = _memo_file(real)
    body = json.dumps(dict(path=real, stamps=stamps, **digests), sort_keys=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body)
        os.replace(tmp, target)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if str(target.parent) not in _warned:
            _warned.add(str(target.parent))
            warnings.warn(f"{target.parent}: cannot remember weights digests ({e.strerror or e}); "
                          f"every load re-reads the whole file", RuntimeWarning, stacklevel=3)


def _hash(path: PathLike, sha256: bool, content: bool) -> Dict[str, str]:
    """One read of the file feeding both hashes; the whole-file one runs on a second thread (hashlib releases
    the GIL), so asking for both costs about the time of one on two cores."""
    header, start = read_safetensors_header(path) if content else ({}, 0)
    whole, body = hashlib.sha256(), hashlib.sha256()
    offset = 0
    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        while chunk := f.read(CHUNK):
            if pending is not None:
                pending.result()
            if sha256:
                pending = pool.submit(whole.update, chunk)
            if content and offset + len(chunk) > start:
                body.update(memoryview(chunk)[max(0, start - offset):])
            offset += len(chunk)
        if pending is not None:
            pending.result()
    out = {}
    if sha256:
        out["sha256"] = whole.hexdigest()
    if content:
        out["content_sha256"] = finish_content_sha256(body, header)
    return out


def file_digests(path: PathLike, sha256: bool = False, content: bool = False,
                 use_memo: Optional[bool] = None) -> Tuple[Dict[str, str], bool]:
    """``({"sha256": ..., "content_sha256": ...}, from_memo)`` for the kinds asked for.

    ``sha256`` is the whole file's (what the manifest and the Hub's LFS pointer record); ``content_sha256`` is
    :func:`mixer_zoo.weights.integrity.content_sha256`'s. With ``use_memo`` (default: unless
    ``$MIXER_ZOO_VERIFY=always``) a digest remembered for this file in its current state is returned without
    reading it; anything computed is remembered unless the file is racily new or changed while being read."""
    wanted = [k for k, on in (("sha256", sha256), ("content_sha256", content)) if on]
    if not wanted:
        return {}, False
    use_memo = memo_enabled() if use_memo is None else use_memo
    real = os.path.realpath(path)
    before = _stamps(os.stat(real))
    known = _read_memo(real, before) if use_memo else {}
    if all(k in known for k in wanted):
        return {k: known[k] for k in wanted}, True
    computed = _hash(real, sha256, content)
    st = os.stat(real)
    settled = time.time() - max(st.st_mtime, st.st_ctime) > RACY_SECONDS
    if _stamps(st) == before and settled:
        _write_memo(real, before, {**_read_memo(real, before), **computed})
    return computed, False

