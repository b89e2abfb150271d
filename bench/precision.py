"""Does reduced precision keep the labels? A trained checkpoint on its real validation images.

Runs the checkpoint in fp32 and in bf16 (and fp16 on a GPU) through
``fcnseg.Segmenter`` on every image of its validation split and reports the share
of pixels whose label is unchanged, and the mean IU of each precision. This
checks accuracy only: on a CPU without native bf16 the bf16 run is emulated
(slow), so no time is reported.

    bash bench/camvid_runs.sh main   # trains runs/camvid-fcn8s/best.pt
    python bench/precision.py runs/camvid-fcn8s/best.pt --out bench/results/precision_camvid.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fcnseg.data.registry import build_dataset
from fcnseg.deploy.inference import Segmenter
from fcnseg.train.metrics import ConfusionMatrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="bench/results/precision.json")
    parser.add_argument("--limit", type=int, help="at most this many images")
    args = parser.parse_args()

    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    segs = {p: Segmenter.from_checkpoint(args.checkpoint, precision=p) for p in precisions}
    cfg = segs["fp32"].checkpoint["train_config"]
    dataset = build_dataset(cfg["dataset"], cfg["data_root"], cfg["val_split"])
    n = min(len(dataset), args.limit or len(dataset))
    num_classes = len(dataset.info.classes)
    matrices = {p: ConfusionMatrix(num_classes) for p in precisions}
    same = dict.fromkeys(precisions, 0)
    pixels = 0
    for i in tqdm(range(n), desc="images"):
        image, label = dataset.load(i)
        preds = {p: seg.predict(image)[0] for p, seg in segs.items()}
        for p, pred in preds.items():
            matrices[p].update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label))
            same[p] += int((pred == preds["fp32"]).sum())
        pixels += label.size

    result = {
        "checkpoint": args.checkpoint, "dataset": cfg["dataset"], "split": cfg["val_split"],
        "images": n, "device": str(segs["fp32"].device),
        "rows": [{"precision": p, "agreement_with_fp32": same[p] / pixels,
                  "mean_iu": float(matrices[p].compute()["mean_iu"])} for p in precisions],
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{result['dataset']} {result['split']}, {n} images, {result['device']}")
    for r in result["rows"]:
        print(f"{r['precision']:>5}: agreement with fp32 {100 * r['agreement_with_fp32']:.3f}%, "
              f"mean IU {100 * r['mean_iu']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
