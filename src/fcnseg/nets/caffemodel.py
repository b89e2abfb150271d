"""Caffe's ``.caffemodel`` files, read without Caffe: the protobuf wire format of NetParameter.

A caffemodel is one serialised ``NetParameter`` message. Only what weights need is
decoded: each layer's name, type and blobs (shape and values), from both the
current ``layer`` field (``LayerParameter``) and the legacy ``layers`` field
(``V1LayerParameter``, type as an enum, blobs shaped by num/channels/height/width).
Every other field, known to Caffe or not, is skipped by its wire type.

Packed values (every file Caffe has written since 2014) become numpy views of the
file's bytes: no copy and no Python loop per value. Even unpacked values, one
tagged field per number, decode as one strided view of the run of fields.

Field numbers, from Caffe's ``caffe.proto``::

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum LayerType), blobs = 6
    BlobProto         shape = 7, data = 5 (float), double_data = 8,
                      num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape)
    BlobShape         dim = 1 (int64)
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from fcnseg.nets.weights import WeightsError

# Wire types (protobuf encoding): how the bytes after each field's tag are laid out.
VARINT, FIXED64, LENGTH, GROUP_START, GROUP_END, FIXED32 = range(6)

# V1LayerParameter.LayerType numbers (caffe.proto) of the layers FCNs are made of,
# named as LayerParameter.type names them.
V1_LAYER_TYPES = {
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    14: "InnerProduct",
    15: "LRN",
    17: "Pooling",
    18: "ReLU",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    25: "Eltwise",
    39: "Deconvolution",
}


class CaffeLayer(NamedTuple):
    """One layer of a caffemodel: its type (``"Convolution"``, ...) and its blobs
    (weights, then bias), each shaped as the file says."""

    type: str
    blobs: list[np.ndarray]


class _Malformed(Exception):
    """The bytes are not the message they should be; the text says where."""


def read_caffemodel(path: str | os.PathLike) -> dict[str, CaffeLayer]:
    """Read a ``.caffemodel``: layer name -> :class:`CaffeLayer`, in the file's order.

    The file is read in one call; blobs are views of that buffer (writable, so
    ``torch.from_numpy`` takes them as they are). Layers without blobs (ReLU,
    pooling, ...) are listed with an empty list.

    Raises:
        WeightsError: the file is missing, truncated or not a caffemodel; the
            message names the file and what is wrong.

    Example:
        >>> layers = read_caffemodel("fcn8s-heavy-pascal.caffemodel")  # doctest: +SKIP
        >>> layers["conv1_1"].blobs[0].shape  # doctest: +SKIP
        (64, 3, 3, 3)
    """
    try:
        with open(path, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            got = f.readinto(buf)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such caffemodel") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a folder, not a caffemodel") from None
    if got != len(buf):  # the file shrank while being read
        raise WeightsError(f"{path}: truncated while reading ({got} of {len(buf)} bytes)")
    try:
        layers = _net(buf)
    except _Malformed as e:
        raise WeightsError(f"{path}: not a readable caffemodel ({e})") from None
    except RecursionError:  # groups nested thousands deep: no file Caffe writes
        raise WeightsError(f"{path}: not a readable caffemodel (groups nested too deep)") from None
    if not any(layer.blobs for layer in layers.values()):
        raise WeightsError(f"{path}: not a caffemodel (no layer holds weights)")
    return layers


def _net(buf: bytearray) -> dict[str, CaffeLayer]:
    """NetParameter: its layers, current (field 100) and legacy (field 2)."""
    layers: dict[str, CaffeLayer] = {}
    pos, end = 0, len(buf)
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field in (100, 2) and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            name, layer = _layer(buf, start, pos, legacy=field == 2)
            if name in layers and layers[name].blobs and layer.blobs:
                raise _Malformed(f"two layers named {name!r} hold weights")
            if name not in layers or layer.blobs:
                layers[name] = layer
        elif field in (100, 2):
            raise _Malformed(f"layer field with wire type {wire} at byte {pos}")
        else:
            pos = _skip(buf, field, wire, pos, end)
    return layers


def _layer(buf: bytearray, pos: int, end: int, *, legacy: bool) -> tuple[str, CaffeLayer]:
    """LayerParameter (or, ``legacy``, V1LayerParameter): name, type and blobs."""
    name_field, type_field, blobs_field = (4, 5, 6) if legacy else (1, 2, 7)
    name, kind, blobs = None, "", []
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == name_field and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            name = _text(buf, start, pos)
        elif field == type_field and legacy and wire == VARINT:
            number, pos = _varint(buf, pos, end)
            kind = V1_LAYER_TYPES.get(number, f"V1LayerType({number})")
        elif field == type_field and not legacy and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            kind = _text(buf, start, pos)
        elif field == blobs_field and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            blobs.append((start, pos))
        elif field in (name_field, type_field, blobs_field):
            raise _Malformed(f"layer field {field} with wire type {wire} at byte {pos}")
        else:
            pos = _skip(buf, field, wire, pos, end)
    if name is None:
        raise _Malformed(f"a layer without a name ends at byte {end}")
    arrays = [_blob(buf, start, stop, f"{name} blob {i}") for i, (start, stop) in enumerate(blobs)]
    return name, CaffeLayer(kind, arrays)


def _blob(buf: bytearray, pos: int, end: int, what: str) -> np.ndarray:
    """BlobProto: its values (float32, or float64 from ``double_data``) in its shape."""
    shape: tuple[int, ...] | None = None
    legacy = [None, None, None, None]  # num, channels, height, width
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == 7 and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            shape = _shape(buf, start, pos)
        elif field in (5, 8) and wire in (LENGTH, FIXED32, FIXED64):
            values, pos = _values(
                buf, field, wire, pos, end, np.dtype("<f4" if field == 5 else "<f8")
            )
            (floats if field == 5 else doubles).append(values)
        elif 1 <= field <= 4 and wire == VARINT:
            legacy[field - 1], pos = _varint(buf, pos, end)
        else:
            pos = _skip(buf, field, wire, pos, end)
    chunks = doubles or floats  # Caffe reads double_data when it has any
    values = chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [np.empty(0, "<f4")])
    if shape is None:
        given = [d for d in legacy if d is not None]
        shape = tuple(d or 0 for d in legacy) if given else (values.size,)
    if math.prod(shape) != values.size:
        raise _Malformed(f"{what} has shape {shape} but {values.size} values")
    return values.reshape(shape)


def _values(
    buf: bytearray, field: int, wire: int, pos: int, end: int, dtype: np.dtype
) -> tuple[np.ndarray, int]:
    """A repeated float/double field: packed (one length-delimited run), or unpacked
    (each value its own tagged field): then the whole run of consecutive tagged values."""
    if wire == LENGTH:
        start, pos = _span(buf, pos, end)
        if (pos - start) % dtype.itemsize:
            raise _Malformed(f"packed values of {pos - start} bytes at byte {start}")
        return np.frombuffer(buf, dtype, (pos - start) // dtype.itemsize, start), pos
    if (wire == FIXED32) != (dtype.itemsize == 4):
        raise _Malformed(f"field {field} with wire type {wire} at byte {pos}")
    # Record = 1 tag byte + the value; the run ends at the first record with another tag.
    record, tag = 1 + dtype.itemsize, (field << 3) | wire
    available = (end - pos + 1) // record  # whole records from this one's tag on
    if available == 0:
        raise _Malformed(f"truncated value at byte {pos}")
    same = np.frombuffer(buf, np.uint8, (available - 1) * record + 1, pos - 1)[::record] == tag
    run = available if same.all() else int(np.argmin(same))
    records = np.frombuffer(buf, np.dtype([("tag", "u1"), ("value", dtype)]), run, pos - 1)
    return records["value"], pos - 1 + run * record


def _shape(buf: bytearray, pos: int, end: int) -> tuple[int, ...]:
    """BlobShape: its dims (field 1), packed or not."""
    dims: list[int] = []
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == 1 and wire == LENGTH:
            start, pos = _span(buf, pos, end)
            while start < pos:
                dim, start = _varint(buf, start, pos)
                dims.append(dim)
        elif field == 1 and wire == VARINT:
            dim, pos = _varint(buf, pos, end)
            dims.append(dim)
        else:
            pos = _skip(buf, field, wire, pos, end)
    if any(d >= 2**63 for d in dims):  # int64 two's complement: negative
        raise _Malformed(f"negative blob dimension in the shape ending at byte {end}")
    return tuple(dims)


def _varint(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    """A base-128 varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"truncated number at byte {pos}")
        if shift >= 70:
            raise _Malformed(f"a number longer than 10 bytes at byte {pos}")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _tag(buf: bytearray, pos: int, end: int) -> tuple[int, int, int]:
    """A field's tag: (field number, wire type, position after it)."""
    key, after = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0 or wire > FIXED32:
        raise _Malformed(f"invalid field tag {key} at byte {pos}")
    return field, wire, after


def _span(buf: bytearray, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's bytes: (start, stop)."""
    length, start = _varint(buf, pos, end)
    if length > end - start:
        raise _Malformed(
            f"a field of {length} bytes at byte {start} runs past the end at byte {end}"
        )
    return start, start + length


def _skip(buf: bytearray, field: int, wire: int, pos: int, end: int) -> int:
    """The position after a field that is not read, whatever its wire type."""
    if wire == VARINT:
        return _varint(buf, pos, end)[1]
    if wire == LENGTH:
        return _span(buf, pos, end)[1]
    if wire in (FIXED32, FIXED64):
        after = pos + (4 if wire == FIXED32 else 8)
        if after > end:
            raise _Malformed(f"truncated value at byte {pos}")
        return after
    if wire == GROUP_START:  # deprecated groups: fields up to the matching end tag
        while True:
            inner, inner_wire, pos = _tag(buf, pos, end)
            if inner_wire == GROUP_END:
                if inner != field:
                    raise _Malformed(f"group {field} closed as {inner} at byte {pos}")
                return pos
            pos = _skip(buf, inner, inner_wire, pos, end)
    raise _Malformed(f"unexpected end of group {field} at byte {pos}")


def _text(buf: bytearray, start: int, stop: int) -> str:
    try:
        return bytes(buf[start:stop]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"a name that is not UTF-8 text at byte {start}") from None
