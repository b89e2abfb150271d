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
        >>> from fcnseg.backbones import VGG16
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


class PointwiseLinear(nn.Module):
    """A 1x1 convolution run as the fully connected layer it is, at every position.

    fc7 and the score layers are 1x1 convolutions (section 3.1): one matrix applied
    to the channel vector of each pixel. On a channels-last input the pixels are
    already the rows of an (N*H*W, C) matrix, so this is a single ``F.linear`` with
    no layout change. Shares ``conv``'s parameters: the state_dict keys stay
    ``weight`` and ``bias``.

    Shapes: (N, C_in, H, W) -> (N, C_out, H, W), the output channels-last.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1)
        if not pointwise or conv.padding != (0, 0) or conv.groups != 1:
            raise ValueError(f"{conv} is not a plain 1x1 convolution")
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():  # the 1x1 convolution exports with dynamic shapes
            return F.conv2d(x, self.weight, self.bias)
        y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return y.permute(0, 3, 1, 2)


def pointwise_as_linear(model: nn.Module) -> list[str]:
    """Replace, in place, every plain 1x1 ``Conv2d`` in ``model`` by a :class:`PointwiseLinear`.

    For channels-last inference on CPUs: oneDNN's channels-last 1x1 convolution
    measured 2.4x slower than the matrix product for VGG16's fc7 on an AVX2 CPU
    (``bench/inference.py``). Returns the names of the replaced modules.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Conv2d and child.kernel_size == (1, 1):
                try:
                    setattr(module, child_name, PointwiseLinear(child))
                except ValueError:
                    continue
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
