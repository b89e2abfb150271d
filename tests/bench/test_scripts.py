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
