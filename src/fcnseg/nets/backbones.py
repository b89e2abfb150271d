"""ImageNet classifiers that FCNs are made from: VGG16 and AlexNet (paper section 3.1, 4.1).

All are laid out like torchvision's (``features``, ``avgpool``, ``classifier``)
with the same state_dict key names, so torchvision's weight files load as they are.
:class:`CaffeNet` is the reference's own AlexNet (grouped convolutions, LRN), which
torchvision does not publish: its weights come from the reference's caffemodel.
Each lists its taps (``feature_info``): where the pooling layers are, at which
stride, with how many channels; the skip architecture reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fcnseg.nets.convolutionalize import feature_channels
from fcnseg.nets.geometry import coord_map


@dataclass(frozen=True)
class Tap:
    """A feature map the backbone exposes: output of ``features[index]``."""

    name: str
    index: int
    stride: int
    channels: int


# Output channels of VGG16's convolutions; "M" is a 2x2 max pooling (config "D").
VGG16_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _taps(features: nn.Sequential, names: tuple[str, ...]) -> tuple[Tap, ...]:
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    return tuple(
        Tap(
            name,
            i,
            stride=round(1 / coord_map(features[: i + 1]).scale),
            channels=feature_channels(features[: i + 1]),
        )
        for name, i in zip(names, pools, strict=True)
    )


class Classifier(nn.Module):
    """An ImageNet classifier in torchvision's layout: features, avgpool, classifier."""

    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Sequential
    pool_names: tuple[str, ...] = ()

    @property
    def feature_info(self) -> tuple[Tap, ...]:
        """The pooling layers a skip can read: name, index, stride, channels."""
        return _taps(self.features, self.pool_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG16(Classifier):
    """VGG16 (Simonyan & Zisserman), optionally with batch norm and scaled width.

    ``width`` scales every layer's channels (1.0 is the published net); the
    ImageNet weights exist only for width 1.0. ``in_channels`` > 3 widens the first
    convolution (NYUDv2's colour + depth net reads 4).

    Shapes: (N, in_channels, 224, 224) -> (N, num_classes).
    """

    pool_names = ("pool1", "pool2", "pool3", "pool4", "pool5")

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        batch_norm: bool = False,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = _scaled(v, width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        hidden = _scaled(4096, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )
        _init_weights(self)


class AlexNet(Classifier):
    """AlexNet (Krizhevsky et al.) in torchvision's single-tower form ("one weird trick").

    Shapes: (N, 3, 224, 224) -> (N, num_classes).
    """

    pool_names = ("pool1", "pool2", "pool5")

    def __init__(self, num_classes: int = 1000, *, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4 = (_scaled(c, width) for c in (64, 192, 384, 256))
        hidden = _scaled(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(c4 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        _init_weights(self)


class CaffeNet(Classifier):
    """AlexNet as the reference's Caffe nets have it (``bvlc_reference_caffenet``).

    It differs from torchvision's :class:`AlexNet` in its widths (96, 256, 384, 384,
    256), in conv2, conv4 and conv5 being split into two groups (the original two
    GPUs), and in a local response normalisation after pool1 and pool2 (CaffeNet
    pools first, then normalises; size 5, alpha 1e-4, beta 0.75, k 1: Caffe's and
    :class:`torch.nn.LocalResponseNorm`'s formulas agree).

    Shapes: (N, 3, 227, 227) -> (N, num_classes).
    """

    pool_names = ("pool1", "pool2", "pool5")

    def __init__(self, num_classes: int = 1000, *, width: float = 1.0) -> None:
        super().__init__()
        # Grouped layers need channel counts that split in two.
        c1, c2, c3, c5 = (2 * _scaled(c // 2, width) for c in (96, 256, 384, 256))
        hidden = _scaled(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4),  # conv1
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # pool1
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),  # norm1
            nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=2),  # conv2
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # pool2
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),  # norm2
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # conv3
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c3, kernel_size=3, padding=1, groups=2),  # conv4
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c5, kernel_size=3, padding=1, groups=2),  # conv5
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # pool5
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 6 * 6, hidden),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),  # fc8
        )
        _init_weights(self)


def _init_weights(net: nn.Module) -> None:
    # He initialisation lets the deep, unnormalised VGG train from scratch.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


BACKBONES = ("vgg16", "alexnet", "caffenet")


def build_backbone(
    name: str, *, batch_norm: bool = False, width: float = 1.0, in_channels: int = 3
) -> Classifier:
    """A backbone classifier by name (:data:`BACKBONES`), with random weights.

    ``in_channels``: input channels of the first convolution (VGG16 only; 3 is RGB).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if name == "vgg16":
        return VGG16(batch_norm=batch_norm, width=width, in_channels=in_channels)
    if batch_norm:
        raise ValueError(f"{name} has no batch-norm variant")
    if in_channels != 3:
        raise ValueError(f"{name} reads 3 input channels, not {in_channels}")
    return AlexNet(width=width) if name == "alexnet" else CaffeNet(width=width)
