"""Convolutionalization: fully connected layers as convolutions (paper section 3.1).

A fully connected layer that reads a k x k x C map is a k x k convolution with the
same weights, reshaped; the layers after it are 1 x 1 convolutions. The converted
net accepts any input size and yields a map of class scores, one per window.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

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
