import argparse
import dataclasses
import json

import pytest
import torch

from fcnseg.cli import build_parser, main
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.run import RunFolder
from tests.cli.conftest import TINY
from tests.conftest import EMULATED_BF16_LINE, one_line_error
from tests.train.test_run import folder_data


@pytest.fixture(autouse=True)
def _small_and_private(monkeypatch, tmp_path):
    """10 validation scenes; data-check results cached under tmp_path, not in ~/.cache."""
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_help_covers_every_option(capsys):
    parser = train_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in by_dest, f"no flag for config field {f.name}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help.strip(), f"{action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text, flag


def test_resume_reads_the_run_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--log-every", "1"]) == 0
    # Only --resume and --out: width 0.0625, crop 48 ... come from config.json, not the recipe.
    assert main(["train", "--resume", "--out", str(out), "--iterations", "6"]) == 0
    assert load_checkpoint(out / "last.pt")["iteration"] == 6
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["width"], cfg["crop"], cfg["iterations"]) == (0.0625, 48, 6)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert "already finished at iteration 6" in capsys.readouterr().out
    assert main(["train", "--resume", "--out", str(out), "--width", "0.125", "--crop", "64",
                 "--iterations", "8"]) == 2  # fmt: skip
    err = one_line_error(capsys)
    assert "width (--width) 0.0625 -> 0.125" in err and "crop (--crop) 48 -> 64" in err
    assert "--force" in err
    assert main(["train", "--out", str(out), *TINY]) == 2
    assert "holds a run" in one_line_error(capsys)
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "config.json: not found" in one_line_error(capsys)
    # A recipe would be ignored: refused, even the run's own.
    for recipe in ("voc-fcn32s", "synthetic-demo"):
        assert main(["train", "--resume", "--recipe", recipe, "--out", str(out),
                     "--iterations", "8"]) == 2  # fmt: skip
        assert one_line_error(capsys).endswith(f"leave out --recipe (--resume --out {out})")
    assert load_checkpoint(out / "last.pt")["iteration"] == 6


def test_a_second_run_into_a_busy_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out).lock():
        assert main(["train", "--out", str(out), *TINY]) == 2
    assert "is in use by another training run" in one_line_error(capsys)


def test_a_diverging_run_stops_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    huge = ["--optimizer", "sgd", "--lr", "1e10", "--warmup", "0", "--no-batch-norm",
            "--eval-every", "1", "--log-every", "1"]  # fmt: skip
    assert main(["train", "--out", str(out), *TINY, *huge]) == 2
    assert one_line_error(capsys).startswith("fcnseg: error: loss is nan at iteration 2")
    ckpt = load_checkpoint(out / "last.pt")  # the checkpoint before it, intact
    assert ckpt["iteration"] == 1
    assert all(v.isfinite().all() for v in ckpt["model"].values() if v.is_floating_point())
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").open()]
    assert iterations == [1, 1]  # its loss and evaluation; nothing of iteration 2


def test_init_from_a_coarser_run(tmp_path):
    """FCN-16s started from a trained FCN-32s: the shared weights are copied and the new
    skip scores zero, so its first evaluation equals the FCN-32s checkpoint's."""
    coarse, fine = tmp_path / "fcn32s", tmp_path / "fcn16s"
    common = [*TINY, "--no-batch-norm", "--iterations", "2", "--eval-every", "2"]
    assert main(["train", "--out", str(coarse), "--model", "fcn32s", *common]) == 0
    source = load_checkpoint(coarse / "best.pt")
    # An lr far below the weights' float32 resolution: the update leaves them as loaded.
    still = ["--iterations", "1", "--eval-every", "1", "--lr", "1e-30", "--weight-decay", "0"]
    assert main(["train", "--out", str(fine), "--model", "fcn16s", "--init-from",
                 str(coarse / "best.pt"), *TINY, "--no-batch-norm", *still]) == 0  # fmt: skip
    target = load_checkpoint(fine / "best.pt")
    shared = [k for k in source["model"] if k in target["model"]]
    assert any(k.startswith("features.") for k in shared) and "score_fr.weight" in shared
    for k in shared:
        torch.testing.assert_close(target["model"][k], source["model"][k], rtol=0, atol=1e-20)
    assert target["model"]["score_pool4.weight"].abs().max() < 1e-20
    for key in ("pixel_acc", "mean_iu"):
        assert target["metrics"][key] == pytest.approx(source["metrics"][key], abs=1e-9), key
    assert target["train_config"]["normalization"] == source["normalization"]


def test_an_empty_validation_split_says_which(tmp_path, capsys):
    folder_data(tmp_path / "data", n=6)  # no split lists: every 10th image is val
    out = tmp_path / "run"
    args = ["train", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--out"]
    assert main([*args, str(out), *TINY]) == 2
    err = one_line_error(capsys)
    assert err.startswith("fcnseg: error: validation data: ") and "split 'val' is empty" in err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "warns"), [("avx2", True), ("avx2 amx_bf16", False)])
def test_emulated_bf16_is_one_warning_line(tmp_path, cpu_with, capsys, flags, warns):
    cpu_with(flags)
    assert main(["train", "--out", str(tmp_path / "run"), *TINY, "--precision", "bf16",
                 "--quiet"]) == 0  # fmt: skip
    warned = [line for line in capsys.readouterr().err.splitlines() if "bf16" in line]
    assert warned == [EMULATED_BF16_LINE] * warns
