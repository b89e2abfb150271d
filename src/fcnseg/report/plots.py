"""The report's figures, as PNG bytes: curves, confusion matrix and class bars drawn
with matplotlib (its Agg renderer, through :class:`~matplotlib.figure.Figure`, so
no pyplot state and no display), example images composed with numpy and PIL."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from fcnseg.data.images import colorize, overlay

Color = tuple[int, int, int]
ANNOTATE_UP_TO = 12
"""Confusion matrices with at most this many classes get a number in each cell."""


def png(figure: Figure | np.ndarray) -> bytes:
    """A matplotlib figure, or an (H, W, 3) uint8 picture, as PNG bytes."""
    buffer = io.BytesIO()
    if isinstance(figure, Figure):
        figure.savefig(buffer, format="png", dpi=100)
    else:
        Image.fromarray(figure).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def loss_and_lr(losses: Sequence[dict]) -> bytes:
    """The training loss over iterations above the learning rate, x shared.

    Args:
        losses: ``metrics.jsonl``'s loss records (iteration, loss, lr).
    """
    figure = Figure(figsize=(5.2, 3.8), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    iterations = [r["iteration"] for r in losses]
    marker = "o" if len(losses) <= 30 else None
    top.plot(iterations, [r["loss"] for r in losses], marker=marker, ms=3, color="tab:blue")
    top.set_ylabel("training loss")
    top.set_title("Training loss and learning rate")
    bottom.plot(iterations, [r["lr"] for r in losses], marker=marker, ms=3, color="tab:orange")
    bottom.set_ylabel("lr")
    bottom.set_xlabel("iteration")
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    return png(figure)


def validation_curves(evals: Sequence[dict]) -> bytes:
    """Validation mean IU and pixel accuracy (percent) over iterations; the best mean
    IU (``best.pt``) starred."""
    figure = Figure(figsize=(5.2, 3.8), layout="constrained")
    axes = figure.subplots()
    iterations = [r["iteration"] for r in evals]
    for key, name, color in (("mean_iu", "mean IU", "tab:green"),
                             ("pixel_acc", "pixel accuracy", "tab:purple")):  # fmt: skip
        values = [_percent(r.get(key)) for r in evals]
        axes.plot(iterations, values, marker="o", ms=4, color=color, label=name)
    scored = [r for r in evals if _percent(r.get("mean_iu")) == _percent(r.get("mean_iu"))]
    if scored:
        best = max(scored, key=lambda r: r["mean_iu"])
        axes.plot(best["iteration"], 100 * best["mean_iu"], "*", ms=14, color="tab:green",
                  label=f"best mean IU {100 * best['mean_iu']:.2f}")  # fmt: skip
    axes.set(xlabel="iteration", ylabel="percent", title="Validation over training")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    return png(figure)


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100 * value


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row of ``[true, predicted]`` counts divided by its sum: the share of a true
    class's pixels predicted as each class (NaN rows: classes with no pixel)."""
    counts = confusion.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / counts.sum(1, keepdims=True)


def confusion_heatmap(confusion: np.ndarray, classes: Sequence[str]) -> bytes:
    """The row-normalised confusion matrix as a heat map, class names on both axes;
    small matrices carry their values, classes without pixels are grey."""
    shares = row_normalised(confusion)
    n = len(classes)
    side = min(max(4.5, 0.45 * n + 2.5), 14)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axes = figure.subplots()
    cmap = colormaps["Blues"].with_extremes(bad="0.85")  # grey: a class with no true pixel
    image = axes.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class's pixels")
    axes.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(n), classes)
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix (rows sum to 1)")
    if n <= ANNOTATE_UP_TO:
        for (i, j), value in np.ndenumerate(shares):
            if value == value:
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if value > 0.55 else "black")  # fmt: skip
    return png(figure)


def class_iu_bars(
    per_class_iu: Sequence[float | None], classes: Sequence[str], colors: Sequence[Color]
) -> bytes:
    """Per-class IU (percent) as horizontal bars in the classes' colours, with the mean
    IU as a dashed line; a class absent from truth and prediction reads ``n/a``."""
    values = [_percent(v) for v in per_class_iu]
    n = len(classes)
    figure = Figure(figsize=(5.2, max(2.5, 0.3 * n + 1.2)), layout="constrained")
    axes = figure.subplots()
    rows = np.arange(n)
    faces = [tuple(c / 255 for c in colors[i]) for i in range(n)]
    axes.barh(rows, np.nan_to_num(values), color=faces, edgecolor="black", linewidth=0.6)
    for row, value in zip(rows, values, strict=True):
        text = "n/a" if value != value else f"{value:.1f}"
        axes.text(min(np.nan_to_num(value), 100) + 1, row, text, va="center", fontsize=8)
    scored = [v for v in values if v == v]
    if scored:
        mean = float(np.mean(scored))
        axes.axvline(mean, color="black", linestyle="--", linewidth=1)
        axes.text(mean, -0.85, f"mean {mean:.1f}", ha="center", va="center", fontsize=8)
    axes.set_yticks(rows, classes)
    axes.set_xlim(0, 108)
    axes.set_ylim(n - 0.5, -1.3)  # first class on top, as in the table; the mean above
    axes.set(xlabel="IU (percent)", title="Per-class IU")
    axes.grid(axis="x", alpha=0.3)
    return png(figure)


def example_picture(
    image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, colors: Sequence[Color]
) -> np.ndarray:
    """One validation image as three panels: the image, the prediction blended over it
    (:func:`~fcnseg.data.images.overlay`) and the ground truth in the palette (void
    white), 4 white pixels apart.

    Returns:
        (H, 3W + 8, 3) uint8.
    """
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    side_by_side = overlay(image, prediction, colors)
    width = image.shape[1]
    panels = [side_by_side[:, :width], gap, side_by_side[:, width:], gap, colorize(truth, colors)]
    return np.concatenate(panels, axis=1)
