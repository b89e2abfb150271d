import copy

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.deploy.inference import Segmenter
from fcnseg.train.device import resolve_precision
from tests.conftest import randomize_scores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_scores(fcnseg.build_model("fcn8s", 4, width=0.125), std=0.1).eval()


def test_fp32_channels_last_equals_eager(model):
    x = torch.randn(2, 3, 45, 61)
    with torch.inference_mode():
        expected = model(x)
    seg = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu", channels_last=True)
    torch.testing.assert_close(seg.logits(x), expected, rtol=1e-4, atol=1e-5)


def test_compiled_equals_eager(model):
    x = torch.randn(1, 3, 40, 52)
    with torch.inference_mode():
        expected = model(x)
    seg = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu", compile=True)
    torch.testing.assert_close(seg.logits(x), expected, rtol=1e-4, atol=1e-5)


def test_predict_batches_mixed_sizes(model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, s, dtype=np.uint8) for s in
              [(30, 40, 3), (17, 23, 3), (30, 40, 3), (30, 40, 3), (17, 23)]]  # fmt: skip
    seg = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu", batch_size=2)
    batched = seg.predict(images)
    single = [seg.predict(im)[0] for im in images]
    for a, b, im in zip(batched, single, images, strict=True):
        assert a.shape == im.shape[:2] and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", cpu)


def test_onnx_export_matches_torch(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fcnseg.deploy.export import OnnxModel, export_onnx

    path = tmp_path / "fcn8s.onnx"
    export_onnx(model, path)
    onnx_model = OnnxModel(path)
    for shape in [(1, 3, 64, 80), (2, 3, 37, 51)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            expected = model(x)
        out = onnx_model(x)
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < 1e-4
    seg = Segmenter(onnx_model)
    image = np.random.default_rng(1).integers(0, 255, (33, 47, 3), dtype=np.uint8)
    torch_seg = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu")
    agree = (seg.predict(image)[0] == torch_seg.predict(image)[0]).mean()
    assert agree > 0.999


def test_model_prepared_for_cpu_inference_still_exports(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fcnseg.deploy.export import OnnxModel, export_onnx

    seg = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu")  # 1x1 convs as matmuls
    export_onnx(seg.model, tmp_path / "prepared.onnx")
    x = torch.randn(2, 3, 50, 66)
    with torch.inference_mode():
        expected = model(x)
    assert (OnnxModel(tmp_path / "prepared.onnx")(x) - expected).abs().max().item() < 1e-4
