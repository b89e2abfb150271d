"""CamVid road scenes, 11 classes, in the SegNet layout, with splits by sequence.

CamVid's frames come from four drives, and every file name starts with its
sequence (``0001TP_``, ``0006R0_``, ``0016E5_``, ``Seq05VD_``). The usual val
split is 101 frames of 0016E5, a sequence that also gives 204 of the 367
training frames: a model validated there is judged on scenes it has trained
on. A split can therefore join folders and keep or drop whole sequences::

    train               the train/ folder
    train+val           both folders
    train+val:-0006R0   both, without sequence 0006R0 (train on the rest)
    train+val:0006R0    only sequence 0006R0 (validate on an unseen drive)
"""

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
SEQUENCES = ("0001TP", "0006R0", "0016E5", "Seq05VD")


def sequence_of(stem: str) -> str:
    """The drive a CamVid frame comes from: its file name up to the first ``_``."""
    return stem.split("_", 1)[0]


def parse_split(split: str) -> tuple[tuple[str, ...], frozenset[str], bool]:
    """``"train+val:-0006R0"`` -> folders ``("train", "val")``, sequences ``{"0006R0"}``
    and whether they are kept (``True``) or dropped (``False``); no ``:`` keeps all."""
    folders, _, selection = split.partition(":")
    drop = selection.startswith("-")
    sequences = frozenset(s for s in selection.removeprefix("-").split(",") if s)
    unknown = sorted(sequences - set(SEQUENCES))
    if (
        not folders
        or any(not f for f in folders.split("+"))
        or unknown
        or (":" in split and not sequences)
    ):
        raise DataError(
            f"camvid split {split!r}: expected folders joined by '+' (train, val, test), then "
            f"optionally ':SEQ' to keep or ':-SEQ' to drop sequences ({', '.join(SEQUENCES)})"
        )
    return tuple(folders.split("+")), sequences, not drop


class CamVidDataset(FileDataset):
    """CamVid, 11 classes at 360x480, SegNet layout: ``<folder>/`` and ``<folder>annot/``.

    ``split`` names folders joined by ``+`` and optionally whole sequences kept
    (``:0006R0``) or dropped (``:-0006R0``); see the module's docstring.
    """

    info = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_COLORS, 11)

    def __init__(self, root, split: str = "train", transform=None) -> None:
        root = require_dir(Path(root))
        folders, sequences, keep = parse_split(split)
        pairs = [pair for folder in folders for pair in _folder_pairs(root, folder)]
        if sequences:
            pairs = [p for p in pairs if (sequence_of(p[0].stem) in sequences) == keep]
        where = f"{root} split '{split}'"
        if not pairs:
            raise DataError(f"{where}: no frames (sequences here: {_sequences_in(root, folders)})")
        super().__init__(pairs, where, transform)


def _folder_pairs(root: Path, folder: str) -> list[tuple[Path, Path]]:
    images = by_stem(require_dir(root / folder))
    labels = by_stem(require_dir(root / f"{folder}annot"))
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise DataError(f"{root}/{folder}: images and labels differ: {', '.join(missing[:5])}")
    return [(images[s], labels[s]) for s in sorted(images)]


def _sequences_in(root: Path, folders: tuple[str, ...]) -> str:
    stems = [p[0].stem for folder in folders for p in _folder_pairs(root, folder)]
    return ", ".join(sorted({sequence_of(s) for s in stems})) or "none"
