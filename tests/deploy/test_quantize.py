"""``quantize_checkpoint``: an int8 model of a trained tiny FCN-8s whose labels are the fp32
model's on held-out images, on onnxruntime and on OpenVINO, with conv1_1 and the score
layers in float."""

import hashlib
import json
import re

import numpy as np
import pytest
import torch

from fcnseg.cli import main
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.deploy.engines import onnx_metadata
from fcnseg.deploy.export import export_onnx
from fcnseg.deploy.inference import Segmenter
from fcnseg.deploy.quantize import quantize_checkpoint
from fcnseg.errors import ConfigError
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# conv1_1 and the score layers (quantize.KEEP_FLOAT)
KEPT_FLOAT = {"features.0", "score_fr", "score_pool4", "score_pool3"}


def train_tiny(out) -> None:
    """A narrow FCN-8s trained for a few seconds on the synthetic scenes: its labels vary
    and follow the shapes, so that int8 rounding that moved them would show."""
    args = ["train", "--recipe", "synthetic-demo", "--width", "0.0625", "--crop", "64",
            "--batch-size", "4", "--iterations", "60", "--eval-every", "60", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0


def scenes(split: str, indices) -> list[np.ndarray]:
    data = SyntheticDataset(split=split)
    return [data.load_raw(i)[0] for i in indices]


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    same = sum(int((x == y).sum()) for x, y in zip(a, b, strict=True))
    return same / sum(x.size for x in a)


def conv_weights(path) -> dict[str, str]:
    """Each Conv / ConvTranspose of an ONNX file by its layer's name -> ``int8`` (its weight
    an int8 initializer through DequantizeLinear, one scale per output channel) or ``float``
    (its weight a float initializer)."""
    graph = onnx.load_model(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}
    kinds = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = node.input[1]
        if weight in inits:
            assert inits[weight].data_type == onnx.TensorProto.FLOAT
            kinds[weight.removesuffix(".weight")] = "float"
            continue
        dq = made_by[weight]
        assert dq.op_type == "DequantizeLinear"
        quantized, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert quantized.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [quantized.dims[0]]  # per output channel
        kinds[dq.input[0].removesuffix(".weight_quantized")] = "int8"
    return kinds


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """best.pt of a tiny run, and the fp32 torch labels of held-out (val) scenes."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("quantize")
    train_tiny(out / "run")
    images = scenes("val", range(6))
    fp32 = Segmenter.from_checkpoint(out / "run" / "best.pt", backend="torch", precision="fp32")
    return out / "run" / "best.pt", images, fp32.predict(images)


@pytest.fixture(scope="module")
def quantized(trained):
    checkpoint = trained[0]
    output = checkpoint.parent / "int8" / "model.onnx"  # a folder made on the way
    return quantize_checkpoint(checkpoint, scenes("train", range(0, 2000, 250)), output)


def test_the_trained_model_labels_vary(trained):
    _, images, labels = trained
    shares = np.bincount(np.concatenate([x.ravel() for x in labels]), minlength=5)
    shares = shares / shares.sum()
    assert (shares > 0.01).sum() >= 2, shares  # not one class everywhere
    truth = [SyntheticDataset(split="val").load(i)[1] for i in range(len(images))]
    counts = np.bincount(np.concatenate([t.ravel() for t in truth]))
    majority = counts.max() / counts.sum()
    # ...and they follow the scenes: better than the most common class everywhere.
    assert agreement(labels, truth) > majority


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_int8_labels_agree_with_fp32_torch(trained, quantized, engine):
    pytest.importorskip(engine)
    _, images, expected = trained
    seg = Segmenter.from_checkpoint(quantized.path, backend=engine)
    assert (seg.backend.backend, seg.precision) == (engine, "int8")
    assert agreement(seg.predict(images), expected) >= 0.98
    # It is int8 indeed: its logits are not the fp32 model's.
    x = torch.from_numpy(images[0]).permute(2, 0, 1)[None].float() / 255
    model, _ = model_from_checkpoint(trained[0])
    with torch.inference_mode():
        assert (seg.logits(x) - model.eval()(x)).abs().max() > 1e-3


def test_the_file_carries_its_checkpoint(trained, quantized):
    checkpoint = trained[0]
    metadata = onnx_metadata(quantized.path)
    assert metadata["fcnseg.precision"] == "int8"
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert metadata["fcnseg.checkpoint_sha256"] == sha
    saved = load_checkpoint(checkpoint)
    info = json.loads(metadata["fcnseg.checkpoint"])
    for key in ("model_config", "dataset", "normalization", "iteration"):
        assert json.dumps(info[key], sort_keys=True) == json.dumps(saved[key], sort_keys=True)
    assert "model" not in info and "optimizer" not in info  # no weights in the description
    assert set(metadata["fcnseg.float_layers"].split(",")) == KEPT_FLOAT


def test_conv1_1_score_layers_and_upsampling_stay_float(trained, quantized):
    model, _ = model_from_checkpoint(trained[0])
    convs = {n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d}
    assert convs >= KEPT_FLOAT and len(convs) > len(KEPT_FLOAT)
    kinds = conv_weights(quantized.path)
    assert {n for n, k in kinds.items() if k == "int8"} == convs - KEPT_FLOAT
    assert {n for n, k in kinds.items() if k == "float"} >= KEPT_FLOAT
    assert set(quantized.float_layers) == KEPT_FLOAT
    assert set(quantized.int8_layers) == convs - KEPT_FLOAT
    # The upsampling (deconvolutions, the bilinear product) is not quantized.
    graph = onnx.load_model(str(quantized.path)).graph
    deconvs = [n for n in graph.node if n.op_type == "ConvTranspose"]
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    assert deconvs or matmuls
    for node in deconvs + matmuls:
        assert all(made_by.get(i) != "DequantizeLinear" for i in node.input), node.name


def test_a_keep_float_prefix_that_names_no_layer_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match=r"^--keep-float scores: names no convolution"):
        quantize_checkpoint(trained[0], scenes("train", [0]), tmp_path / "m.onnx",
                            keep_float=("scores", "features.0"))  # fmt: skip
    assert not (tmp_path / "m.onnx").exists()


def test_nothing_kept_float_quantizes_every_convolution(trained, tmp_path):
    model, _ = model_from_checkpoint(trained[0])
    convs = {n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d}
    done = quantize_checkpoint(trained[0], scenes("train", [0, 1]), tmp_path / "all.onnx",
                               keep_float=())  # fmt: skip
    assert done.float_layers == () and set(done.int8_layers) == convs
    kinds = conv_weights(tmp_path / "all.onnx")
    assert {n for n, k in kinds.items() if k == "int8"} == convs
    assert onnx_metadata(tmp_path / "all.onnx")["fcnseg.float_layers"] == ""


def test_a_file_fcnseg_did_not_write_is_kept(trained, tmp_path):
    checkpoint = trained[0]
    notes = tmp_path / "notes.onnx"
    notes.write_bytes(b"the user's own file")
    theirs = tmp_path / "theirs.onnx"  # an ONNX model, made without fcnseg's metadata
    export_onnx(model_from_checkpoint(checkpoint)[0], theirs)
    before = {p: p.read_bytes() for p in (notes, theirs)}
    for target in (notes, theirs, checkpoint, tmp_path):
        with pytest.raises(ConfigError, match=f"^{re.escape(str(target))}: ") as info:
            quantize_checkpoint(checkpoint, scenes("train", [0]), target)
        assert "\n" not in str(info.value)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.onnx", "theirs.onnx"]


def test_no_images_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match="^--calibrate: no images"):
        quantize_checkpoint(trained[0], [], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
