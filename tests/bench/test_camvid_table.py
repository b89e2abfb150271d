"""bench/camvid_table.py: the README's held-out tables, computed from result files."""

import json

from bench.camvid_table import runs, tables

CLASSES = ["Sky", "Road", "Bicyclist"]


def _write_run(folder, flags, chosen, evals, seconds=60):
    name = f"camvid_camvid-fcn8s-heldout{flags.replace('--', '').replace(' ', '_')}"
    result = {
        "command": f"fcnseg train --recipe camvid-fcn8s-heldout {flags}".strip(),
        "mean_iu": sum(chosen) / len(chosen),
        "classes": CLASSES,
        "per_class_iu": chosen,
        "train_seconds": seconds,
    }
    (folder / f"{name}.json").write_text(json.dumps(result))
    log = [{"iteration": 20, "loss": 1.0}]  # training lines carry no evaluation
    log += [{"iteration": i, "eval": {"mean_iu": iu}} for i, iu in evals]
    (folder / f"{name}.metrics.jsonl").write_text("\n".join(map(json.dumps, log)))


def test_rows_seed_means_and_the_ten_class_mean_come_from_the_files(tmp_path):
    _write_run(tmp_path, "", [0.9, 0.6, 0.0], [(400, 0.2), (800, 0.5), (1200, 0.3), (1600, 0.4)])
    _write_run(tmp_path, "--seed 1", [0.8, 0.6, 0.1], [(400, 0.1), (800, 0.6), (1200, 0.2)])
    _write_run(tmp_path, "--ema 0.999", [0.7, 0.5, 0.0], [(400, 0.4)])
    # test-time augmentation results have no log and are not runs
    (tmp_path / "camvid_camvid-fcn8s-heldout_tta-flip.json").write_text("{}")

    rows = {r["flags"]: r for r in runs(tmp_path)}
    assert set(rows) == {"", "--seed 1", "--ema 0.999"}
    assert (rows[""]["at"], rows["--seed 1"]["at"]) == (800, 800)
    assert abs(rows[""]["last_three"] - 0.4) < 1e-12  # (0.5 + 0.3 + 0.4) / 3
    assert abs(rows["--seed 1"]["last_three"] - 0.3) < 1e-12

    text = tables(list(rows.values()))
    # best 0.5, last three 0.4, the two classes other than Bicyclist 0.75
    assert "| `none` | 50.0 | 800 | 40.0 | 75.0 | 60 |" in text
    # the seeds' mean: best (0.5 + 0.5) / 2, last three (0.4 + 0.3) / 2; one seed has no row
    assert "| `none` | 2 | 50.0 | 35.0 |" in text
    assert "| `--ema 0.999` | 1 |" not in text
    assert "| `--seed 1` | 80.0 | 60.0 | 10.0 |" in text
