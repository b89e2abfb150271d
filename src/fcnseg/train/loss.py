"""The per-pixel softmax loss (paper section 3, "loss"): a sum over pixels, void ignored.

The reference sums the loss over every pixel (unnormalised), which is why its
learning rates are tiny (1e-10 for FCN-32s on 500x500 images: the gradient is
about 250,000 times that of a mean). ``normalize=True`` takes the mean over
non-void pixels (weighted by class weights when given), for ordinary lrs (~1e-3).

Training computes the same mean over the pixels of a whole update (every rank,
every accumulation step) by passing that update's ``denominator``.

A net with several heads (SIFT Flow's semantic + geometric) is trained on the sum
of its heads' losses, each on its own labels with its own void and normalisation,
as the reference sums one SoftmaxWithLoss per head, loss weight 1 each
(:func:`heads_loss`).

Label smoothing ``e`` (off in every recipe) is PyTorch's: a pixel of class ``y``
costs ``(1 - e) w_y (-log p_y) + (e / C) sum_c w_c (-log p_c)``, so with class
weights the smoothing term weighs each class by its own weight, not the pixel's.
The mean still divides by the pixels' summed ``w_y`` (as ``reduction="mean"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fcnseg.data.dataset import SegmentationDataset
from fcnseg.data.info import IGNORE_INDEX


def pixel_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    normalize: bool = True,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    denominator: torch.Tensor | float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Softmax cross-entropy at every non-void pixel.

    Args:
        logits: (N, C, H, W) scores.
        target: (N, H, W) int64 labels, ``ignore_index`` for void.
        normalize: mean over non-void pixels (weighted by ``class_weights``) if
            True, their sum (the reference's loss) if False.
        class_weights: (C,) per-class weights, e.g. median-frequency balancing.
        denominator: with ``normalize``, what the summed loss is divided by
            (default: :func:`loss_denominator` of ``target``). A larger batch this
            one is part of passes its own, so that the parts' losses add up to
            the mean over the whole.
        label_smoothing: ``e`` in [0, 1): the target is ``1 - e`` on the pixel's
            class plus ``e / C`` on every class (see the module docstring for
            how it combines with ``class_weights``).

    Returns:
        A scalar; zero (with gradient) when the denominator is zero (every pixel void).
    """
    if class_weights is not None:
        class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
    total = F.cross_entropy(
        logits,
        target,
        weight=class_weights,
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if not normalize:
        return total
    if denominator is None:
        denominator = loss_denominator(target, class_weights, ignore_index)
    return total / denominator if denominator > 0 else total * 0.0


def heads_loss(
    logits: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    *,
    normalize: bool = True,
    class_weights: torch.Tensor | None = None,
    denominators: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """A net's loss: the sum over its heads of :func:`pixel_loss` on each head's labels.

    Args:
        logits: (N, C, H, W) scores, or a several-head net's tuple of K such (C_k
            classes each); taken in float32 (autocast may give half precision).
        target: (N, H, W) labels, or (N, K, H, W) with head k's at ``[:, k]``.
        class_weights: (C,), of a one-head net's classes.
        denominators: with ``normalize``, each head's (K,) (see
            :func:`loss_denominators`); None: each head's own labels'.

    Returns:
        A scalar: one head's loss, or the heads' losses summed.
    """
    heads = (logits,) if isinstance(logits, torch.Tensor) else tuple(logits)
    targets = head_labels(target)
    if len(heads) != len(targets):
        raise ValueError(f"{len(heads)} heads of logits but {len(targets)} label maps")
    losses = [
        pixel_loss(
            scores.float(),
            labels,
            normalize=normalize,
            class_weights=class_weights,
            denominator=None if denominators is None else denominators[k],
            label_smoothing=label_smoothing,
        )
        for k, (scores, labels) in enumerate(zip(heads, targets, strict=True))
    ]
    return torch.stack(losses).sum()


def head_labels(target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each head's (N, H, W) labels: ``target`` itself, or the K maps of (N, K, H, W)."""
    return target.unbind(1) if target.ndim == 4 else (target,)


def loss_denominators(
    target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(K,): each head's :func:`loss_denominator`, of (N, H, W) (K = 1) or (N, K, H, W) labels."""
    return torch.stack([loss_denominator(labels, class_weights) for labels in head_labels(target)])


def loss_denominator(
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """What the mean loss divides by: non-void pixels, or their summed class weights."""
    valid = target != ignore_index
    if class_weights is None:
        return valid.sum().float()
    return class_weights.to(target.device)[target[valid]].sum().float()


def label_counts(dataset: SegmentationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels over the dataset, and pixels of the images where it occurs."""
    n = dataset.info.num_classes
    pixels, present = np.zeros(n), np.zeros(n)
    for i in range(len(dataset)):
        _, label = dataset.load(i)
        counts = np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=n)[:n]
        pixels += counts
        present += (counts > 0) * (label != IGNORE_INDEX).sum()
    return pixels, present


def median_frequency_weights(dataset: SegmentationDataset) -> torch.Tensor:
    """Class weights ``median(freq) / freq_c`` (Eigen & Fergus), with ``freq_c`` the
    class's pixels over the pixels of the images that contain it."""
    pixels, present = label_counts(dataset)
    freq = np.where(present > 0, pixels / np.maximum(present, 1), np.nan)
    weights = np.nanmedian(freq) / freq
    return torch.tensor(np.nan_to_num(weights, nan=0.0), dtype=torch.float32)


def enet_weights(dataset: SegmentationDataset, c: float = 1.02) -> torch.Tensor:
    """Class weights ``1 / ln(c + p_c)`` (ENet, Paszke et al. 2016), with ``p_c`` the
    class's share of all labelled pixels; bounded by ``1 / ln(c)`` (about 50) for the
    rarest classes, where median-frequency weights are not. A class that never occurs
    weighs 0."""
    pixels, _ = label_counts(dataset)
    weights = 1.0 / np.log(c + pixels / max(pixels.sum(), 1))
    return torch.tensor(np.where(pixels > 0, weights, 0.0), dtype=torch.float32)


# ``class_weighting`` -> the weights of a training set (``"none"``: no weights).
CLASS_WEIGHTS: dict[str, Callable[[SegmentationDataset], torch.Tensor]] = {
    "median": median_frequency_weights,
    "enet": enet_weights,
}
