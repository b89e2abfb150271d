"""Does reduced precision keep the labels? A trained checkpoint on its real validation images.

Runs the checkpoint through ``fcnseg.Segmenter`` in torch fp32 (the reference), in each
bf16 path (torch; OpenVINO, which ``--backend auto`` takes on a CPU with native bf16;
fp16 on a GPU), and as the int8 model ``fcnseg quantize`` writes (calibrated on
``--calibration-images`` images of the checkpoint's training split, run by the engine
``auto`` picks), on every image of its validation split. Reports the share of pixels
whose label is unchanged and the mean IU of each. Accuracy only: times are
``bench/engines.py``'s.

    bash bench/camvid_runs.sh heldout   # trains runs/camvid-fcn8s-heldout/best.pt
    python bench/precision.py runs/camvid-fcn8s-heldout/best.pt \
        --out bench/results/precision_camvid.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fcnseg.cli import run_reporting
from fcnseg.data.registry import build_dataset
from fcnseg.deploy.inference import Segmenter
from fcnseg.deploy.quantize import quantize_checkpoint
from fcnseg.train.device import cpu_has_fast_bf16
from fcnseg.train.metrics import ConfusionMatrix


def segmenters(checkpoint: str, int8_file: Path, calibration: int) -> dict[str, Segmenter]:
    """The paths compared, by name; the first is the fp32 reference."""
    paths = {"torch fp32": ("torch", "fp32"), "torch bf16": ("torch", "bf16")}
    if torch.cuda.is_available():
        paths["torch fp16"] = ("torch", "fp16")
    elif cpu_has_fast_bf16():
        paths["openvino bf16"] = ("openvino", "bf16")
    segs = {name: Segmenter.from_checkpoint(checkpoint, backend=b, precision=p)
            for name, (b, p) in paths.items()}  # fmt: skip
    cfg = segs["torch fp32"].checkpoint["train_config"]
    train = build_dataset(cfg["dataset"], cfg["data_root"], cfg["train_split"])
    picked = np.linspace(0, len(train) - 1, calibration).round().astype(int)
    quantize_checkpoint(checkpoint, [train.load(int(i))[0] for i in picked], int8_file)
    int8 = Segmenter.from_checkpoint(int8_file)
    segs[f"int8 ({int8.backend.backend}, {calibration} calibration images)"] = int8
    return segs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="bench/results/precision.json")
    parser.add_argument("--limit", type=int, help="at most this many images")
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        segs = segmenters(args.checkpoint, Path(tmp) / "int8.onnx", args.calibration_images)
        cfg = segs["torch fp32"].checkpoint["train_config"]
        dataset = build_dataset(cfg["dataset"], cfg["data_root"], cfg["val_split"])
        n = min(len(dataset), args.limit or len(dataset))
        num_classes = len(dataset.info.classes)
        matrices = {p: ConfusionMatrix(num_classes) for p in segs}
        same = dict.fromkeys(segs, 0)
        pixels = 0
        for i in tqdm(range(n), desc="images"):
            image, label = dataset.load(i)
            preds = {p: seg.predict(image)[0] for p, seg in segs.items()}
            for p, pred in preds.items():
                matrices[p].update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label))
                same[p] += int((pred == preds["torch fp32"]).sum())
            pixels += label.size

    result = {
        "checkpoint": args.checkpoint, "dataset": cfg["dataset"], "split": cfg["val_split"],
        "images": n, "device": str(segs["torch fp32"].device),
        "rows": [{"precision": p, "agreement_with_fp32": same[p] / pixels,
                  "mean_iu": float(matrices[p].compute()["mean_iu"]),
                  "per_class_iu": [float(v) for v in matrices[p].compute()["per_class_iu"]]}
                 for p in segs],
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{result['dataset']} {result['split']}, {n} images, {result['device']}")
    for r in result["rows"]:
        print(f"{r['precision']:>40}: agreement with fp32 {100 * r['agreement_with_fp32']:.3f}%, "
              f"mean IU {100 * r['mean_iu']:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
