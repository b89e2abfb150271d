"""Procedurally drawn scenes: a built-in dataset that needs nothing downloaded.

Each scene is a textured background with overlapping shapes of several classes
(discs, boxes, triangles, bars), of varied sizes and aspect ratios. A class has
its own colour family, jittered per shape and overlaid with noise, so that the
task is learnable in minutes on a CPU yet needs both colour and spatial context
(shapes overlap, backgrounds are busy). Every scene is a pure function of
``(seed, index)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import DataError, DatasetInfo

CLASSES = ("background", "disc", "box", "triangle", "bar")
COLORS = ((40, 40, 40), (220, 60, 50), (60, 170, 70), (60, 90, 220), (230, 200, 50))
# Base colours of the shapes, distinct from the darker backgrounds.
_SHAPE_RGB = np.array(COLORS[1:], dtype=np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random gradient plus blocky and fine noise, in dull colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    base = rng.uniform(30, 110, size=3).astype(np.float32)
    tint = rng.uniform(-30, 30, size=3).astype(np.float32)
    blocks = rng.normal(0, 12, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    blocks = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:h, :w]
    return base + tint * ramp + blocks + rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)


def _polygon(cls: int, cx: float, cy: float, size: float, aspect: float, angle: float):
    """Vertices of a shape of class ``cls`` (1 disc, 2 box, 3 triangle, 4 bar)."""
    if cls == 1:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t) * size * aspect, np.sin(t) * size], axis=1)
    elif cls == 2:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [size * aspect, size]
    elif cls == 3:
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * size * 1.3
    else:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [size * 1.6, size * 0.35]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + [cx, cy]
    return [tuple(p) for p in pts]


def make_scene(seed: int, index: int, *, min_size: int = 96, max_size: int = 160):
    """Draw scene ``index`` of the stream ``seed``.

    Returns:
        image (H, W, 3) uint8 and label (H, W) uint8 with values in ``range(len(CLASSES))``.
    """
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = _background(rng, h, w)
    label = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, len(CLASSES)))
        size = rng.uniform(0.12, 0.28) * min(h, w)
        poly = _polygon(
            cls,
            rng.uniform(0.1, 0.9) * w,
            rng.uniform(0.1, 0.9) * h,
            size,
            rng.uniform(0.6, 1.6),
            rng.uniform(0, np.pi),
        )
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).polygon(poly, fill=1)
        inside = np.asarray(mask, dtype=bool)
        colour = _SHAPE_RGB[cls - 1] + rng.normal(0, 18, size=3)
        shading = rng.normal(0, 14, size=(h, w, 3)).astype(np.float32)
        image[inside] = (colour + shading)[inside]
        label[inside] = cls
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticDataset(SegmentationDataset):
    """Procedurally drawn scenes (see :mod:`fcnseg.data.synthetic`); train and val never overlap."""

    info = DatasetInfo("synthetic", CLASSES, COLORS, None)
    SIZES = {"train": 2000, "val": 100}

    def __init__(self, root=None, split: str = "train", transform=None, *, seed: int = 0):
        super().__init__(transform)
        if split not in self.SIZES:
            raise DataError(f"synthetic: unknown split {split!r}; choose train or val")
        self.split, self.seed = split, seed + (0 if split == "train" else 10_000)
        self.names = [f"{split}_{i:05d}" for i in range(self.SIZES[split])]

    def __len__(self) -> int:
        return len(self.names)

    def load_raw(self, index):
        image, label = make_scene(self.seed, index)
        return image, label, self.names[index]
