"""Upsampling as transposed convolution, initialised to bilinear interpolation (section 3.3).

A convolution of stride s multiplies its input by a matrix C; its transposed
("deconvolution") layer multiplies by Cᵀ and so upsamples by s. With a bilinear
kernel it interpolates; left learnable it can learn a better upsampling. The
reference's FAQ found fixed and learned equally accurate, so fixed is the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.nets.geometry import CoordMap


def bilinear_profile(size: int) -> torch.Tensor:
    """The 1-D bilinear profile of :func:`bilinear_kernel`, shape (size,), float64."""
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    return 1 - (og - center).abs() / factor


def bilinear_kernel(size: int) -> torch.Tensor:
    """The 2-D bilinear interpolation kernel of the reference nets' surgery.

    ``factor = (size + 1) // 2`` and the kernel peaks at ``factor - 1`` for odd sizes,
    ``factor - 0.5`` for even ones, falling linearly to ``0`` one factor away.

    Args:
        size: kernel side, e.g. ``2 * stride`` (64 for 32x upsampling).

    Returns:
        Tensor of shape (size, size), float32.

    Example:
        >>> bilinear_kernel(4)[0]
        tensor([0.0625, 0.1875, 0.1875, 0.0625])
    """
    profile = bilinear_profile(size)
    return torch.outer(profile, profile).float()


class Upsample(nn.Module):
    """Per-class upsampling: a transposed convolution of kernel ``kernel_size``, ``stride``.

    Fixed (default): every class is interpolated with the same bilinear kernel,
    as a grouped transposed convolution, which is what the reference's dense
    C x C deconvolution with a diagonal bilinear weight computes, at 1/C of the cost.
    Learnable: a dense ``nn.ConvTranspose2d`` (C x C, no bias) initialised so.

    Shapes: (N, C, H, W) -> (N, C, s * (H - 1) + k, s * (W - 1) + k).
    """

    def __init__(
        self, channels: int, kernel_size: int, stride: int, *, learnable: bool = False
    ) -> None:
        super().__init__()
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.learnable = learnable
        kernel = bilinear_kernel(kernel_size)
        if learnable:
            weight = torch.zeros(channels, channels, kernel_size, kernel_size)
            weight[range(channels), range(channels)] = kernel
            self.weight = nn.Parameter(weight)
        else:
            # Derived from the geometry alone, so not part of the state_dict.
            self.register_buffer("kernel", kernel[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learnable:
            return F.conv_transpose2d(x, self.weight, stride=self.stride)
        weight = self.kernel.to(x.dtype).expand(self.channels, 1, -1, -1)
        return F.conv_transpose2d(x, weight, stride=self.stride, groups=self.channels)

    def upsample_crop(self, x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
        """``self(x)`` cropped at ``offset`` to ``size``, computing only the kept pixels
        (:func:`bilinear_upsample_crop` when fixed).

        Shapes: (N, C, h, w) -> (N, C, size[0], size[1]).
        """
        if self.learnable:
            return self(x)[..., offset : offset + size[0], offset : offset + size[1]]
        return bilinear_upsample_crop(x, self.kernel_size, self.stride, offset, size)

    def coord_map(self) -> CoordMap:
        return CoordMap(float(self.stride), (self.kernel_size - 1) / 2)

    def extra_repr(self) -> str:
        kind = "learnable" if self.learnable else "fixed bilinear"
        return f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, {kind}"


def bilinear_upsample_crop(
    x: torch.Tensor, kernel_size: int, stride: int, offset: int, size: tuple[int, int]
) -> torch.Tensor:
    """A fixed bilinear :class:`Upsample` of ``x``, cropped at ``offset`` to ``size``.

    The bilinear kernel is separable, so the cropped output is ``Mh @ x @ Mw^T``
    with small interpolation matrices: the same numbers as the transposed
    convolution, without the dense C x C weight or the cropped margin.

    Shapes: (N, C, h, w) -> (N, C, size[0], size[1]).
    """
    mh = _interpolation_matrix(x.shape[-2], size[0], kernel_size, stride, offset, x)
    mw = _interpolation_matrix(x.shape[-1], size[1], kernel_size, stride, offset, x)
    return mh @ x @ mw.T


def _interpolation_matrix(
    n_in: int, n_out: int, kernel_size: int, stride: int, offset: int, like: torch.Tensor
) -> torch.Tensor:
    # Output y receives input i with weight profile[y + offset - stride * i].
    tap = (
        torch.arange(n_out, device=like.device)[:, None]
        + offset
        - stride * torch.arange(n_in, device=like.device)[None, :]
    )
    inside = (tap >= 0) & (tap < kernel_size)
    profile = bilinear_profile(kernel_size).to(device=like.device, dtype=like.dtype)
    return torch.where(inside, profile[tap.clamp(0, kernel_size - 1)], 0)
