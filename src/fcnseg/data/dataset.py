"""The dataset base classes: (image, label) pairs, validated as they are read.

Every dataset yields ``(image, label)``: image (H, W, 3) uint8 RGB, label (H, W)
int64 with the dataset's void value mapped to :data:`~fcnseg.data.info.IGNORE_INDEX`
(255); a :class:`MultiHeadDataset` stacks one such label per head, (H, W, K). With a
transform, whatever the transform returns. Each knows its class names, colours and
on-disk void value (:class:`~fcnseg.data.info.DatasetInfo`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from fcnseg.data.images import IMAGE_SUFFIXES, open_image, read_error, read_image, read_label
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo

Transform = Callable[[np.ndarray, np.ndarray], tuple]
_EXIF_ORIENTATION = 0x0112


class SegmentationDataset(Dataset):
    """Base class: subclasses provide ``info``, ``names``, ``__len__`` and ``load_raw``.

    ``max_pixels``: the largest image (width x height) a file dataset reads; None (the
    default) is :func:`~fcnseg.data.images.default_max_pixels`. Whoever builds a
    dataset may set it on that dataset (``fcnseg eval --max-pixels``).
    """

    info: DatasetInfo
    max_pixels: int | None = None

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Image (H, W, 3) uint8, label as stored (H, W), and the label's file name."""
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and validated label (H, W) int64, void = 255."""
        image, raw, where = self.load_raw(index)
        return image, self.validate_label(raw, image.shape[:2], where)

    def validate_label(self, raw: np.ndarray, image_hw: tuple[int, int], where: str) -> np.ndarray:
        """A label as stored (H, W) -> (H, W) int64 with void mapped to 255.

        Raises :class:`DataError` naming ``where`` if its size is not the image's
        ``(H, W)`` or a value is neither a class nor void.
        """
        if raw.shape[:2] != tuple(image_hw):
            raise DataError(
                f"{where}: label is {raw.shape[1]}x{raw.shape[0]} but its image is "
                f"{image_hw[1]}x{image_hw[0]} (width x height)"
            )
        label = raw.astype(np.int64)
        if self.info.void is not None and self.info.void != IGNORE_INDEX:
            label[raw == self.info.void] = IGNORE_INDEX
        bad = (label >= self.info.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            values = sorted(set(np.unique(raw[bad]).tolist()))[:5]
            raise DataError(
                f"{where}: label values {values} are neither classes "
                f"0..{self.info.num_classes - 1} nor void ({self.info.void})"
            )
        return label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label


class MultiHeadDataset(SegmentationDataset):
    """The same images labelled once per head of a several-head net (SIFT Flow's two).

    ``parts[k]`` labels head k; all list the same images in the same order. Yields
    image (H, W, C) and labels (H, W, K), one map per head, each with its own
    classes and void mapped to 255 (the transforms give them the same geometry).
    ``info`` is the first head's: the classes a checkpoint of the net records.

    Raises:
        DataError: the parts do not list the same images.
    """

    def __init__(self, parts: Sequence[SegmentationDataset], transform: Transform | None = None):
        super().__init__(transform)
        first = parts[0]
        for part in parts[1:]:
            if len(part) != len(first) or getattr(part, "names", None) != first.names:
                raise DataError(
                    f"{part.info.name} and {first.info.name} do not list the same images"
                )
        self.parts, self.info, self.names = tuple(parts), first.info, first.names

    def __len__(self) -> int:
        return len(self.parts[0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, C) and every head's validated label, stacked (H, W, K) int64."""
        image, label = self.parts[0].load(index)
        labels = [label] + [part.load(index)[1] for part in self.parts[1:]]
        return image, np.stack(labels, axis=-1)


class FileDataset(SegmentationDataset):
    """A dataset of (image file, label file) pairs; ``where`` names the split in messages."""

    def __init__(self, pairs: list[tuple[Path, Path]], where: str, transform=None) -> None:
        super().__init__(transform)
        if not pairs:
            raise DataError(f"{where}: the split is empty: no image/label pairs")
        self.pairs, self.where = pairs, where
        self.names = [p[0].stem for p in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def read_label(self, path: Path) -> np.ndarray:
        return read_label(path, max_pixels=self.max_pixels)

    def load_raw(self, index):
        image_path, label_path = self.pairs[index]
        image = read_image(image_path, max_pixels=self.max_pixels)
        return image, self.read_label(label_path), str(label_path)

    def check(self, index: int) -> None:
        """Raise :class:`DataError` naming the file if pair ``index`` would not load.

        Cheaper than :meth:`load`: the image is verified without a full decode
        (:func:`image_size`); only the label is decoded, to check its values.
        """
        image_path, label_path = self.pairs[index]
        image_hw = image_size(image_path, self.max_pixels)
        self.validate_label(self.read_label(label_path), image_hw, str(label_path))


def image_size(path: Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(H, W) of the image :func:`read_image` would return, checking the file is whole.

    The size comes from the header (EXIF rotations by 90 degrees swap it), which
    :func:`~fcnseg.data.images.open_image` also checks against ``max_pixels``.
    PNGs are verified by their chunk checksums, JPEGs decoded at 1/8 scale (which
    still reads every byte), other formats decoded.
    """
    with open_image(path, max_pixels) as img:
        w, h = img.size
        turned = _orientation(img) in (5, 6, 7, 8)
        try:
            if img.format == "PNG":
                img.verify()
            else:
                img.draft("RGB", (w // 8, h // 8))  # no-op but for JPEG
                img.load()
        except (OSError, SyntaxError) as e:
            raise read_error(path, e) from None
    return (w, h) if turned else (h, w)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1: upright) without decoding the image."""
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow's getexif() would decode a PNG to look for an eXIf chunk after
        # the pixels; the PNG spec puts it before them, where open() has read it.
        return 1
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: no such directory")
    return path


def read_list(path: Path) -> list[str]:
    """The names in a split list, one per line (the first word of each)."""
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: the split list names no images")
    return names


def by_stem(folder: Path) -> dict[str, Path]:
    """The image files of ``folder`` by name without suffix (how images meet their masks).

    Raises:
        DataError: two files share a stem (``im04.jpg`` and ``im04.png``): which one
            is meant cannot be told, so neither is picked.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(
                f"{found[path.stem]} and {path}: two files named {path.stem!r}; files are "
                "matched by name without suffix, so keep one of them"
            )
        found[path.stem] = path
    return found
