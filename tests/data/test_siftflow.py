"""SIFT Flow in its own layout (JPEGs, .mat 'S' labels, the reference's lists) on a tiny tree."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnseg.cli import main
from fcnseg.data.check import check_pairs
from fcnseg.data.info import DataError
from fcnseg.data.registry import build_dataset
from fcnseg.data.siftflow import FOLDER
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import TrainConfig, build_train_set, build_val_sets

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


def test_a_two_head_net_reads_both_labels_of_each_image(siftflow, tmp_path):
    cfg = TrainConfig(model="fcn8s-sem-geo", dataset="siftflow", data_root=str(siftflow),
                      train_split="trainval", val_split="test")  # fmt: skip
    data = build_train_set(cfg)
    assert data.info.name == "siftflow" and data.names == ["coast_arnat59", "forest_for121"]
    sem, geo = (build_dataset(n, siftflow, "trainval") for n in ("siftflow", "siftflow-geometric"))
    for i in range(len(data)):
        image, labels = data[i]
        assert labels.shape == (*SHAPE, 2)
        np.testing.assert_array_equal(image, sem[i][0])
        np.testing.assert_array_equal(labels[..., 0], sem[i][1])
        np.testing.assert_array_equal(labels[..., 1], geo[i][1])
    assert [v.info.name for v in build_val_sets(cfg)] == ["siftflow", "siftflow-geometric"]
    # The data check reads every head's files.
    bad = tmp_path / "bad"
    for folder in ("Images", "SemanticLabels", "GeoLabels"):
        (bad / folder / FOLDER).mkdir(parents=True)
    (bad / "trainval.txt").write_text("x\n")
    Image.new("RGB", SHAPE).save(bad / "Images" / FOLDER / "x.jpg")
    savemat(bad / "SemanticLabels" / FOLDER / "x.mat", {"S": semantic(0)})
    savemat(bad / "GeoLabels" / FOLDER / "x.mat", {"S": np.full(SHAPE, 4)})
    with pytest.raises(DataError, match=r"GeoLabels/.*x.mat: label values \[4\]"):
        check_pairs(build_train_set(cfg.replace(data_root=str(bad))), progress=False)


def test_both_heads_train_then_evaluate_through_the_cli(siftflow, tmp_path, monkeypatch, capsys):
    # The recipes end to end on the tree: narrow, no download, a few updates each.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tiny = ["--data-root", str(siftflow), "--width", "0.0625", "--iterations", "2",
            "--eval-every", "2", "--lr", "1e-6", "--quiet"]  # fmt: skip
    out = tmp_path / "fcn32s"
    assert main(["train", "--recipe", "siftflow-fcn32s", "--backbone-weights", "none",
                 "--out", str(out), *tiny]) == 0  # fmt: skip
    evals = [r["eval"] for r in map(json.loads, (out / "metrics.jsonl").open()) if "eval" in r]
    heads = evals[-1]["heads"]
    assert [h["dataset"] for h in heads] == ["siftflow", "siftflow-geometric"]
    assert [len(h["per_class_iu"]) for h in heads] == [33, 3]
    assert evals[-1]["mean_iu"] == heads[0]["mean_iu"]  # best.pt by the semantic head
    best = load_checkpoint(out / "best.pt")
    # Score layers start at zero: each moved, so each head's loss reached its own layer.
    for head in ("sem", "geo"):
        assert best["model"][f"score_fr_{head}.weight"].abs().sum() > 0, head
    assert "fcnseg report" not in capsys.readouterr().out  # it draws one label map per image
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "predicts 2 label maps" in err and err.count("\n") == 1
    report = tmp_path / "eval.json"
    # fp32, as training validated (auto would take bf16 on a CPU that computes it)
    assert main(["eval", str(out / "best.pt"), "--json", str(report), "--device", "cpu",
                 "--precision", "fp32"]) == 0  # fmt: skip
    assert "\nsiftflow-geometric\n" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert [h["mean_iu"] for h in result["heads"]] == pytest.approx([h["mean_iu"] for h in heads])
    # Staged: FCN-16s starts from this FCN-32s, both heads' layers copied.
    staged = tmp_path / "fcn16s"
    assert main(["train", "--recipe", "siftflow-fcn16s", "--init-from", str(out / "best.pt"),
                 "--out", str(staged), *tiny]) == 0  # fmt: skip
    assert load_checkpoint(staged / "last.pt")["model_config"]["name"] == "fcn16s-sem-geo"
