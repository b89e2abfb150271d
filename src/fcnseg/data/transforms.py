"""Transforms on (image, label) pairs: the label follows every geometric change.

Images are normalised first (uint8 (H, W, 3) -> float (3, H, W)); geometry then
acts on tensors, labels resized with nearest neighbour only and padded with void.
Evaluation uses :func:`normalize` alone, on the whole image at its own size.

Every transform is called as ``t(image, label, rng)``: the random ones draw only
from ``rng`` (a :class:`random.Random`), never from the global ``random``, so a
sample's augmentation is a function of the seed its caller gives it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fcnseg.data.info import IGNORE_INDEX
from fcnseg.nets.weights import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS

Pair = tuple[torch.Tensor, torch.Tensor]


def normalize_image(image: np.ndarray, mode: str = "imagenet") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, normalised to match the weights.

    ``imagenet``: torchvision's weights, RGB in [0, 1] minus mean over std.
    ``caffe``: the reference's weights, BGR on 0-255 minus the BGR mean.
    """
    x = torch.tensor(np.asarray(image, dtype=np.uint8)).permute(2, 0, 1).float()
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x / 255.0 - mean) / std
    if mode == "caffe":
        return x.flip(0) - torch.tensor(CAFFE_BGR_MEAN).view(3, 1, 1)
    raise ValueError(f"unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")


class Normalize:
    """Numpy pair -> tensors: normalised image (3, H, W), label (H, W) int64."""

    def __init__(self, mode: str = "imagenet") -> None:
        normalize_image(np.zeros((1, 1, 3), np.uint8), mode)  # fail early on a bad mode
        self.mode = mode

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: random.Random | None = None
    ) -> Pair:
        return normalize_image(image, self.mode), torch.from_numpy(np.asarray(label, np.int64))


class RandomScale:
    """Resize by a factor drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: random.Random) -> Pair:
        s = rng.uniform(self.low, self.high)
        h, w = label.shape
        size = (max(1, round(h * s)), max(1, round(w * s)))
        image = F.interpolate(image[None], size, mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size, mode="nearest")[0, 0].long()
        return image, label


class RandomCrop:
    """A random ``size`` crop; smaller inputs are padded (image 0 = mean, label void)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: random.Random) -> Pair:
        th, tw = self.size
        h, w = label.shape
        ph, pw = max(th - h, 0), max(tw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = label.shape
        y, x = rng.randint(0, h - th), rng.randint(0, w - tw)
        return image[:, y : y + th, x : x + tw], label[y : y + th, x : x + tw]


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: random.Random) -> Pair:
        if rng.random() < self.p:
            return image.flip(-1), label.flip(-1)
        return image, label


class Compose:
    """Transforms in order, each given the same ``rng``.

    ``rng`` may be left out only when no transform is random (evaluation).
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, label, rng: random.Random | None = None):
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label


def train_transform(
    *,
    normalization: str = "imagenet",
    scale: tuple[float, float] | None = None,
    crop: int | None = None,
    flip: bool = True,
) -> Compose:
    """The training augmentation: normalise, random scale, random crop, flip."""
    ts: list[Callable] = [Normalize(normalization)]
    if scale is not None and tuple(scale) != (1.0, 1.0):
        ts.append(RandomScale(*scale))
    if crop:
        ts.append(RandomCrop(crop))
    if flip:
        ts.append(RandomHorizontalFlip())
    return Compose(ts)


def eval_transform(normalization: str = "imagenet") -> Compose:
    """Evaluation: the whole image at its own size, normalised."""
    return Compose([Normalize(normalization)])
