"""Datasets: a small registry of labelled image collections (paper section 4.3 and beyond).

Every dataset yields ``(image, label)``: image (H, W, 3) uint8 RGB, label (H, W)
int64 with the dataset's void value mapped to :data:`~fcnseg.images.IGNORE_INDEX`
(255). With a transform, whatever the transform returns. Each knows its class
names, colours and on-disk void value (:class:`DatasetInfo`).

- ``synthetic``: built-in drawn scenes, nothing to download.
- ``folder``: your own ``images/`` + ``masks/`` with a ``classes.txt``.
- ``voc``: PASCAL VOC 2011/2012 (``SegmentationClass`` palette PNGs, 255 void).
- ``sbd``: the Semantic Boundaries Dataset (``cls/*.mat``), the reference's training set.
- ``camvid``: CamVid 11 classes in the SegNet layout, 11 void.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fcnseg import synthetic
from fcnseg.images import IGNORE_INDEX, DataError, read_image, read_label

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_colors(n: int = 21) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC palette: class i's colour spreads the bits of i over R, G, B."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """Class names, display colours, the void value as stored on disk (None: no void)
    and, for colour masks, the void colour."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    void: int | None = IGNORE_INDEX
    void_color: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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


class SyntheticDataset(SegmentationDataset):
    """Procedurally drawn scenes (see :mod:`fcnseg.synthetic`); train and val never overlap."""

    info = DatasetInfo("synthetic", synthetic.CLASSES, synthetic.COLORS, None)
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
        image, label = synthetic.make_scene(self.seed, index)
        return image, label, self.names[index]


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


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: no such directory")
    return path


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def read_classes_file(path: Path) -> DatasetInfo:
    """Parse ``classes.txt``: one class a line, ``name R G B`` (index = line order).

    A line ``void R G B`` gives the colour of void pixels in colour masks; index
    masks mark void with 255. Blank lines and ``#`` comments are skipped.
    """
    if not path.is_file():
        raise DataError(f"{path}: classes file not found (one 'name R G B' per line)")
    classes, colors, void = [], [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            rgb = tuple(int(v) for v in parts[1:4]) if len(parts) > 1 else None
        except ValueError:
            rgb = ()
        if rgb is not None and (len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb)):
            raise DataError(f"{path}:{n}: expected 'name R G B' with 0..255 values: {line!r}")
        if parts[0].lower() == "void":
            void = rgb
            continue
        classes.append(parts[0])
        colors.append(rgb)
    if not classes:
        raise DataError(f"{path}: no classes listed")
    defaults = voc_colors(len(classes))
    colors = tuple(c if c is not None else d for c, d in zip(colors, defaults, strict=True))
    return DatasetInfo(path.parent.name, tuple(classes), colors, IGNORE_INDEX, void)


class FolderDataset(FileDataset):
    """Your own data: ``root/images/*`` and ``root/masks/*`` with matching file stems.

    Masks are index PNGs (pixel = class index, 255 = void) or colour PNGs whose
    colours are those of ``root/classes.txt`` (see :func:`read_classes_file`).
    Splits: ``root/<split>/images`` + ``root/<split>/masks`` if present, else
    ``root/<split>.txt`` listing stems, else every 10th image (sorted) is ``val``
    and the rest ``train``; ``all`` takes everything.
    """

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = _require_dir(Path(root))
        self.info = read_classes_file(root / "classes.txt")
        base = root / split if (root / split / "images").is_dir() else root
        images = _by_stem(_require_dir(base / "images"))
        masks = _by_stem(_require_dir(base / "masks"))
        stems = sorted(images)
        if base is root and split != "all":
            if (root / f"{split}.txt").is_file():
                stems = _read_list(root / f"{split}.txt")
            elif split in ("train", "val"):
                stems = [s for i, s in enumerate(stems) if (i % 10 == 9) == (split == "val")]
            else:
                raise DataError(f"{root}: no split '{split}' ({split}.txt or {split}/images)")
        missing = [s for s in stems if s not in masks or s not in images]
        if missing:
            raise DataError(f"{base}: no image or mask for {', '.join(missing[:5])}")
        super().__init__([(images[s], masks[s]) for s in stems], str(base), transform)
        self._lut = {rgb: i for i, rgb in enumerate(self.info.colors)}
        if self.info.void_color is not None:
            self._lut[self.info.void_color] = IGNORE_INDEX

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        if raw.ndim == 2:
            return raw
        wide = raw.astype(np.int64)
        codes = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
        out = np.full(raw.shape[:2], -1, dtype=np.int64)
        for rgb, index in self._lut.items():
            out[codes == (rgb[0] << 16 | rgb[1] << 8 | rgb[2])] = index
        if (out < 0).any():
            y, x = np.argwhere(out < 0)[0]
            raise DataError(
                f"{path}: colour {tuple(int(v) for v in raw[y, x])} at x={x}, y={y} "
                "is not in classes.txt"
            )
        return out.astype(np.uint8)


VOC_INFO = DatasetInfo("voc", VOC_CLASSES, voc_colors(21), IGNORE_INDEX)


class VOCDataset(FileDataset):
    """PASCAL VOC 2011/2012 segmentation: ``root`` is e.g. ``VOCdevkit/VOC2012``.

    Splits come from ``ImageSets/Segmentation/<split>.txt``. ``seg11valid``, the
    paper's 736-image validation set (VOC2011 val minus SBD train), is read from
    ``seg11valid.txt`` there, or computed when ``sbd_root`` is given.
    """

    info = VOC_INFO

    def __init__(self, root, split: str = "val", transform=None, *, sbd_root=None) -> None:
        root = _require_dir(Path(root))
        lists = root / "ImageSets" / "Segmentation"
        if split == "seg11valid" and not (lists / "seg11valid.txt").is_file():
            if sbd_root is None:
                raise DataError(
                    f"{lists}/seg11valid.txt not found: pass sbd_root to compute it "
                    "(VOC2011 val minus SBD train)"
                )
            sbd_train = set(_read_list(Path(sbd_root) / "train.txt"))
            names = [n for n in _read_list(lists / "val.txt") if n not in sbd_train]
        else:
            names = _read_list(lists / f"{split}.txt")
        pairs = [
            (root / "JPEGImages" / f"{n}.jpg", root / "SegmentationClass" / f"{n}.png")
            for n in names
        ]
        super().__init__(pairs, str(lists / f"{split}.txt"), transform)


class SBDDataset(FileDataset):
    """SBD (Hariharan et al.): ``root`` is its ``dataset/`` folder (img/, cls/, train.txt)."""

    info = DatasetInfo("sbd", VOC_CLASSES, voc_colors(21), IGNORE_INDEX)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = _require_dir(Path(root))
        names = _read_list(root / f"{split}.txt")
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


class CamVidDataset(FileDataset):
    """CamVid, 11 classes at 360x480, SegNet layout: ``<split>/`` and ``<split>annot/``."""

    info = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_COLORS, 11)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = _require_dir(Path(root))
        images = _by_stem(_require_dir(root / split))
        labels = _by_stem(_require_dir(root / f"{split}annot"))
        missing = sorted(set(images) ^ set(labels))
        if missing:
            raise DataError(f"{root}/{split}: images and labels differ: {', '.join(missing[:5])}")
        pairs = [(images[s], labels[s]) for s in sorted(images)]
        super().__init__(pairs, str(root / split), transform)


DATASETS: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticDataset,
    "folder": FolderDataset,
    "voc": VOCDataset,
    "sbd": SBDDataset,
    "camvid": CamVidDataset,
}


def build_dataset(
    name: str, root: str | os.PathLike | None, split: str, transform: Transform | None = None
) -> SegmentationDataset:
    """A dataset by registry name; ``root`` is unused for ``synthetic``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name != "synthetic" and root is None:
        raise DataError(f"dataset {name!r} needs a root directory (--data-root)")
    return DATASETS[name](root, split, transform)


def label_counts(dataset: SegmentationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels over the dataset, and pixels of the images where it occurs."""
    n = dataset.info.num_classes
    pixels, present = np.zeros(n), np.zeros(n)
    for i in range(len(dataset)):
        _, label = dataset.load(i)
        counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=n)[:n]
        pixels += counts
        present += (counts > 0) * (label != IGNORE_INDEX).sum()
    return pixels, present


def median_frequency_weights(dataset: SegmentationDataset) -> torch.Tensor:
    """Class weights ``median(freq) / freq_c`` (Eigen & Fergus), with ``freq_c`` the
    class's pixels over the pixels of the images that contain it."""
    pixels, present = label_counts(dataset)
    freq = np.where(present > 0, pixels / np.maximum(present, 1), np.nan)
    weights = np.nanmedian(freq) / freq
    return torch.tensor(np.nan_to_num(weights, nan=0.0), dtype=torch.float32)
