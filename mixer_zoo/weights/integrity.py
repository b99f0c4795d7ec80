"""Integrity records a converted folder carries, so a flipped byte is caught on load even when the manifest
records no sha256 for the file.

``model.safetensors`` holds ``content_sha256`` in its metadata: the sha256 of the tensor bytes followed by the
canonical JSON of the header without that entry, so every tensor byte, name, shape, dtype and metadata value
is covered by a record inside the file itself. ``config.json`` holds ``integrity``: the weights' content sha256
(a config never pairs with other weights) and the sha256 of its own canonical JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

PathLike = Union[str, Path]
CONTENT_KEY = "content_sha256"
CONFIG_KEY = "integrity"
PENDING = "~" * 64
"""Placeholder written first and patched in place once the hash is known (same length: offsets do not move)."""
MAX_HEADER = 100 * 1000 * 1000  # safetensors' own limit
CHUNK = 8 << 20


class IntegrityError(ValueError):
    """A file is not what its integrity record says (or cannot be read as the format it claims)."""


def read_safetensors_header(path: PathLike) -> Tuple[Dict[str, Any], int]:
    """The JSON header of a safetensors file and where its data starts, checked against the file's size before
    anything is allocated from it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise IntegrityError(f"{path}: broken safetensors header: file is {size} bytes, too short for one")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER or 8 + length > size:
            raise IntegrityError(f"{path}: broken safetensors header: declares {length} header bytes in a "
                                 f"{size}-byte file")
        blob = f.read(length)
    try:
        header = json.loads(blob.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, or nested beyond reason
        raise IntegrityError(f"{path}: broken safetensors header: {type(e).__name__}: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise IntegrityError(f"{path}: broken safetensors header: not a JSON object with a __metadata__ object")
    return header, 8 + length


def canonical_header(header: Mapping[str, Any]) -> bytes:
    """The header as sorted compact JSON, without the content record itself (what the record covers)."""
    header = dict(header)
    metadata = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != CONTENT_KEY}
    header["__metadata__"] = metadata
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def finish_content_sha256(data_digest: "hashlib._Hash", header: Mapping[str, Any]) -> str:
    """The content sha256 from a hash already fed with every tensor byte, in file order."""
    data_digest.update(canonical_header(header))
    return data_digest.hexdigest()


def content_sha256(path: PathLike) -> Tuple[str, Optional[str]]:
    """``(computed, recorded)`` content sha256 of a safetensors file (recorded: None when it has no record)."""
    header, start = read_safetensors_header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    recorded = (header.get("__metadata__") or {}).get(CONTENT_KEY)
    return finish_content_sha256(digest, header), recorded if isinstance(recorded, str) else None


def seal_safetensors(path: PathLike) -> str:
    """Replace the ``PENDING`` content record of a file written with it by the real hash, in place; fsynced."""
    header, _ = read_safetensors_header(path)
    if (header.get("__metadata__") or {}).get(CONTENT_KEY) != PENDING:
        raise IntegrityError(f"{path}: no pending {CONTENT_KEY} record to fill in")
    computed, _ = content_sha256(path)
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + f.read(length).index(PENDING.encode()))
        f.write(computed.encode())
        f.flush()
        os.fsync(f.fileno())
    return computed


def verify_safetensors(path: PathLike) -> Optional[str]:
    """The file's content sha256 when it carries a record and matches it; None when it has no record.

    Raises :class:`IntegrityError` naming the file for a broken header or a mismatch."""
    computed, recorded = content_sha256(path)
    if recorded is None:
        return None
    if recorded != computed:
        raise IntegrityError(f"{path}: content sha256 mismatch: the file records {recorded}, its bytes give "
                             f"{computed} (corrupted after it was written)")
    return computed


def config_sha256(config: Mapping[str, Any]) -> str:
    body = dict(config)
    record = dict(body.get(CONFIG_KEY) or {})
    record.pop("config_sha256", None)
    body[CONFIG_KEY] = record
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal_config(config: Dict[str, Any], weights_content_sha256: str) -> Dict[str, Any]:
    """``config`` with its integrity record: the weights it goes with and its own hash."""
    config = dict(config)
    config[CONFIG_KEY] = {"weights_file": "model.safetensors", "weights_content_sha256": weights_content_sha256}
    config[CONFIG_KEY]["config_sha256"] = config_sha256(config)
    return config


def config_record(path: PathLike) -> Optional[Dict[str, Any]]:
    """The integrity record of ``config.json``, checked against the file's own content; None when it has none.
    Raises :class:`IntegrityError` naming the file."""
    path = Path(path)
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise IntegrityError(f"{path}: not valid JSON: {type(e).__name__}: {e}") from None
    if not isinstance(config, dict):
        raise IntegrityError(f"{path}: not a JSON object")
    record = config.get(CONFIG_KEY)
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("config_sha256") != config_sha256(config):
        raise IntegrityError(f"{path}: config sha256 mismatch: the file differs from what was written")
    return record


def check_config_pairing(path: PathLike, record: Mapping[str, Any], weights_content: Optional[str]) -> None:
    """Refuse a config whose record names other weights than ``weights_content`` (the file beside it)."""
    if weights_content is not None and record.get("weights_content_sha256") != weights_content:
        raise IntegrityError(f"{path}: belongs to other weights (records content sha256 "
                             f"{record.get('weights_content_sha256')}, the model.safetensors beside it is "
                             f"{weights_content})")


def verify_config(path: PathLike, weights_content: Optional[str]) -> bool:
    """Check ``config.json`` against its own record and against the weights' content sha256; False when it has
    no record. Raises :class:`IntegrityError` naming the file."""
    record = config_record(path)
    if record is None:
        return False
    check_config_pairing(path, record, weights_content)
    return True
