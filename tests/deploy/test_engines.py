"""The engines (onnxruntime, OpenVINO) on an exported FCN: torch's fp32 logits to 1e-4,
bf16 labels, the per-shape compilations, and one line for what cannot run."""

import sys

import pytest
import torch
import torch.nn.functional as F

import fcnseg
from fcnseg.deploy.engines import MissingExtra, OnnxFileError, OnnxModel, OpenVinoModel
from fcnseg.deploy.export import export_onnx
from fcnseg.train.device import cpu_has_fast_bf16
from tests.conftest import randomize_scores

pytest.importorskip("onnxscript")
SIZES = [(64, 80), (97, 131)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_scores(fcnseg.build_model("fcn8s", 5, width=0.0625), std=0.1).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("engines") / "tiny.onnx"
    export_onnx(model, path)
    return path


def smooth_batch(height: int, width: int, seed: int) -> torch.Tensor:
    """Two images of large smooth blobs (noise gets one class everywhere from a random net)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, 4, 5, generator=generator)
    return 2 * F.interpolate(coarse, size=(height, width), mode="bilinear")


@pytest.fixture(scope="module")
def reference(model):
    """Per size: a batch and torch's fp32 logits for it."""
    with torch.inference_mode():
        return {size: (x, model(x)) for size in SIZES for x in [smooth_batch(*size, sum(size))]}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_fp32_engines_equal_torch_logits(engine, exported, reference):
    pytest.importorskip(engine)
    runner = OnnxModel(exported) if engine == "onnxruntime" else OpenVinoModel(exported)
    assert runner.engine == engine and runner.precision == "fp32"
    for size, (x, expected) in reference.items():
        logits = runner(x)
        assert logits.dtype == torch.float32 and logits.shape == (2, 5, *size)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
        assert len(expected.argmax(1).unique()) > 1  # labels that vary: a wrong class shows
        assert torch.equal(logits.argmax(1), expected.argmax(1))


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="the CPU has no native bf16")
def test_openvino_bf16_labels_agree_with_fp32(exported, reference):
    pytest.importorskip("openvino")
    bf16 = OpenVinoModel(exported, precision="bf16")
    assert bf16.precision == "bf16"
    for x, expected in reference.values():
        logits = bf16(x)
        # Computed in bf16: rounded, yet labelled as fp32 labels.
        assert (logits - expected).abs().max() > 1e-4
        assert (logits.argmax(1) == expected.argmax(1)).float().mean() >= 0.99


def test_openvino_keeps_the_last_shapes_compiled(exported, reference):
    pytest.importorskip("openvino")
    runner = OpenVinoModel(exported, max_shapes=2)
    shapes = [(1, 3, 33, 40), (3, 3, 33, 40), (1, 3, 50, 41)]
    keys = [("latency", 3, 33, 40), ("throughput", 3, 33, 40), ("latency", 3, 50, 41)]
    inputs = {s: torch.randn(s) for s in shapes}
    first = {s: runner(inputs[s]) for s in shapes}
    assert list(runner._compiled) == keys[1:]  # the oldest dropped
    kept = runner._compiled[keys[1]]
    assert torch.equal(runner(inputs[shapes[1]]), first[shapes[1]])
    assert runner._compiled[keys[1]] is kept  # reused, not compiled again
    assert list(runner._compiled) == [keys[2], keys[1]]  # ...and now the newest
    assert torch.equal(runner(inputs[shapes[0]]), first[shapes[0]])  # compiled again
    assert list(runner._compiled) == [keys[1], keys[0]]


def test_openvino_batches_run_image_by_image_in_throughput_mode(exported):
    pytest.importorskip("openvino")
    runner = OpenVinoModel(exported)
    x = torch.randn(5, 3, 37, 45)
    batch = runner(x)  # five requests over the streams, in the batch's order
    assert batch.shape[0] == 5 and list(runner._compiled) == [("throughput", 3, 37, 45)]
    for i in range(5):
        assert torch.allclose(batch[i : i + 1], runner(x[i : i + 1]), atol=1e-5)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_missing_engine_package_is_one_line(engine, exported, monkeypatch):
    monkeypatch.setitem(sys.modules, engine, None)  # its import fails as if not installed
    cls = OnnxModel if engine == "onnxruntime" else OpenVinoModel
    with pytest.raises(MissingExtra) as info:
        cls(exported)
    message = str(info.value)
    assert "\n" not in message and f"--backend {engine} needs the {engine} package" in message
    assert message.endswith("pip install 'fcnseg[cpu]'")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("content", [b"", b"not an ONNX model\n" * 40])
def test_a_corrupt_file_is_one_line_naming_it(engine, content, exported, tmp_path):
    pytest.importorskip(engine)
    bad = tmp_path / "broken model.onnx"
    bad.write_bytes(content)
    cls = OnnxModel if engine == "onnxruntime" else OpenVinoModel
    for path in (bad, tmp_path / "missing.onnx"):
        with pytest.raises(OnnxFileError) as info:
            cls(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
    # A truncated export: a real model's first half.
    bad.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    with pytest.raises(OnnxFileError, match=f"^{bad}: "):
        cls(bad)


def test_engines_take_any_batch_and_float_dtype(exported, reference):
    """Called as the torch model is: one image of a batch gives its row of the logits; a
    bf16 tensor is read as float32."""
    pytest.importorskip("onnxruntime")
    runner = OnnxModel(exported)
    x, expected = reference[SIZES[0]]
    torch.testing.assert_close(runner(x[1:]), expected[1:], rtol=0, atol=1e-4)
    low = x.to(torch.bfloat16)
    torch.testing.assert_close(runner(low), runner(low.float()), rtol=0, atol=0)
