"""fcnseg's FCNs against an independent re-implementation of the reference Caffe nets.

The reference (fcn.berkeleyvision.org ``net.py`` files) is written out here with
functional ops: pad 100 on conv1_1, ceil-mode pooling, dense C x C fixed bilinear
deconvolutions, and crops at the offsets printed in the reference prototxts. So are
the nets of the paper's section 5: CaffeNet's FCN-AlexNet (LRN and two-group
convolutions written out by hand), NYUDv2's RGB-D and colour + HHA nets, and SIFT
Flow's two heads.
"""

import math

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


def vgg_trunk(s, x):
    """The pooling layers' outputs and fc7's."""
    pools = []
    y = x
    for block in VGG_BLOCKS:
        for i in block:
            y = F.relu(conv(s, f"features.{i}", y, padding=100 if i == 0 else 1))
        y = F.max_pool2d(y, 2, 2, ceil_mode=True)
        pools.append(y)
    y = F.relu(conv(s, "fc6", y))
    return pools, F.relu(conv(s, "fc7", y))


def reference_vgg_fcn(s, x, num_classes, skips, scales):
    h, w = x.shape[-2:]
    pools, fc7 = vgg_trunk(s, x)
    score = conv(s, "score_fr", fc7)
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


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's across-channel LRN: x / (k + alpha / size * sum of squares over a window
    of ``size`` channels centred on each, zero beyond the ends) ** beta."""
    squares = F.pad(x * x, (0, 0, 0, 0, size // 2, size // 2))  # pads the channel axis
    window = sum(squares[:, i : i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def grouped_conv(s, name, x, groups=2, **kw):
    """A convolution of ``groups`` groups as that many convolutions on channel slices."""
    weights, biases = s[f"{name}.weight"].chunk(groups, 0), s[f"{name}.bias"].chunk(groups, 0)
    parts = zip(x.chunk(groups, 1), weights, biases, strict=True)
    return torch.cat([F.conv2d(xi, wi, bi, **kw) for xi, wi, bi in parts], 1)


def reference_caffenet_fcn(s, x, num_classes, norm=lrn):
    """voc-fcn-alexnet/net.py: conv -> relu -> pool -> norm, conv2/4/5 in two groups."""
    h, w = x.shape[-2:]
    y = F.relu(conv(s, "features.0", x, stride=4, padding=100))
    y = norm(F.max_pool2d(y, 3, 2, ceil_mode=True))
    y = F.relu(grouped_conv(s, "features.4", y, padding=2))
    y = norm(F.max_pool2d(y, 3, 2, ceil_mode=True))
    y = F.relu(conv(s, "features.8", y, padding=1))
    y = F.relu(grouped_conv(s, "features.10", y, padding=1))
    y = F.relu(grouped_conv(s, "features.12", y, padding=1))
    y = F.max_pool2d(y, 3, 2, ceil_mode=True)
    y = F.relu(conv(s, "fc7", F.relu(conv(s, "fc6", y))))
    up = F.conv_transpose2d(conv(s, "score_fr", y), dense_bilinear(num_classes, 63), stride=32)
    return crop(up, 18, h, w)


def reference_sem_geo(s, x, num_classes, skips):
    """siftflow-fcn*/net.py: one trunk, a semantic head (``_sem``) and a geometric one
    (``_geo``, 3 classes), each the VOC net's head with its own layers."""
    heads = []
    for suffix, classes in (("_sem", num_classes), ("_geo", 3)):
        # The trunk's weights, and this head's score layers without their suffix.
        own = {k.replace(suffix, ""): v for k, v in s.items()
               if suffix in k or not k.startswith("score_")}  # fmt: skip
        heads.append(reference_vgg_fcn(own, x, classes, skips, (1, 1)))
    return tuple(heads)


def reference_color_hha(s, x, num_classes):
    """nyud-fcn32s-color-hha/net.py: score_frcolor and score_frhha summed with
    coefficients 0.5, 0.5 (score_fused), one upscore, crop 19."""
    h, w = x.shape[-2:]
    scores = []
    for stream, part in (("color", x[:, :3]), ("hha", x[:, 3:])):
        own = {k.removeprefix(f"{stream}."): v for k, v in s.items() if k.startswith(f"{stream}.")}
        scores.append(conv(own, "score_fr", vgg_trunk(own, part)[1]))
    fused = 0.5 * scores[0] + 0.5 * scores[1]
    up = F.conv_transpose2d(fused, dense_bilinear(num_classes, 64), stride=32)
    return crop(up, 19, h, w)


REFERENCES = {
    "fcn32s": lambda s, x, c: reference_vgg_fcn(s, x, c, 0, (1, 1)),
    "fcn16s": lambda s, x, c: reference_vgg_fcn(s, x, c, 1, (1, 1)),
    "fcn8s": lambda s, x, c: reference_vgg_fcn(s, x, c, 2, (1, 1)),
    "fcn8s-atonce": lambda s, x, c: reference_vgg_fcn(s, x, c, 2, (0.01, 0.0001)),
    "fcn-alexnet": reference_alexnet_fcn,
    "fcn-alexnet-caffe": reference_caffenet_fcn,
    # nyud-fcn32s-color-d: FCN-32s whose conv1_1 reads 4 channels (BGR + depth).
    "fcn32s-color-d": lambda s, x, c: reference_vgg_fcn(s, x, c, 0, (1, 1)),
    "fcn32s-color-hha": reference_color_hha,
    "fcn32s-sem-geo": lambda s, x, c: reference_sem_geo(s, x, c, 0),
    "fcn16s-sem-geo": lambda s, x, c: reference_sem_geo(s, x, c, 1),
    "fcn8s-sem-geo": lambda s, x, c: reference_sem_geo(s, x, c, 2),
}
# Caffe's inputs are on the 0-255 scale: LRN (alpha 1e-4) only acts on large activations.
INPUT_SCALE = {"fcn-alexnet-caffe": 100.0}


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


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
    x = INPUT_SCALE.get(name, 1.0) * torch.randn(2, model.in_channels, *size, dtype=torch.float64)
    with torch.inference_mode():
        out = as_tuple(model(x))
        ref = as_tuple(REFERENCES[name](model.state_dict(), x, num_classes))
    assert len(out) == len(ref)
    for o, r in zip(out, ref, strict=True):
        assert o.shape == r.shape == (2, r.shape[1], *size)
        assert_relative_close(o, r)


def test_caffenet_normalises():
    # Without the LRN layers the reference's output is another: the test above sees them.
    model = randomize_scores(fcnseg.build_model("fcn-alexnet-caffe", 3, width=0.25))
    model = model.double().eval()
    x = 100 * torch.randn(1, 3, 40, 40, dtype=torch.float64)
    with torch.inference_mode():
        plain = reference_caffenet_fcn(model.state_dict(), x, 3, norm=lambda y: y)
        assert (model(x) - plain).abs().max() > 1e-3 * plain.abs().max()


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


def efficient_shapes(h, w, skips):
    """Every map's (H, W) in the efficient geometry, from arithmetic alone: 'same'
    convolutions keep the size, ceil-mode pooling halves it rounding up, a 2x
    upsampling (kernel 4, stride 2) of n is 2n + 2, the final one (kernel 2s, stride s) sn + s."""
    pool = {k: (math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(1, 6)}
    up2 = lambda n: (2 * n[0] + 2, 2 * n[1] + 2)  # noqa: E731
    shapes = {f"pool{k}": pool[k] for k in pool}
    shapes |= {name: pool[5] for name in ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7")}
    shapes["score_fr"] = pool[5]
    if not skips:
        return shapes | {"upscore": (32 * pool[5][0] + 32, 32 * pool[5][1] + 32)}
    shapes |= {"upscore2": up2(pool[5]), "score_pool4": pool[4]}
    shapes |= {"upscore_pool4": up2(pool[4]), "score_pool3": pool[3]}
    return shapes | {"upscore8": (8 * pool[3][0] + 8, 8 * pool[3][1] + 8)}


def efficient_vgg_fcn(s, x, num_classes, skips):
    """The efficient geometry written out: conv1_1 pads 1, fc6 pads 3; crops derived by hand
    (32s: 16; 8s: upscore2 by 1, upscore_pool4 by 1, upscore8 by 4). Every map's size is
    checked against :func:`efficient_shapes`."""
    h, w = x.shape[-2:]
    shapes = efficient_shapes(h, w, skips)

    def sized(name, t):
        assert tuple(t.shape[-2:]) == shapes[name], name
        return t

    pools, y = [], x
    for k, block in enumerate(VGG_BLOCKS, 1):
        for i in block:
            y = F.relu(conv(s, f"features.{i}", y, padding=1))
        y = sized(f"pool{k}", F.max_pool2d(y, 2, 2, ceil_mode=True))
        pools.append(y)
    y = F.relu(sized("fc6", conv(s, "fc6", y, padding=3)))
    y = F.relu(sized("fc7", conv(s, "fc7", y)))
    score = sized("score_fr", conv(s, "score_fr", y))
    if not skips:
        up = sized("upscore", F.conv_transpose2d(score, dense_bilinear(num_classes, 64), stride=32))
        return crop(up, 16, h, w)
    for tap, up_name in ((4, "upscore2"), (3, "upscore_pool4")):
        skip = sized(f"score_pool{tap}", conv(s, f"score_pool{tap}", pools[tap - 1]))
        up = F.conv_transpose2d(score, dense_bilinear(num_classes, 4), stride=2)
        score = crop(sized(up_name, up), 1, *skip.shape[-2:]) + skip
    up = sized("upscore8", F.conv_transpose2d(score, dense_bilinear(num_classes, 16), stride=8))
    return crop(up, 4, h, w)


def map_shapes(model, x):
    """(H, W) of every named map ``model`` computes on ``x`` (forward hooks); the pooling
    layers as pool1..pool5 in order."""
    names = {m: name for name, m in model.named_children() if name != "features"}
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    names |= {m: f"pool{k}" for k, m in enumerate(pools, 1)}
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, i, out: shapes.__setitem__(names[m], out.shape))
             for m in names]  # fmt: skip
    try:
        out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return out, {name: tuple(shape[-2:]) for name, shape in shapes.items()}


@pytest.mark.parametrize("name,skips", [("fcn32s", 0), ("fcn8s", 2)])
@pytest.mark.parametrize("size", [(1, 1), (17, 23), (64, 64), (45, 61)])
def test_efficient_geometry_matches_hand_derivation(name, skips, size):
    model = randomize_scores(fcnseg.build_model(name, 3, width=0.25, pad=1)).double().eval()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    with torch.inference_mode():
        out, shapes = map_shapes(model, x)
        assert_relative_close(out, efficient_vgg_fcn(model.state_dict(), x, 3, skips))
    assert out.shape == (1, 3, *size)
    # Every map the model computes (the final upsampling crops as it goes: not hooked).
    expected = efficient_shapes(*size, skips)
    assert shapes == {k: v for k, v in expected.items() if not k.startswith("upscore") or
                      k in model.upsamplers}  # fmt: skip


def test_efficient_geometry_needs_odd_fc6():
    with pytest.raises(ValueError, match="odd fc6 kernel"):
        fcnseg.build_model("fcn-alexnet", 3, pad=1)
