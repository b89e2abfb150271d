"""PASCAL-Context (Mottaghi et al.): whole-scene labels of PASCAL VOC 2010 (section 5).

The 59 most frequent classes plus background, 60 classes in all, as the reference
trains them (``pascalcontext_layers.py``): every other label is background (0),
none is void. ``root`` is ``VOCdevkit/VOC2010`` with the Context release's
``trainval.tar.gz`` unpacked into it::

    JPEGImages/<name>.jpg
    ImageSets/Main/train.txt, val.txt     the splits (4,998 and 5,105 images)
    trainval/<name>.mat                   'LabelMap': the full labelling (459 labels)
    labels.txt                            its labels, one "<id>: <name>" per line

The full labels are mapped to the 60 classes by name through ``labels.txt``
(three of the 59 are named differently there: table, bedclothes, cloth). Without
``labels.txt``, ``trainval/<name>.png`` are read instead, already in the 60-class
task (0 background, 1-59 the classes below, 255 void).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.dataset import FileDataset, read_list, require_dir
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo, voc_colors
from fcnseg.data.mat import read_mat_array

CONTEXT_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling",
    "clothes", "computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road",
    "rock", "shelves", "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall",
    "water", "window", "wood",
)  # fmt: skip
# The names the full labelling gives three of the classes.
FULL_LABEL_NAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


class PascalContextDataset(FileDataset):
    """PASCAL-Context, 59 classes + background, in VOC2010 (see the module)."""

    info = DatasetInfo("pascal-context", CONTEXT_CLASSES, voc_colors(60), IGNORE_INDEX)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        names = read_list(root / "ImageSets" / "Main" / f"{split}.txt")
        labels = root / "labels.txt"
        suffix = ".mat" if labels.is_file() else ".png"
        self.lookup = full_label_lookup(labels) if suffix == ".mat" else None
        folder = require_dir(root / "trainval")
        pairs = [(root / "JPEGImages" / f"{n}.jpg", folder / f"{n}{suffix}") for n in names]
        super().__init__(pairs, str(root / "ImageSets" / "Main" / f"{split}.txt"), transform)

    def read_label(self, path: Path) -> np.ndarray:
        if self.lookup is None:
            return super().read_label(path)
        full = read_mat_array(path, "LabelMap", "PASCAL-Context label map").astype(np.int64)
        if full.min() < 0 or full.max() >= len(self.lookup):
            raise DataError(f"{path}: labels up to {full.max()} are not in labels.txt")
        return self.lookup[full]


def full_label_lookup(labels_txt: Path) -> np.ndarray:
    """Full label id -> class of the 60 (0 background), from the release's ``labels.txt``.

    Raises:
        DataError: a line is not ``<id>: <name>``, or one of the 59 classes is missing.
    """
    ids = {}
    for number, line in enumerate(labels_txt.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit():
            raise DataError(f"{labels_txt}:{number}: expected '<id>: <name>', got {line!r}")
        ids[name.replace(" ", "")] = int(key)
    wanted = [FULL_LABEL_NAMES.get(c, c) for c in CONTEXT_CLASSES[1:]]
    missing = [name for name in wanted if name not in ids]
    if missing:
        raise DataError(f"{labels_txt}: no label named {', '.join(missing[:5])}")
    lookup = np.zeros(max(ids.values()) + 1, dtype=np.uint8)  # everything else: background
    for cls, name in enumerate(wanted, 1):
        lookup[ids[name]] = cls
    return lookup
