"""PASCAL VOC 2011/2012 and SBD, the reference's data (paper section 4.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.dataset import FileDataset, read_list, require_dir
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo, voc_colors

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


VOC_INFO = DatasetInfo("voc", VOC_CLASSES, voc_colors(21), IGNORE_INDEX)


class VOCDataset(FileDataset):
    """PASCAL VOC 2011/2012 segmentation: ``root`` is e.g. ``VOCdevkit/VOC2012``.

    Splits come from ``ImageSets/Segmentation/<split>.txt``. ``seg11valid``, the
    paper's 736-image validation set (VOC2011 val minus SBD train), is read from
    ``seg11valid.txt`` there, or computed when ``sbd_root`` (SBD's ``dataset/``
    folder, with ``train.txt``) is given.
    """

    info = VOC_INFO

    def __init__(self, root, split: str = "val", transform=None, *, sbd_root=None) -> None:
        root = require_dir(Path(root))
        lists = root / "ImageSets" / "Segmentation"
        where = str(lists / f"{split}.txt")
        if split == "seg11valid" and not (lists / "seg11valid.txt").is_file():
            names, where = seg11valid(lists / "val.txt", sbd_root)
        else:
            names = read_list(lists / f"{split}.txt")
        pairs = [
            (root / "JPEGImages" / f"{n}.jpg", root / "SegmentationClass" / f"{n}.png")
            for n in names
        ]
        super().__init__(pairs, where, transform)


def seg11valid(voc_val: Path, sbd_root) -> tuple[list[str], str]:
    """The reference's seg11valid: the names of VOC2011 ``val.txt`` that are not in
    SBD's ``train.txt`` (no image is both trained and validated on); and how it was made."""
    if sbd_root is None:
        raise DataError(
            f"{voc_val.parent}/seg11valid.txt not found: it is computed as VOC2011 val "
            "minus SBD train, so train on SBD (--dataset sbd --data-root <SBD dataset/>)"
        )
    sbd_train = require_dir(Path(sbd_root)) / "train.txt"
    excluded = set(read_list(sbd_train))
    names = [n for n in read_list(voc_val) if n not in excluded]
    return names, f"seg11valid ({voc_val} minus {sbd_train})"


class SBDDataset(FileDataset):
    """SBD (Hariharan et al.): ``root`` is its ``dataset/`` folder (img/, cls/, train.txt)."""

    info = DatasetInfo("sbd", VOC_CLASSES, voc_colors(21), IGNORE_INDEX)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        names = read_list(root / f"{split}.txt")
        pairs = [(root / "img" / f"{n}.jpg", root / "cls" / f"{n}.mat") for n in names]
        super().__init__(pairs, str(root / f"{split}.txt"), transform)

    def read_label(self, path: Path) -> np.ndarray:
        from scipy.io import loadmat

        try:
            mat = loadmat(path, squeeze_me=True, struct_as_record=False)
            return np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except Exception as e:  # scipy raises many types for files that are not .mat
            raise DataError(f"{path}: not an SBD class map (GTcls.Segmentation): {e}") from None
