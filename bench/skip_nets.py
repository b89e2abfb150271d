"""Tabulate and draw the skip-net runs of ``bench/skip_nets.sh`` (paper Table 2 / Figure 4).

    python bench/skip_nets.py runs/skip-nets

Reads each run's ``eval.json`` (val metrics of its last checkpoint: no model selection
on the reported split), ``seconds`` and ``command``; writes ``bench/results/skip_nets.json``
and ``bench/results/skip_nets.png``: the same val images (evenly spaced over the split,
not picked) as rows, then the ground truth and each net's labels, with a class legend.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from machine import describe  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from fcnseg.cli import run_reporting  # noqa: E402
from fcnseg.data.images import colorize  # noqa: E402
from fcnseg.data.registry import build_dataset  # noqa: E402
from fcnseg.deploy.inference import Segmenter  # noqa: E402

NETS = {
    "fcn32s": "FCN-32s",
    "fcn16s": "FCN-16s",
    "fcn8s": "FCN-8s",
    "fcn8s-atonce": "FCN-8s at-once",
}
RESULTS = Path(__file__).resolve().parent / "results"


def table(runs: Path) -> dict:
    """Each net's val metrics, iterations, wall time and command."""
    models = {}
    for name in NETS:
        run = runs / name
        ev = json.loads((run / "eval.json").read_text())
        config = json.loads((run / "config.json").read_text())
        models[name] = {
            "mean_iu": ev["mean_iu"],
            "pixel_accuracy": ev["pixel_acc"],
            "mean_accuracy": ev["mean_acc"],
            "fw_iu": ev["fw_iu"],
            "per_class_iu": dict(zip(ev["classes"], ev["per_class_iu"], strict=True)),
            "iterations": config["iterations"],
            "init_from": config["init_from"],
            "train_seconds": int((run / "seconds").read_text()),
            "command": (run / "command").read_text().strip(),
        }
    return {"split": f"{ev['dataset']} {ev['split']}", "models": models, "machine": describe()}


def figure(runs: Path, out: Path, rows: int = 5) -> list[str]:
    """The figure; returns the names of the images shown."""
    segmenters = {
        n: Segmenter.from_checkpoint(runs / n / "last.pt", precision="fp32") for n in NETS
    }
    cfg = next(iter(segmenters.values())).checkpoint["train_config"]
    data = build_dataset(cfg["dataset"], cfg["data_root"], cfg["val_split"])
    info = data.info
    picks = np.linspace(0, len(data) - 1, rows).round().astype(int)
    cols = ["image", "ground truth", *NETS.values()]
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.0 * len(cols), 1.55 * rows + 0.8))
    for r, index in enumerate(picks):
        image, label = data.load(index)
        panels = [image, colorize(label, info.colors)]
        panels += [colorize(s.predict(image)[0], info.colors) for s in segmenters.values()]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=10)
    handles = [
        Patch(color=np.array(rgb) / 255, label=n)
        for n, rgb in zip(info.classes, info.colors, strict=True)
    ]
    handles.append(Patch(facecolor="white", edgecolor="0.6", label="void"))
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=9, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.11, wspace=0.03, hspace=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    # 256 colours hold the palette and the photos well enough, at a third of the bytes.
    Image.open(buffer).convert("RGB").quantize(256).save(out, optimize=True)
    return [data.names[i] for i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the folder bench/skip_nets.sh trained into")
    args = parser.parse_args()
    result = table(args.runs)
    result["figure_images"] = figure(args.runs, RESULTS / "skip_nets.png")
    (RESULTS / "skip_nets.json").write_text(json.dumps(result, indent=2))
    for name, m in result["models"].items():
        iu, acc = 100 * m["mean_iu"], 100 * m["pixel_accuracy"]
        print(f"{NETS[name]:>15}: mean IU {iu:.1f}, pixel acc {acc:.1f}, {m['train_seconds']} s")


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
