"""Time the README's two commands, ``make demo`` and ``make test``, on a fresh clone.

Clones the repository's committed HEAD into a new folder beside it (so that
``../shared`` is found there as CI finds it), runs ``make demo`` (set-up included:
the clone has no ``.venv``), then ``make test``, and writes what each took and gave:
the demo's validation mean IU and pixel accuracy (its ``runs/demo/eval.json``) and
training seconds (``runs/demo/metrics.jsonl``), and pytest's counts and seconds
(``test.pytest``, beside the whole command's). Each
command's output is kept in the clone (``demo.log``, ``test.log``); the clone is
removed at the end unless ``--keep`` or a command failed. Exit status 1 if one did.

    python bench/fresh_clone.py --out bench/results/fresh_clone.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

from fcnseg.cli import run_reporting
from fcnseg.errors import UserError

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("demo", "test")


def pytest_summary(log: str) -> dict:
    """Counts and seconds from pytest's last summary line ("1015 passed, 1 skipped in
    1234.5s (0:20:34)"); {} when the log has none (pytest never finished)."""
    lines = [line for line in log.splitlines() if re.search(r"\bin [\d.]+s\b", line)]
    if not lines:
        return {}
    line = lines[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) ([a-z]+)", line.split(" in ")[0])}
    return {**counts, "seconds": float(re.search(r"\bin ([\d.]+)s\b", line).group(1))}


def demo_result(run: Path) -> dict:
    """The demo run's validation metrics and training seconds ({} for what is missing)."""
    result = {}
    if (run / "eval.json").exists():
        metrics = json.loads((run / "eval.json").read_text())
        result.update(mean_iu=metrics["mean_iu"], pixel_acc=metrics["pixel_acc"])
    if (run / "metrics.jsonl").exists():
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        result["train_seconds"] = max(r.get("seconds", 0.0) for r in records)
    return result


def make(clone: Path, target: str) -> dict:
    """Run ``make target`` in ``clone``, its output to ``target.log``: exit status, seconds."""
    print(f"make {target} in {clone} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(clone / f"{target}.log", "w") as log:
        done = subprocess.run(["make", target], cwd=clone, stdout=log, stderr=subprocess.STDOUT)
    seconds = round(time.perf_counter() - start, 1)
    print(f"make {target}: exit {done.returncode}, {seconds} s", file=sys.stderr, flush=True)
    return {"returncode": done.returncode, "seconds": seconds}


def clone_head(beside: Path) -> Path:
    """A clone of the repository's committed HEAD in a new folder in ``beside``; if git
    fails, the folder goes and the error is git's last line."""
    clone = Path(tempfile.mkdtemp(prefix="fcnseg-fresh-clone-", dir=beside))
    done = subprocess.run(["git", "clone", "-q", str(REPO), str(clone)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        shutil.rmtree(clone)
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UserError(f"git clone {REPO} into {beside}: {reason}")
    return clone


def measure(out: Path, *, keep: bool = False, beside: Path = REPO.parent) -> int:
    """Clone into a new folder in ``beside``, run both commands, write ``out``; the exit
    status (1 if a command failed)."""
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: its folder does not exist")
    clone = clone_head(beside)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    result = {"commit": commit, "machine": describe()}
    result["demo"] = make(clone, "demo") | demo_result(clone / "runs" / "demo")
    result["test"] = make(clone, "test")
    result["test"]["pytest"] = pytest_summary((clone / "test.log").read_text())
    out.write_text(json.dumps(result, indent=2) + "\n")
    failed = any(result[c]["returncode"] for c in COMMANDS)
    if failed or keep:
        print(f"the clone stays: {clone}", file=sys.stderr)
    else:
        shutil.rmtree(clone)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the result file (JSON)")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    args = parser.parse_args()
    return run_reporting("fresh_clone.py", lambda: measure(args.out, keep=args.keep))


if __name__ == "__main__":
    sys.exit(main())
