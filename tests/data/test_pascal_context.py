"""PASCAL-Context in VOC2010 (full labels in .mat + labels.txt, or 60-class PNGs), tiny trees."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnseg.data.info import DataError
from fcnseg.data.pascal_context import CONTEXT_CLASSES
from fcnseg.data.registry import build_dataset

NAMES = ["2008_000002", "2008_000003"]
SHAPE = (9, 13)
# The full labelling's names: the 59 classes (three spelled otherwise) among others,
# with ids in no particular order.
FULL = {"accordion": 1, "cat": 2, "table": 7, "cloth": 8, "bedclothes": 9, "wood": 10,
        "pottedplant": 11, "bottle": 12, "sky": 13, "plate": 14}  # fmt: skip
OTHERS = [c for c in CONTEXT_CLASSES[1:] if c not in ("diningtable", "clothes", "bedcloth")]
FULL |= {name: 100 + i for i, name in enumerate(n for n in OTHERS if n not in FULL)}
FULL |= {"zebra crossing": 400}
EXPECTED = {1: 0, 2: 8, 7: 11, 8: 28, 9: 52, 10: 59, 11: 16, 12: 5, 13: 50, 14: 45, 400: 0}


def voc2010(root):
    for folder in ("JPEGImages", "ImageSets/Main", "trainval"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("\n".join(NAMES) + "\n")
    for seed, name in enumerate(NAMES):
        image = np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
    return root


@pytest.fixture
def context_mat(tmp_path):
    root = voc2010(tmp_path / "VOC2010")
    lines = [f"{i}: {name}" for name, i in sorted(FULL.items(), key=lambda kv: -kv[1])]
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    for seed, name in enumerate(NAMES):
        full = np.random.default_rng(seed).choice(list(EXPECTED), SHAPE).astype(np.uint16)
        savemat(root / "trainval" / f"{name}.mat", {"LabelMap": full})
    return root


def test_full_labels_map_to_the_60_classes(context_mat):
    data = build_dataset("pascal-context", context_mat, "train")
    assert data.info.num_classes == 60 and data.info.classes[0] == "background"
    for seed in range(2):
        _, label = data[seed]
        full = np.random.default_rng(seed).choice(list(EXPECTED), SHAPE)
        np.testing.assert_array_equal(label, np.vectorize(EXPECTED.get)(full))


def test_labels_txt_must_name_the_classes(context_mat):
    text = (context_mat / "labels.txt").read_text()
    (context_mat / "labels.txt").write_text(text.replace(": cloth\n", ": clothing\n"))
    with pytest.raises(DataError, match="labels.txt: no label named cloth"):
        build_dataset("pascal-context", context_mat, "train")
    (context_mat / "labels.txt").write_text("accordion\n")
    with pytest.raises(DataError, match=r"labels.txt:1: expected '<id>: <name>'"):
        build_dataset("pascal-context", context_mat, "train")


def test_60_class_pngs(tmp_path):
    root = voc2010(tmp_path / "VOC2010")
    labels = []
    for seed, name in enumerate(NAMES):
        label = np.random.default_rng(seed).integers(0, 60, SHAPE, dtype=np.uint8)
        label[0] = 255
        Image.fromarray(label, mode="L").save(root / "trainval" / f"{name}.png")
        labels.append(label)
    data = build_dataset("pascal-context", root, "train")
    for label, (_, read) in zip(labels, data, strict=True):
        np.testing.assert_array_equal(read, label)
    with pytest.raises(DataError, match="val.txt: split list not found"):
        build_dataset("pascal-context", root, "val")
