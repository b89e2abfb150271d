"""``fcnseg export`` and ``fcnseg predict --backend onnxruntime``, in-process."""

import hashlib
import re
import shutil
import sys

import pytest
import torch

from fcnseg.cli import main
from fcnseg.data.images import read_label
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.cli.test_predict import photos
from tests.conftest import one_line_error, randomize_scores

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exported_for(path) -> str:
    from fcnseg.deploy.export import CHECKPOINT_SHA256, OnnxModel

    return OnnxModel(path).metadata[CHECKPOINT_SHA256]


def test_export_into_a_new_folder_with_parity(checkpoint, tmp_path, capsys):
    output = tmp_path / "not" / "yet" / "model.onnx"
    assert main(["export", str(checkpoint), str(output)]) == 0
    out = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"parity \d+x\d+: max abs diff vs torch (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-4
    assert exported_for(output) == sha256(checkpoint)
    assert [p.name for p in output.parent.iterdir()] == ["model.onnx"]


def test_export_refuses_to_replace_its_checkpoint(checkpoint, tmp_path, capsys):
    copy = tmp_path / "best.pt"
    shutil.copy(checkpoint, copy)
    assert main(["export", str(copy), str(copy)]) == 2
    assert "is the checkpoint itself" in one_line_error(capsys)
    assert sha256(copy) == sha256(checkpoint)


def test_missing_export_extra_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    assert main(["export", str(checkpoint), str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'fcnseg[export]'" in one_line_error(capsys)


def labels_by(backend: str, checkpoint, photos_dir, out) -> dict:
    args = [str(photos_dir), "--out", str(out), "--no-overlay", "--backend", backend, "--device",
            "cpu", "--precision", "fp32", "--overwrite"]  # fmt: skip
    assert main(["predict", str(checkpoint), *args]) == 0
    return {p.name: read_label(p) for p in sorted(out.iterdir())}


def agreement(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return min((a[k] == b[k]).mean() for k in a)


def test_onnxruntime_predictions_follow_the_checkpoint(checkpoint, tmp_path):
    photos(tmp_path / "photos", {"a.png": (37, 53), "b.png": (30, 41)}, seed=5)
    best = tmp_path / "run" / "best.pt"
    best.parent.mkdir()
    shutil.copy(checkpoint, best)
    first = labels_by("onnxruntime", best, tmp_path / "photos", tmp_path / "ort")
    assert agreement(first, labels_by("torch", best, tmp_path / "photos", tmp_path / "pt")) > 0.99
    assert exported_for(best.with_suffix(".onnx")) == sha256(best)

    ckpt = load_checkpoint(best)  # the user retrains: best.pt is replaced by another model
    model, _ = model_from_checkpoint(ckpt)
    torch.manual_seed(1)
    randomize_scores(model, std=0.1)
    torch.save({**ckpt, "model": model.state_dict()}, best)
    second = labels_by("onnxruntime", best, tmp_path / "photos", tmp_path / "ort")
    assert exported_for(best.with_suffix(".onnx")) == sha256(best)
    new_torch = labels_by("torch", best, tmp_path / "photos", tmp_path / "pt")
    assert agreement(second, new_torch) > 0.99
    assert agreement(second, first) < 0.9  # the new model, not the cached old one

    best.with_suffix(".onnx").write_bytes(b"\x00 half a file")  # corrupt cache: exported again
    third = labels_by("onnxruntime", best, tmp_path / "photos", tmp_path / "ort")
    assert agreement(third, new_torch) > 0.99
    assert exported_for(best.with_suffix(".onnx")) == sha256(best)


def test_export_replaces_only_its_own_exports(checkpoint, tmp_path, capsys):
    last = tmp_path / "last.pt"  # the resumable checkpoint beside best.pt
    shutil.copy(checkpoint, last)
    notes = tmp_path / "notes.onnx"
    notes.write_bytes(b"the user's own file")
    for target in (last, notes):
        assert main(["export", str(checkpoint), str(target)]) == 2
        assert one_line_error(capsys) == (
            f"fcnseg: error: {target}: exists and is not an ONNX file written by fcnseg, so it "
            "is kept; give another file name"
        )
    assert sha256(last) == sha256(checkpoint) and notes.read_bytes() == b"the user's own file"
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), str(onnx)]) == 0  # a new file, then replaced
    other = tmp_path / "other.pt"
    torch.save({**load_checkpoint(checkpoint), "note": "another file"}, other)
    assert main(["export", str(other), str(onnx)]) == 0
    assert exported_for(onnx) == sha256(other) != sha256(checkpoint)
    capsys.readouterr()
    (tmp_path / "dir").mkdir()
    assert main(["export", str(checkpoint), str(tmp_path / "dir")]) == 2
    assert one_line_error(capsys) == (
        f"fcnseg: error: {tmp_path / 'dir'}: is a folder; give the .onnx file to write"
    )
    assert list((tmp_path / "dir").iterdir()) == []
