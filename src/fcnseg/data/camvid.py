"""CamVid road scenes, 11 classes, in the SegNet layout."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.dataset import FileDataset, by_stem, require_dir
from fcnseg.data.info import DataError, DatasetInfo

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


class CamVidDataset(FileDataset):
    """CamVid, 11 classes at 360x480, SegNet layout: ``<split>/`` and ``<split>annot/``."""

    info = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_COLORS, 11)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        images = by_stem(require_dir(root / split))
        labels = by_stem(require_dir(root / f"{split}annot"))
        missing = sorted(set(images) ^ set(labels))
        if missing:
            raise DataError(f"{root}/{split}: images and labels differ: {', '.join(missing[:5])}")
        pairs = [(images[s], labels[s]) for s in sorted(images)]
        super().__init__(pairs, str(root / split), transform)
