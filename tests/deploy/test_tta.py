"""Test-time augmentation against the views computed by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fcnseg
from fcnseg.deploy.inference import Segmenter
from fcnseg.deploy.tta import TestTimeAugmentation, with_tta
from fcnseg.errors import ConfigError
from tests.conftest import randomize_scores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_scores(fcnseg.build_model("fcn8s", 4, width=0.125), std=0.5).eval()


def mirror_symmetric_net() -> nn.Module:
    """Convolutions with left-right symmetric kernels: mirroring the input mirrors the output."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return net.eval()


def test_flip_of_a_symmetric_input_equals_the_plain_prediction():
    net = mirror_symmetric_net()
    half = torch.randn(1, 3, 9, 6)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)  # (1, 3, 9, 12), mirror-symmetric
    with torch.inference_mode():
        plain = net(symmetric).log_softmax(1)
        tta = TestTimeAugmentation(net, flip=True)(symmetric)
        torch.testing.assert_close(tta, plain, rtol=1e-5, atol=1e-5)
        # An input that is not symmetric: the mirrored view really adds something.
        other = torch.randn(1, 3, 9, 12)
        assert not torch.allclose(TestTimeAugmentation(net, flip=True)(other), net(other))


def smooth(n: int, h: int, w: int) -> torch.Tensor:
    """Smooth random images: an untrained net labels white noise with a single class."""
    return F.interpolate(3 * torch.randn(n, 3, 4, 5), size=(h, w), mode="bilinear")


def test_views_are_mapped_back_and_averaged(model):
    x = smooth(2, 37, 50)
    with torch.inference_mode():
        tta = TestTimeAugmentation(model, flip=True, scales=(0.75, 1.0, 1.25))(x)
        views = []
        for scale in (0.75, 1.0, 1.25):
            size = (round(37 * scale), round(50 * scale))
            scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for out in (model(scaled), model(scaled.flip(3)).flip(3)):
                back = F.interpolate(out, size=(37, 50), mode="bilinear", align_corners=False)
                views.append(back.softmax(1))
        expected = torch.stack(views).mean(0).log()
    assert tta.shape == (2, 4, 37, 50)
    torch.testing.assert_close(tta, expected, rtol=1e-5, atol=1e-5)
    assert (tta.argmax(1) != model(x).argmax(1)).any()  # the views change some labels


def test_multi_scale_predictions_have_each_images_size(model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(31, 45, 3), (20, 17, 3)]]
    seg = Segmenter(model, precision="fp32", device="cpu", tta_flip=True, tta_scales=(0.5, 1.5))
    assert [p.shape for p in seg.predict(images)] == [(31, 45), (20, 17)]


def test_no_augmentation_leaves_the_model_alone(model):
    assert with_tta(model) is model
    with pytest.raises(ConfigError, match="--tta-scales"):
        TestTimeAugmentation(model, scales=(1.0, 0.0))
