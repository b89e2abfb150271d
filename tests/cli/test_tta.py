"""`fcnseg eval` and `predict` with test-time augmentation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.transforms import normalize_image
from fcnseg.deploy.tta import TestTimeAugmentation
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fcnseg.train.metrics import ConfusionMatrix
from tests.conftest import randomize_scores
from tests.deploy.test_tta import smooth


def test_eval_and_predict_take_tta_from_the_command_line(checkpoint, tmp_path, capsys):
    """``fcnseg eval --tta`` equals the confusion matrix of the augmented model, by hand."""
    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt)
    randomize_scores(model, std=3.0)  # varied predictions, so the views can change labels
    save_checkpoint({**ckpt, "model": model.state_dict()}, tmp_path / "varied.pt")
    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    images = [(255 * smooth(1, 30, 41)[0].sigmoid()).byte().permute(1, 2, 0).numpy()
              for _ in range(3)]  # fmt: skip
    for k, image in enumerate(images):
        Image.fromarray(image).save(data / "images" / f"{k}.png")
        Image.fromarray(np.full((30, 41), k, np.uint8)).save(data / "masks" / f"{k}.png")
    classes = ckpt["dataset"]["classes"]
    (data / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    scales = (0.75, 1.0, 1.25)
    tta = TestTimeAugmentation(model, flip=True, scales=scales)
    expected = ConfusionMatrix(len(classes))
    with torch.inference_mode():
        for k, image in enumerate(images):
            pred = tta(normalize_image(image)[None])[0].argmax(0)
            expected.update(pred, np.full((30, 41), k))
    args = ["--dataset", "folder", "--data-root", str(data), "--split", "all", "--tta", "flip",
            "--tta-scales", *map(str, scales)]  # fmt: skip
    assert main(["eval", str(tmp_path / "varied.pt"), "--precision", "fp32",  # as expected's
                 "--json", str(tmp_path / "m.json"), *args]) == 0  # fmt: skip
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["tta_flip"], result["tta_scales"]) == (True, list(scales))
    got = result["per_class_iu"]
    want = expected.compute()["per_class_iu"]
    assert [v is None for v in got] == [v != v for v in want]  # NaN (absent class) -> null
    assert [v for v in got if v is not None] == pytest.approx([v for v in want if v == v])
    assert 0 < sum(v for v in want if v == v) < len(classes)  # neither all wrong nor all right
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "varied.pt"), *args, "--out", str(out),
                 "--no-overlay"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "1.png", "2.png"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", str(checkpoint), "--tta-scales", "0"])
    assert "must be > 0" in capsys.readouterr().err
