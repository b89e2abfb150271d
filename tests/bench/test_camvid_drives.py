"""bench/camvid_drives.py: frames, light, class shares and weights of a split, by hand."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fcnseg.data.registry import build_dataset

# Two 2x4 frames of two drives: (RGB fill, labels); 255 is void.
FRAMES = {
    "0006R0_a": ((10, 20, 30), [[0, 0, 0, 0], [3, 3, 255, 255]]),
    "0016E5_b": ((50, 60, 80), [[3, 3, 3, 3], [3, 3, 3, 1]]),
}


@pytest.fixture
def script(bench_script):
    return bench_script("camvid_drives")


@pytest.fixture
def camvid(tmp_path):
    for folder in ("train", "trainannot"):
        (tmp_path / folder).mkdir()
    for stem, (rgb, label) in FRAMES.items():
        Image.fromarray(np.full((2, 4, 3), rgb, np.uint8)).save(tmp_path / "train" / f"{stem}.png")
        Image.fromarray(np.array(label, np.uint8)).save(tmp_path / "trainannot" / f"{stem}.png")
    return tmp_path


def test_a_split_counted_by_hand(script, camvid):
    stats = script.split_stats(build_dataset("camvid", camvid, "train"))
    assert stats["frames"] == 2
    assert stats["mean_rgb"] == [30.0, 40.0, 55.0]
    assert stats["mean_grey"] == 38.7  # 0.299 * 30 + 0.587 * 40 + 0.114 * 55 = 38.72
    classes = stats["classes"]
    # 14 labelled pixels: Sky 4 (one frame), Building 1 (one), Road 9 (both)
    shares = {name: c["share"] for name, c in classes.items() if c["share"]}
    assert shares == pytest.approx({"Sky": 4 / 14, "Building": 1 / 14, "Road": 9 / 14})
    assert [c["frames"] for c in classes.values()] == [1, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    assert classes["Road"]["enet_weight"] == pytest.approx(1 / math.log(1.02 + 9 / 14), rel=1e-6)
    assert classes["Pole"]["enet_weight"] == classes["Pole"]["median_weight"] == 0.0
    # median frequency: a class's pixels over the labelled pixels of the frames holding it,
    # Sky 4/6, Building 1/8, Road 9/14; their median is Road's
    median = {name: classes[name]["median_weight"] for name in ("Sky", "Building", "Road")}
    assert median == pytest.approx({"Sky": 27 / 28, "Building": 36 / 7, "Road": 1.0})


def test_a_drive_alone_and_the_result_file(script, camvid, tmp_path, capsys):
    out = tmp_path / "drives.json"
    script.measure(camvid, ["train:0006R0"], out)
    stats = json.loads(out.read_text())["splits"]["train:0006R0"]
    assert stats["frames"] == 1 and stats["mean_rgb"] == [10.0, 20.0, 30.0]
    assert stats["classes"]["Sky"]["share"] == pytest.approx(4 / 6)
    assert "train:0006R0: 1 frames, mean grey 18.1; Sky 66.67% (1)" in capsys.readouterr().out


def test_a_split_with_no_frames_is_one_line(script, camvid, tmp_path):
    done = subprocess.run(
        [sys.executable, script.__file__, "--data-root", str(camvid), "--splits", "train:0001TP",
         "--out", str(tmp_path / "drives.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("camvid_drives.py: error: ") and "no frames" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "drives.json").exists()
