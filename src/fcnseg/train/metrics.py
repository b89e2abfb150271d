"""The paper's metrics (section 5) from one streaming confusion matrix.

With n_ij the pixels of true class i predicted as j and t_i = sum_j n_ij:

- pixel accuracy      sum_i n_ii / sum_i t_i
- mean accuracy       (1 / n_cl) sum_i n_ii / t_i
- mean IU             (1 / n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
- frequency weighted  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Void pixels are excluded. A class's accuracy is NaN when it is absent from the
truth; its IU is NaN when it is absent from both truth and prediction (a class
predicted but absent scores IU 0). Means leave NaN classes out.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fcnseg.data.info import IGNORE_INDEX
from fcnseg.train.distributed import all_reduce_sum


class ConfusionMatrix:
    """Accumulates ``mat[true, pred]`` pixel counts (int64) with ``torch.bincount``.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update([0, 1, 2, 2], [0, 1, 1, 255])
        >>> round(cm.compute()["pixel_acc"], 3)
        0.667
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Add label maps of any (equal) shape: tensors, arrays or sequences."""
        pred = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred)
        target = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)}")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        n = self.num_classes
        keep = (target >= 0) & (target < n) & (target != self.ignore_index)
        pred, target = pred[keep], target[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predictions must lie in [0, {n})")
        self.mat += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def all_reduce(self) -> None:
        """Sum the matrices of all ranks (a no-op without torch.distributed)."""
        self.mat = all_reduce_sum(self.mat)

    def compute(self) -> dict:
        """The four metrics as fractions in [0, 1], and per-class IU and accuracy."""
        m = self.mat.double()
        tp, truth, predicted = m.diag(), m.sum(1), m.sum(0)
        union = truth + predicted - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = (tp / truth).numpy()
            iu = (tp / union).numpy()
        total = truth.sum().item()
        fw = float((truth.numpy() * np.nan_to_num(iu)).sum() / total) if total else float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN means stay NaN
            return {
                "pixel_acc": tp.sum().item() / total if total else float("nan"),
                "mean_acc": float(np.nanmean(acc)),
                "mean_iu": float(np.nanmean(iu)),
                "fw_iu": fw,
                "per_class_iu": iu.tolist(),
                "per_class_acc": acc.tolist(),
            }

    def dominant_fraction(self) -> float:
        """Share of the predictions that fall in the most predicted class."""
        predicted = self.mat.sum(0)
        return predicted.max().item() / max(predicted.sum().item(), 1)
