"""SIFT Flow in its own layout (JPEGs, .mat 'S' labels, the reference's lists) on a tiny tree."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnseg.data.info import DataError
from fcnseg.data.registry import build_dataset
from fcnseg.data.siftflow import FOLDER

SPLITS = {"trainval": ["coast_arnat59", "forest_for121"], "test": ["street_bost64"]}
SHAPE = (16, 16)


def semantic(seed):
    """0 void, 1-33 the classes, as double, the way MATLAB saves them."""
    return np.random.default_rng(seed).integers(0, 34, SHAPE).astype(np.float64)


def geometric(seed):
    """-1 void, 1-3 sky, horizontal, vertical."""
    return np.random.default_rng(seed).choice([-1, 1, 2, 3], SHAPE).astype(np.int32)


@pytest.fixture(scope="module")
def siftflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("SiftFlowDataset")
    for folder in ("Images", "SemanticLabels", "GeoLabels"):
        (root / folder / FOLDER).mkdir(parents=True)
    for split, names in SPLITS.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
        for seed, name in enumerate(names):
            image = np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "Images" / FOLDER / f"{name}.jpg")
            savemat(root / "SemanticLabels" / FOLDER / f"{name}.mat", {"S": semantic(seed)})
            savemat(root / "GeoLabels" / FOLDER / f"{name}.mat", {"S": geometric(seed)})
    return root


def test_semantic_labels(siftflow):
    data = build_dataset("siftflow", siftflow, "trainval")
    assert len(data) == 2 and data.info.num_classes == 33
    assert data.info.classes[8] == "cow" and data.info.classes[32] == "window"
    image, label = data[1]
    assert image.shape == (*SHAPE, 3)
    raw = semantic(1).astype(np.int64)
    np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw - 1))


def test_geometric_labels_of_the_same_images(siftflow):
    data = build_dataset("siftflow-geometric", siftflow, "test")
    assert data.info.classes == ("sky", "horizontal", "vertical")
    assert data.names == build_dataset("siftflow", siftflow, "test").names == ["street_bost64"]
    _, label = data[0]
    raw = geometric(0)
    np.testing.assert_array_equal(label, np.where(raw == -1, 255, raw - 1))


def test_bad_geometric_value(siftflow, tmp_path):
    root = tmp_path / "sift"
    for folder in ("Images", "GeoLabels"):
        (root / folder / FOLDER).mkdir(parents=True)
    (root / "test.txt").write_text("x\n")
    Image.new("RGB", SHAPE).save(root / "Images" / FOLDER / "x.jpg")
    savemat(root / "GeoLabels" / FOLDER / "x.mat", {"S": np.full(SHAPE, 4)})
    with pytest.raises(DataError, match=r"x.mat: label values \[4\] are neither classes 1..3"):
        build_dataset("siftflow-geometric", root, "test")[0]
    with pytest.raises(DataError, match="SemanticLabels/.*x.mat: no such file"):
        build_dataset("siftflow", root, "test")[0]
