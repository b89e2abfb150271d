"""The bench scripts end as ``fcnseg`` does: a flag they cannot use is one line, exit 2."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def test_an_unknown_recipe_is_one_line_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "train_throughput.py"), "--recipe", "nope",
         "--out", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("train_throughput.py: error: unknown recipe 'nope'; choose")
    assert not (tmp_path / "out.json").exists()
    assert done.stderr.count("\n") == 1 and "camvid-fcn8s" in done.stderr


def test_fresh_clone_refuses_an_out_folder_that_is_missing_before_cloning(tmp_path):
    out = tmp_path / "missing" / "fresh.json"
    clones = set(BENCH.parents[1].glob("fcnseg-fresh-clone-*"))
    done = subprocess.run(
        [sys.executable, str(BENCH / "fresh_clone.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"fresh_clone.py: error: --out {out}: its folder does not exist\n"
    assert set(BENCH.parents[1].glob("fcnseg-fresh-clone-*")) == clones  # none made
