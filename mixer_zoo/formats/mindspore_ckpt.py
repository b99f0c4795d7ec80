"""MindSpore ``.ckpt`` checkpoints (MindSpore's MLP-Mixer release, fine-tuned on CIFAR-10): reading them record by
record with ``protobuf`` and a small schema, the streaming conversion into a timm-layout safetensors file, and the
writer for the way back. MindSpore itself is never needed.

A ``.ckpt`` is the protobuf message ``Checkpoint`` of MindSpore's ``checkpoint.proto``: ``repeated Value value = 1``,
each ``Value`` a ``tag`` (the parameter name) and a ``TensorProto`` (``dims``, ``tensor_type`` such as ``"Float32"``,
raw little-endian ``tensor_content``). ``save_checkpoint`` serialises every parameter as a one-value ``Checkpoint``
and appends them, so the file is a run of field-1 records; a parameter over 512 MiB is cut into several records
under the same tag. Reading one record at a time (protobuf parses each; only the record framing, a key byte and a
varint length, is read here, with protobuf's own varint decoder) keeps memory near the largest parameter. With
``save_checkpoint(..., crc_check=True)`` MindSpore appends ``b"crc_num"`` and the CRC-32 of everything before it
(10 bytes, big-endian); such a file is checked against it.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..weights.integrity import CONTENT_KEY, PENDING, finish_content_sha256
from .keys import (MINDSPORE_TO_TIMM, TIMM_TO_MINDSPORE, ConversionError, CorruptFileError, PathLike, Shape,
                   check_layout, check_timm_state_dict, check_values, expected_timm_shapes, infer_dims_timm,
                   num_classes_of, renamed, timm_order)
from .npz import safetensors_header

LAYOUT = "MindSpore Mixer"
FLOAT_TYPES = {"Float16": np.dtype("<f2"), "Float32": np.dtype("<f4"), "Float64": np.dtype("<f8"),
               "BFloat16": np.dtype("<u2")}
"""MindSpore ``tensor_type`` names of floating-point tensors and how their bytes are stored (bfloat16: bit patterns)."""
RECORD_KEY = 0x0A
"""Field 1 (``value``), wire type 2 (length-delimited): the first byte of every parameter record."""
SLICE_BYTES = 512 << 20
"""MindSpore cuts a parameter's content into records of at most this many bytes (``SLICE_SIZE`` KiB)."""
TRAINING_STATE = ("moment1.", "moment2.", "moments.", "adam_m.", "adam_v.", "accum.", "global_step", "learning_rate",
                  "beta1_power", "beta2_power", "epoch_num", "step_num", "current_iterator_step",
                  "last_overflow_iterator_step", "scale_sense")
"""Names (prefixes) of optimiser and training-loop state that MindSpore's ``ModelCheckpoint`` saves beside the
network: skipped and counted, never taken for weights."""
CRC_MARK = b"crc_num"
CRC_TRAILER = len(CRC_MARK) + 10
"""MindSpore's optional trailer: the mark, then the CRC-32 of the records as a 10-byte big-endian integer."""
PROTOBUF_MISSING = "reading or writing MindSpore .ckpt files needs protobuf: pip install 'mixer-zoo[ckpt]'"


@functools.lru_cache(maxsize=None)
def messages() -> Tuple[Any, Any]:
    """``(Checkpoint, Checkpoint.Value)`` message classes of checkpoint.proto, built in a private descriptor pool."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise ConversionError(PROTOBUF_MISSING) from None
    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="mixer_zoo/mindspore_checkpoint.proto", package="mixer_zoo_ms",
                                               syntax="proto2")
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=fd.TYPE_INT64, label=fd.LABEL_REPEATED)
    tensor.field.add(name="tensor_type", number=2, type=fd.TYPE_STRING, label=fd.LABEL_REQUIRED)
    tensor.field.add(name="tensor_content", number=3, type=fd.TYPE_BYTES, label=fd.LABEL_REQUIRED)
    map_tensor = proto.message_type.add(name="MapTensorProto")
    map_tensor.field.add(name="tensor", number=1, type=fd.TYPE_MESSAGE, label=fd.LABEL_REPEATED,
                         type_name=".mixer_zoo_ms.TensorProto")
    checkpoint = proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    value.field.add(name="tag", number=1, type=fd.TYPE_STRING, label=fd.LABEL_REQUIRED)
    value.field.add(name="tensor", number=2, type=fd.TYPE_MESSAGE, label=fd.LABEL_OPTIONAL, oneof_index=0,
                    type_name=".mixer_zoo_ms.TensorProto")
    value.field.add(name="maptensor", number=3, type=fd.TYPE_MESSAGE, label=fd.LABEL_OPTIONAL, oneof_index=0,
                    type_name=".mixer_zoo_ms.MapTensorProto")
    checkpoint.field.add(name="value", number=1, type=fd.TYPE_MESSAGE, label=fd.LABEL_REPEATED,
                         type_name=".mixer_zoo_ms.Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"mixer_zoo_ms.{name}"))
                 for name in ("Checkpoint", "Checkpoint.Value"))


@dataclass
class CkptParameter:
    """One parameter of a ``.ckpt``: its shape and type, and where its record(s) are, to be read on its own."""
    tag: str
    shape: Shape
    tensor_type: str
    records: List[Tuple[int, int]] = field(default_factory=list)  # (offset, length) of each Value's bytes
    content_bytes: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * FLOAT_TYPES[self.tensor_type].itemsize


@dataclass
class CkptIndex:
    path: Path
    params: Dict[str, CkptParameter]
    skipped: List[str]
    """Training state left out (see ``TRAINING_STATE``)."""
    crc_checked: bool = False
    """The file carried MindSpore's CRC-32 trailer and matched it."""


def _crc_trailer(f: BinaryIO, path: Path, size: int) -> Optional[int]:
    """The size of the records when the file ends in MindSpore's CRC trailer (checked here), else None."""
    if size < CRC_TRAILER:
        return None
    f.seek(size - CRC_TRAILER)
    tail = f.read(CRC_TRAILER)
    if tail[:len(CRC_MARK)] != CRC_MARK:
        return None
    body, crc = size - CRC_TRAILER, 0
    f.seek(0)
    for offset in range(0, body, 8 << 20):
        crc = zlib.crc32(f.read(min(8 << 20, body - offset)), crc)
    recorded = int.from_bytes(tail[len(CRC_MARK):], "big")
    if crc != recorded:
        raise CorruptFileError(f"{path}: fails its CRC-32 check (the file records {recorded:#010x}, its records give "
                               f"{crc:#010x}): the file is corrupted")
    return body


def _frames(f: BinaryIO, path: Path, size: int, last: List[Optional[str]]) -> Iterator[Tuple[int, int]]:
    """``(offset, length)`` of each record's Value bytes, front to back; ``last[0]`` names the record before
    (for errors)."""
    from google.protobuf.internal.decoder import _DecodeVarint

    pos = 0
    while pos < size:
        where = f"after parameter {last[0]!r}" if last[0] else "the first record"
        f.seek(pos)
        head = f.read(11)
        if head[0] != RECORD_KEY:
            raise CorruptFileError(f"{path}: not a MindSpore checkpoint: byte {pos} ({where}) does not start a "
                                   f"parameter record (0x{head[0]:02x}, expected 0x{RECORD_KEY:02x})")
        try:
            length, start = _DecodeVarint(head, 1)
        except Exception:  # IndexError (cut short) or protobuf's DecodeError (no end in 10 bytes)
            raise CorruptFileError(f"{path}: truncated or damaged at byte {pos} ({where})") from None
        if pos + start + length > size:
            raise CorruptFileError(f"{path}: truncated: the record at byte {pos} ({where}) needs {length} bytes, "
                                   f"the file ends {size - pos - start} bytes later")
        yield pos + start, length
        pos += start + length


def _parse_value(value_class: Any, data: bytes, path: Path, where: str) -> Any:
    from google.protobuf.message import DecodeError

    value = value_class()
    try:
        value.ParseFromString(data)
    except DecodeError as e:
        raise CorruptFileError(f"{path}: not a MindSpore checkpoint: the record {where} is no parameter ({e})") from None
    if not value.IsInitialized() or not value.tag:
        raise CorruptFileError(f"{path}: not a MindSpore checkpoint: the record {where} has no parameter name")
    return value


def read_ckpt_index(path: PathLike) -> CkptIndex:
    """Every parameter of a ``.ckpt`` (name, shape, type, records), each record parsed once and its content dropped:
    a truncated or foreign file, a parameter of a non-float type or content that disagrees with its shape is one
    error naming the file and the parameter."""
    path = Path(path)
    _, value_class = messages()
    size = path.stat().st_size
    if size == 0:
        raise CorruptFileError(f"{path}: empty file, not a MindSpore checkpoint")
    params: Dict[str, CkptParameter] = {}
    skipped: List[str] = []
    last: List[Optional[str]] = [None]
    with open(path, "rb") as f:
        body = _crc_trailer(f, path, size)
        for start, length in _frames(f, path, size if body is None else body, last):
            f.seek(start)
            where = f"after parameter {last[0]!r}" if last[0] else "at the start"
            value = _parse_value(value_class, f.read(length), path, where)
            tag, previous, last[0] = value.tag, last[0], value.tag
            if tag.startswith(TRAINING_STATE):
                skipped.append(tag)
                continue
            if value.WhichOneof("value") != "tensor":
                raise ConversionError(f"{path}: parameter {tag!r} is not a tensor (a MindSpore map parameter)")
            tensor = value.tensor
            if tensor.tensor_type not in FLOAT_TYPES:
                raise ConversionError(f"{path}: parameter {tag!r} has tensor_type {tensor.tensor_type!r}; expected "
                                      f"one of {', '.join(FLOAT_TYPES)}")
            shape = tuple(int(d) for d in tensor.dims)
            if any(d < 0 for d in shape):
                raise CorruptFileError(f"{path}: parameter {tag!r} declares a negative dimension {shape}")
            param = params.get(tag)
            if param is None:
                param = params[tag] = CkptParameter(tag, shape, tensor.tensor_type)
            elif previous != tag:
                raise ConversionError(f"{path}: parameter {tag!r} appears twice")
            elif (param.shape, param.tensor_type) != (shape, tensor.tensor_type):
                raise CorruptFileError(f"{path}: parameter {tag!r} is cut into records that disagree: "
                                       f"{param.shape} {param.tensor_type} and {shape} {tensor.tensor_type}")
            param.records.append((start, length))
            param.content_bytes += len(tensor.tensor_content)
    for param in params.values():
        if param.content_bytes != param.nbytes:
            raise CorruptFileError(f"{path}: parameter {param.tag!r} declares shape {param.shape} {param.tensor_type} "
                                   f"({param.nbytes} bytes) but holds {param.content_bytes}")
    if not params:
        raise ConversionError(f"{path}: no parameters, only training state ({len(skipped)} entries)")
    return CkptIndex(path, params, skipped, crc_checked=body is not None)


def check_ckpt_layout(index: CkptIndex) -> Tuple[Dict[str, str], Dict[str, int], int]:
    """``({MindSpore name: timm key}, dims, num_classes)`` of a Mixer checkpoint: every parameter one of the
    release's names, none missing, each with its shape."""
    source = str(index.path)
    to_timm = {}
    for tag in index.params:
        key = renamed(tag, MINDSPORE_TO_TIMM)
        if key is None:
            raise ConversionError(f"{source}: unexpected parameter {tag!r}, not part of the {LAYOUT} layout")
        to_timm[tag] = key
    shapes = {to_timm[tag]: p.shape for tag, p in index.params.items()}
    dims = infer_dims_timm(shapes, source)
    num_classes = num_classes_of(shapes, "head.weight", 0, source)
    expected = {renamed(k, TIMM_TO_MINDSPORE): v for k, v in expected_timm_shapes(dims, num_classes).items()}
    check_layout({tag: p.shape for tag, p in index.params.items()}, expected, source, LAYOUT)
    return to_timm, dims, num_classes


def read_parameter(f: BinaryIO, param: CkptParameter, path: Path) -> torch.Tensor:
    """One parameter as a float32 tensor (its records joined), its values checked (NaN/Inf)."""
    _, value_class = messages()
    data = np.empty(param.nbytes, np.uint8)
    filled = 0
    for start, length in param.records:
        f.seek(start)
        content = _parse_value(value_class, f.read(length), path, f"of parameter {param.tag!r}").tensor.tensor_content
        data[filled:filled + len(content)] = np.frombuffer(content, np.uint8)
        filled += len(content)
    array = data.view(FLOAT_TYPES[param.tensor_type]).reshape(param.shape)
    if param.tensor_type == "BFloat16":  # the upper half of a float32's bits
        tensor = torch.from_numpy(array.astype(np.int32) << 16).view(torch.float32)
    else:
        tensor = torch.from_numpy(array)
    check_values(tensor, param.tag, str(path))
    return tensor.to(torch.float32)


def load_ckpt_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """A MindSpore Mixer ``.ckpt`` as a timm-layout state dict (float32), checked as the converter checks it."""
    index = read_ckpt_index(path)
    to_timm, _, _ = check_ckpt_layout(index)
    with open(index.path, "rb") as f:
        return {to_timm[tag]: read_parameter(f, p, index.path) for tag, p in index.params.items()}


def stream_ckpt_to_safetensors(index: CkptIndex, to_timm: Mapping[str, str], dst: PathLike,
                               metadata: Mapping[str, str], progress: bool = True) -> str:
    """Write the parameters, one at a time in file order, as float32 timm tensors into ``dst``; returns the content
    sha256 sealed into it (:mod:`mixer_zoo.weights.integrity`). Memory stays near the largest parameter."""
    from tqdm.auto import tqdm

    params = list(index.params.values())
    header, header_dict, total = safetensors_header([(to_timm[p.tag], p.shape) for p in params],
                                                    dict(metadata, **{CONTENT_KEY: PENDING}))
    digest = hashlib.sha256()
    with open(index.path, "rb") as src, open(dst, "wb") as out, \
            tqdm(total=total, unit="B", unit_scale=True, desc=f"converting {index.path.name}", leave=False,
                 disable=not progress or None) as bar:
        out.write(header)
        for param in params:
            data = read_parameter(src, param, index.path).contiguous().numpy().data
            out.write(data)
            digest.update(data)
            bar.update(data.nbytes)
        content = finish_content_sha256(digest, header_dict)
        out.seek(header.index(PENDING.encode()))
        out.write(content.encode())
        out.flush()
        os.fsync(out.fileno())
    return content


def write_ckpt(state_dict: Mapping[str, Any], out: BinaryIO, source: str = "<state dict>",
               slice_bytes: int = SLICE_BYTES, crc_check: bool = False) -> None:
    """A timm-layout Mixer state dict as MindSpore writes it: one ``Checkpoint`` message per record, float32, with
    MindSpore's names, a parameter over ``slice_bytes`` cut into records under the same name; with ``crc_check``
    the CRC trailer of ``save_checkpoint(..., crc_check=True)``."""
    checkpoint_class, _ = messages()
    check_timm_state_dict(state_dict, source)
    crc = 0
    for key in sorted(state_dict, key=timm_order(state_dict)):
        tensor = torch.as_tensor(state_dict[key]).detach().to("cpu", torch.float32).contiguous()
        content = tensor.numpy().tobytes()
        for offset in range(0, len(content), slice_bytes):
            message = checkpoint_class()
            value = message.value.add(tag=renamed(key, TIMM_TO_MINDSPORE))
            value.tensor.dims.extend(tensor.shape)
            value.tensor.tensor_type = "Float32"
            value.tensor.tensor_content = content[offset:offset + slice_bytes]
            data = message.SerializeToString()
            crc = zlib.crc32(data, crc)
            out.write(data)
    if crc_check:
        out.write(CRC_MARK + crc.to_bytes(10, "big"))
