"""An independent caffemodel writer for the tests: protobuf's own encoder, not fcnseg's reader.

The messages are declared here with ``descriptor_pb2`` after Caffe's ``caffe.proto``
(the fields a caffemodel holds, plus some the reader must skip), once with packed
repeated numbers (what Caffe writes) and once unpacked (proto2's default encoding).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")
message_factory = pytest.importorskip("google.protobuf.message_factory")

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
T = {"string": F.TYPE_STRING, "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE,
     "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32,
     "bool": F.TYPE_BOOL, "fixed64": F.TYPE_FIXED64}  # fmt: skip

# message -> (field name, number, label, type or message name)
MESSAGES = {
    "BlobShape": [("dim", 1, REPEATED, "int64")],
    "BlobProto": [
        ("shape", 7, OPTIONAL, "BlobShape"), ("data", 5, REPEATED, "float"),
        ("diff", 6, REPEATED, "float"), ("double_data", 8, REPEATED, "double"),
        ("num", 1, OPTIONAL, "int32"), ("channels", 2, OPTIONAL, "int32"),
        ("height", 3, OPTIONAL, "int32"), ("width", 4, OPTIONAL, "int32"),
    ],
    "ParamSpec": [("name", 1, OPTIONAL, "string"), ("lr_mult", 3, OPTIONAL, "float")],
    "ConvolutionParameter": [
        ("num_output", 1, OPTIONAL, "uint32"), ("bias_term", 2, OPTIONAL, "bool"),
        ("kernel_size", 4, REPEATED, "uint32"),
    ],
    "LayerParameter": [
        ("name", 1, OPTIONAL, "string"), ("type", 2, OPTIONAL, "string"),
        ("bottom", 3, REPEATED, "string"), ("top", 4, REPEATED, "string"),
        ("loss_weight", 5, REPEATED, "float"), ("param", 6, REPEATED, "ParamSpec"),
        ("blobs", 7, REPEATED, "BlobProto"), ("phase", 10, OPTIONAL, "int32"),
        ("convolution_param", 106, OPTIONAL, "ConvolutionParameter"),
    ],
    "V1LayerParameter": [
        ("bottom", 2, REPEATED, "string"), ("top", 3, REPEATED, "string"),
        ("name", 4, OPTIONAL, "string"), ("type", 5, OPTIONAL, "int32"),
        ("blobs", 6, REPEATED, "BlobProto"), ("blobs_lr", 7, REPEATED, "float"),
        ("convolution_param", 10, OPTIONAL, "ConvolutionParameter"),
        ("checksum", 1003, OPTIONAL, "fixed64"),
    ],
    "NetParameter": [
        ("name", 1, OPTIONAL, "string"), ("input", 3, REPEATED, "string"),
        ("input_dim", 4, REPEATED, "int32"), ("force_backward", 5, OPTIONAL, "bool"),
        ("layer", 100, REPEATED, "LayerParameter"), ("layers", 2, REPEATED, "V1LayerParameter"),
    ],
}  # fmt: skip

# V1LayerParameter.LayerType, from caffe.proto.
V1_TYPES = {"Convolution": 4, "Deconvolution": 39, "InnerProduct": 14, "ReLU": 18,
            "Pooling": 17, "Data": 5, "SoftmaxWithLoss": 21, "LRN": 15, "Eltwise": 25}  # fmt: skip


@functools.cache
def classes(packed: bool) -> dict:
    """The message classes, repeated numbers ``packed`` or not."""
    package = f"caffetest{'packed' if packed else 'unpacked'}"
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto", package=package, syntax="proto2"
    )
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, label, kind in fields:
            f = message.field.add(name=field, number=number, label=label)
            if kind in T:
                f.type = T[kind]
                if label == REPEATED and kind != "string":
                    f.options.packed = packed
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".{package}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in MESSAGES
    }


def fill_blob(blob, array: np.ndarray, *, legacy: bool, double: bool) -> None:
    """A BlobProto holding ``array``: legacy num/channels/height/width (leading 1s, as
    old Caffe wrote) or a BlobShape; float32 data or float64 double_data."""
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    if double:
        blob.double_data.extend(array.astype(np.float64).ravel().tolist())
    else:
        blob.data.extend(array.astype(np.float32).ravel().tolist())


def encode(
    layers: list[tuple[str, str, list[np.ndarray]]],
    *,
    legacy: bool = False,
    packed: bool = True,
    double: bool = False,
) -> bytes:
    """A caffemodel's bytes: ``(name, type, blobs)`` per layer, a data layer first and
    a ReLU after every layer with blobs (no weights, as in a real net), with fields
    the reader skips (bottoms, tops, params, convolution_param, a checksum, the net's
    inputs) and, appended, an unknown group and an unknown fixed64."""
    m = classes(packed)
    net = m["NetParameter"](name="test-net", input=["data"], input_dim=[1, 3, 8, 8])
    net.force_backward = True
    every = [("data", "Data", []), *layers]
    for name, kind, blobs in every:
        relu = [(f"relu_{name}", "ReLU", [])] if blobs else []
        for lname, lkind, lblobs in [(name, kind, blobs), *relu]:
            if legacy:
                layer = net.layers.add(name=lname, type=V1_TYPES[lkind], bottom=["x"], top=["y"])
                layer.blobs_lr.extend([1.0, 2.0])
                layer.checksum = 0xDEADBEEF
            else:
                layer = net.layer.add(name=lname, type=lkind, bottom=["x"], top=["y"])
                layer.loss_weight.append(0.0)
                layer.param.add(name="w", lr_mult=1.0)
                layer.phase = 1
            if lblobs:
                layer.convolution_param.num_output = lblobs[0].shape[0]
                layer.convolution_param.kernel_size.extend([3, 3])
            for array in lblobs:
                fill_blob(layer.blobs.add(), array, legacy=legacy, double=double)
    unknown_group = key(77, 3) + key(1, 0) + bytes([1]) + key(77, 4)
    unknown_fixed64 = key(78, 1) + bytes(8)
    return net.SerializeToString() + unknown_group + unknown_fixed64


def key(field: int, wire: int) -> bytes:
    """A field's tag (wire types: 0 varint, 1 fixed64, 2 length, 3/4 group, 5 fixed32)."""
    return varint(field << 3 | wire)


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint, least significant group first."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def write_caffemodel(path, layers, **kw) -> None:
    """Write :func:`encode`'s bytes to ``path``."""
    with open(path, "wb") as f:
        f.write(encode(layers, **kw))
