import pytest
import torch
import torch.nn.functional as F

from fcnseg import Upsample
from fcnseg.nets import conv_matrix

TOL = {"rtol": 0, "atol": 1e-10}

# (C_in, C_out, kernel, (H, W)): one channel, several, a non-square input, odd sizes.
CASES = [(1, 1, 3, (4, 4)), (2, 3, 3, (7, 5)), (3, 2, 4, (9, 8)), (4, 5, 1, (5, 7))]


def output_padding(size, kernel, stride, padding):
    """The rows the convolution's floor dropped, which the transposed one must give back."""
    return tuple((n + 2 * padding - kernel) % stride for n in size)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("c_in, c_out, kernel, size", CASES)
def test_c_is_conv2d_and_its_transpose_is_conv_transpose2d_and_the_gradient(
    c_in, c_out, kernel, size, stride, padding
):
    weight = torch.randn(c_out, c_in, kernel, kernel, dtype=torch.float64)
    x = torch.randn(c_in, *size, dtype=torch.float64, requires_grad=True)
    c = conv_matrix(weight, size, stride=stride, padding=padding)

    y = F.conv2d(x[None], weight, stride=stride, padding=padding)[0]
    assert c.shape == (y.numel(), x.numel())
    torch.testing.assert_close(c @ x.detach().reshape(-1), y.detach().reshape(-1), **TOL)

    g = torch.randn_like(y)
    pad_out = output_padding(size, kernel, stride, padding)
    transposed = F.conv_transpose2d(
        g[None], weight, stride=stride, padding=padding, output_padding=pad_out
    )[0]
    assert transposed.shape == x.shape
    torch.testing.assert_close(c.T @ g.reshape(-1), transposed.reshape(-1), **TOL)

    (grad,) = torch.autograd.grad(y, x, g)  # vector-Jacobian product: Cᵀ g
    torch.testing.assert_close(c.T @ g.reshape(-1), grad.reshape(-1), **TOL)


def test_worked_example_4x4_input_3x3_kernel_entry_by_entry():
    # Kernel values 1..9 row by row. Output pixel (i, j) reads the input pixels
    # (i + a, j + b), a, b in 0..2, whose flat indices 4 * (i + a) + (j + b) are
    # row 0 (0,0): 0 1 2 | 4 5 6 | 8 9 10      row 1 (0,1): 1 2 3 | 5 6 7 | 9 10 11
    # row 2 (1,0): 4 5 6 | 8 9 10 | 12 13 14   row 3 (1,1): 5 6 7 | 9 10 11 | 13 14 15
    expected = torch.tensor(
        [
            [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0, 0],
            [0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0],
            [0, 0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9],
        ],
        dtype=torch.float64,
    )
    weight = torch.arange(1, 10, dtype=torch.float64).reshape(1, 1, 3, 3)
    c = conv_matrix(weight, (4, 4))
    assert c.shape == (4, 16)
    assert torch.equal(c, expected)
    assert (c != 0).sum(dim=1).tolist() == [9, 9, 9, 9]


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("size", [(3, 3), (4, 6)])
def test_fcn_upsampling_layer_is_c_transpose_of_the_matching_convolution(learnable, size):
    # Upsample(C, 4, 2) maps (h, w) to (2h + 2, 2w + 2); the convolution with the
    # same kernel and stride maps (2h + 2, 2w + 2) back to (h, w).
    channels = 3
    up = Upsample(channels, 4, 2, learnable=learnable).double()
    weight = up.weight.detach() if learnable else torch.zeros(channels, channels, 4, 4).double()
    if not learnable:  # the fixed layer is grouped: per class, the same bilinear kernel
        weight[range(channels), range(channels)] = up.kernel[0, 0].double()
    h, w = size
    big = (2 * h + 2, 2 * w + 2)
    c = conv_matrix(weight, big, stride=2)
    assert c.shape == (channels * h * w, channels * big[0] * big[1])
    x = torch.randn(channels, h, w, dtype=torch.float64)
    with torch.no_grad():
        y = up(x[None])[0]
    assert y.shape == (channels, *big)
    torch.testing.assert_close(c.T @ x.reshape(-1), y.reshape(-1), **TOL)


def test_gradient_reaches_the_weight():
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 5, 5, dtype=torch.float64)
    (conv_matrix(weight, (5, 5), padding=1) @ x.reshape(-1)).sum().backward()
    expected = torch.autograd.grad(F.conv2d(x[None], weight, padding=1).sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, **TOL)


def test_bad_arguments():
    with pytest.raises(ValueError, match="C_out, C_in"):
        conv_matrix(torch.ones(3, 3), (4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        conv_matrix(torch.ones(1, 1, 5, 5), (3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv_matrix(torch.ones(1, 1, 3, 3), (4, 4), stride=0)
