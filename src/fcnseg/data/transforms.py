"""Transforms on (image, label) pairs: the label follows every geometric change.

Images are normalised first (uint8 (H, W, 3) -> float (3, H, W)); geometry then
acts on tensors, labels resized with nearest neighbour only and padded with void.
A label is one map (H, W), or one per head of a several-head net, (H, W, K) as
read and (K, H, W) once a tensor (channels first, as the image): every map gets
the same geometry.
Only the optional colour jitter comes before, on the uint8 RGB image itself, so it
means the same for every normalisation. Evaluation uses :func:`normalize` alone, on
the whole image at its own size.

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

from fcnseg.data.info import IGNORE_INDEX, DataError
from fcnseg.nets.weights import NORMALIZATION_SPECS, NORMALIZATIONS, NYUD_LOG_DEPTH_MEAN

Pair = tuple[torch.Tensor, torch.Tensor]
"""A normalised image (C, H, W) and its label, (H, W) or (K, H, W) int64."""


def grey_world(x: torch.Tensor, grey: float) -> torch.Tensor:
    """(3, H, W) on 0-255 with each channel scaled so that its mean over the image is
    ``grey``: a grey-world white balance, which takes out exposure and colour cast."""
    # A black channel (mean below 1) is scaled as if its mean were 1: no division by 0.
    return x * (grey / x.mean((1, 2), keepdim=True).clamp(min=1.0))


def _feed(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(3, H, W) on 0-255 -> as normalisation ``mode`` feeds one image (colour, or HHA
    alone for nyud-hha): :data:`~fcnseg.nets.weights.NORMALIZATION_SPECS`."""
    spec = NORMALIZATION_SPECS[mode]
    if spec.grey_world is not None:
        x = grey_world(x, spec.grey_world)
    if spec.clip:
        x = x.clamp(0.0, 255.0)
    x = x.flip(0) if spec.bgr else x
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    return (x / spec.divisor - mean) / std


_SECOND: dict[str, str] = {"nyud": "nyud-hha"}
_TWO_IMAGES = ("imagenet", "caffe", "nyud")  # modes that take colour + depth or + HHA


def _log_depth(depth: torch.Tensor) -> torch.Tensor:
    """(1, H, W) millimetres -> log minus the reference's mean; 0 (no reading) counts as 1 mm."""
    return depth.clamp(min=1).log() - NYUD_LOG_DEPTH_MEAN


def normalize_image(image: np.ndarray, mode: str = "imagenet") -> torch.Tensor:
    """(H, W, C) image -> (C, H, W) float32, normalised to match the weights.

    The channels are one image (C = 3: colour, or HHA), colour + depth (C = 4, uint16:
    the depth in millimetres) or colour + HHA (C = 6); otherwise uint8.

    ``imagenet``: torchvision's weights, RGB in [0, 1] minus mean over std.
    ``imagenet-greyworld``: as ``imagenet`` after scaling each channel so its mean over
    the image is ImageNet's mean grey (117.0 on 0-255), which takes out the exposure
    and colour cast (grey-world white balance); for nets trained with it.
    ``imagenet-greyworld-clip``: the same with the balanced image clipped to 0-255, as
    a camera would have saturated it.
    ``caffe``: the reference's weights, BGR on 0-255 minus the BGR mean.
    ``nyud``: the reference's NYUDv2 nets: colour as BGR minus NYUDv2's mean, HHA
    (as stored, not flipped) minus its own. ``nyud-hha``: its HHA-only net.
    ``siftflow``: the reference's SIFT Flow nets, BGR minus SIFT Flow's mean.
    A second image (HHA) is fed like the first in ``imagenet`` and ``caffe``; depth
    is always the log of millimetres minus 7.844, as the reference feeds it.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")
    a = np.asarray(image)
    if a.dtype != np.uint16:
        a = a.astype(np.uint8, copy=False)
    channels = a.shape[2]
    if channels not in (3, 4, 6) or (channels > 3 and mode not in _TWO_IMAGES):
        takes = "3, 4 or 6" if mode in _TWO_IMAGES else "3"
        raise DataError(f"normalization {mode!r} takes {takes} image channels, got {channels}")
    x = torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32))
    first = _feed(x[:3], mode)
    if channels == 3:
        return first
    rest = _log_depth(x[3:]) if channels == 4 else _feed(x[3:], second_image_normalization(mode))
    return torch.cat([first, rest])


def second_image_normalization(mode: str) -> str:
    """How ``mode`` feeds the second image (HHA) of a colour + HHA input: as that
    normalisation feeds a 3-channel image (``nyud``: as ``nyud-hha``; others: alike)."""
    return _SECOND.get(mode, mode)


def label_tensor(label: np.ndarray) -> torch.Tensor:
    """(H, W) -> (H, W) int64; the (H, W, K) maps of K heads -> (K, H, W), channels first."""
    label = np.asarray(label, np.int64)
    if label.ndim == 3:
        label = np.ascontiguousarray(label.transpose(2, 0, 1))
    return torch.from_numpy(label)


class Normalize:
    """Numpy pair -> tensors: normalised image (C, H, W), label (H, W) or (K, H, W) int64."""

    def __init__(self, mode: str = "imagenet") -> None:
        normalize_image(np.zeros((1, 1, 3), np.uint8), mode)  # fail early on a bad mode
        self.mode = mode

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: random.Random | None = None
    ) -> Pair:
        return normalize_image(image, self.mode), label_tensor(label)


# ITU-R BT.601 luma, the grey of PIL's "L" mode (and torchvision's).
_LUMA = (0.299, 0.587, 0.114)


def grayscale(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (H, W) luma ``0.299 R + 0.587 G + 0.114 B``."""
    return torch.tensordot(torch.tensor(_LUMA, dtype=rgb.dtype), rgb, dims=1)


def _blend(rgb: torch.Tensor, toward: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor`` of ``rgb`` plus ``1 - factor`` of ``toward``, clamped to [0, 1]."""
    return (factor * rgb + (1 - factor) * toward).clamp(0, 1)


def adjust_brightness(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] times ``factor`` (0: black, 1: unchanged), clamped."""
    return (rgb * factor).clamp(0, 1)


def adjust_contrast(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] blended with its mean grey (0: flat grey, 1: unchanged).

    The mean grey is kept wherever nothing is clamped.
    """
    return _blend(rgb, grayscale(rgb).mean(), factor)


def adjust_saturation(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] blended with each pixel's grey (0: greyscale, 1: unchanged)."""
    return _blend(rgb, grayscale(rgb)[None], factor)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> (3, H, W) hue in [0, 1) turns, saturation, value.

    Greys (max == min) get hue 0, black gets saturation 0 (as :mod:`colorsys`).
    """
    r, g, b = rgb.unbind(0)
    v = rgb.amax(0)
    delta = v - rgb.amin(0)
    # Greys and black divide by 1 instead of 0: their quotients are discarded, no NaNs.
    span = torch.where(delta > 0, delta, 1.0)
    s = torch.where(v > 0, delta / torch.where(v > 0, v, 1.0), 0.0)
    # The hue's sixth of a turn is set by the largest channel (red wins ties, then green).
    sixths = torch.where(
        v == r, (g - b) / span, torch.where(v == g, (b - r) / span + 2, (r - g) / span + 4)
    )
    h = torch.where(delta > 0, (sixths / 6) % 1.0, 0.0)
    return torch.stack((h, s, v))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(3, H, W) hue (turns, any real), saturation, value -> (3, H, W) RGB.

    Each channel is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for R, G, B: the piecewise-linear
    hexcone, written without a case per sixth.
    """
    h, s, v = hsv.unbind(0)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype)[:, None, None]
    k = (n + 6 * h) % 6
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def adjust_hue(rgb: torch.Tensor, shift: float) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] with its hue turned by ``shift`` turns (1/3: red -> green)."""
    h, s, v = rgb_to_hsv(rgb).unbind(0)
    return hsv_to_rgb(torch.stack(((h + shift) % 1.0, s, v)))


class ColorJitter:
    """Random brightness, contrast, saturation and hue of the image; the label is untouched.

    With strength ``s``: brightness, contrast and saturation factors drawn uniformly
    from ``[1 - s, 1 + s]``, and a hue shift from ``[-s/4, s/4]`` turns. This is
    torchvision's ``ColorJitter(s, s, s, s / 4)``, with two differences: the four are
    applied in a fixed order (brightness, contrast, saturation, hue; torchvision
    shuffles it), and the four factors are always drawn, in that order, from the
    caller's ``rng``. Contrast and saturation blend toward luma grey
    (:func:`grayscale`), hue turns in HSV.

    It acts on the (H, W, 3) uint8 RGB image before :class:`Normalize` and returns
    one (rounded: at most 1/510 off the exact colour), so it means the same for every
    normalisation.

    Example:
        >>> image = np.full((2, 2, 3), 128, np.uint8)
        >>> out, _ = ColorJitter(0.4)(image, np.zeros((2, 2)), random.Random(0))
        >>> out.shape, out.dtype
        ((2, 2, 3), dtype('uint8'))
    """

    def __init__(self, strength: float) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"colour jitter strength must be in [0, 1); got {strength!r}")
        self.strength = strength

    def draw(self, rng: random.Random) -> tuple[float, float, float, float]:
        """Brightness, contrast and saturation factors, and the hue shift (turns)."""
        s = self.strength
        factors = tuple(rng.uniform(1 - s, 1 + s) for _ in range(3))
        return (*factors, rng.uniform(-s / 4, s / 4))

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: random.Random
    ) -> tuple[np.ndarray, np.ndarray]:
        brightness, contrast, saturation, hue = self.draw(rng)
        # A copy: the decoded image may be a read-only view, which torch warns about.
        rgb = torch.tensor(np.asarray(image, np.uint8)).permute(2, 0, 1).float() / 255
        rgb = adjust_brightness(rgb, brightness)  # (3, H, W) in [0, 1]
        rgb = adjust_contrast(rgb, contrast)
        rgb = adjust_saturation(rgb, saturation)
        rgb = adjust_hue(rgb, hue)
        out = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0)
        return out.numpy(), label


class RandomScale:
    """Resize by a factor drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: random.Random) -> Pair:
        s = rng.uniform(self.low, self.high)
        h, w = label.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        image = F.interpolate(image[None], size, mode="bilinear", align_corners=False)[0]
        # Every map of a (K, H, W) label as a channel: one nearest-neighbour resize.
        maps = F.interpolate(label.reshape(1, -1, h, w).float(), size, mode="nearest")
        return image, maps.reshape(*label.shape[:-2], *size).long()


class RandomCrop:
    """A random ``size`` crop; smaller inputs are padded (image 0 = mean, label void)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: random.Random) -> Pair:
        th, tw = self.size
        h, w = label.shape[-2:]
        ph, pw = max(th - h, 0), max(tw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = label.shape[-2:]
        y, x = rng.randint(0, h - th), rng.randint(0, w - tw)
        return image[:, y : y + th, x : x + tw], label[..., y : y + th, x : x + tw]


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
    color_jitter: float = 0.0,
) -> Compose:
    """The training augmentation: colour jitter, normalise, random scale, random crop, flip.

    A step that would change nothing (jitter 0, scale (1, 1), no crop, no flip) is left
    out, so it draws nothing from the rng either: adding a knob at its off value keeps
    every other draw of a recipe as it was.
    """
    ts: list[Callable] = [ColorJitter(color_jitter)] if color_jitter else []
    ts.append(Normalize(normalization))
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
