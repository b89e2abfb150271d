"""What a run report shows, gathered from a run folder (:mod:`fcnseg.train.run`):
its config, its ``metrics.jsonl`` log, and ``best.pt`` evaluated again on the run's
validation split, image by image, by the training loop's own :func:`evaluate`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import DataError, DatasetInfo
from fcnseg.data.transforms import eval_transform
from fcnseg.deploy.inference import prepare_for_inference
from fcnseg.errors import UserError
from fcnseg.train.checkpoint import model_from_checkpoint
from fcnseg.train.config import TrainConfig, build_val_set, num_heads
from fcnseg.train.device import select_device
from fcnseg.train.engine import evaluate
from fcnseg.train.metrics import ConfusionMatrix
from fcnseg.train.run import RunError, RunFolder

NEEDED = ("config.json", "metrics.jsonl", "best.pt")
"""The run files a report reads."""


def open_run(path: str | Path) -> RunFolder:
    """The run folder at ``path``, once it holds every file of :data:`NEEDED`.

    Raises:
        RunError: ``path`` is not a folder, holds no run, or a run with no checkpoint yet.
    """
    run = RunFolder(path)
    if not run.path.is_dir():
        raise RunError(f"{run.path}: no such run folder (give the --out of an fcnseg train run)")
    missing = [name for name in NEEDED if not (run.path / name).is_file()]
    if len(missing) == len(NEEDED):
        raise RunError(
            f"{run.path}: not a run folder (no {', '.join(NEEDED)}); give the --out of an "
            "fcnseg train run"
        )
    if missing:
        raise RunError(
            f"{run.path}: the run has no {' or '.join(missing)} yet; a report needs a run "
            "that has validated and checkpointed at least once (--eval-every)"
        )
    return run


@dataclass(frozen=True)
class RunLog:
    """The records of ``metrics.jsonl``: ``losses`` (iteration, loss, lr, seconds) and
    ``evals`` (iteration and the validation metrics), each in iteration order."""

    losses: list[dict]
    evals: list[dict]


def read_log(path: Path) -> RunLog:
    """Parse ``metrics.jsonl``; a torn line (a run killed mid-write) is left out."""
    losses, evals = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            continue
        if "loss" in record:
            losses.append(record)
        if isinstance(record.get("eval"), dict):
            evals.append({"iteration": record["iteration"], **record["eval"]})
    return RunLog(losses, evals)


@dataclass(frozen=True)
class Example:
    """One validation image, its dataset ``index`` and ``name``, and its mean IU."""

    index: int
    name: str
    mean_iu: float
    image: np.ndarray  # (H, W, 3) uint8
    truth: np.ndarray  # (H, W) int64, void 255
    prediction: np.ndarray  # (H, W) int64


@dataclass(frozen=True)
class Evaluation:
    """``best.pt`` on the run's validation split.

    ``metrics`` are :func:`~fcnseg.train.engine.evaluate`'s (what ``fcnseg eval``
    prints), ``confusion`` the (C, C) pixel counts ``[true, predicted]`` they come
    from, ``scores`` each image's own mean IU (NaN for an image with no labelled
    pixel), ``best`` and ``worst`` the images with the highest and lowest, in order.
    """

    info: DatasetInfo
    split: str
    iteration: int
    metrics: dict
    confusion: np.ndarray
    scores: list[float]
    best: list[Example]
    worst: list[Example]


def evaluate_run(
    run: RunFolder,
    *,
    device: str = "auto",
    batch_size: int = 4,
    examples: int = 3,
    progress: bool = True,
) -> Evaluation:
    """Evaluate ``run.best`` on its validation split (fp32, as ``fcnseg eval`` does).

    Raises:
        DataError: the validation data cannot be read, or its classes are no longer
            those the checkpoint was trained on.
    """
    model, ckpt = model_from_checkpoint(run.best)
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    if num_heads(cfg) > 1:
        raise UserError(
            f"{run.best}: a report covers one-head runs; {cfg.model} predicts "
            f"{num_heads(cfg)} label maps (score each with: fcnseg eval {run.best})"
        )
    dataset = build_val_set(cfg, eval_transform(ckpt["normalization"]))
    trained = tuple(ckpt["dataset"]["classes"])
    if dataset.info.classes != trained:
        raise DataError(
            f"{run.best} predicts the classes {', '.join(trained)} but its validation data "
            f"now has {', '.join(dataset.info.classes)}"
        )
    where = select_device(device)
    model = prepare_for_inference(model, where, torch.float32, channels_last=False)
    n = len(trained)
    total, scores = ConfusionMatrix(n), [math.nan] * len(dataset)

    def score(index: int, prediction: torch.Tensor, label: torch.Tensor) -> None:
        one = ConfusionMatrix(n)
        one.update(prediction, label)
        total.mat += one.mat
        scores[index] = one.compute()["mean_iu"]

    metrics = evaluate(model, dataset, n, where, batch_size=batch_size, progress=progress,
                       on_image=score)  # fmt: skip
    best, worst = rank(scores, examples)
    shown = _examples(model, dataset, best + worst, scores, n, where)
    return Evaluation(
        info=dataset.info,
        split=f"{cfg.val_dataset or cfg.dataset}/{cfg.val_split}",
        iteration=ckpt["iteration"],
        metrics=metrics,
        confusion=total.mat.numpy(),
        scores=scores,
        best=shown[: len(best)],
        worst=shown[len(best) :],
    )


def rank(scores: Sequence[float], k: int) -> tuple[list[int], list[int]]:
    """The indices of the ``k`` highest scores (highest first) and of the ``k`` lowest
    (lowest first), never one image in both; NaN scores are in neither; ties go to
    the lower index.

    Example:
        >>> rank([0.5, 0.9, float("nan"), 0.1, 0.7], 2)
        ([1, 4], [3, 0])
    """
    ranked = sorted((i for i, s in enumerate(scores) if s == s), key=lambda i: (-scores[i], i))
    best = ranked[:k]
    return best, [i for i in reversed(ranked) if i not in best][:k]


def _examples(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    indices: list[int],
    scores: Sequence[float],
    num_classes: int,
    device: torch.device,
) -> list[Example]:
    """The images at ``indices`` with their predictions, made again by :func:`evaluate`
    (only the few shown are kept, however large the split)."""
    predictions: dict[int, np.ndarray] = {}

    def keep(position: int, prediction: torch.Tensor, label: torch.Tensor) -> None:
        predictions[indices[position]] = prediction.numpy()

    evaluate(model, Subset(dataset, indices), num_classes, device, batch_size=1, progress=False,
             on_image=keep)  # fmt: skip
    shown = []
    for i in indices:
        image, truth = dataset.load(i)
        shown.append(Example(i, dataset.names[i], scores[i], image, truth, predictions[i]))
    return shown
