"""Coordinate maps between feature maps, and the crops they imply (paper section 4.2).

Every spatial layer maps the coordinates of its input to those of its output by an
affine function ``y_out = scale * y_in + offset``. Composing these along a path gives
the position of each data pixel in any feature map. Two maps of the same scale are
aligned by cropping the larger one by the difference of their offsets: this is how
the reference nets' ``Crop`` layers get their offsets (19 for FCN-32s, ...), computed
here from the layers rather than typed in as constants.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class CoordMap:
    """Affine map ``y_out = scale * y_in + offset`` from data pixels to a feature map."""

    scale: float = 1.0
    offset: float = 0.0

    def then(self, other: CoordMap) -> CoordMap:
        """The map of ``self`` followed by ``other``."""
        return CoordMap(other.scale * self.scale, other.scale * self.offset + other.offset)

    def __call__(self, y: float) -> float:
        return self.scale * y + self.offset


def _square(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{what}={value} of {layer} is not square; crops assume square layers")
    return value[0]


def layer_map(layer: nn.Module) -> CoordMap:
    """The coordinate map of one layer.

    A convolution or pooling of kernel k, stride s, padding p maps input coordinate
    ``y`` to ``(y + p - (k - 1) / 2) / s``; a transposed convolution is its inverse,
    ``s * y + (k - 1) / 2 - p``. Point-wise layers are the identity.
    """
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        k = _square(layer.kernel_size, "kernel_size", layer)
        s = _square(layer.stride, "stride", layer)
        p = _square(layer.padding, "padding", layer)
        if isinstance(layer, nn.Conv2d):
            k = (k - 1) * _square(layer.dilation, "dilation", layer) + 1
        return CoordMap(1.0 / s, (p - (k - 1) / 2) / s)
    if isinstance(layer, nn.ConvTranspose2d):
        k = _square(layer.kernel_size, "kernel_size", layer)
        s = _square(layer.stride, "stride", layer)
        p = _square(layer.padding, "padding", layer)
        return CoordMap(float(s), (k - 1) / 2 - p)
    spatial = getattr(layer, "coord_map", None)
    if spatial is not None:
        return spatial()
    if isinstance(layer, nn.Sequential):
        return coord_map(layer)
    if isinstance(
        layer,
        nn.ReLU | nn.Dropout | nn.Dropout2d | nn.Identity | nn.BatchNorm2d | nn.LocalResponseNorm,
    ):
        return CoordMap()
    raise TypeError(f"no coordinate map known for layer {layer!r}")


def coord_map(layers: Iterable[nn.Module]) -> CoordMap:
    """Compose the coordinate maps of ``layers`` applied in order."""
    result = CoordMap()
    for layer in layers:
        result = result.then(layer_map(layer))
    return result


def crop_offset(larger: CoordMap, reference: CoordMap) -> int:
    """Offset at which to crop the map ``larger`` so that it aligns with ``reference``.

    Both maps are given relative to the same data; they must have the same scale.
    Raises ``ValueError`` if they do not align on whole pixels.
    """
    if not math.isclose(larger.scale, reference.scale):
        raise ValueError(f"cannot align maps of scale {larger.scale} and {reference.scale}")
    offset = larger.offset - reference.offset
    if offset < 0 or not math.isclose(offset, round(offset)):
        raise ValueError(f"maps do not align on whole pixels: offset {offset}")
    return round(offset)
