import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fcnseg
from fcnseg.data.transforms import normalize_image
from fcnseg.deploy.inference import Segmenter
from fcnseg.errors import ConfigError
from fcnseg.train.checkpoint import save_checkpoint
from fcnseg.train.device import EmulatedBf16Warning
from tests.conftest import (
    dusk_with_bright_sky,
    randomize_scores,
    save_balanced_checkpoints,
    save_tiny_checkpoint,
)


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


@pytest.mark.filterwarnings("ignore::fcnseg.train.device.EmulatedBf16Warning")  # on AVX2
def test_bf16_inference_runs_in_bf16_and_agrees_with_fp32(model):
    # smooth inputs: the untrained net answers noise with one class everywhere
    x = 2 * F.interpolate(torch.randn(2, 3, 3, 4), size=(45, 61), mode="bilinear")
    fp32 = Segmenter(copy.deepcopy(model), precision="fp32", device="cpu")
    bf16 = Segmenter(copy.deepcopy(model), precision="bf16", device="cpu")
    assert bf16.dtype == torch.bfloat16
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}
    reference, low = fp32.logits(x), bf16.logits(x)
    assert low.dtype == torch.float32  # handed back in fp32, computed in bf16
    error = (low - reference).abs().max().item()
    assert 0 < error < 0.05 * reference.abs().max().item()  # rounded, yet close
    assert len(reference.argmax(1).unique()) > 1
    assert (low.argmax(1) == reference.argmax(1)).float().mean() > 0.95


@pytest.mark.parametrize(("flags", "precision", "warns"),
                         [("avx2", "bf16", True), ("avx2", "auto", False),
                          ("avx2 avx512_bf16", "bf16", False)])  # fmt: skip
def test_bf16_on_a_cpu_that_emulates_it_is_warned_of(model, tmp_path, cpu_with, flags,
                                                     precision, warns):  # fmt: skip
    cpu_with(flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg = Segmenter(copy.deepcopy(model), precision=precision, device="cpu")
        loaded = Segmenter.from_checkpoint(save_tiny_checkpoint(tmp_path / "tiny.pt"),
                                           backend="torch", precision=precision,
                                           device="cpu")  # fmt: skip
    assert seg.dtype == loaded.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    ours = [w for w in caught if w.category is EmulatedBf16Warning]
    assert len(ours) == 2 * warns
    assert {w.filename for w in ours} <= {__file__}  # the user's lines, not fcnseg's


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


def test_a_two_head_net_labels_with_its_first_head():
    model = randomize_scores(fcnseg.build_model("fcn32s-sem-geo", 33, width=0.0625), std=1.0)
    image = np.random.default_rng(0).integers(0, 256, (21, 17, 3), dtype=np.uint8)
    x = normalize_image(image, "siftflow")[None]
    with torch.inference_mode():
        expected = model.eval()(x)[0][0].argmax(0).numpy()
    seg = Segmenter(model, precision="fp32", device="cpu", normalization="siftflow")
    np.testing.assert_array_equal(seg.predict(image)[0], expected)


@pytest.mark.parametrize("tta_flip", [False, True])
def test_each_head_of_a_two_head_net(tta_flip):
    """``logits(x, head=k)`` is head k's output (mirrored and averaged with ``tta_flip``)."""
    model = randomize_scores(fcnseg.build_model("fcn32s-sem-geo", 33, width=0.0625), std=1.0)
    x = torch.randn(2, 3, 21, 17)
    with torch.inference_mode():
        outputs = model.eval()(x)
        mirrored = model(x.flip(-1))
    seg = Segmenter(model, precision="fp32", device="cpu", tta_flip=tta_flip)
    for k, out in enumerate(outputs):
        if tta_flip:  # the log of the mean of the two views' probabilities
            out = ((out.softmax(1) + mirrored[k].flip(-1).softmax(1)) / 2).log()
        torch.testing.assert_close(seg.logits(x, head=k), out, atol=1e-4, rtol=1e-4)
        assert seg.as_module(k)(x).shape == out.shape
    for bad in (2, -1):
        with pytest.raises(ConfigError, match=f"^head {bad}: the net has 2 heads: 0 to 1$"):
            seg.as_module(bad)


def test_nets_of_more_channels_are_refused_by_predict():
    seg = Segmenter(fcnseg.build_model("fcn32s-color-hha", 40, width=0.0625), device="cpu")
    with pytest.raises(fcnseg.UserError, match="reads 6 input channels"):
        seg.predict(np.zeros((8, 8, 3), np.uint8))
    assert seg.logits(torch.zeros(1, 6, 8, 8)).shape == (1, 40, 8, 8)


def test_a_grey_world_checkpoint_labels_a_darker_bluer_photo_alike(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "tiny.pt")
    ckpt = torch.load(path, weights_only=False)
    save_checkpoint({**ckpt, "normalization": "imagenet-greyworld"}, tmp_path / "gw.pt")
    image = np.random.default_rng(0).integers(1, 64, (40, 52, 3), dtype=np.uint8) * 2
    # Half the light in red and green: dusk, and a blue cast (exact on the uint8 grid).
    dusk = image // np.array([2, 2, 1], np.uint8)
    balanced = Segmenter.from_checkpoint(tmp_path / "gw.pt", precision="fp32", device="cpu")
    assert balanced.normalization == "imagenet-greyworld"
    np.testing.assert_array_equal(*balanced.predict([image, dusk]))
    plain = Segmenter.from_checkpoint(path, precision="fp32", device="cpu")
    day, night = plain.predict([image, dusk])
    assert (day != night).any()  # without the balance the same net sees another photo


def test_normalization_given_feeds_as_a_checkpoint_saved_with_it(tmp_path):
    """``normalization=`` labels as the checkpoint saved with that normalisation does, and
    refuses one whose pixels are on another scale than the net's."""
    balanced, clipped = save_balanced_checkpoints(tmp_path)
    image = dusk_with_bright_sky()
    fed = Segmenter.from_checkpoint(balanced, precision="fp32", device="cpu",
                                    normalization="imagenet-greyworld-clip")  # fmt: skip
    saved = Segmenter.from_checkpoint(clipped, precision="fp32", device="cpu")
    unclipped = Segmenter.from_checkpoint(balanced, precision="fp32", device="cpu")
    assert fed.normalization == saved.normalization == "imagenet-greyworld-clip"
    assert unclipped.normalization == "imagenet-greyworld"
    (labels,) = fed.predict([image])
    np.testing.assert_array_equal(labels, saved.predict([image])[0])
    assert (labels != unclipped.predict([image])[0]).any()  # the clip changed labels
    with pytest.raises(fcnseg.UserError, match="trained with imagenet-greyworld, whose pixels"):
        Segmenter.from_checkpoint(balanced, device="cpu", normalization="caffe")
