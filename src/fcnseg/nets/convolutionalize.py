"""Convolutionalization: fully connected layers as convolutions (paper section 3.1).

A fully connected layer that reads a k x k x C map is a k x k convolution with the
same weights, reshaped; the layers after it are 1 x 1 convolutions. The converted
net accepts any input size and yields a map of class scores, one per window.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def linear_to_conv(linear: nn.Linear, in_channels: int) -> nn.Conv2d:
    """The convolution equivalent to ``linear`` applied to a flattened (C, k, k) input.

    The kernel side ``k`` follows from ``linear.in_features == in_channels * k * k``.
    Weights are copied, reshaped (out, C*k*k) -> (out, C, k, k), in the (C, H, W)
    order that ``torch.flatten`` uses.
    """
    kernel = math.isqrt(linear.in_features // in_channels)
    if in_channels * kernel * kernel != linear.in_features:
        raise ValueError(
            f"{linear} cannot read a square map of {in_channels} channels: "
            f"in_features={linear.in_features} is not {in_channels} * k * k"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    conv.weight.data.copy_(linear.weight.detach().reshape(conv.weight.shape))
    if linear.bias is not None:
        conv.bias.data.copy_(linear.bias.detach())
    return conv


def feature_channels(features: nn.Module) -> int:
    """Number of channels the feature extractor outputs (its last convolution's)."""
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("feature extractor has no Conv2d layer")
    return convs[-1].out_channels


def convolutionalize(classifier: nn.Module) -> nn.Sequential:
    """The fully convolutional equivalent of a classifier laid out like torchvision's VGG/AlexNet.

    ``classifier`` must have ``features`` (convolutions and pooling), ``avgpool``
    (dropped: it is the identity at the training size) and ``classifier`` (a
    sequence of ``Linear``, ``ReLU`` and ``Dropout``). Every ``Linear`` becomes a
    ``Conv2d`` with the same weights: VGG16's fc6 a 7x7 conv, AlexNet's a 6x6 one,
    the later ones 1x1. The classifier itself is left untouched.

    On an input larger than the training size the result is a map of scores. The
    score at (i, j) equals the fully connected layers applied to the k x k window
    of the feature map at (i, j) exactly. It equals the *classifier run on the
    image window* at (stride * i, stride * j) exactly only when the features have
    no zero padding: with padding, a cropped window's border features see zeros
    where the full image has pixels.

    Returns:
        ``nn.Sequential`` with children ``features`` and ``classifier``;
        (N, 3, H, W) -> (N, num_outputs, H', W').

    Example:
        >>> from fcnseg.nets.backbones import VGG16
        >>> import torch
        >>> net = convolutionalize(VGG16().eval())
        >>> net(torch.randn(1, 3, 384, 384)).shape
        torch.Size([1, 1000, 6, 6])
    """
    for name in ("features", "classifier"):
        if not hasattr(classifier, name):
            raise TypeError(f"classifier has no '{name}' module: {type(classifier).__name__}")
    channels = feature_channels(classifier.features)
    layers = []
    for layer in classifier.classifier:
        if isinstance(layer, nn.Linear):
            conv = linear_to_conv(layer, channels)
            channels = conv.out_channels
            layers.append(conv)
        elif isinstance(layer, nn.ReLU | nn.Dropout):
            layers.append(copy.deepcopy(layer))
        else:
            raise TypeError(f"cannot convolutionalize classifier layer {layer!r}")
    return nn.Sequential(
        OrderedDict(features=copy.deepcopy(classifier.features), classifier=nn.Sequential(*layers))
    )


class WindowLinear(nn.Module):
    """A stride-1 convolution computed as the fully connected layer it is, on every window.

    Section 3.1 read backwards: a k x k convolution applies one (C_out, C_in*k*k)
    matrix to the flattened window at every position. Here that is one matrix
    product. A 1x1 kernel needs no unfolding: on a channels-last input the pixels
    already are the rows of an (N*H*W, C_in) matrix. A larger kernel (fc6) unfolds
    the windows (im2col) in the order of the weight's memory layout, so the weight
    is used as it lies, and multiplies ``block`` output channels at a time: for
    VGG16's fc6 on a 22x22 map that measured 1.5-1.7x faster than oneDNN's direct
    convolution on an AVX2 CPU, and blocks of 1024 beat one whole product
    (``bench/layers.py``). Beyond ``max_positions`` output positions the unfolded
    windows would outgrow the weight, so the convolution runs as such.

    For inference: with gradients on (or under ``torch.export``) the k x k case runs
    the convolution. Shares ``conv``'s parameters: the state_dict keys stay
    ``weight`` and ``bias``.

    Shapes: (N, C_in, H, W) -> (N, C_out, H', W'), as ``conv`` gives them.
    """

    def __init__(self, conv: nn.Conv2d, *, block: int = 1024, max_positions: int = 4096) -> None:
        super().__init__()
        plain = conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
        if not plain or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"{conv} is not a plain stride-1 convolution")
        self.weight, self.bias = conv.weight, conv.bias
        self.kernel_size, self.padding = conv.kernel_size, conv.padding
        self.block, self.max_positions = block, max_positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():  # as a convolution, H and W stay dynamic
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        if self.kernel_size == (1, 1) and self.padding == (0, 0):
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return y.permute(0, 3, 1, 2)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, _, h, w = x.shape
        ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        with_grad = torch.is_grad_enabled() and self.weight.requires_grad  # out= has no autograd
        if with_grad or n * ho * wo > self.max_positions:
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        if self.weight.is_contiguous():  # (C_in, kh, kw) order: F.unfold's
            weight = self.weight.flatten(1)
            cols = F.unfold(x, self.kernel_size, padding=self.padding)  # (N, K, L)
            cols = cols.transpose(0, 1).reshape(weight.shape[1], -1)
        else:  # channels-last weight: (kh, kw, C_in) order
            weight = self.weight.permute(0, 2, 3, 1).flatten(1)
            pixels = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (N, H, W, C)
            windows = pixels.unfold(1, kh, 1).unfold(2, kw, 1)  # (N, H', W', C, kh, kw)
            cols = windows.permute(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1).t()
        out = x.new_empty(weight.shape[0], n * ho * wo)
        for start in range(0, weight.shape[0], self.block):
            rows = slice(start, start + self.block)
            if self.bias is None:
                torch.mm(weight[rows], cols, out=out[rows])
            else:
                torch.addmm(self.bias[rows, None], weight[rows], cols, out=out[rows])
        return out.view(-1, n, ho, wo).permute(1, 0, 2, 3)


def fully_connected_as_matmuls(model: nn.Module) -> list[str]:
    """Replace, in place, the layers that are fully connected at heart by :class:`WindowLinear`.

    Those are every plain 1x1 ``Conv2d`` (fc7, the score layers) and every ``Conv2d``
    named ``fc6``. For CPU inference (see :class:`WindowLinear`). Returns the names of
    the replaced modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Conv2d:
                continue
            if child_name != "fc6" and child.kernel_size != (1, 1):
                continue
            try:
                setattr(module, child_name, WindowLinear(child))
            except ValueError:
                continue
            replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
