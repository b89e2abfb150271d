"""``fcnseg eval``: the training-time numbers, the checkpoint's data, and class checks."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from fcnseg.train.engine import json_safe
from tests.conftest import one_line_error, randomize_scores, save_balanced_checkpoints
from tests.data.test_siftflow import siftflow  # noqa: F401 (the fixture)

METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "per_class_iu", "per_class_acc")


def folder_dataset(root, n, names, size=(30, 38)):
    """``n`` random image/mask pairs whose masks use every class in ``names``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(len(names) * 100 + n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"{i:03d}.png"
        )
        mask = rng.integers(0, len(names), size, dtype=np.uint8)
        mask[0] = 255  # a void row
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("".join(f"{name} {k} {k} {k}\n" for k, name in
                                              enumerate(names)))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run on a 4-class folder dataset (30 images, 3 for validation) that starts from
    random score layers: its predictions vary, so a wrong evaluation shows."""
    tmp = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)  # a module fixture: set up before the per-test seeding
    data = folder_dataset(tmp / "data", 30, ["c0", "c1", "c2", "c3"])
    start = randomize_scores(fcnseg.build_model("fcn8s", 4, width=0.0625, batch_norm=True), 1.0)
    torch.save({"model": start.state_dict()}, tmp / "start.pt")
    args = ["train", "--recipe", "synthetic-demo", "--dataset", "folder", "--data-root",
            str(data), "--init-from", str(tmp / "start.pt"), "--width", "0.0625", "--crop",
            "24", "--batch-size", "2", "--iterations", "2", "--warmup", "0", "--lr", "1e-9",
            "--quiet", "--out", str(tmp / "run")]  # fmt: skip
    assert main(args) == 0
    return tmp / "run"


def evaluate_cli(args, tmp_path):
    out = tmp_path / "metrics.json"
    assert main(["eval", *map(str, args), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_eval_equals_the_training_time_evaluation(run, tmp_path):
    saved = json_safe(load_checkpoint(run / "best.pt")["metrics"])
    result = evaluate_cli([run / "best.pt", "--precision", "fp32"], tmp_path)
    assert {k: result[k] for k in METRICS} == {k: saved[k] for k in METRICS}
    assert result["classes"] == ["c0", "c1", "c2", "c3"] and result["split"] == "val"
    # The predictions are varied (not one class), so equal numbers mean equal work.
    assert sum(acc > 0 for acc in result["per_class_acc"]) > 1
    # ...and NCHW one image at a time, the other inference path, gives them too.
    again = evaluate_cli(
        [run / "best.pt", "--precision", "fp32", "--batch-size", "1", "--no-channels-last"],
        tmp_path,
    )
    assert {k: again[k] for k in METRICS} == {k: saved[k] for k in METRICS}


def independent_eval(checkpoint, root, n_rows):
    """Pixel accuracy, per-class IU and accuracy over every pair of a folder dataset,
    with a confusion matrix of ``n_rows`` classes, written out here."""
    model, _ = model_from_checkpoint(checkpoint)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    counts = np.zeros((n_rows, n_rows), np.int64)
    for path in sorted((root / "images").iterdir()):
        pixels = np.asarray(Image.open(path), np.float64) / 255
        x = torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1)).float()[None]
        with torch.inference_mode():
            pred = model(x)[0].argmax(0).numpy()
        truth = np.asarray(Image.open(root / "masks" / path.name)).astype(np.int64)
        keep = truth != 255
        counts += np.bincount(truth[keep] * n_rows + pred[keep], minlength=n_rows**2).reshape(
            n_rows, n_rows
        )
    hits, truth_px, pred_px = np.diag(counts), counts.sum(1), counts.sum(0)
    with np.errstate(invalid="ignore"):
        iu, acc = hits / (truth_px + pred_px - hits), hits / truth_px
    return hits.sum() / counts.sum(), iu, acc


@pytest.mark.parametrize(
    "names",
    [["c0", "c1", "c2"], ["c0", "c1", "c2", "c3", "c4", "c5"], ["sky", "road", "car", "tree"]],
)
def test_other_classes_are_refused_unless_allowed(run, tmp_path, capsys, names):
    data = folder_dataset(tmp_path / "other", 5, names)
    args = ["eval", str(run / "best.pt"), "--dataset", "folder", "--data-root", str(data),
            "--split", "all"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--allow-class-mismatch" in err
    assert f"predicts 4 classes (c0, c1, c2, c3) but folder has {len(names)}" in err
    # Forced: the confusion matrix spans the classes of both (no crash, no lost pixels).
    result = evaluate_cli([*args[1:], "--allow-class-mismatch", "--precision", "fp32"], tmp_path)
    n_rows = max(4, len(names))
    pixel_acc, iu, acc = independent_eval(run / "best.pt", data, n_rows)
    assert len(result["per_class_iu"]) == len(result["classes"]) == n_rows
    assert result["classes"][: len(names)] == names
    assert result["pixel_acc"] == pytest.approx(pixel_acc, abs=1e-12)
    nan_as_none = [None if np.isnan(v) else pytest.approx(v, abs=1e-12) for v in iu]
    assert result["per_class_iu"] == nan_as_none
    assert result["per_class_acc"] == [None if np.isnan(v) else pytest.approx(v) for v in acc]


def test_eval_data_errors_are_one_line(run, tmp_path, capsys):
    ckpt = str(run / "best.pt")
    assert main(["eval", ckpt, "--dataset", "camvid"]) == 2
    assert capsys.readouterr().err.strip() == (
        "fcnseg: error: --dataset camvid needs --data-root (the checkpoint's data is folder)"
    )
    assert main(["eval", ckpt, "--json", str(tmp_path)]) == 2  # a folder, not a file
    err = capsys.readouterr().err.strip()
    assert err == f"fcnseg: error: --json {tmp_path}: is a folder; give the file to write"
    with pytest.raises(SystemExit):
        main(["eval", ckpt, "--batch-size", "0"])
    assert "--batch-size: must be >= 1, got 0" in capsys.readouterr().err


def one_line(capsys) -> str:
    return one_line_error(capsys).removeprefix("fcnseg: error: ")


def test_json_replaces_only_an_eval_result(run, tmp_path, capsys):
    best = run / "best.pt"
    before = best.read_bytes()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mean_iu": 0.5, "mine": true}')
    for target in (best, notes):
        assert main(["eval", str(best), "--json", str(target)]) == 2
        assert one_line(capsys) == (
            f"--json {target}: exists and is not an fcnseg eval result, so it is kept; give "
            "another file name"
        )
    assert best.read_bytes() == before and notes.read_text() == '{"mean_iu": 0.5, "mine": true}'
    first = evaluate_cli([best], tmp_path)  # new, then replaced: `make demo` each time
    stale = {**first, "mean_iu": -1.0}
    (tmp_path / "metrics.json").write_text(json.dumps(stale))
    assert evaluate_cli([best], tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "notes.json"]


def test_a_folder_for_the_synthetic_dataset_is_refused(checkpoint, run, tmp_path, capsys):
    missing = tmp_path / "ds3"
    for args in ([checkpoint], [run / "best.pt", "--dataset", "synthetic"]):
        assert main(["eval", *map(str, args), "--data-root", str(missing)]) == 2
        assert one_line(capsys).startswith(
            f"--data-root {missing}: the synthetic dataset is drawn, not read from a folder"
        )


def test_eval_max_pixels(run, tmp_path, capsys):
    ckpt = str(run / "best.pt")
    assert main(["eval", ckpt, "--max-pixels", str(38 * 30 - 1)]) == 2
    expected = (
        r".*/images/\d+\.png: 38x30 pixels \(1,140\) is over the limit of 1,139; "
        r"raise it with --max-pixels if it fits in memory"
    )
    assert re.fullmatch(expected, one_line(capsys))
    evaluate_cli([ckpt, "--max-pixels", str(38 * 30)], tmp_path)


def test_both_heads_of_a_sift_flow_net(siftflow, tmp_path, capsys):  # noqa: F811
    # A two-head checkpoint: eval scores the semantic head on SIFT Flow's semantic labels
    # and the geometric head on the geometric ones, as the reference's solve.py does.
    import dataclasses

    from fcnseg.data.registry import build_dataset
    from fcnseg.data.transforms import eval_transform

    model = randomize_scores(fcnseg.build_model("fcn8s-sem-geo", 33, width=0.0625), std=1.0)
    info = build_dataset("siftflow", siftflow, "trainval").info
    ckpt = tmp_path / "siftflow.pt"
    state = {"model": model.state_dict(), "model_config": model.config.to_dict(),
             "dataset": dataclasses.asdict(info), "normalization": "siftflow"}  # fmt: skip
    torch.save(state, ckpt)
    out = tmp_path / "eval.json"
    args = ["eval", str(ckpt), "--dataset", "siftflow", "--data-root", str(siftflow),
            "--split", "trainval", "--json", str(out), "--device", "cpu"]  # fmt: skip
    model.eval()
    # Both heads in the precision asked for (bf16: within its rounding of fp32's scores).
    for precision, tolerance in (("fp32", None), ("bf16", 0.02)):
        assert main([*args, "--precision", precision]) == 0
        printed = capsys.readouterr().out
        assert "\nsiftflow\n" in printed and "\nsiftflow-geometric\n" in printed
        assert "2 heads, " in printed and f"s on torch {precision}" in printed  # as one head
        result = json.loads(out.read_text())
        assert (result["backend"], result["precision"]) == ("torch", precision)
        heads = result["heads"]
        assert [h["dataset"] for h in heads] == ["siftflow", "siftflow-geometric"]
        assert result["mean_iu"] == heads[0]["mean_iu"]  # the semantic head's at the top
        for k, head in enumerate(heads):
            data = build_dataset(head["dataset"], siftflow, "trainval", eval_transform("siftflow"))
            cm = fcnseg.ConfusionMatrix(data.info.num_classes)
            with torch.inference_mode():
                for image, label in data:
                    cm.update(model(image[None])[k][0].argmax(0), label)
            assert head["pixel_acc"] == pytest.approx(cm.compute()["pixel_acc"], abs=tolerance)
            assert len(head["per_class_iu"]) == data.info.num_classes
    # A dataset with one label set cannot score both heads.
    assert main(["eval", str(ckpt), "--dataset", "siftflow-geometric", "--data-root",
                 str(siftflow), "--split", "test", "--allow-class-mismatch"]) == 2  # fmt: skip
    assert "the net has 2 heads but siftflow-geometric labels one" in capsys.readouterr().err


def test_eval_normalization_flag_equals_the_checkpoint_saved_with_it(tmp_path, capsys):
    """``fcnseg eval --normalization`` scores as the checkpoint saved with that mode, says
    so in its JSON, and refuses a mode on another scale in one line."""
    balanced, clipped = save_balanced_checkpoints(tmp_path)
    data = ["--dataset", "synthetic", "--split", "val", "--precision", "fp32"]
    results = {}
    for name, path, flags in [("fed", balanced, ["--normalization", "imagenet-greyworld-clip"]),
                              ("saved", clipped, []), ("own", balanced, [])]:  # fmt: skip
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(path), *data, *flags, "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    assert results["fed"]["normalization"] == "imagenet-greyworld-clip"
    assert results["own"]["normalization"] == "imagenet-greyworld"
    assert results["fed"]["per_class_iu"] == results["saved"]["per_class_iu"]
    # the clip changed labels: the flag was not ignored
    assert results["fed"]["per_class_iu"] != results["own"]["per_class_iu"]
    capsys.readouterr()
    assert main(["eval", str(balanced), *data, "--normalization", "caffe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "on its scale: imagenet, imagenet-greyworld-clip" in err
