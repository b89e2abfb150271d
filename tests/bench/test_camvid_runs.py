"""bench/camvid_runs.sh name: the run folder every CamVid ablation writes to."""

import hashlib
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "bench" / "camvid_runs.sh"
NAME_LIMIT = 255  # bytes in a file name on ext4, xfs, btrfs, apfs and ntfs
LONGEST_RESULT = "camvid_{}_balanced-best.json"  # the longest file a run's name goes into


def _name(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), "name", *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_short_name_spells_out_its_flags():
    flags = ["--iterations", "4800", "--val-split", "train:0001TP", "--seed", "1"]
    assert _name("heldout", *flags) == (
        "camvid-fcn8s-heldout_iterations_4800_val-split_train-0001TP_seed_1"
    )
    assert _name("trainval") == "camvid-fcn8s-trainval"


def test_a_long_name_is_cut_and_keeps_a_hash_of_the_whole():
    flags = ["--train-split", "train+val:-0001TP", "--val-split", "train:0001TP"] * 4
    spelt = "camvid-fcn8s-heldout_" + "_".join(
        f.removeprefix("--").replace(":", "-") for f in flags
    )
    other = _name("heldout", *flags, "--seed", "1")
    name = _name("heldout", *flags)
    assert len(spelt) > 200 and len(name) == 200
    assert name == spelt[:191] + "_" + hashlib.sha1(spelt.encode()).hexdigest()[:8]
    # the flags past the cut still tell two runs apart
    assert other != name and other[:191] == name[:191]
    assert len(LONGEST_RESULT.format(name).encode()) <= NAME_LIMIT


def test_name_without_a_recipe_is_refused_in_one_line():
    done = subprocess.run(["bash", str(SCRIPT), "name"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"usage: {SCRIPT} name heldout|trainval [flag...]\n"
