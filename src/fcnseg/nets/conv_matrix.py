"""Convolution as a matrix, and the transposed convolution as its transpose (section 3.3).

A 2-D convolution is linear in its input: flattening the input and the output,
``vec(conv2d(x)) == C @ vec(x)`` for one matrix ``C`` fixed by the kernel, the
input size, the stride and the padding. Each row of ``C`` is one output pixel:
the kernel's values laid out at its window's input positions, zeros elsewhere.
The transposed convolution (the paper's "deconvolution") multiplies by ``Cᵀ``,
and so does the gradient of the convolution with respect to its input.
"""

from __future__ import annotations

import torch


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 0:
        raise ValueError(f"{what} must be a non-negative int or a pair of them, got {value}")
    return pair


def conv_matrix(
    weight: torch.Tensor,
    in_size: tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """The matrix ``C`` of ``F.conv2d(x, weight, stride=stride, padding=padding)``.

    Vectors are flattened row-major: ``vec(x) = x.reshape(-1)`` for ``x`` of shape
    (C_in, H, W), position ``(c, h, w)`` at ``c * H * W + h * W + w``; likewise the
    output (C_out, H_out, W_out). A bias is not linear and is left out. Zero padding
    needs no columns: a kernel tap that falls on it multiplies a zero.

    ``C.T`` is ``F.conv_transpose2d(y, weight, stride=stride, padding=padding,
    output_padding=r)`` with ``r = (H + 2 * padding - kh) % stride`` (per side),
    and the gradient of the convolution with respect to ``x``.

    Built in one scatter, without a loop per entry. Differentiable in ``weight``.

    Args:
        weight: (C_out, C_in, kh, kw) convolution weight.
        in_size: the input's (H, W).
        stride: the convolution's stride, an int or (sh, sw).
        padding: the convolution's zero padding, an int or (ph, pw).

    Returns:
        Dense (C_out * H_out * W_out, C_in * H * W) tensor, ``weight``'s dtype and
        device, with ``H_out = (H + 2 * ph - kh) // sh + 1`` (likewise ``W_out``).

    Example:
        >>> c = conv_matrix(torch.arange(1.0, 10.0).reshape(1, 1, 3, 3), (4, 4))
        >>> c.shape
        torch.Size([4, 16])
        >>> c[0].tolist()[:8]
        [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]
    """
    if weight.dim() != 4:
        raise ValueError(f"weight must be (C_out, C_in, kh, kw), got shape {tuple(weight.shape)}")
    c_out, c_in, kh, kw = weight.shape
    h, w = _pair(in_size, "in_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    h_out, w_out = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit input {h}x{w} with padding {padding}")
    dev = weight.device

    # Every (output pixel, kernel tap) pair, broadcast to (C_out, H_out, W_out, C_in, kh, kw):
    # output (o, i, j) reads input (c, i * sh - ph + a, j * sw - pw + b) with weight[o, c, a, b].
    o = torch.arange(c_out, device=dev).view(-1, 1, 1, 1, 1, 1)
    i = torch.arange(h_out, device=dev).view(1, -1, 1, 1, 1, 1)
    j = torch.arange(w_out, device=dev).view(1, 1, -1, 1, 1, 1)
    c = torch.arange(c_in, device=dev).view(1, 1, 1, -1, 1, 1)
    a = torch.arange(kh, device=dev).view(1, 1, 1, 1, -1, 1)
    b = torch.arange(kw, device=dev).view(1, 1, 1, 1, 1, -1)
    y, x = i * sh - ph + a, j * sw - pw + b  # (1, H_out, 1, 1, kh, 1), (1, 1, W_out, 1, 1, kw)
    shape = (c_out, h_out, w_out, c_in, kh, kw)
    rows = ((o * h_out + i) * w_out + j).expand(shape)
    cols = ((c * h + y) * w + x).expand(shape)
    inside = ((y >= 0) & (y < h) & (x >= 0) & (x < w)).expand(shape)  # taps off the padding
    values = weight[:, None, None].expand(shape)  # weight[o, c, a, b] at every (i, j)

    matrix = weight.new_zeros(c_out * h_out * w_out, c_in * h * w)
    # Within one row the taps land on distinct columns, so no entry is written twice.
    return matrix.index_put((rows[inside], cols[inside]), values[inside])
