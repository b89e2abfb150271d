"""The caffemodel reader against files written by protobuf's own encoder (caffe_writer)."""

import numpy as np
import pytest

from fcnseg.nets.caffemodel import read_caffemodel
from fcnseg.nets.weights import WeightsError
from tests.nets.caffe_writer import classes, encode, key, varint, write_caffemodel

RNG = np.random.default_rng(0)
LAYERS = [
    ("conv1", "Convolution", [RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)]),
    ("fc", "InnerProduct", [RNG.standard_normal((5, 6)), RNG.standard_normal(5)]),
    ("up", "Deconvolution", [RNG.standard_normal((2, 2, 4, 4))]),
]


def root(array):
    """The object at the bottom of a chain of numpy views."""
    while isinstance(array, np.ndarray):
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def legacy_shape(shape):
    return (1,) * (4 - len(shape)) + shape


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy-layers"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("double", [False, True], ids=["float", "double"])
def test_reads_what_protobuf_wrote(tmp_path, legacy, packed, double):
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, LAYERS, legacy=legacy, packed=packed, double=double)
    layers = read_caffemodel(path)
    # Every layer in the file's order, weightless ones (data, ReLU) included.
    assert list(layers) == ["data", "conv1", "relu_conv1", "fc", "relu_fc", "up", "relu_up"]
    assert layers["data"].type == "Data" and layers["relu_fc"] == ("ReLU", [])
    for name, kind, blobs in LAYERS:
        assert layers[name].type == kind
        assert len(layers[name].blobs) == len(blobs)
        for written, read in zip(blobs, layers[name].blobs, strict=True):
            assert read.shape == (legacy_shape(written.shape) if legacy else written.shape)
            assert read.dtype == (np.float64 if double else np.float32)
            expected = written if double else written.astype(np.float32)
            np.testing.assert_array_equal(read.reshape(written.shape), expected)


def test_packed_values_are_views_of_one_buffer(tmp_path):
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, LAYERS)
    layers = read_caffemodel(path)
    bases = {id(root(blob)) for layer in layers.values() for blob in layer.blobs}
    assert len(bases) == 1  # no copies: every blob views the file's bytes
    assert isinstance(root(layers["fc"].blobs[0]), bytearray)
    blob = layers["conv1"].blobs[0]
    assert blob.flags.writeable  # so torch.from_numpy takes it without a warning


def test_unpacked_encoding_is_really_unpacked():
    # The writer's two encodings differ as protobuf says: 5 bytes per float unpacked.
    values = [np.ones(1000)]
    packed = encode([("a", "Convolution", values)], packed=True)
    unpacked = encode([("a", "Convolution", values)], packed=False)
    assert len(unpacked) - len(packed) == pytest.approx(1000, abs=20)


def test_unpacked_values_split_by_other_fields(tmp_path):
    # Repeated fields may come in several runs: floats, another field, more floats.
    m = classes(False)
    blob = m["BlobProto"]()
    blob.shape.dim.extend([5])
    blob.data.extend([1.0, 2.0, 3.0])
    first = blob.SerializeToString()
    blob = m["BlobProto"]()
    blob.data.extend([4.0, 5.0])
    blob.num = 0  # a varint between the runs
    second = blob.SerializeToString()
    net = m["NetParameter"]()
    net.layer.add(name="x", type="Convolution").blobs.add().ParseFromString(first + second)
    path = tmp_path / "split.caffemodel"
    path.write_bytes(net.SerializeToString())
    np.testing.assert_array_equal(read_caffemodel(path)["x"].blobs[0], [1, 2, 3, 4, 5])


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path):
    m = classes(True)
    net = m["NetParameter"]()
    layer = net.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2])
    blob.data.extend([1.5, -2.5])
    blob.diff.extend([9.0, 9.0])  # gradients: not weights
    inner = layer.SerializeToString()
    # A layer with unknown fields of every wire type, its blob between them.
    number, fixed64 = key(500, 0) + varint(150), key(501, 1) + bytes(8)
    length, fixed32 = key(502, 2) + varint(3) + b"abc", key(503, 5) + bytes(4)
    group = key(504, 3) + key(1, 0) + bytes([7]) + key(2, 2) + bytes([1, 0]) + key(504, 4)
    layer_bytes = number + fixed64 + inner + length + fixed32 + group
    path = tmp_path / "unknown.caffemodel"
    path.write_bytes(key(100, 2) + varint(len(layer_bytes)) + layer_bytes + group + fixed32)
    layers = read_caffemodel(path)
    assert list(layers) == ["conv"]
    np.testing.assert_array_equal(layers["conv"].blobs[0], [1.5, -2.5])


def test_legacy_enum_types_are_named(tmp_path):
    path = tmp_path / "v1.caffemodel"
    layers = [("c", "Convolution", [np.ones((1, 1, 1, 1))]),
              ("d", "Deconvolution", [np.ones((1, 1, 2, 2))])]  # fmt: skip
    write_caffemodel(path, layers, legacy=True)
    layers = read_caffemodel(path)
    assert (layers["c"].type, layers["d"].type, layers["relu_c"].type) == (
        "Convolution",
        "Deconvolution",
        "ReLU",
    )


@pytest.mark.parametrize("cut", [1, 2, 10, 0.5, -3, -1])
def test_truncated_file_is_one_line_naming_it(tmp_path, cut):
    data = encode(LAYERS)
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(WeightsError) as e:
        read_caffemodel(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"name: 'FCN'\nlayer { name: 'conv1_1' }\n",  # a prototxt, not a caffemodel
        b"PK\x03\x04" + bytes(60),  # a zip (torch's format)
        bytes(range(256)) * 4,
        key(100, 0) + bytes([5]),  # the layer field with the wrong wire type
    ],
    ids=["empty", "prototxt", "zip", "noise", "wrong-wire-type"],
)
def test_not_a_caffemodel_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as e:
        read_caffemodel(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_blob_whose_shape_disagrees_with_its_data(tmp_path):
    m = classes(True)
    net = m["NetParameter"]()
    blob = net.layer.add(name="conv1", type="Convolution").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError, match=r"conv1 blob 0 has shape \(2, 3\) but 5 values"):
        read_caffemodel(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WeightsError, match="no such caffemodel"):
        read_caffemodel(tmp_path / "none.caffemodel")
    with pytest.raises(WeightsError, match="is a folder"):
        read_caffemodel(tmp_path)
