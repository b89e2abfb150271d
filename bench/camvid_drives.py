"""What each CamVid split holds: its frames, their light, its classes and their weights.

For each split (by default each drive of train + val, val by itself, and the training
splits of the recipes that hold a drive out): the number of frames; the mean R, G and
B of the photos (each frame's mean, averaged over the frames) and their mean grey,
the BT.601 luma of those three, as ``bench/camvid_exposure.py`` reports it; per class,
its share of the labelled pixels and the frames it occurs in; and the class weights
that ``--class-weighting median`` and ``enet`` give when the split is the training
set. Reads the photos and labels only: no model.

    python bench/camvid_drives.py --out bench/results/camvid_drives.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fcnseg.cli import run_reporting
from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import IGNORE_INDEX
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import grayscale
from fcnseg.errors import UserError
from fcnseg.train.loss import CLASS_WEIGHTS

DATA_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"
SPLITS = (
    "train+val:0001TP", "train+val:0006R0", "train+val:0016E5", "val",
    "train+val:-0006R0", "train+val:-0001TP",
)  # fmt: skip


def split_stats(dataset: SegmentationDataset, name: str = "") -> dict:
    """Frames, mean R, G, B and grey (0-255), and per class (in the dataset's order) its
    share of the labelled pixels, the frames it occurs in and its two class weights;
    ``name`` labels the progress bar."""
    n = dataset.info.num_classes
    pixels, frames, rgb = np.zeros(n), np.zeros(n, dtype=int), np.zeros(3)
    for i in tqdm(range(len(dataset)), desc=name, leave=False):
        image, label = dataset.load(i)
        rgb += image.reshape(-1, 3).mean(0)
        counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=n)[:n]
        pixels += counts
        frames += counts > 0
    rgb /= len(dataset)
    weights = {kind: weigh(dataset).tolist() for kind, weigh in CLASS_WEIGHTS.items()}
    return {
        "frames": len(dataset),
        "mean_rgb": rgb.round(1).tolist(),
        "mean_grey": round(float(grayscale(torch.from_numpy(rgb)[:, None, None])), 1),
        "classes": {
            name: {
                "share": pixels[c] / max(pixels.sum(), 1),
                "frames": int(frames[c]),
                **{f"{w}_weight": weights[w][c] for w in weights},
            }
            for c, name in enumerate(dataset.info.classes)
        },
    }


def print_table(stats: dict[str, dict]) -> None:
    """One line a split: frames, mean grey, and each class's share in % (frames)."""
    for split, s in stats.items():
        shares = ", ".join(
            f"{name} {100 * c['share']:.2f}% ({c['frames']})" for name, c in s["classes"].items()
        )
        print(f"{split}: {s['frames']} frames, mean grey {s['mean_grey']}; {shares}")


def measure(data_root: Path, splits: list[str], out: Path) -> None:
    """Each split's :func:`split_stats`, printed and written to ``out`` (JSON)."""
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: its folder does not exist")
    stats = {s: split_stats(build_dataset("camvid", data_root, s), s) for s in splits}
    out.write_text(json.dumps({"data_root": str(data_root), "splits": stats}, indent=2) + "\n")
    print_table(stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), metavar="SPLIT",
                        help="camvid splits (default: %(default)s)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the result file (JSON)")
    args = parser.parse_args()
    return run_reporting("camvid_drives.py", lambda: measure(args.data_root, args.splits, args.out))


if __name__ == "__main__":
    sys.exit(main())
