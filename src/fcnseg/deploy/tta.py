"""Test-time augmentation: class probabilities averaged over flips and scales.

Each view (the image mirrored left-right, or resized by a factor) is segmented,
mapped back to the image's own frame (mirrored back, resized bilinearly to the
image's size) and its softmax probabilities averaged, as mmsegmentation's
test-time augmentation does. The result is returned as log-probabilities, which
are logits: their argmax is the averaged prediction and their softmax the
averaged probabilities, so callers that take logits need no change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.errors import ConfigError


class TestTimeAugmentation(nn.Module):
    """Wraps a segmenter ``model`` (N, 3, H, W) -> (N, C, H, W) logits.

    Args:
        model: the FCN (or any callable with that contract, e.g. an ONNX model).
        flip: add the left-right mirror of every scale.
        scales: resize factors of the input; 1.0 is the image as it is.

    Shapes: (N, 3, H, W) -> (N, C, H, W) float32 log of the mean probabilities.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__()
        if not scales or any(not s > 0 for s in scales):
            raise ConfigError(f"--tta-scales {' '.join(map(str, scales))}: give factors > 0")
        self.model, self.flip, self.scales = model, flip, tuple(float(s) for s in scales)

    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        total = None
        for scale in self.scales:
            scaled = x if scale == 1.0 else _resize(x, [max(1, round(n * scale)) for n in size])
            for mirrored in (False, True) if self.flip else (False,):
                logits = self.model(scaled.flip(-1) if mirrored else scaled)
                logits = logits.flip(-1) if mirrored else logits
                probs = _resize(logits.float(), size).softmax(1)
                total = probs if total is None else total + probs
        return (total / self.views()).log()


def with_tta(model, *, tta_flip: bool = False, tta_scales: Sequence[float] = (1.0,)):
    """``model`` wrapped in :class:`TestTimeAugmentation`, or as it is when no view but
    the image itself is asked for."""
    if not tta_flip and tuple(tta_scales) == (1.0,):
        return model
    return TestTimeAugmentation(model, flip=tta_flip, scales=tta_scales)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
