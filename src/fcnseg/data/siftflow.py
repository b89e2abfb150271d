"""SIFT Flow (Liu et al.): 2,688 outdoor scenes at 256x256 with two labelings (section 5).

Semantic labels (33 classes, 0 void) and geometric ones (sky, horizontal, vertical;
-1 void). The layout of ``SiftFlowDataset.zip``, with the reference's lists
(``trainval.txt``, 2,488 names, and ``test.txt``, 200; they leave out the two
unannotated images) put beside its folders::

    trainval.txt, test.txt
    Images/spatial_envelope_256x256_static_8outdoorcategories/<name>.jpg
    SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat   'S'
    GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat        'S'

``siftflow`` yields the semantic labels, ``siftflow-geometric`` the geometric ones,
of the same images: the two-head nets (``fcn*s-sem-geo``) are evaluated on both
with :func:`evaluate_heads`. Cow, desert and moon never occur in ``test``; their IU
is then NaN (left out of the mean) unless the net predicts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.dataset import FileDataset, require_dir
from fcnseg.data.info import IGNORE_INDEX, DatasetInfo, voc_colors
from fcnseg.data.mat import one_based, read_lists, read_mat_array

SIFT_FLOW_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window",
)  # fmt: skip
GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")
FOLDER = "spatial_envelope_256x256_static_8outdoorcategories"


class SiftFlowDataset(FileDataset):
    """SIFT Flow, 33 semantic classes, the reference's layout and lists (see the module)."""

    info = DatasetInfo("siftflow", SIFT_FLOW_CLASSES, voc_colors(33), IGNORE_INDEX)
    labels_folder = "SemanticLabels"
    void: tuple[int, ...] = (0,)

    def __init__(self, root, split: str = "trainval", transform=None) -> None:
        root = require_dir(Path(root))
        pairs = [
            (root / "Images" / FOLDER / f"{n}.jpg", root / self.labels_folder / FOLDER / f"{n}.mat")
            for n in read_lists(root, split)
        ]
        super().__init__(pairs, f"{root} split '{split}'", transform)

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_mat_array(path, "S", f"SIFT Flow {self.labels_folder} map")
        return one_based(raw, self.info.num_classes, str(path), self.void)


class SiftFlowGeometricDataset(SiftFlowDataset):
    """SIFT Flow, 3 geometric classes (sky, horizontal, vertical) of the same images."""

    info = DatasetInfo("siftflow-geometric", GEOMETRIC_CLASSES, voc_colors(3), IGNORE_INDEX)
    labels_folder = "GeoLabels"
    void = (-1, 0)  # -1 in the files; the reference's loader also reads 0 as void
