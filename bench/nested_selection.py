"""Choose a run's checkpoint on one half of its validation frames, score it on the other.

A run's ``best.pt`` is the best of its validations on the very frames it is then
reported on, so its number flatters it. A run trained with ``--keep-checkpoints``
keeps every validation's checkpoint (``iter_N.pt``); this scores each on the first
and on the second half of the run's validation frames, in file-name order (on a
CamVid drive, two different stretches of road), then picks the best checkpoint on
one half and reports it on the other, both ways. The gap between a half's own best
and the checkpoint chosen on the other half is what choosing on the reported frames
adds. Torch fp32, as the training-time evaluation computes.

    python bench/nested_selection.py runs/RUN --out bench/results/camvid_RUN_nested.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from machine import describe
from tqdm import tqdm

from fcnseg.cli import run_reporting
from fcnseg.data.dataset import SegmentationDataset
from fcnseg.deploy.inference import Segmenter
from fcnseg.errors import UserError
from fcnseg.train.config import build_val_set
from fcnseg.train.metrics import ConfusionMatrix
from fcnseg.train.run import RunFolder

HALVES = ("first", "second")


def halves(dataset: SegmentationDataset) -> tuple[list[int], list[int]]:
    """The dataset's indices in file-name order (index order where it has no names),
    cut into a first and a second half (the second has the odd one out)."""
    order = list(range(len(dataset)))
    names = getattr(dataset, "names", None)
    if names:
        order.sort(key=lambda i: names[i])
    cut = len(order) // 2
    return order[:cut], order[cut:]


def score_halves(checkpoint: Path, dataset: SegmentationDataset, parts) -> dict[str, float]:
    """The checkpoint's mean IU on each half of ``dataset`` (``parts``: its indices),
    and on the whole (``all``, what the run's own validation scored)."""
    seg = Segmenter.from_checkpoint(checkpoint, backend="torch", precision="fp32")
    whole = ConfusionMatrix(dataset.info.num_classes)
    scores = {}
    for name, indices in zip(HALVES, parts, strict=True):
        matrix = ConfusionMatrix(dataset.info.num_classes)
        for i in indices:
            image, label = dataset.load(i)
            matrix.update(seg.predict([image])[0], label)
        whole.mat += matrix.mat  # the halves' counts add up to the whole's
        scores[name] = float(matrix.compute()["mean_iu"])
    scores["all"] = float(whole.compute()["mean_iu"])
    return scores


def nested(rows: list[dict]) -> dict:
    """For each half: the checkpoint the other half chooses and its score here, against
    this half's own best; and the mean over the two halves of each."""
    out = {}
    for here, other in (HALVES, HALVES[::-1]):
        chosen = max(rows, key=lambda r: r[other])
        own = max(rows, key=lambda r: r[here])
        out[here] = {"chosen_on_other": chosen["iteration"], "score": chosen[here],
                     "own_best": own["iteration"], "own_best_score": own[here]}  # fmt: skip
    out["mean"] = {
        "nested": float(np.mean([out[h]["score"] for h in HALVES])),
        "own_best": float(np.mean([out[h]["own_best_score"] for h in HALVES])),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder trained with --keep-checkpoints")
    parser.add_argument("--data-root", help="the validation data's folder (default: the run's)")
    parser.add_argument("--out", required=True, help="the result file (JSON)")
    args = parser.parse_args()

    run = RunFolder(args.run)
    cfg = run.saved_config()
    iterations = run.kept_iterations()
    if len(iterations) < 2:
        raise UserError(f"{args.run}: {len(iterations)} kept checkpoint(s) (iter_N.pt); "
                        "train with --keep-checkpoints and at least two validations")  # fmt: skip
    if args.data_root:
        cfg = cfg.replace(val_root=args.data_root)
    dataset = build_val_set(cfg)
    parts = halves(dataset)
    rows = []
    for iteration in tqdm(iterations, desc="checkpoints"):
        rows.append({"iteration": iteration, **score_halves(run.kept(iteration), dataset, parts)})
    result = {"run": args.run, "val_split": cfg.val_split, "images": [len(p) for p in parts],
              "rows": rows, "nested": nested(rows), "machine": describe()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"{r['iteration']:>6}: first half {100 * r['first']:.1f}, "
              f"second {100 * r['second']:.1f}, all {100 * r['all']:.1f}")  # fmt: skip
    for h in HALVES:
        n = result["nested"][h]
        print(f"{h} half: chosen on the other half (iteration {n['chosen_on_other']}) "
              f"{100 * n['score']:.1f}, its own best (iteration {n['own_best']}) "
              f"{100 * n['own_best_score']:.1f}")  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(run_reporting(Path(__file__).name, main))
