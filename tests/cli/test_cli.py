import importlib.metadata
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.images import read_label
from tests.cli.conftest import TINY


def test_version_names_the_installed_package_and_torch(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    expected = f"fcnseg {importlib.metadata.version('fcnseg')} (torch {torch.__version__})"
    assert capsys.readouterr().out.strip() == expected


def test_models_prints_geometry(capsys):
    assert main(["models", "--geometry"]) == 0
    out = capsys.readouterr().out
    assert "upscore: crop at offset 19" in out and "score_pool3: crop at offset 9" in out
    assert "fcn-alexnet" in out


def test_datasets_lists_registry(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic", "folder", "voc", "sbd", "camvid"):
        assert name in out


def test_eval_prints_table_and_json(checkpoint, tmp_path, capsys):
    path = tmp_path / "m.json"
    assert main(["eval", str(checkpoint), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mean IU" in out and "triangle" in out
    result = json.loads(path.read_text())
    assert 0 <= result["mean_iu"] <= 1 and len(result["per_class_iu"]) == 5


def test_predict_any_image_kind(checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 33), dtype=np.uint8)).save(src / "gray.png")
    Image.fromarray(rng.integers(0, 255, (17, 40, 4), dtype=np.uint8)).save(src / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (30, 11, 3), dtype=np.uint8)).convert("P").save(
        src / "pal.png"
    )
    Image.fromarray(rng.integers(0, 65535, (9, 14), dtype=np.uint16)).save(src / "deep.png")
    rot = Image.fromarray(rng.integers(0, 255, (20, 36, 3), dtype=np.uint8))
    exif = rot.getexif()
    exif[0x0112] = 8  # rotated: shown as 20 wide x 36 high
    rot.save(src / "phone.jpg", exif=exif)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(src), "--out", str(out)]) == 0
    expected = {"gray": (21, 33), "rgba": (17, 40), "pal": (30, 11), "deep": (9, 14),
                "phone": (36, 20)}  # fmt: skip
    for stem, shape in expected.items():
        label = read_label(out / f"{stem}.png")
        assert label.shape == shape and label.max() < 5
        assert Image.open(out / f"{stem}.png").mode == "P"
        width, height = Image.open(out / f"{stem}_overlay.png").size
        assert width == 2 * shape[1] and height > shape[0]  # a legend below
    assert "predictions for 5 images" in capsys.readouterr().out
    nchw = tmp_path / "nchw"
    assert main(["predict", str(checkpoint), str(src), "--out", str(nchw), "--no-channels-last",
                 "--no-overlay"]) == 0  # fmt: skip
    for stem in expected:
        same = read_label(nchw / f"{stem}.png") == read_label(out / f"{stem}.png")
        assert same.all(), stem


def test_user_errors_are_one_line(checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:60])
    assert main(["predict", str(checkpoint), str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg: error: ") and "broken.jpg" in err and "\n" not in err
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing*.png")]) == 2
    assert "no such file, folder or matching glob" in capsys.readouterr().err
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    assert main(["train", "--dataset", "folder", "--data-root", str(root), *TINY,
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert "classes.txt: classes file not found" in capsys.readouterr().err
    assert main(["eval", str(good)]) == 2
    assert "not a readable fcnseg checkpoint" in capsys.readouterr().err
