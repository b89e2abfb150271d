"""The dataset base classes: (image, label) pairs, validated as they are read.

Every dataset yields ``(image, label)``: image (H, W, 3) uint8 RGB, label (H, W)
int64 with the dataset's void value mapped to :data:`~fcnseg.data.info.IGNORE_INDEX`
(255). With a transform, whatever the transform returns. Each knows its class
names, colours and on-disk void value (:class:`~fcnseg.data.info.DatasetInfo`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from fcnseg.data.images import IMAGE_SUFFIXES, read_image, read_label
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo

Transform = Callable[[np.ndarray, np.ndarray], tuple]


class SegmentationDataset(Dataset):
    """Base class: subclasses provide ``__len__``, ``name_of`` and ``load_raw``."""

    info: DatasetInfo

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Image (H, W, 3) uint8, label as stored (H, W), and the label's file name."""
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and validated label (H, W) int64, void = 255."""
        image, raw, where = self.load_raw(index)
        if raw.shape[:2] != image.shape[:2]:
            raise DataError(
                f"{where}: label is {raw.shape[1]}x{raw.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]} (width x height)"
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
        return image, label

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label


def _check_nonempty(dataset: SegmentationDataset, where: str) -> None:
    if len(dataset) == 0:
        raise DataError(f"{where}: the dataset is empty")


class FileDataset(SegmentationDataset):
    """A dataset of (image file, label file) pairs."""

    def __init__(self, pairs: list[tuple[Path, Path]], where: str, transform=None) -> None:
        super().__init__(transform)
        self.pairs = pairs
        self.names = [p[0].stem for p in pairs]
        _check_nonempty(self, where)

    def __len__(self) -> int:
        return len(self.pairs)

    def read_label(self, path: Path) -> np.ndarray:
        return read_label(path)

    def load_raw(self, index):
        image_path, label_path = self.pairs[index]
        return read_image(image_path), self.read_label(label_path), str(label_path)


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: no such directory")
    return path


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
