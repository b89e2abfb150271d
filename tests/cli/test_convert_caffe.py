"""``fcnseg convert-caffe`` and ``--weights``: a caffemodel written from known weights becomes a
checkpoint that predict and eval run with no flag, seeing the pixels Caffe saw; bad files
stop with one line naming them."""

import argparse
import dataclasses
import hashlib
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.cli import build_parser, main
from fcnseg.data.images import read_label
from fcnseg.data.registry import DATASETS
from fcnseg.data.voc import VOC_CLASSES
from fcnseg.nets.reference_weights import REFERENCE_WEIGHTS
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.cli.test_predict import normalize_by_hand, photos
from tests.conftest import one_line_error, randomize_scores
from tests.nets.caffe_writer import write_caffemodel
from tests.nets.test_caffe_convert import assert_same_logits, caffe_layers

WIDTH = 0.0625
CPU = ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def source():
    """A tiny FCN-8s with 21 classes and random weights: the 'published' net."""
    torch.manual_seed(0)
    model = fcnseg.build_model("fcn8s", 21, width=WIDTH)
    return randomize_scores(model, std=0.1).eval()


@pytest.fixture(scope="module")
def caffemodel(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("caffe") / "fcn8s-heavy-pascal.caffemodel"
    write_caffemodel(path, caffe_layers("fcn8s", source))
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch, caffemodel):
    """torch.hub's cache in a temp folder, its downloads copies of ``caffemodel``."""
    downloads = []

    def download(url, dst, hash_prefix=None, progress=True):
        downloads.append(url)
        data = caffemodel.read_bytes()
        if hash_prefix and not hashlib.sha256(data).hexdigest().startswith(hash_prefix):
            raise RuntimeError(f'invalid hash value (expected "{hash_prefix}")')
        with open(dst, "wb") as f:
            f.write(data)

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return downloads


def labels_by_hand(model, image: np.ndarray) -> np.ndarray:
    """argmax of the model on the image as Caffe's data layer feeds it: BGR, minus the mean."""
    with torch.inference_mode():
        return model(normalize_by_hand(image, "caffe"))[0].argmax(0).numpy()


def test_converted_checkpoint_describes_itself(caffemodel, tmp_path, capsys):
    out = tmp_path / "voc-fcn8s.pt"
    assert main(["convert-caffe", str(caffemodel), "--model", "voc-fcn8s", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"to {out}" in said and "fcn8s, 21 classes (voc), caffe input, fixed bilinear" in said
    ckpt = load_checkpoint(out)
    assert ckpt["model_config"]["name"] == "fcn8s" and ckpt["model_config"]["width"] == WIDTH
    assert tuple(ckpt["dataset"]["classes"]) == VOC_CLASSES
    assert ckpt["normalization"] == "caffe"
    # eval's data: the reference's validation set, from the recipe of the same name.
    train_config = ckpt["train_config"]
    assert (train_config["val_dataset"], train_config["val_split"]) == ("voc", "seg11valid")
    assert "model" not in train_config and "init_from" not in train_config  # data only
    reference = ckpt["reference"]
    assert reference["url"] == REFERENCE_WEIGHTS["voc-fcn8s"].url
    assert reference["sha256"] == hashlib.sha256(caffemodel.read_bytes()).hexdigest()
    assert reference["metrics"] == {
        "seg11valid": {"mean_iu": 0.655},
        "seg12test": {"mean_iu": 0.672},
    }


def test_predict_sees_what_caffe_saw(source, caffemodel, tmp_path, capsys):
    out = tmp_path / "net.pt"
    # A model name instead of a weights name: classes numbered unless --dataset says.
    assert main(["convert-caffe", str(caffemodel), "--model", "fcn8s", "-o", str(out),
                 "--dataset", "voc"]) == 0  # fmt: skip
    photos(tmp_path / "photos", {"p.png": (41, 57)}, seed=5)
    image = np.asarray(Image.open(tmp_path / "photos" / "p.png"))
    expected = labels_by_hand(source, image)
    assert len(np.unique(expected)) > 1
    rgb = labels_by_hand(source, image[..., ::-1])  # RGB where Caffe had BGR
    assert (rgb == expected).mean() < 0.99
    assert main(["predict", str(out), str(tmp_path / "photos"), "--out", str(tmp_path / "o"),
                 *CPU]) == 0  # fmt: skip
    assert (read_label(tmp_path / "o" / "p.png") == expected).mean() > 0.999


def test_weights_name_downloads_once_and_converts(source, hub, tmp_path, capsys):
    photos(tmp_path / "photos", {"a.png": (30, 40), "b.png": (33, 35)}, seed=7)
    for run in ("first", "second"):
        out = tmp_path / run
        assert main(["predict", "--weights", "voc-fcn8s", str(tmp_path / "photos" / "a.png"),
                     str(tmp_path / "photos" / "b.png"), "--out", str(out), *CPU]) == 0  # fmt: skip
        for name in ("a", "b"):
            image = np.asarray(Image.open(tmp_path / "photos" / f"{name}.png"))
            got = read_label(out / f"{name}.png")
            assert (got == labels_by_hand(source, image)).mean() > 0.999
    assert hub == [REFERENCE_WEIGHTS["voc-fcn8s"].url]  # downloaded once, then cached
    cached = tmp_path / "hub" / "checkpoints"
    assert sorted(p.name for p in cached.iterdir()) == [
        "fcn8s-heavy-pascal.caffemodel",
        "fcnseg-voc-fcn8s.pt",
    ]


def test_eval_with_weights_reads_the_reference_data(hub, tmp_path, capsys):
    voc = tmp_path / "VOC2011"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "SegmentationClass").mkdir()
    rng = np.random.default_rng(1)
    for name in ("2011_000001", "2011_000002"):
        Image.fromarray(rng.integers(0, 256, (30, 36, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        Image.fromarray(rng.integers(0, 21, (30, 36), dtype=np.uint8)).save(
            voc / "SegmentationClass" / f"{name}.png"
        )
    (voc / "ImageSets" / "Segmentation" / "seg11valid.txt").write_text("2011_000001\n2011_000002\n")
    assert main(["eval", "--weights", "voc-fcn8s", "--data-root", str(voc), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "voc/seg11valid: 2 images" in said and "aeroplane" in said


def test_download_failure_says_how_to_get_the_file(monkeypatch, tmp_path, capsys):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["predict", "--weights", "voc-fcn16s", "x.png", *CPU]) == 2
    err = one_line_error(capsys)
    url = REFERENCE_WEIGHTS["voc-fcn16s"].url
    assert f"cannot download {url} (Name or service not known)" in err
    assert "fcnseg convert-caffe fcn16s-heavy-pascal.caffemodel --model voc-fcn16s" in err


def test_wrong_hash_is_refused(hub, monkeypatch, tmp_path, capsys):
    entry = REFERENCE_WEIGHTS["voc-fcn8s"]
    monkeypatch.setitem(REFERENCE_WEIGHTS, "voc-fcn8s", dataclasses.replace(entry, sha256="0" * 64))
    assert main(["predict", "--weights", "voc-fcn8s", "x.png", *CPU]) == 2
    assert "invalid hash value" in one_line_error(capsys)
    assert not (tmp_path / "hub" / "checkpoints" / "fcnseg-voc-fcn8s.pt").exists()


def convert(path, model, out, *extra) -> int:
    return main(["convert-caffe", str(path), "--model", model, "-o", str(out), *extra])


@pytest.mark.parametrize(
    "damage",
    ["truncated", "png", "prototxt"],
)
def test_unreadable_files_stop_with_one_line(caffemodel, tmp_path, capsys, damage):
    path = tmp_path / "bad.caffemodel"
    if damage == "truncated":
        path.write_bytes(caffemodel.read_bytes()[: caffemodel.stat().st_size // 2])
    elif damage == "png":
        Image.new("RGB", (4, 4)).save(path, format="PNG")
    else:
        path.write_text("name: 'FCN'\nlayer { name: 'conv1_1' type: 'Convolution' }\n")
    assert convert(path, "voc-fcn8s", tmp_path / "out.pt") == 2
    assert one_line_error(capsys).startswith(f"fcnseg: error: {path}: not a readable caffemodel")
    assert not (tmp_path / "out.pt").exists()


def test_wrong_architecture_names_the_layers(caffemodel, tmp_path, capsys):
    assert convert(caffemodel, "voc-fcn16s", tmp_path / "out.pt") == 2
    assert one_line_error(capsys) == (
        f"fcnseg: error: {caffemodel} does not fit fcn16s: missing layers: upscore16; "
        "layers left over: score_pool3, upscore_pool4, upscore8"
    )
    assert convert(caffemodel, "fcn8s", tmp_path / "out.pt", "--dataset", "camvid") == 2
    assert "predicts 21 classes, camvid has 11" in one_line_error(capsys)
    assert convert(caffemodel, "unet", tmp_path / "out.pt") == 2
    assert "--model unet: give a reference weights name (voc-fcn32s" in one_line_error(capsys)


def test_output_is_never_overwritten_unasked(caffemodel, tmp_path, capsys):
    out = tmp_path / "out.pt"
    out.write_text("precious")
    assert convert(caffemodel, "voc-fcn8s", out) == 2
    assert "exists: pass --overwrite" in one_line_error(capsys)
    assert out.read_text() == "precious"
    assert convert(caffemodel, "voc-fcn8s", caffemodel, "--overwrite") == 2
    assert "that is the caffemodel itself" in one_line_error(capsys)
    assert convert(caffemodel, "voc-fcn8s", out, "--overwrite") == 0
    assert load_checkpoint(out)["model_config"]["name"] == "fcn8s"


def test_checkpoint_and_weights_arguments(caffemodel, tmp_path, capsys):
    assert main(["predict", "x.png", "--weights", str(caffemodel), *CPU]) == 2
    assert f"--weights {caffemodel}: convert it first (fcnseg convert-caffe" in one_line_error(
        capsys
    )
    assert main(["predict", "--weights", "voc-fcn9s", "x.png", *CPU]) == 2
    assert "--weights voc-fcn9s: no such file, and not a reference name" in one_line_error(capsys)
    assert main(["eval", "a.pt", "--weights", "voc-fcn8s"]) == 2
    assert "give a.pt or --weights voc-fcn8s, not both" in one_line_error(capsys)
    assert main(["eval"]) == 2
    assert "give a checkpoint, or --weights NAME" in one_line_error(capsys)


def test_models_lists_the_reference_weights(capsys):
    assert main(["models", "--weights"]) == 0
    said = capsys.readouterr().out
    for name, entry in REFERENCE_WEIGHTS.items():
        assert name in said and (entry.url or "the reference publishes no file") in said
    assert "seg11valid mean_iu 65.5; seg12test mean_iu 67.2" in said


def test_help_explains_every_option(capsys):
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = sub.choices["convert-caffe"]
    with pytest.raises(SystemExit):
        main(["convert-caffe", "--help"])
    text = capsys.readouterr().out
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and action.help.split()[0] in text


@pytest.mark.parametrize("name", REFERENCE_WEIGHTS)
def test_every_reference_net_converts_with_its_metadata(name, tmp_path, capsys):
    entry = REFERENCE_WEIGHTS[name]
    torch.manual_seed(0)
    model = randomize_scores(fcnseg.build_model(entry.model, entry.num_classes, width=WIDTH))
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, caffe_layers(entry.model, model.eval()))
    assert convert(path, name, tmp_path / "net.pt") == 0
    converted, ckpt = model_from_checkpoint(tmp_path / "net.pt")
    assert ckpt["normalization"] == entry.normalization
    assert ckpt["dataset"] == dataclasses.asdict(DATASETS[entry.dataset].info)
    evaluated_on = ckpt["train_config"]["val_dataset"] or ckpt["train_config"]["dataset"]
    assert evaluated_on == entry.dataset  # what eval reads with no --dataset
    assert_same_logits(converted, model)
