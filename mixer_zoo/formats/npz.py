"""Google's official JAX ``.npz``: reading the index and arrays without unpickling, the official <-> timm
mapping, and the streaming conversion straight into a safetensors file.

Official npz files are converted as a stream: every array is read, transposed and written on its own, so
memory stays near the size of the largest array rather than of the checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..weights.download import sha256_of
from .keys import (TO_OFFICIAL_AXES, TO_TIMM_AXES, ConversionError, PathLike, Shape, check_layout, check_timm_state_dict,
                   check_values, expected_official_shapes, infer_dims, key_map, num_classes_of, permute_shape,
                   shapes_of, to_float32_tensor)


def npz_to_timm_state_dict(arrays: Mapping[str, Any], source: str = "<arrays>") -> Dict[str, torch.Tensor]:
    """Official-layout arrays (keys like ``MixerBlock_0/token_mixing/Dense_0/kernel``) -> timm state dict."""
    shapes = shapes_of(arrays)
    dims = infer_dims(shapes, source)
    check_layout(shapes, expected_official_shapes(dims, num_classes_of(shapes, "head/kernel", 1, source)),
                 source, "official Mixer")
    state_dict = {}
    for official, timm_key, kind in key_map(dims["num_blocks"]):
        check_values(np.asarray(arrays[official]), official, source)
        state_dict[timm_key] = to_float32_tensor(np.asarray(arrays[official]), TO_TIMM_AXES.get(kind))
    return state_dict


def timm_to_npz_arrays(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, np.ndarray]:
    """timm state dict -> arrays in the official layout (``np.savez(path, **arrays)`` writes the npz)."""
    dims = check_timm_state_dict(state_dict, source)
    arrays = {}
    for official, timm_key, kind in key_map(dims["num_blocks"]):
        tensor = state_dict[timm_key]
        tensor = tensor if isinstance(tensor, torch.Tensor) else torch.from_numpy(np.asarray(tensor))
        arrays[official] = to_float32_tensor(tensor.detach().cpu(), TO_OFFICIAL_AXES.get(kind)).numpy()
    return arrays


@dataclass
class NpzMember:
    """One array of an ``.npz``: where its raw bytes are, so it can be read on its own."""
    key: str
    shape: Shape
    dtype: np.dtype
    fortran_order: bool
    data_offset: Optional[int]  # None: compressed member, read through zipfile
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_npz_index(path: PathLike) -> List[NpzMember]:
    """List the arrays of an ``.npz`` (names, shapes, dtypes, offsets) without reading their data."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConversionError(f"{path}: not a readable .npz (zip) file: {e}") from None
    members = []
    file_size = path.stat().st_size
    with zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ConversionError(f"{path}: unexpected member {info.filename!r}; an .npz holds only .npy arrays")
            key = info.filename[:-4]
            try:
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran_order, dtype = read_header(fp)
                    header_len = fp.tell()
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
                raise ConversionError(f"{path}: key {key!r} is not a valid .npy array: {e}") from None
            if dtype.hasobject:
                raise ConversionError(f"{path}: key {key!r} holds pickled Python objects; refusing to unpickle")
            if dtype.kind != "f":
                raise ConversionError(f"{path}: key {key!r} has dtype {dtype}; expected floating point numbers")
            offset = None
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                local = raw.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                offset = info.header_offset + 30 + name_len + extra_len + header_len
                member = NpzMember(key, tuple(shape), dtype, fortran_order, offset, info)
                if offset + member.nbytes > file_size:
                    raise ConversionError(f"{path}: key {key!r} is truncated")
            members.append(NpzMember(key, tuple(shape), dtype, fortran_order, offset, info))
    return members


def read_npz_member(path: PathLike, member: NpzMember, raw: Optional[Any] = None) -> np.ndarray:
    """One array, read straight into its own buffer (or decompressed, for ``savez_compressed`` files)."""
    if member.data_offset is None:
        with zipfile.ZipFile(path) as zf, zf.open(member.info) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)
    shape = member.shape[::-1] if member.fortran_order else member.shape
    array = np.empty(shape, dtype=member.dtype)
    with contextlib.ExitStack() as stack:
        f = raw or stack.enter_context(open(path, "rb"))
        f.seek(member.data_offset)
        if f.readinto(memoryview(array).cast("B")) != member.nbytes:
            raise ConversionError(f"{path}: key {member.key!r} is truncated")
    return array.T if member.fortran_order else array


def _safetensors_header(entries: List[Tuple[str, Shape]], metadata: Mapping[str, str]) -> Tuple[bytes, int]:
    """The 8-byte length + JSON header of a float32 safetensors file whose tensors follow in ``entries`` order."""
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape in entries:
        nbytes = int(np.prod(shape, dtype=np.int64)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(blob)) + blob, offset


_SHA_PENDING = "?" * 64


class _FileHasher:
    """sha256 of a whole file, fed in order with the bytes the conversion reads anyway, on a worker thread
    (hashlib releases the GIL), so the file is read once and hashed alongside the transposes."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.digest = hashlib.sha256()
        self.pool = pool  # one worker: updates run in submission order

    def update(self, data: Any) -> Future:
        return self.pool.submit(self.digest.update, data)

    def hexdigest(self) -> str:
        return self.pool.submit(self.digest.hexdigest).result()


def stream_npz_to_safetensors(src: PathLike, members: List[NpzMember], num_blocks: int, dst: PathLike,
                              metadata: Mapping[str, str], source_sha256: Optional[str] = None,
                              progress: bool = True) -> str:
    """Convert array by array into ``dst`` and return the source's sha256 (computed on the way unless given).

    The source is read front to back into two alternating buffers (one is hashed while the other fills),
    transposed into one reused output buffer and written; memory stays near three times the largest array.
    ``members`` must already be validated."""
    from tqdm.auto import tqdm

    src = Path(src)
    by_key = {m.key: m for m in members}
    rows = [(by_key[o], t, kind) for o, t, kind in key_map(num_blocks)]
    stored = all(m.data_offset is not None for m, _, _ in rows)
    if stored:
        rows.sort(key=lambda r: r[0].data_offset)  # read the source front to back
    metadata = dict(metadata, source_sha256=source_sha256 or _SHA_PENDING)
    header, total = _safetensors_header(
        [(t, permute_shape(m.shape, TO_TIMM_AXES.get(kind))) for m, t, kind in rows], metadata)
    largest = max(m.nbytes for m, _, _ in rows)
    in_buffers = [np.empty(largest, np.uint8), np.empty(largest, np.uint8)]
    pending: List[Optional[Future]] = [None, None]
    out_buffer = torch.empty(max(m.nbytes // m.dtype.itemsize for m, _, _ in rows), dtype=torch.float32)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(1))
        hasher = _FileHasher(pool) if source_sha256 is None and stored else None
        whole_file = pool.submit(sha256_of, src) if source_sha256 is None and not stored else None
        raw = stack.enter_context(open(src, "rb"))
        out = stack.enter_context(open(dst, "wb"))
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc=f"converting {src.name}",
                                       disable=not progress or None, leave=False))
        out.write(header)
        for i, (member, timm_key, kind) in enumerate(rows):
            if stored:
                gap = raw.read(member.data_offset - raw.tell())  # zip and .npy headers
                if hasher:
                    hasher.update(gap)
                slot = i % 2
                if pending[slot] is not None:
                    pending[slot].result()  # the hash of what this buffer held before
                view = memoryview(in_buffers[slot])[:member.nbytes]
                if raw.readinto(view) != member.nbytes:
                    raise ConversionError(f"{src}: key {member.key!r} is truncated")
                if hasher:
                    pending[slot] = hasher.update(view)
                shape = member.shape[::-1] if member.fortran_order else member.shape
                array = np.frombuffer(view, dtype=member.dtype).reshape(shape)
                array = array.T if member.fortran_order else array
            else:
                array = read_npz_member(src, member)
            check_values(array, member.key, str(src))
            source = torch.from_numpy(array)
            axes = TO_TIMM_AXES.get(kind)
            if axes is None and source.dtype == torch.float32 and source.is_contiguous():
                out.write(array.data)  # nothing to change: write the bytes as read
            else:
                target = out_buffer[:source.numel()].view(permute_shape(tuple(source.shape), axes))
                target.copy_(source.permute(*axes) if axes else source)
                out.write(target.numpy().data)
            bar.update(source.numel() * 4)
        if hasher:
            hasher.update(raw.read())  # the zip directory after the last array
            source_sha256 = hasher.hexdigest()
        elif whole_file:
            source_sha256 = whole_file.result()
        if metadata["source_sha256"] == _SHA_PENDING:
            out.seek(header.index(_SHA_PENDING.encode()))
            out.write(source_sha256.encode())
    return source_sha256
