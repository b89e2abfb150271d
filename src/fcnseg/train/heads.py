"""Nets with several heads (SIFT Flow's semantic + geometric), one head at a time.

A two-head FCN returns a tuple of logits. Each head is evaluated on the dataset
that holds its labels, with the engine's :func:`~fcnseg.train.engine.evaluate`,
through :class:`~fcnseg.nets.fcn.Head`, which makes the net look like a one-head net.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from fcnseg.nets.fcn import Head
from fcnseg.train.engine import evaluate


def evaluate_heads(
    model: nn.Module,
    datasets: Sequence[Dataset],
    device: torch.device,
    *,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    **options,
) -> list[dict]:
    """The metrics of each head of ``model`` on its dataset (``datasets[k]`` for head k).

    Each dataset yields (normalised image, label) pairs and has the ``info`` of its
    labels. ``wrap`` is applied to each :class:`~fcnseg.nets.fcn.Head` (test-time augmentation:
    :func:`fcnseg.deploy.tta.with_tta`); ``options`` go to
    :func:`~fcnseg.train.engine.evaluate`.

    Returns:
        One metrics dict per head, as :func:`~fcnseg.train.engine.evaluate` gives it.

    Example:
        >>> from fcnseg.data.registry import build_dataset  # doctest: +SKIP
        >>> sets = [build_dataset(n, root, "test", eval_transform("siftflow"))
        ...         for n in ("siftflow", "siftflow-geometric")]  # doctest: +SKIP
        >>> semantic, geometric = evaluate_heads(model, sets, device)  # doctest: +SKIP
    """
    heads = len(getattr(model, "heads", ()))
    if heads != len(datasets):
        raise ValueError(f"the model has {heads} heads but {len(datasets)} datasets were given")
    wrap = wrap or (lambda head: head)
    return [
        evaluate(wrap(Head(model, k)), data, data.info.num_classes, device, **options)
        for k, data in enumerate(datasets)
    ]
