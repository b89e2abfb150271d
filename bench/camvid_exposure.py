"""Is it the light? A checkpoint's mean IU on a CamVid drive, its photos fed four ways.

A net trained on daylight drives fails on the dusk drive 0001TP (README, CamVid). This
runs one checkpoint over a split's images (default ``train:0001TP``) fed

* as shot;
* brightened: one gain for the whole image, so that its mean grey (BT.601 luma) is
  ImageNet's mean grey, 117.0 on 0-255 (rounded and clipped to uint8, like a photo
  taken at a longer exposure);
* grey-world balanced: each channel scaled to that mean, which the
  ``imagenet-greyworld`` normalisation does (exposure and colour cast out);
* grey-world balanced and clipped: the same gains, rounded and clipped to uint8 as the
  brightened view is (a bright sky saturates instead of going above 255).

The first, second and fourth go through the checkpoint's own normalisation; the third
replaces it by ``imagenet-greyworld``, so it suits checkpoints trained with ``imagenet``.
Test time only: nothing is retrained. Prints the images' mean R, G and B, then pixel accuracy,
mean IU and per-class IU for each, with the machine, and writes them to ``--out``.

    python bench/camvid_exposure.py runs/RUN/best.pt \
        --out bench/results/camvid_exposure_RUN.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from machine import describe
from tqdm import tqdm

from fcnseg.cli import run_reporting
from fcnseg.data.registry import build_dataset
from fcnseg.data.transforms import grayscale, grey_world
from fcnseg.deploy.inference import Segmenter
from fcnseg.nets.weights import IMAGENET_GREY
from fcnseg.train.metrics import ConfusionMatrix

DATA_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "camvid"


def _to_grey(image: np.ndarray, per_channel: bool) -> np.ndarray:
    """(H, W, 3) uint8 scaled so that its mean luma (or each channel's mean, per_channel)
    is IMAGENET_GREY, rounded and clipped to uint8 like a photo taken in other light."""
    rgb = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32))
    if per_channel:
        scaled = grey_world(rgb, IMAGENET_GREY)
    else:
        scaled = rgb * (IMAGENET_GREY / grayscale(rgb).mean().clamp(min=1.0))
    return scaled.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--split", default="train:0001TP")
    parser.add_argument("--out", default="bench/results/camvid_exposure.json")
    args = parser.parse_args()

    dataset = build_dataset("camvid", args.data_root, args.split)
    classes = dataset.info.classes
    as_trained = Segmenter.from_checkpoint(args.checkpoint, backend="torch", precision="fp32")
    balanced = copy.copy(as_trained)  # the same loaded net, fed another normalisation
    balanced.normalization = "imagenet-greyworld"
    views = {
        "as shot": (as_trained, lambda a: a),
        f"brightened to mean grey {IMAGENET_GREY:.1f}": (
            as_trained,
            lambda a: _to_grey(a, per_channel=False),
        ),
        "grey-world balanced (imagenet-greyworld)": (balanced, lambda a: a),
        "grey-world balanced, clipped to uint8": (
            as_trained,
            lambda a: _to_grey(a, per_channel=True),
        ),
    }
    matrices = {name: ConfusionMatrix(len(classes)) for name in views}
    channel_sums = np.zeros(3)
    for i in tqdm(range(len(dataset)), desc=args.split):
        image, label = dataset.load(i)
        channel_sums += image.reshape(-1, 3).mean(0)
        for name, (seg, view) in views.items():
            pred = seg.predict([view(image)])[0]
            matrices[name].update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label))

    rows = []
    for name, cm in matrices.items():
        m = cm.compute()
        rows.append({"view": name, "pixel_acc": m["pixel_acc"], "mean_iu": m["mean_iu"],
                     "per_class_iu": [float(v) for v in m["per_class_iu"]]})  # fmt: skip
    result = {"checkpoint": args.checkpoint, "split": args.split, "images": len(dataset),
              "normalization": as_trained.normalization,
              "mean_rgb": (channel_sums / len(dataset)).round(1).tolist(), "classes": list(classes),
              "machine": describe(), "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"{args.checkpoint}: camvid {args.split}, {len(dataset)} images (mean R, G, B "
        f"{result['mean_rgb']} on 0-255), torch fp32"
    )
    print(f"{result['machine']}")
    for r in rows:
        per_class = " ".join(f"{100 * v:.1f}" for v in r["per_class_iu"])
        print(f"{r['view']:>42}: pixel acc {100 * r['pixel_acc']:.1f}, "
              f"mean IU {100 * r['mean_iu']:.1f} | {per_class}")  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
