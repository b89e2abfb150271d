"""PASCAL VOC and SBD on tiny fixture trees, and the VOC recipes' data through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

import fcnseg
from fcnseg.cli import main
from fcnseg.data.info import DataError, voc_colors
from fcnseg.data.voc import SBDDataset, VOCDataset
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.conftest import randomize_scores

SBD_TRAIN = ["2008_000002", "2008_000003", "2008_000007"]
SBD_VAL = ["2008_000008"]
VOC_VAL = ["2007_000033", "2008_000003", "2008_000009", "2008_000012"]  # 2008_000003: in SBD train
SEG11VALID = ["2007_000033", "2008_000009", "2008_000012"]


def picture(name: str, shape=(36, 44)) -> np.ndarray:
    rng = np.random.default_rng(int(name.replace("_", "")))
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def label_map(name: str, offset: int, shape=(36, 44)) -> np.ndarray:
    """Classes 0-3 in proportions that differ by image and by tree (SBD or VOC)."""
    rng = np.random.default_rng(int(name.replace("_", "")) + offset)
    label = rng.choice(4, size=shape, p=rng.dirichlet(np.ones(4))).astype(np.uint8)
    label[:2] = 255  # a void border, as VOC's
    return label


def sbd_tree(root):
    """SBD's ``dataset/`` folder: img/*.jpg, cls/*.mat (GTcls.Segmentation), train/val lists."""
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    for name in SBD_TRAIN + SBD_VAL:
        Image.fromarray(picture(name)).save(root / "img" / f"{name}.jpg")
        gt = {"Segmentation": label_map(name, 1), "Boundaries": np.zeros(1), "CategoriesPresent": 1}
        savemat(root / "cls" / f"{name}.mat", {"GTcls": gt})
    (root / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (root / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return root


def voc_label_file(path, label):
    img = Image.fromarray(label, mode="P")
    img.putpalette([c for rgb in voc_colors(256) for c in rgb])
    img.save(path)


def voc_tree(root):
    """VOC2011: JPEGImages, SegmentationClass (palette PNGs), ImageSets/Segmentation/val.txt."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name in VOC_VAL:
        Image.fromarray(picture(name)).save(root / "JPEGImages" / f"{name}.jpg")
        voc_label_file(root / "SegmentationClass" / f"{name}.png", label_map(name, 2))
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(VOC_VAL) + "\n")
    return root


@pytest.fixture
def trees(tmp_path):
    return sbd_tree(tmp_path / "benchmark_RELEASE" / "dataset"), voc_tree(tmp_path / "VOC2011")


def test_sbd_reads_class_maps_from_mat(trees):
    sbd, _ = trees
    ds = SBDDataset(sbd, "train")
    assert ds.names == SBD_TRAIN and ds.info.num_classes == 21
    image, label = ds.load(1)
    jpeg = Image.open(sbd / "img" / f"{SBD_TRAIN[1]}.jpg")
    np.testing.assert_array_equal(image, np.asarray(jpeg))
    np.testing.assert_array_equal(label, label_map(SBD_TRAIN[1], 1))


def test_seg11valid_is_voc_val_minus_sbd_train(trees):
    sbd, voc = trees
    ds = VOCDataset(voc, "seg11valid", sbd_root=sbd)
    assert ds.names == SEG11VALID and "minus" in ds.where
    np.testing.assert_array_equal(ds.load(0)[1], label_map(SEG11VALID[0], 2))  # VOC's labels
    with pytest.raises(DataError, match=r"seg11valid.txt not found.*--dataset sbd"):
        VOCDataset(voc, "seg11valid")
    # The reference's own list, where present, is read as it is.
    (voc / "ImageSets/Segmentation/seg11valid.txt").write_text(VOC_VAL[0] + "\n")
    assert VOCDataset(voc, "seg11valid").names == VOC_VAL[:1]


def test_voc_recipe_without_its_val_root_says_which_flag(trees, tmp_path, capsys):
    sbd, _ = trees
    args = ["train", "--recipe", "voc-fcn32s", "--data-root", str(sbd), "--backbone-weights",
            "none", "--width", "0.0625", "--iterations", "1", "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg: error: ") and "--val-root" in err and "\n" not in err


def independent_metrics(model, voc, names, num_classes=21):
    """Pixel accuracy and per-class IU of ``model`` on VOC files, read and normalised here."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    counts = np.zeros((num_classes, num_classes), np.int64)
    for name in names:
        pixels = np.asarray(Image.open(voc / "JPEGImages" / f"{name}.jpg"), np.float64) / 255
        x = torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1)).float()[None]
        with torch.inference_mode():
            pred = model(x)[0].argmax(0).numpy()
        truth = np.asarray(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        valid = truth != 255
        counts += np.bincount(
            truth[valid] * num_classes + pred[valid], minlength=num_classes**2
        ).reshape(num_classes, num_classes)
    with np.errstate(invalid="ignore"):  # NaN for a class neither present nor predicted
        iu = np.diag(counts) / (counts.sum(0) + counts.sum(1) - np.diag(counts))
    return np.diag(counts).sum() / counts.sum(), iu


def test_voc_recipe_trains_on_sbd_and_validates_on_voc_seg11valid(trees, tmp_path, capsys):
    sbd, voc = trees
    # A start that predicts the fixture's classes 0-3 (a tiny net predicts one class
    # throughout), so the metrics depend on which labels are scored: see the end.
    start = randomize_scores(fcnseg.build_model("fcn32s", 21, width=0.0625), std=3.0)
    with torch.no_grad():
        start.score_fr.bias[4:] = -1e3
    torch.save({"model": start.state_dict()}, tmp_path / "start.pt")
    run = tmp_path / "run"
    args = ["train", "--recipe", "voc-fcn32s", "--data-root", str(sbd), "--val-root", str(voc),
            "--backbone-weights", "none", "--init-from", str(tmp_path / "start.pt"),
            "--width", "0.0625", "--iterations", "2", "--eval-every", "2", "--quiet",
            "--out", str(run)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["dataset"], cfg["val_dataset"], cfg["val_split"]) == ("sbd", "voc", "seg11valid")
    assert cfg["normalization"] == "imagenet"  # from the weights it started from
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["normalization"] == "imagenet"
    model, _ = model_from_checkpoint(ckpt)
    pixel_acc, iu = independent_metrics(model, voc, SEG11VALID)
    assert ckpt["metrics"]["pixel_acc"] == pytest.approx(pixel_acc, abs=1e-12)
    np.testing.assert_allclose(ckpt["metrics"]["per_class_iu"], iu, atol=1e-12)
    # Other images would give other numbers (all of VOC val, with the SBD training image).
    assert 0 < pixel_acc < 1 and pixel_acc != independent_metrics(model, voc, VOC_VAL)[0]
    # fcnseg eval finds the same data from the checkpoint alone, and the same numbers.
    capsys.readouterr()
    # fp32: what the training-time evaluation computed
    evaluate = [
        "eval",
        str(run / "best.pt"),
        "--precision",
        "fp32",
        "--json",
        str(tmp_path / "m.json"),
    ]
    assert main(evaluate) == 0
    assert f"voc/seg11valid: {len(SEG11VALID)} images" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["pixel_acc"] == ckpt["metrics"]["pixel_acc"]


def test_staged_recipe_starts_from_the_coarser_run_and_resumes_without_it(
    trees, tmp_path, monkeypatch, capsys
):
    """voc-fcn16s's default init_from, runs/voc-fcn32s/best.pt, read from the working
    folder: its shared weights start as FCN-32s's. A resume needs only its own run."""
    sbd, voc = trees
    monkeypatch.chdir(tmp_path)
    data = ["--data-root", str(sbd), "--val-root", str(voc), "--width", "0.0625", "--quiet"]
    # Another seed than FCN-16s's: from scratch, the two would start alike.
    assert main(["train", "--recipe", "voc-fcn32s", *data, "--backbone-weights", "none",
                 "--seed", "5", "--iterations", "2", "--eval-every", "2"]) == 0  # fmt: skip
    # An lr far below the weights' float32 resolution: the update leaves them as loaded.
    still = ["--iterations", "1", "--eval-every", "1", "--lr", "1e-30"]
    assert main(["train", "--recipe", "voc-fcn16s", *data, *still]) == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "runs/voc-fcn16s/config.json").read_text())
    assert (cfg["init_from"], cfg["backbone_weights"]) == ("runs/voc-fcn32s/best.pt", None)
    source = load_checkpoint(tmp_path / "runs/voc-fcn32s/best.pt")
    target = load_checkpoint(tmp_path / "runs/voc-fcn16s/last.pt")
    shared = [k for k in source["model"] if k in target["model"]]
    assert "features.0.weight" in shared and "score_fr.weight" in shared
    for k in shared:
        torch.testing.assert_close(target["model"][k], source["model"][k], rtol=0, atol=1e-20)
    assert target["metrics"]["pixel_acc"] == pytest.approx(source["metrics"]["pixel_acc"])
    # The start file gone, the run still resumes: its checkpoint holds every weight.
    (tmp_path / "runs/voc-fcn32s/best.pt").unlink()
    resume = ["train", "--resume", "--out", "runs/voc-fcn16s", "--iterations", "2", "--quiet"]
    assert main(resume) == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "runs/voc-fcn16s/last.pt")["iteration"] == 2
