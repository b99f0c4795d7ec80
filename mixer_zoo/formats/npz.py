"""Google's official JAX ``.npz``: reading the index and arrays without unpickling, the official <-> timm
mapping, and the streaming conversion straight into a safetensors file.

Official npz files are converted as a stream: every array is read, transposed and written on its own, so
memory stays near the size of the largest array rather than of the checkpoint.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import sys
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..util.report import error_summary
from ..weights.download import sha256_of
from ..weights.integrity import CONTENT_KEY, PENDING, finish_content_sha256
from .keys import (TO_OFFICIAL_AXES, TO_TIMM_AXES, ConversionError, CorruptFileError, PathLike, Shape, check_layout,
                   check_timm_state_dict, check_values, expected_official_shapes, infer_dims, key_map, num_classes_of,
                   permute_shape, shapes_of, to_float32_tensor)


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
    """One array of an ``.npz``: where its raw bytes are, so it can be read (and CRC-checked) on its own."""
    key: str
    shape: Shape
    dtype: np.dtype
    fortran_order: bool
    data_offset: Optional[int]  # None: compressed member, read through zipfile
    info: zipfile.ZipInfo
    member_start: Optional[int] = None  # where the member's bytes (.npy header, then data) start in the file

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


FLOAT_DTYPES = ("float16", "float32", "float64")
DEFLATE_MAX_RATIO = 1032
"""deflate cannot expand a byte more than this: a member declaring more is lying about its size."""


def _check_dtype(dtype: np.dtype, key: str, path: Path) -> None:
    if dtype.hasobject:
        raise ConversionError(f"{path}: key {key!r} holds pickled Python objects; refusing to unpickle")
    if dtype.kind != "f":
        raise ConversionError(f"{path}: key {key!r} has dtype {dtype}; expected floating point numbers")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
        raise ConversionError(f"{path}: key {key!r} is big-endian ({dtype.str}); expected little-endian "
                              f"{'/'.join(FLOAT_DTYPES)}")
    if dtype.name not in FLOAT_DTYPES:
        raise ConversionError(f"{path}: key {key!r} has dtype {dtype.name}; expected {'/'.join(FLOAT_DTYPES)}")


def read_npz_index(path: PathLike) -> List[NpzMember]:
    """List the arrays of an ``.npz`` (names, shapes, dtypes, offsets) without reading their data; every size
    a member declares is checked against the file before anything is allocated for it."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except OSError:
        raise
    except Exception as e:  # zipfile raises many types for a damaged directory
        raise CorruptFileError(f"{path}: not a readable .npz (zip) file: {error_summary(e)}") from None
    members = []
    file_size = path.stat().st_size
    with zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ConversionError(f"{path}: unexpected member {info.filename!r}; an .npz holds only .npy arrays")
            key = info.filename[:-4]
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ConversionError(f"{path}: key {key!r} uses zip compression {info.compress_type}; "
                                      "numpy writes stored or deflated members only")
            if info.header_offset + info.compress_size > file_size:
                raise CorruptFileError(f"{path}: key {key!r} is truncated")
            try:
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran_order, dtype = read_header(fp)
                    header_len = fp.tell()
            except OSError:
                raise
            except Exception as e:
                raise CorruptFileError(f"{path}: key {key!r} is not a valid .npy array: {error_summary(e)}") from None
            _check_dtype(dtype, key, path)
            member = NpzMember(key, tuple(shape), dtype, fortran_order, None, info)
            if info.file_size != header_len + member.nbytes:
                raise CorruptFileError(f"{path}: key {key!r} declares shape {member.shape} ({member.nbytes} bytes) "
                                       f"but its zip member holds {info.file_size - header_len}")
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                local = raw.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04" or info.compress_size != info.file_size:
                    raise CorruptFileError(f"{path}: key {key!r}: damaged zip entry")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                member.member_start = info.header_offset + 30 + name_len + extra_len
                member.data_offset = member.member_start + header_len
                if member.data_offset + member.nbytes > file_size:
                    raise CorruptFileError(f"{path}: key {key!r} is truncated")
            elif info.compress_size * DEFLATE_MAX_RATIO < info.file_size:
                raise CorruptFileError(f"{path}: key {key!r} declares {info.file_size} bytes from "
                                       f"{info.compress_size} compressed bytes, more than deflate can hold")
            members.append(member)
    return members


def _crc_error(path: PathLike, member: NpzMember) -> CorruptFileError:
    return CorruptFileError(f"{path}: key {member.key!r} fails its zip CRC-32 check: the file is corrupted")


def read_npz_member(path: PathLike, member: NpzMember, raw: Optional[Any] = None) -> np.ndarray:
    """One array, read straight into its own buffer (or decompressed, for ``savez_compressed`` files), its
    bytes checked against the member's zip CRC-32."""
    if member.data_offset is None:
        try:
            with zipfile.ZipFile(path) as zf, zf.open(member.info) as fp:
                array = np.lib.format.read_array(fp, allow_pickle=False)
                fp.read()  # to the end of the member: zipfile checks the CRC there
            return array
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                raise _crc_error(path, member) from None
            raise CorruptFileError(f"{path}: key {member.key!r} cannot be read: {error_summary(e)}") from None
        except (ValueError, EOFError, zlib.error) as e:
            raise CorruptFileError(f"{path}: key {member.key!r} cannot be read: {error_summary(e)}") from None
    shape = member.shape[::-1] if member.fortran_order else member.shape
    array = np.empty(shape, dtype=member.dtype)
    with contextlib.ExitStack() as stack:
        f = raw or stack.enter_context(open(path, "rb"))
        f.seek(member.member_start)
        npy_header = f.read(member.data_offset - member.member_start)
        if f.readinto(memoryview(array).cast("B")) != member.nbytes:
            raise CorruptFileError(f"{path}: key {member.key!r} is truncated")
    if zlib.crc32(memoryview(array).cast("B"), zlib.crc32(npy_header)) != member.info.CRC:
        raise _crc_error(path, member)
    return array.T if member.fortran_order else array


def safetensors_header(entries: List[Tuple[str, Shape]], metadata: Mapping[str, str]
                        ) -> Tuple[bytes, Dict[str, Any], int]:
    """The 8-byte length + JSON header of a float32 safetensors file whose tensors follow in ``entries`` order,
    the header as a dict, and the size of the data."""
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(blob)) + blob, header, offset


_SHA_PENDING = "?" * 64


def _source_digests(digest: Optional[Any], gap: bytes, view: memoryview, crc_seed: int) -> int:
    """On the source worker, in file order: the whole file's sha256 (when asked) and the member's CRC-32."""
    if digest is not None:
        digest.update(gap)
        digest.update(view)
    return zlib.crc32(view, crc_seed)


def _check_crcs(crcs: List[Tuple[Future, NpzMember]], src: PathLike) -> None:
    for future, member in crcs:
        if future.result() != member.info.CRC:
            raise _crc_error(src, member)


def stream_npz_to_safetensors(src: PathLike, members: List[NpzMember], num_blocks: int, dst: PathLike,
                              metadata: Mapping[str, str], source_sha256: Optional[str] = None,
                              progress: bool = True) -> Tuple[str, str]:
    """Convert array by array into ``dst``; returns the source's sha256 (computed on the way unless given) and
    the content sha256 sealed into the output (see :mod:`mixer_zoo.weights.integrity`).

    The source is read front to back into two alternating buffers and transposed into two alternating output
    buffers; while one pair is filled, worker threads hash the other (hashlib and zlib release the GIL): the
    source's sha256 and each member's zip CRC-32, and the output's tensor bytes. Memory stays near four times
    the largest array. A CRC-32 mismatch fails the conversion. ``members`` must already be validated."""
    from tqdm.auto import tqdm

    src = Path(src)
    by_key = {m.key: m for m in members}
    rows = [(by_key[o], t, kind) for o, t, kind in key_map(num_blocks)]
    stored = all(m.data_offset is not None for m, _, _ in rows)
    if stored:
        rows.sort(key=lambda r: r[0].data_offset)  # read the source front to back
    metadata = dict(metadata, source_sha256=source_sha256 or _SHA_PENDING, **{CONTENT_KEY: PENDING})
    header, header_dict, total = safetensors_header(
        [(t, permute_shape(m.shape, TO_TIMM_AXES.get(kind))) for m, t, kind in rows], metadata)
    largest = max(m.nbytes for m, _, _ in rows)
    in_buffers = [np.empty(largest, np.uint8), np.empty(largest, np.uint8)]
    out_buffers = [torch.empty(max(m.nbytes // m.dtype.itemsize for m, _, _ in rows), dtype=torch.float32)
                   for _ in range(2)]
    busy: List[List[Future]] = [[], []]  # hashing still reading a slot's buffers
    crcs: List[Tuple[Future, NpzMember]] = []
    with contextlib.ExitStack() as stack:
        src_pool = stack.enter_context(ThreadPoolExecutor(1))  # one worker each: updates run in order
        out_pool = stack.enter_context(ThreadPoolExecutor(1))
        source_digest = hashlib.sha256() if source_sha256 is None and stored else None
        whole_file = src_pool.submit(sha256_of, src) if source_sha256 is None and not stored else None
        out_digest = hashlib.sha256()
        raw = stack.enter_context(open(src, "rb"))
        out = stack.enter_context(open(dst, "wb"))
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc=f"converting {src.name}",
                                       disable=not progress or None, leave=False))
        out.write(header)
        try:
            for i, (member, timm_key, kind) in enumerate(rows):
                slot = i % 2
                for future in busy[slot]:
                    future.result()
                busy[slot] = []
                if stored:
                    if member.member_start < raw.tell():
                        raise CorruptFileError(f"{src}: key {member.key!r} overlaps another zip member")
                    gap = raw.read(member.data_offset - raw.tell())  # zip and .npy headers
                    npy_header = gap[len(gap) - (member.data_offset - member.member_start):]
                    view = memoryview(in_buffers[slot])[:member.nbytes]
                    if raw.readinto(view) != member.nbytes:
                        raise CorruptFileError(f"{src}: key {member.key!r} is truncated")
                    crc = src_pool.submit(_source_digests, source_digest, gap, view, zlib.crc32(npy_header))
                    crcs.append((crc, member))
                    busy[slot].append(crc)
                    shape = member.shape[::-1] if member.fortran_order else member.shape
                    array = np.frombuffer(view, dtype=member.dtype).reshape(shape)
                    array = array.T if member.fortran_order else array
                else:
                    array = read_npz_member(src, member)
                check_values(array, member.key, str(src))
                source = torch.from_numpy(array)
                axes = TO_TIMM_AXES.get(kind)
                if axes is None and source.dtype == torch.float32 and source.is_contiguous():
                    data = array.data  # nothing to change: write the bytes as read
                else:
                    target = out_buffers[slot][:source.numel()].view(permute_shape(tuple(source.shape), axes))
                    target.copy_(source.permute(*axes) if axes else source)
                    data = target.numpy().data
                out.write(data)
                busy[slot].append(out_pool.submit(out_digest.update, data))
                bar.update(source.numel() * 4)
        except ConversionError:
            _check_crcs(crcs, src)  # a damaged file explains a bad value better than the value does
            raise
        _check_crcs(crcs, src)
        if source_digest is not None:
            src_pool.submit(source_digest.update, raw.read()).result()  # the zip directory after the last array
            source_sha256 = source_digest.hexdigest()
        elif whole_file:
            source_sha256 = whole_file.result()
        header_dict["__metadata__"]["source_sha256"] = source_sha256
        content = out_pool.submit(finish_content_sha256, out_digest, header_dict).result()
        patches = [(PENDING, content)] + ([(_SHA_PENDING, source_sha256)] if metadata["source_sha256"] == _SHA_PENDING
                                          else [])
        for placeholder, value in patches:
            out.seek(header.index(placeholder.encode()))
            out.write(value.encode())
        out.flush()
        os.fsync(out.fileno())
    return source_sha256, content
