"""An exponential moving average (EMA) of a model's weights, for training from scratch.

The average of the last ~1/(1 - decay) updates' weights is often a better model
than the last weights alone, at no extra cost per step (Polyak averaging; used
by most from-scratch recipes, e.g. timm's ``--model-ema``).
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay after ``updates`` updates: ``decay``, but at most ``(1 + n) / (10 + n)``,
    so that the randomly initialised weights of the first updates fade fast."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model``, in place.

    Every floating-point parameter and buffer (batch norm's running statistics
    included) is averaged; the others (batch norm's update counts) are copied.
    ``average`` is a copy of ``model`` (the same state_dict keys and shapes).
    """
    own, theirs = average.state_dict(), model.state_dict()
    if own.keys() != theirs.keys():
        raise ValueError("the average and the model have different state_dict keys")
    for name, tensor in own.items():
        if tensor.is_floating_point():
            tensor.lerp_(theirs[name].to(tensor.dtype), 1 - decay)
        else:
            tensor.copy_(theirs[name])
