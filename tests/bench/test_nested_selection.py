"""bench/nested_selection.py: a checkpoint chosen on one half of the validation frames,
scored on the other."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.train.checkpoint import load_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.engine import train

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture
def script(bench_script):
    return bench_script("nested_selection")


def test_halves_follow_file_names_and_each_half_is_chosen_by_the_other(script):
    class Named:
        names = ["b", "a", "d", "c", "e"]

        def __len__(self):
            return 5

    assert script.halves(Named()) == ([1, 0], [3, 2, 4])
    rows = [{"iteration": 1, "first": 0.5, "second": 0.2},
            {"iteration": 2, "first": 0.3, "second": 0.6},
            {"iteration": 3, "first": 0.4, "second": 0.4}]  # fmt: skip
    result = script.nested(rows)
    assert result["first"] == {"chosen_on_other": 2, "score": 0.3,
                               "own_best": 1, "own_best_score": 0.5}  # fmt: skip
    assert result["second"] == {"chosen_on_other": 1, "score": 0.2,
                                "own_best": 2, "own_best_score": 0.6}  # fmt: skip
    assert result["mean"] == pytest.approx({"nested": 0.25, "own_best": 0.55})


def test_a_kept_run_is_scored_per_half_and_whole_as_its_validation_scored_it(
    script, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = TrainConfig(model="fcn32s", width=0.0625, dataset="synthetic", crop=32, batch_size=2,
                      iterations=2, lr=0.01, eval_every=1, keep_checkpoints=True)  # fmt: skip
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    out = tmp_path / "nested.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "nested_selection.py"), str(run), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    n = len(SyntheticDataset(split="val"))
    assert result["images"] == [n // 2, n - n // 2]
    assert [r["iteration"] for r in result["rows"]] == [1, 2]
    for row in result["rows"]:  # the whole: what the run's own validation scored
        kept = load_checkpoint(run / f"iter_{row['iteration']}.pt")
        assert row["all"] == pytest.approx(kept["metrics"]["mean_iu"], abs=1e-6)
    assert result["nested"] == script.nested(result["rows"])


def test_a_run_without_kept_checkpoints_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = TrainConfig(model="fcn32s", width=0.0625, dataset="synthetic", crop=32, batch_size=2,
                      iterations=1, lr=0.01, eval_every=1)  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    done = subprocess.run(
        [sys.executable, str(BENCH / "nested_selection.py"), str(tmp_path / "run"),
         "--out", str(tmp_path / "nested.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2 and not (tmp_path / "nested.json").exists()
    assert done.stderr == (f"nested_selection.py: error: {tmp_path / 'run'}: 0 kept checkpoint(s) "
                           "(iter_N.pt); train with --keep-checkpoints and at least two "
                           "validations\n")  # fmt: skip
