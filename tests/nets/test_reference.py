"""fcnseg's FCNs against an independent re-implementation of the reference Caffe nets.

The reference (fcn.berkeleyvision.org ``net.py`` files) is written out here with
functional ops: pad 100 on conv1_1, ceil-mode pooling, dense C x C fixed bilinear
deconvolutions, and crops at the offsets printed in the reference prototxts.
"""

import pytest
import torch
import torch.nn.functional as F

import fcnseg
from tests.conftest import randomize_scores

VGG_BLOCKS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]


def dense_bilinear(channels, size):
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    f = 1 - torch.abs(og - centre) / factor
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    for c in range(channels):
        weight[c, c] = f[:, None] * f[None, :]
    return weight


def conv(s, name, x, **kw):
    return F.conv2d(x, s[f"{name}.weight"], s[f"{name}.bias"], **kw)


def crop(x, offset, h, w):
    return x[:, :, offset : offset + h, offset : offset + w]


def reference_vgg_fcn(s, x, num_classes, skips, scales):
    h, w = x.shape[-2:]
    pools = []
    y = x
    for block in VGG_BLOCKS:
        for i in block:
            y = F.relu(conv(s, f"features.{i}", y, padding=100 if i == 0 else 1))
        y = F.max_pool2d(y, 2, 2, ceil_mode=True)
        pools.append(y)
    y = F.relu(conv(s, "fc6", y))
    y = F.relu(conv(s, "fc7", y))
    score = conv(s, "score_fr", y)
    if not skips:
        up = F.conv_transpose2d(score, dense_bilinear(num_classes, 64), stride=32)
        return crop(up, 19, h, w)
    upscore2 = F.conv_transpose2d(score, dense_bilinear(num_classes, 4), stride=2)
    sp4 = conv(s, "score_pool4", pools[3] * scales[0])
    fuse_pool4 = upscore2 + crop(sp4, 5, *upscore2.shape[-2:])
    if skips == 1:
        up = F.conv_transpose2d(fuse_pool4, dense_bilinear(num_classes, 32), stride=16)
        return crop(up, 27, h, w)
    upscore_pool4 = F.conv_transpose2d(fuse_pool4, dense_bilinear(num_classes, 4), stride=2)
    sp3 = conv(s, "score_pool3", pools[2] * scales[1])
    fuse_pool3 = upscore_pool4 + crop(sp3, 9, *upscore_pool4.shape[-2:])
    up = F.conv_transpose2d(fuse_pool3, dense_bilinear(num_classes, 16), stride=8)
    return crop(up, 31, h, w)


def reference_alexnet_fcn(s, x, num_classes):
    h, w = x.shape[-2:]
    y = F.relu(conv(s, "features.0", x, stride=4, padding=100))
    y = F.max_pool2d(y, 3, 2, ceil_mode=True)
    y = F.relu(conv(s, "features.3", y, padding=2))
    y = F.max_pool2d(y, 3, 2, ceil_mode=True)
    for i in (6, 8, 10):
        y = F.relu(conv(s, f"features.{i}", y, padding=1))
    y = F.max_pool2d(y, 3, 2, ceil_mode=True)
    y = F.relu(conv(s, "fc7", F.relu(conv(s, "fc6", y))))
    up = F.conv_transpose2d(conv(s, "score_fr", y), dense_bilinear(num_classes, 63), stride=32)
    return crop(up, 18, h, w)


REFERENCES = {
    "fcn32s": lambda s, x, c: reference_vgg_fcn(s, x, c, 0, (1, 1)),
    "fcn16s": lambda s, x, c: reference_vgg_fcn(s, x, c, 1, (1, 1)),
    "fcn8s": lambda s, x, c: reference_vgg_fcn(s, x, c, 2, (1, 1)),
    "fcn8s-atonce": lambda s, x, c: reference_vgg_fcn(s, x, c, 2, (0.01, 0.0001)),
    "fcn-alexnet": reference_alexnet_fcn,
}


def assert_relative_close(actual, expected, rtol=1e-6):
    err = (actual - expected).abs().max() / expected.abs().max()
    assert expected.abs().max() > 0
    assert err < rtol, f"relative error {err:.3g}"


@pytest.mark.parametrize("name", fcnseg.list_models())
@pytest.mark.parametrize("size", [(1, 1), (17, 23), (64, 64), (45, 61)])
def test_matches_reference_net(name, size):
    num_classes = 4
    model = fcnseg.build_model(name, num_classes, width=0.25)
    # at-once scales pool3 by 1e-4: larger score weights keep that skip visible.
    randomize_scores(model, std=1.0 if name == "fcn8s-atonce" else 0.01)
    model = model.double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.inference_mode():
        out = model(x)
        ref = REFERENCES[name](model.state_dict(), x, num_classes)
    assert out.shape == ref.shape == (2, num_classes, *size)
    assert_relative_close(out, ref)


def test_matches_reference_full_width_fcn8s():
    model = randomize_scores(fcnseg.build_model("fcn8s", 21)).double().eval()
    x = torch.randn(1, 3, 33, 47, dtype=torch.float64)
    with torch.inference_mode():
        assert_relative_close(model(x), REFERENCES["fcn8s"](model.state_dict(), x, 21))


def test_at_once_skips_are_scaled():
    # The skip scales matter: the same weights without them give a different output.
    model = randomize_scores(fcnseg.build_model("fcn8s-atonce", 3, width=0.25), std=1.0)
    model = model.double().eval()
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    with torch.inference_mode():
        unscaled = REFERENCES["fcn8s"](model.state_dict(), x, 3)
        assert (model(x) - unscaled).abs().max() > 1e-3 * unscaled.abs().max()


def efficient_vgg_fcn(s, x, num_classes, skips):
    """The efficient geometry written out: conv1_1 pads 1, fc6 pads 3; crops derived by hand
    (32s: 16; 8s: upscore2 by 1, upscore_pool4 by 1, upscore8 by 4)."""
    h, w = x.shape[-2:]
    pools, y = [], x
    for block in VGG_BLOCKS:
        for i in block:
            y = F.relu(conv(s, f"features.{i}", y, padding=1))
        y = F.max_pool2d(y, 2, 2, ceil_mode=True)
        pools.append(y)
    y = F.relu(conv(s, "fc7", F.relu(conv(s, "fc6", y, padding=3))))
    score = conv(s, "score_fr", y)
    if not skips:
        up = F.conv_transpose2d(score, dense_bilinear(num_classes, 64), stride=32)
        return crop(up, 16, h, w)
    for tap in (pools[3], pools[2]):
        skip = conv(s, f"score_pool{4 if tap is pools[3] else 3}", tap)
        up = F.conv_transpose2d(score, dense_bilinear(num_classes, 4), stride=2)
        score = crop(up, 1, *skip.shape[-2:]) + skip
    up = F.conv_transpose2d(score, dense_bilinear(num_classes, 16), stride=8)
    return crop(up, 4, h, w)


@pytest.mark.parametrize("name,skips", [("fcn32s", 0), ("fcn8s", 2)])
@pytest.mark.parametrize("size", [(1, 1), (17, 23), (64, 64), (45, 61)])
def test_efficient_geometry_matches_hand_derivation(name, skips, size):
    model = randomize_scores(fcnseg.build_model(name, 3, width=0.25, pad=1)).double().eval()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.inference_mode():
        assert_relative_close(model(x), efficient_vgg_fcn(model.state_dict(), x, 3, skips))


def test_efficient_geometry_needs_odd_fc6():
    with pytest.raises(ValueError, match="odd fc6 kernel"):
        fcnseg.build_model("fcn-alexnet", 3, pad=1)
