"""Reading a run folder for a report: which folders are refused, the log, the ranking."""

import json
import math

import numpy as np
import pytest

from fcnseg.report.collect import open_run, rank, read_log
from fcnseg.report.plots import row_normalised
from fcnseg.train.run import RunError


def test_a_missing_or_empty_folder_or_one_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(RunError, match=r"nope: no such run folder"):
        open_run(tmp_path / "nope")
    with pytest.raises(RunError, match=r"not a run folder \(no config.json, metrics.jsonl"):
        open_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunError, match=r"the run has no best.pt yet"):
        open_run(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"")
    assert open_run(tmp_path).best == tmp_path / "best.pt"


def test_the_log_splits_losses_from_evaluations_and_skips_torn_lines(tmp_path):
    records = [
        {"iteration": 1, "loss": 2.0, "lr": 0.1, "seconds": 1.0},
        {"iteration": 2, "loss": 1.5, "lr": 0.05, "seconds": 2.0},
        {"iteration": 2, "eval": {"mean_iu": 0.25, "pixel_acc": 0.5, "per_class_iu": [None]}},
        ["not", "a", "record"],
        {"eval": {"mean_iu": 1.0}},  # no iteration
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"iteration": 3, "lo')
    log = read_log(path)
    assert log.losses == records[:2]
    assert log.evals == [{"iteration": 2, "mean_iu": 0.25, "pixel_acc": 0.5,
                          "per_class_iu": [None]}]  # fmt: skip


def test_rank_orders_best_and_worst_without_overlap_or_nan():
    assert rank([0.5, 0.9, math.nan, 0.1, 0.7], 2) == ([1, 4], [3, 0])
    assert rank([0.5, 0.9, 0.1], 2) == ([1, 0], [2])  # 3 images: none shown twice
    assert rank([0.3, 0.3, 0.3], 1) == ([0], [2])  # ties: the lower index ranks higher
    assert rank([math.nan], 3) == ([], [])


def test_row_normalised_confusion():
    counts = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    shares = row_normalised(counts)
    np.testing.assert_allclose(shares[[0, 2]], [[0.75, 0.25, 0], [0.25, 0.25, 0.5]])
    assert np.isnan(shares[1]).all()  # a class with no pixel: no row to show
