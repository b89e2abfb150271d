import math

import pytest
import torch

from fcnseg import Upsample, bilinear_kernel


def profile(size):
    """Hand-derived 1-D bilinear profiles: (peak position, values at a few places)."""
    return {
        4: {0: 0.25, 1: 0.75, 2: 0.75, 3: 0.25},
        16: {0: 1 / 16, 7: 15 / 16, 8: 15 / 16, 15: 1 / 16},
        32: {0: 1 / 32, 15: 31 / 32, 16: 31 / 32, 31: 1 / 32},
        63: {0: 1 / 32, 30: 31 / 32, 31: 1.0, 32: 31 / 32, 62: 1 / 32},
        64: {0: 1 / 64, 31: 63 / 64, 32: 63 / 64, 63: 1 / 64},
    }[size]


@pytest.mark.parametrize("size", [4, 16, 32, 63, 64])
def test_bilinear_kernel_values(size):
    k = bilinear_kernel(size)
    assert k.shape == (size, size)
    values = profile(size)
    for i, vi in values.items():
        for j, vj in values.items():
            assert k[i, j].item() == pytest.approx(vi * vj, abs=1e-7)
    assert torch.equal(k, k.T)
    assert torch.equal(k, k.flip(0).flip(1))
    # A kernel of stride s = ceil(size / 2) sums to s * s: it interpolates, it does not scale.
    stride = math.ceil(size / 2)
    assert k.sum().item() == pytest.approx(stride * stride, rel=1e-6)


def interior(n, kernel, stride):
    """Output positions whose source coordinate lies within the n input samples."""
    centre = (kernel - 1) / 2
    return slice(math.ceil(centre), math.floor(stride * (n - 1) + centre) + 1)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (16, 8), (32, 16), (64, 32), (63, 32)])
@pytest.mark.parametrize("learnable", [False, True])
def test_constant_stays_constant(kernel, stride, learnable):
    up = Upsample(3, kernel, stride, learnable=learnable)
    x = torch.full((2, 3, 5, 4), 2.5)
    y = up(x)
    assert y.shape == (2, 3, stride * 4 + kernel, stride * 3 + kernel)
    rows, cols = interior(5, kernel, stride), interior(4, kernel, stride)
    torch.testing.assert_close(y[..., rows, cols], torch.full_like(y[..., rows, cols], 2.5))


@pytest.mark.parametrize("kernel,stride", [(4, 2), (16, 8), (64, 32), (63, 32)])
def test_ramp_stays_ramp(kernel, stride):
    n = 6
    ramp = 3.0 * torch.arange(n, dtype=torch.float64) - 1.0
    x = ramp.expand(1, 2, n, n).clone()  # varies along the width only
    y = Upsample(2, kernel, stride).double()(x)
    cols = interior(n, kernel, stride)
    pos = torch.arange(y.shape[-1], dtype=torch.float64)[cols]
    expected = 3.0 * (pos - (kernel - 1) / 2) / stride - 1.0
    rows = interior(n, kernel, stride)
    torch.testing.assert_close(y[0, 1, rows, cols], expected.expand_as(y[0, 1, rows, cols]))


def test_fixed_equals_dense_learnable_init():
    x = torch.randn(2, 4, 7, 5)
    fixed, dense = Upsample(4, 16, 8), Upsample(4, 16, 8, learnable=True)
    torch.testing.assert_close(fixed(x), dense(x))
    assert "weight" in dict(dense.named_parameters())
    assert not fixed.state_dict()


@pytest.mark.parametrize(
    "kernel,stride,offset", [(64, 32, 19), (16, 8, 31), (63, 32, 18), (4, 2, 0)]
)
@pytest.mark.parametrize("n", [3, 7, 12])
def test_upsample_crop_equals_transposed_conv_then_crop(kernel, stride, offset, n):
    up = Upsample(3, kernel, stride).double()
    x = torch.randn(2, 3, n, n + 1, dtype=torch.float64)
    full = up(x)
    size = (full.shape[-2] - offset, full.shape[-1] - offset - 1)
    expected = full[..., offset : offset + size[0], offset : offset + size[1]]
    torch.testing.assert_close(up.upsample_crop(x, offset, size), expected)
