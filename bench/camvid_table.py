"""The README's held-out-drive tables, from the result files `camvid_runs.sh heldout` writes.

    python bench/camvid_table.py   # prints them and writes bench/results/camvid_heldout_table.md

One row per run: the flags it added to `camvid-fcn8s-heldout`, the chosen checkpoint's mean
IU (torch fp32, from `camvid_<run>.json`), the iteration it came from, the mean of the
last three validations (from `camvid_<run>.metrics.jsonl`) and the chosen checkpoint's mean
over the ten classes other than Bicyclist (the last class; 0.07% of drive 0006R0's pixels).
Runs on another drive name it in their flags (`--val-split train:0001TP`). Then the mean
over seeds of every change run with more than one seed, and each run's per-class IU.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from fcnseg.report.collect import read_log

RESULTS = Path(__file__).parent / "results"
RECIPE = "camvid-fcn8s-heldout"


def _run(log: Path) -> dict:
    """A run from its metrics log and the result file beside it (``camvid_<run>.json``)."""
    result = json.loads(
        log.with_name(log.name.removesuffix(".metrics.jsonl") + ".json").read_text()
    )
    evals = [(e["iteration"], e["mean_iu"]) for e in read_log(log).evals]
    flags = result["command"].split(f"--recipe {RECIPE}", 1)[1].strip()
    return {
        "flags": flags,
        "change": re.sub(r"\s*--seed \d+", "", flags),
        "best": result["mean_iu"],
        "at": max(evals, key=lambda e: e[1])[0],
        "last_three": statistics.mean(iu for _, iu in evals[-3:]),
        "seconds": result["train_seconds"],
        "classes": result["classes"],
        "per_class": result["per_class_iu"],
    }


def runs(results: Path = RESULTS) -> list[dict]:
    """Every held-out run in ``results`` with its metrics log (test-time augmentation files,
    which have none, excluded)."""
    return [_run(log) for log in sorted(results.glob(f"camvid_{RECIPE}*.metrics.jsonl"))]


def tables(rows: list[dict]) -> str:
    pct = "{:.1f}".format
    lines = [
        "| flags | best mean IU | at | last three | best, without Bicyclist | training s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| `{r['flags'] or 'none'}` | {pct(100 * r['best'])} | {r['at']:,} "
        f"| {pct(100 * r['last_three'])} | {pct(100 * statistics.mean(r['per_class'][:-1]))} "
        f"| {r['seconds']:,} |"
        for r in rows
    ]
    lines += ["", "| change, mean over seeds | seeds | best | last three |", "|---|---:|---:|---:|"]
    for change in dict.fromkeys(r["change"] for r in rows):
        group = [r for r in rows if r["change"] == change]
        if len(group) > 1:
            best = statistics.mean(r["best"] for r in group)
            last = statistics.mean(r["last_three"] for r in group)
            lines.append(
                f"| `{change or 'none'}` | {len(group)} | {pct(100 * best)} | {pct(100 * last)} |"
            )
    lines += ["", "| flags | " + " | ".join(rows[0]["classes"]) + " |"]
    lines += ["|---|" + "---:|" * len(rows[0]["classes"])]
    lines += [
        f"| `{r['flags'] or 'none'}` | " + " | ".join(pct(100 * iu) for iu in r["per_class"]) + " |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    found = runs()
    if not found:
        raise SystemExit(f"no held-out results in {RESULTS}: run bench/camvid_runs.sh heldout")
    text = tables(found)
    (RESULTS / "camvid_heldout_table.md").write_text(text)
    print(text)
