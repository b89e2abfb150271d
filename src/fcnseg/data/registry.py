"""The dataset registry: ``build_dataset(name, root, split)``.

- ``synthetic``: built-in drawn scenes, nothing to download.
- ``folder``: your own ``images/`` + ``masks/`` with a ``classes.txt``.
- ``voc``: PASCAL VOC 2011/2012 (``SegmentationClass`` palette PNGs, 255 void).
- ``sbd``: the Semantic Boundaries Dataset (``cls/*.mat``), the reference's training set.
- ``camvid``: CamVid 11 classes in the SegNet layout, 11 void.
- ``pascal-context``: PASCAL-Context, 59 classes + background, in VOC2010.
- ``nyud``, ``nyud-hha``, ``nyud-color-d``, ``nyud-color-hha``: NYUDv2's 40 classes,
  with the colour image, HHA, colour + depth or colour + HHA as input.
- ``siftflow``, ``siftflow-geometric``: SIFT Flow's 33 semantic and 3 geometric classes.
"""

from __future__ import annotations

import os

from fcnseg.data.camvid import CamVidDataset
from fcnseg.data.dataset import SegmentationDataset, Transform
from fcnseg.data.folder import FolderDataset
from fcnseg.data.info import DataError
from fcnseg.data.nyud import (
    NYUDColorDepthDataset,
    NYUDColorHHADataset,
    NYUDDataset,
    NYUDHHADataset,
)
from fcnseg.data.pascal_context import PascalContextDataset
from fcnseg.data.siftflow import SiftFlowDataset, SiftFlowGeometricDataset
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.data.voc import SBDDataset, VOCDataset

DATASETS: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticDataset,
    "folder": FolderDataset,
    "voc": VOCDataset,
    "sbd": SBDDataset,
    "camvid": CamVidDataset,
    "pascal-context": PascalContextDataset,
    "nyud": NYUDDataset,
    "nyud-hha": NYUDHHADataset,
    "nyud-color-d": NYUDColorDepthDataset,
    "nyud-color-hha": NYUDColorHHADataset,
    "siftflow": SiftFlowDataset,
    "siftflow-geometric": SiftFlowGeometricDataset,
}

HEAD_DATASETS: dict[str, tuple[str, ...]] = {"siftflow": ("siftflow", "siftflow-geometric")}
"""The datasets that label each head of a several-head net, by the first head's
dataset: SIFT Flow's semantic and geometric labels of the same images."""


def head_datasets(name: str, heads: int) -> tuple[str, ...]:
    """The datasets labelling each head of a net with ``heads`` heads, on the images of
    ``name`` (itself for one head).

    Raises:
        DataError: ``name`` has not one label set per head.
    """
    names = HEAD_DATASETS.get(name, (name,)) if heads > 1 else (name,)
    if len(names) != heads:
        raise DataError(
            f"the net has {heads} heads but {name} labels one; "
            f"datasets with a label set per head: {', '.join(HEAD_DATASETS)}"
        )
    return names


def build_dataset(
    name: str, root: str | os.PathLike | None, split: str, transform: Transform | None = None
) -> SegmentationDataset:
    """A dataset by registry name, read from ``root`` (None for ``synthetic``, which is drawn).

    Raises:
        DataError: an unknown name, a file dataset without ``root``, or ``synthetic``
            with one (a folder given to it would be silently ignored).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name != "synthetic" and root is None:
        raise DataError(f"dataset {name!r} needs a root directory (--data-root)")
    if name == "synthetic" and root is not None:
        raise DataError(
            f"dataset 'synthetic' is drawn, not read from files: it takes no folder (got {root})"
        )
    return DATASETS[name](root, split, transform)
