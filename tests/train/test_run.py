import json
import os

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.info import DataError
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.errors import ConfigError
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.engine import train
from fcnseg.train.run import RunError, RunFolder, check_resume

TINY = TrainConfig(
    model="fcn32s", width=0.0625, dataset="synthetic", crop=32, batch_size=2, iterations=2,
    optimizer="sgd", lr=0.01, eval_every=2, log_every=1,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _small_and_private(monkeypatch, tmp_path):
    """10 validation scenes; data-check results cached under tmp_path, not in ~/.cache."""
    monkeypatch.setitem(SyntheticDataset.SIZES, "val", 10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def folder_data(root, n=4, bad=None):
    """A folder dataset of ``n`` 40x40 pairs, classes a and b; mask ``bad`` holds a 7."""
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("a 0 0 0\nb 255 255 255\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = (rng.random((40, 40)) > 0.5).astype(np.uint8)
        mask[0, 0] = 7 if i == bad else mask[0, 0]
        Image.fromarray((mask * 255)[..., None].repeat(3, 2)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return TINY.replace(dataset="folder", data_root=str(root), train_split="all",
                        val_split="all")  # fmt: skip


def snapshot(out):
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_a_run_folder_is_reused_only_when_asked(tmp_path):
    out = tmp_path / "run"
    train(TINY, out, progress=False)
    before = snapshot(out)
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt", ".lock"} == set(before)
    assert before[".lock"] == b""  # the pid is there only while a run holds the lock
    with pytest.raises(RunError, match="holds a run .*--resume to continue it, --overwrite"):
        train(TINY.replace(lr=0.1), out, progress=False)
    assert snapshot(out) == before
    with pytest.raises(RunError, match="give one"):
        train(TINY, out, progress=False, resume=True, overwrite=True)
    train(TINY.replace(seed=3, iterations=1, eval_every=1), out, progress=False, overwrite=True)
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").open()] == [1, 1]
    assert load_checkpoint(out / "best.pt")["iteration"] == 1  # the old best.pt went too


def test_a_failed_overwrite_writes_nothing(tmp_path):
    out = tmp_path / "run"
    train(TINY, out, progress=False)
    before = snapshot(out)
    bad = folder_data(tmp_path / "data", bad=2)
    with pytest.raises(DataError, match=r"(?s)training data: 1 of 4 pairs.*masks/2\.png"):
        train(bad, out, progress=False, overwrite=True)
    assert snapshot(out) == before  # no config.json rewritten, no log cut
    new = tmp_path / "new" / "run"
    with pytest.raises(DataError):
        train(bad, new, progress=False)
    assert not new.exists()  # the folder it made is gone again


def test_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    held = f"in use by another training run \\(pid {os.getpid()}\\)"
    with RunFolder(out).lock(), pytest.raises(RunError, match=held):
        train(TINY, out, progress=False)
    train(TINY, out, progress=False)  # released
    assert load_checkpoint(out / "last.pt")["iteration"] == 2


def test_start_clears_temp_files_and_cuts_the_log(tmp_path):
    run = RunFolder(tmp_path)
    lines = [json.dumps({"iteration": i, "loss": 1.0}) for i in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 6, "lo')
    (tmp_path / ".last.pt.x1y2.tmp").write_bytes(b"torn")
    (tmp_path / "notes.tmp").write_text("the user's")
    run.start(TINY, 3)
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines[:3]) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.jsonl",
                                                          "notes.tmp"]  # fmt: skip
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == TINY
    (tmp_path / "best.pt").write_bytes(b"old run")
    run.start(TINY, 0)  # a new run (overwrite): the old run's files go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.tmp"]


def test_check_resume_names_what_would_mix_two_runs():
    harmless = TINY.replace(iterations=9, eval_every=3, log_every=2, workers=2, device="cpu")
    check_resume(TINY, harmless, at=2, force=False)
    changed = TINY.replace(width=0.125, lr=0.5, iterations=9, color_jitter=0.2,
                           label_smoothing=0.1)  # fmt: skip
    with pytest.raises(ConfigError) as e:
        check_resume(TINY, changed, at=2, force=False)
    assert "width (--width) 0.0625 -> 0.125" in str(e.value)
    assert "color_jitter (--color-jitter) 0.0 -> 0.2" in str(e.value)
    assert "label_smoothing (--label-smoothing) 0.0 -> 0.1" in str(e.value)
    assert "lr (--lr) 0.01 -> 0.5" in str(e.value) and "--force" in str(e.value)
    assert "iterations" not in str(e.value)
    check_resume(TINY, changed, at=2, force=True)
    with pytest.raises(ConfigError, match="already at iteration 5"):
        check_resume(TINY, TINY, at=5, force=True)


def test_resume_refuses_a_changed_model(tmp_path):
    train(TINY, tmp_path, progress=False, stop_after=1)
    with pytest.raises(ConfigError, match="model \\(--model\\) 'fcn32s' -> 'fcn16s'"):
        train(TINY.replace(model="fcn16s"), tmp_path, progress=False, resume=True)
    with pytest.raises(ConfigError, match="last.pt does not fit the changed model"):
        train(TINY.replace(width=0.125), tmp_path, progress=False, resume=True, force=True)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1
    result = train(TINY, tmp_path, progress=False, resume=True)
    assert (result["iteration"], result["trained"]) == (2, 1)
    again = train(TINY, tmp_path, progress=False, resume=True)  # finished: nothing to do
    assert (again["iteration"], again["trained"]) == (2, 0)
    assert again["mean_iu"] == result["mean_iu"]


def test_a_run_stopped_before_its_first_checkpoint_is_started_again(tmp_path):
    """Killed after config.json and a loss line but before the first evaluation: neither
    --resume nor a plain run can go on, and both say that --overwrite starts it again."""
    run = RunFolder(tmp_path / "run")
    run.start(TINY, 0)
    run.log(iteration=1, loss=1.5)
    before = snapshot(run.path)
    for resume in (True, False):
        with pytest.raises(RunError) as e:
            train(TINY, run.path, progress=False, resume=resume)
        assert "stopped before its first checkpoint (config.json, metrics.jsonl)" in str(e.value)
        assert "--overwrite starts it again" in str(e.value) and "--resume" not in str(e.value)
    assert snapshot(run.path) == {**before, ".lock": b""}
    train(TINY, run.path, progress=False, overwrite=True)
    assert load_checkpoint(run.last)["iteration"] == 2


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^--precision fp16: .* use bf16 or fp32 on a CPU"):
        train(TINY.replace(precision="fp16", device="cpu"), out, progress=False)
    assert not out.exists()


def test_kept_checkpoints_are_each_validations_and_follow_resume_and_overwrite(tmp_path):
    out, run = tmp_path / "run", RunFolder(tmp_path / "run")
    cfg = TINY.replace(iterations=4, eval_every=1, keep_checkpoints=True)
    train(cfg, out, progress=False, stop_after=3)
    assert run.kept_iterations() == [1, 2, 3]
    scores = [r["eval"]["mean_iu"] for r in map(json.loads, (out / "metrics.jsonl").open())
              if "eval" in r]  # fmt: skip
    for i in (1, 2, 3):
        kept = load_checkpoint(run.kept(i))
        assert kept["iteration"] == i and kept["metrics"]["mean_iu"] == scores[i - 1]
    kept, last = load_checkpoint(run.kept(3))["model"], load_checkpoint(run.last)["model"]
    assert kept.keys() == last.keys()
    for name, tensor in kept.items():
        assert tensor.equal(last[name]), name
    (out / "iter_9.pt").write_bytes(b"past the checkpoint: a killed run's")
    (out / "iter_notes.pt").write_text("the user's")
    train(cfg, out, progress=False, resume=True)
    assert run.kept_iterations() == [1, 2, 3, 4]
    assert load_checkpoint(run.kept(4))["iteration"] == 4
    train(cfg.replace(keep_checkpoints=False), out, progress=False, overwrite=True)
    assert run.kept_iterations() == [] and (out / "iter_notes.pt").read_text() == "the user's"
