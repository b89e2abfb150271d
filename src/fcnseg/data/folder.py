"""Your own data: a folder of images and masks with a ``classes.txt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.dataset import FileDataset, by_stem, read_list, require_dir
from fcnseg.data.images import IMAGE_SUFFIXES, read_label
from fcnseg.data.info import IGNORE_INDEX, DataError, DatasetInfo, voc_colors


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


def _split_stems(root: Path, split: str, stems: list[str]) -> list[str]:
    """The stems of ``split`` among all of ``root/images`` (sorted): see :class:`FolderDataset`."""
    if split == "all":
        return stems
    if (root / f"{split}.txt").is_file():
        return read_list(root / f"{split}.txt")
    if split not in ("train", "val"):
        raise DataError(f"{root}: no split '{split}' ({split}.txt or {split}/images)")
    picked = [s for i, s in enumerate(stems) if (i % 10 == 9) == (split == "val")]
    if not picked:
        raise DataError(
            f"{root}: split {split!r} is empty: {len(stems)} images, every 10th is val when "
            f"there is no {split}.txt or {split}/ folder; add {split}.txt or more images"
        )
    return picked


class FolderDataset(FileDataset):
    """Your own data: ``root/images/*`` and ``root/masks/*`` with matching file stems.

    Masks are index PNGs (pixel = class index, 255 = void) or colour PNGs whose
    colours are those of ``root/classes.txt`` (see :func:`read_classes_file`).
    Splits: ``root/<split>/images`` + ``root/<split>/masks`` if present, else
    ``root/<split>.txt`` listing stems, else every 10th image (sorted) is ``val``
    and the rest ``train``; ``all`` takes everything.
    """

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        self.info = read_classes_file(root / "classes.txt")
        base = root / split if (root / split / "images").is_dir() else root
        images = by_stem(require_dir(base / "images"))
        masks = by_stem(require_dir(base / "masks"))
        if not images:
            raise DataError(f"{base / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)})")
        stems = _split_stems(root, split, sorted(images)) if base is root else sorted(images)
        missing = [s for s in stems if s not in masks or s not in images]
        if missing:
            raise DataError(f"{base}: no image or mask for {', '.join(missing[:5])}")
        where = str(base) if base is not root else f"{root} split {split!r}"
        super().__init__([(images[s], masks[s]) for s in stems], where, transform)
        self._lut = {rgb: i for i, rgb in enumerate(self.info.colors)}
        if self.info.void_color is not None:
            self._lut[self.info.void_color] = IGNORE_INDEX

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_label(path, max_pixels=self.max_pixels)
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
