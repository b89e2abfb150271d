"""``fcnseg quantize`` and the int8 file it writes run by ``predict``, ``eval`` and
``serve``; ``predict --backend openvino`` labels as torch does."""

import contextlib
import hashlib
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.images import read_label
from fcnseg.data.synthetic import CLASSES, COLORS, SyntheticDataset
from fcnseg.deploy.engines import onnx_metadata
from fcnseg.deploy.inference import Segmenter
from fcnseg.serve.app import create_app
from fcnseg.serve.config import Limits, ServeOptions
from fcnseg.train.checkpoint import model_from_checkpoint
from tests.conftest import one_line_error
from tests.deploy.test_quantize import KEPT_FLOAT, agreement, conv_weights, train_tiny
from tests.serve.conftest import label_of

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("onnxscript")
VAL = 6
"""Held-out scenes the labels are compared on."""


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run's best.pt, a folder dataset of held-out scenes (PNG images and
    index masks) and torch's fp32 labels of those images, by name."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("quantize-cli")
    train_tiny(tmp / "run")
    data = tmp / "val"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    scenes = SyntheticDataset(split="val")
    for i in range(VAL):
        image, label = scenes.load(i)
        Image.fromarray(image).save(data / "images" / f"{i:02d}.png")
        Image.fromarray(label.astype(np.uint8)).save(data / "masks" / f"{i:02d}.png")
    (data / "classes.txt").write_text("".join(f"{name} {r} {g} {b}\n" for name, (r, g, b)
                                              in zip(CLASSES, COLORS, strict=True)))  # fmt: skip
    fp32 = Segmenter.from_checkpoint(tmp / "run" / "best.pt", backend="torch", precision="fp32")
    paths = sorted((data / "images").iterdir())
    labels = dict(zip([p.stem for p in paths], fp32.predict(paths), strict=True))
    assert len(np.unique(np.concatenate([x.ravel() for x in labels.values()]))) > 1
    return tmp / "run" / "best.pt", data, labels


@pytest.fixture(scope="module")
def quantized(run):
    """``fcnseg quantize`` of the run on 8 synthetic training scenes: the file and what it
    printed."""
    output = run[0].parent / "m.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["quantize", str(run[0]), "--calibrate", "synthetic",
                     "--calibration-images", "8", "-o", str(output)])  # fmt: skip
    assert code == 0
    return output, printed.getvalue()


def predicted(model_file, inputs, out, *args) -> dict[str, np.ndarray]:
    assert main(["predict", str(model_file), str(inputs), "--out", str(out), "--no-overlay",
                 "--device", "cpu", *args]) == 0  # fmt: skip
    return {p.stem: read_label(p) for p in sorted(out.iterdir())}


def agree(labels: dict, expected: dict) -> float:
    assert labels.keys() == expected.keys()
    return agreement([labels[k] for k in expected], list(expected.values()))


def test_quantize_says_which_layers_stay_float(run, quantized):
    output, printed = quantized
    model, _ = model_from_checkpoint(run[0])
    convs = [n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d]
    n_int8 = len(convs) - len(KEPT_FLOAT)
    assert f"int8 model written to {output}: calibrated on 8 images; " in printed
    assert f"({n_int8} convolutions); float: features.0, score_fr, score_pool4, score_pool3 and " \
        "the upsampling" in printed  # fmt: skip
    share = float(re.search(r"labels equal to fp32 on the calibration images: (\S+)%", printed)[1])
    assert 98 <= share <= 100
    metadata = onnx_metadata(output)
    assert metadata["fcnseg.precision"] == "int8"
    assert metadata["fcnseg.checkpoint_sha256"] == sha256(run[0])
    kinds = conv_weights(output)
    assert {n for n, k in kinds.items() if k == "float"} >= KEPT_FLOAT
    assert {n for n, k in kinds.items() if k == "int8"} == set(convs) - KEPT_FLOAT


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "openvino"])
def test_predict_runs_the_int8_file(run, quantized, tmp_path, backend):
    labels = predicted(quantized[0], run[1] / "images", tmp_path / "out", "--backend", backend)
    assert agree(labels, run[2]) >= 0.98


def test_eval_runs_the_int8_file(run, quantized, tmp_path):
    data = ["--dataset", "folder", "--data-root", str(run[1]), "--split", "all"]
    results = {}
    for name, model_file, args in [("int8", quantized[0], ["--backend", "auto"]),
                                   ("fp32", run[0], ["--backend", "torch", "--precision",
                                                     "fp32"])]:  # fmt: skip
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(model_file), *data, *args, "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    int8, fp32 = results["int8"], results["fp32"]
    assert (int8["precision"], int8["backend"]) == ("int8", "openvino")
    assert (fp32["precision"], fp32["backend"]) == ("fp32", "torch")
    assert int8["checkpoint"] == str(quantized[0]) and int8["classes"] == list(CLASSES)
    # >= 98% of the labels unchanged: the pixel accuracy moves by 2 points at most.
    assert fp32["pixel_acc"] > 0.5 and abs(int8["pixel_acc"] - fp32["pixel_acc"]) <= 0.02


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_torch_cannot_run_the_int8_file(run, quantized, tmp_path, capsys, command):
    out = tmp_path / "out"
    args = ([str(run[1] / "images"), "--out", str(out)] if command == "predict"
            else ["--json", str(out / "m.json")])  # fmt: skip
    assert main([command, str(quantized[0]), *args, "--backend", "torch"]) == 2
    assert "--backend torch: an int8 model file runs on onnxruntime or openvino" in (
        one_line_error(capsys)
    )
    assert not out.exists()


def test_a_users_own_file_is_kept(run, tmp_path, capsys):
    notes = tmp_path / "notes.onnx"
    notes.write_bytes(b"the user's own file\n")
    assert main(["quantize", str(run[0]), "--calibrate", str(run[1] / "images"),
                 "-o", str(notes)]) == 2  # fmt: skip
    err = one_line_error(capsys)
    assert f"{notes}: exists and is not an ONNX file written by fcnseg, so it is kept" in err
    assert notes.read_bytes() == b"the user's own file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.onnx"]


def test_a_missing_calibration_folder_is_one_line(run, tmp_path, capsys):
    missing = tmp_path / "no such folder"
    assert main(["quantize", str(run[0]), "--calibrate", str(missing), "-o",
                 str(tmp_path / "m.onnx")]) == 2  # fmt: skip
    error = one_line_error(capsys)
    assert error.startswith("fcnseg: error: --calibrate: ") and str(missing) in error
    assert list(tmp_path.iterdir()) == []


def test_pngs_calibrate_and_nothing_kept_float(run, tmp_path, capsys):
    output = tmp_path / "all.onnx"
    assert main(["quantize", str(run[0]), "--calibrate", str(run[1] / "images"),
                 "--calibration-images", "4", "-o", str(output), "--keep-float"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    model, _ = model_from_checkpoint(run[0])
    convs = {n for n, m in model.named_modules() if type(m) is torch.nn.Conv2d}
    assert "calibrated on 4 images; int8: " in printed
    assert f"({len(convs)} convolutions); float: no convolution and the upsampling" in printed
    assert {n for n, k in conv_weights(output).items() if k == "int8"} == convs
    # An earlier file fcnseg wrote is replaced.
    assert main(["quantize", str(run[0]), "--calibrate", str(run[1] / "images" / "00.png"),
                 "-o", str(output)]) == 0  # fmt: skip
    assert "calibrated on 1 image; " in capsys.readouterr().out
    assert {n for n, k in conv_weights(output).items() if k == "float"} >= KEPT_FLOAT


def test_predict_with_openvino_labels_as_torch(run, tmp_path):
    checkpoint, data, expected = run
    torch_labels = predicted(checkpoint, data / "images", tmp_path / "torch", "--backend",
                             "torch", "--precision", "fp32")  # fmt: skip
    assert agree(torch_labels, expected) == 1.0
    openvino = predicted(checkpoint, data / "images", tmp_path / "openvino", "--backend",
                         "openvino")  # fmt: skip
    assert agree(openvino, torch_labels) >= 0.99
    assert checkpoint.with_suffix(".onnx").is_file()  # the export it ran


def test_a_missing_engine_is_one_line(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # its import fails as if not installed
    out = tmp_path / "out"
    assert main(["predict", str(run[0]), str(run[1] / "images"), "--out", str(out),
                 "--backend", "openvino"]) == 2  # fmt: skip
    assert "--backend openvino needs the openvino package: pip install 'fcnseg[cpu]'" in (
        one_line_error(capsys)
    )
    assert not out.exists()


def test_a_bad_backend_in_the_environment_is_one_line(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FCNSEG_BACKEND", "tensorrt")
    assert main(["predict", str(run[0]), str(run[1] / "images"), "--out",
                 str(tmp_path / "out")]) == 2  # fmt: skip
    assert "$FCNSEG_BACKEND='tensorrt': choose one of auto" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_serve_runs_the_int8_file(run, quantized):
    options = ServeOptions(str(quantized[0]), "onnxruntime", "auto", "cpu", Limits())
    with TestClient(create_app(options)) as client:
        described = client.get("/v1/model").json()
        assert (described["backend"], described["precision"]) == ("onnxruntime", "int8")
        labels = {p.stem: label_of(client.post("/v1/segment", content=p.read_bytes()).content)
                  for p in sorted((run[1] / "images").iterdir())}  # fmt: skip
    assert agree(labels, run[2]) >= 0.98
