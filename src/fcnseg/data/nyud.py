"""NYUDv2 (Silberman et al.): indoor RGB-D scenes, the 40-class task of Gupta et al. (section 5).

The reference's layout (its ``data/nyud``, from ``nyud.tar.gz``), ``<n>`` the
image's number::

    train.txt, val.txt, test.txt     the reference's lists of numbers (381/414/654)
    data/images/img_<n>.png          colour
    data/hha/img_<n>.png             HHA: disparity, height, angle, as an 8-bit image
    data/depth/img_<n>.png           depth in millimetres, 16-bit
    segmentation/img_<n>.mat         'segmentation': 0 void, 1-40 the classes

A split ``train+val`` joins lists (the reference's ``trainval``, 795 images).

Each registered variant feeds one input the reference trains on; a second input
rides along the channels of the same image, so every transform treats the two
alike (:func:`fcnseg.data.transforms.normalize_image` tells them apart by count):

========================  ===========================================  ======================
dataset                   image                                        net
========================  ===========================================  ======================
``nyud``                  (H, W, 3) uint8 colour                       ``fcn32s``
``nyud-hha``              (H, W, 3) uint8 HHA                          ``fcn32s``
``nyud-color-d``          (H, W, 4) uint16 colour + depth (mm)         ``fcn32s-color-d``
``nyud-color-hha``        (H, W, 6) uint8 colour + HHA                 ``fcn32s-color-hha``
========================  ===========================================  ======================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.dataset import FileDataset, image_size, require_dir
from fcnseg.data.images import open_image, read_error, read_image
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo, voc_colors
from fcnseg.data.mat import one_based, read_lists, read_mat_array

NYUD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
NYUD_INFO = DatasetInfo("nyud", NYUD_CLASSES, voc_colors(40), IGNORE_INDEX)
INPUT_FOLDERS = {"color": "images", "hha": "hha", "depth": "depth"}


class NYUDDataset(FileDataset):
    """NYUDv2, 40 classes, the reference's layout: the colour image (see the module)."""

    info = NYUD_INFO
    inputs: tuple[str, ...] = ("color",)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        names = read_lists(root, split)
        paths = [
            [root / "data" / INPUT_FOLDERS[k] / f"img_{n}.png" for k in self.inputs] for n in names
        ]
        pairs = [
            (p[0], root / "segmentation" / f"img_{n}.mat")
            for p, n in zip(paths, names, strict=True)
        ]
        super().__init__(pairs, f"{root} split '{split}'", transform)
        self.extra = [p[1:] for p in paths]  # the second input's file of each pair

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_mat_array(path, "segmentation", "NYUDv2 label map")
        return one_based(raw, self.info.num_classes, str(path))

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, label, where = super().load_raw(index)
        for kind, path in zip(self.inputs[1:], self.extra[index], strict=True):
            image = _stack(image, self._read_input(kind, path), path)
        return image, label, where

    def _read_input(self, kind: str, path: Path) -> np.ndarray:
        if kind == "depth":
            return read_depth(path, self.max_pixels)[..., None]
        return read_image(path, max_pixels=self.max_pixels)

    def check(self, index: int) -> None:
        super().check(index)
        image_hw = image_size(self.pairs[index][0], self.max_pixels)
        for path in self.extra[index]:
            if image_size(path, self.max_pixels) != image_hw:
                raise DataError(f"{path}: its size differs from {self.pairs[index][0]}'s")


class NYUDHHADataset(NYUDDataset):
    """NYUDv2, 40 classes: the HHA image alone (the reference's HHA net)."""

    inputs = ("hha",)


class NYUDColorDepthDataset(NYUDDataset):
    """NYUDv2, 40 classes: colour + depth as one (H, W, 4) uint16 image (RGB-D net)."""

    inputs = ("color", "depth")


class NYUDColorHHADataset(NYUDDataset):
    """NYUDv2, 40 classes: colour + HHA as one (H, W, 6) image (the two-stream net)."""

    inputs = ("color", "hha")


def read_depth(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """A 16-bit depth PNG as (H, W) uint16 millimetres."""
    img = open_image(path, max_pixels)
    try:
        depth = np.asarray(img)
    except (OSError, SyntaxError) as e:
        raise read_error(path, e) from None
    if depth.ndim != 2:
        raise DataError(f"{path}: a depth map has one channel, this image {depth.shape[2]}")
    return np.clip(depth, 0, 65535).astype(np.uint16)


def _stack(image: np.ndarray, extra: np.ndarray, path: Path) -> np.ndarray:
    """``image`` and ``extra`` along the channels: uint16 when either is (depth)."""
    if extra.shape[:2] != image.shape[:2]:
        raise DataError(
            f"{path}: {extra.shape[1]}x{extra.shape[0]} but its colour image is "
            f"{image.shape[1]}x{image.shape[0]} (width x height)"
        )
    dtype = np.uint16 if np.uint16 in (image.dtype, extra.dtype) else np.uint8
    return np.concatenate([image.astype(dtype), extra.astype(dtype)], axis=2)
