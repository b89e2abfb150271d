"""Nets with several heads (SIFT Flow's semantic + geometric), one head at a time.

A two-head FCN returns a tuple of logits. Each head is evaluated on the dataset
that holds its labels, with the engine's :func:`~fcnseg.train.engine.evaluate`,
through :class:`~fcnseg.nets.fcn.Head`, which makes the net look like a one-head net
(training), or through a Segmenter's module for each head (``fcnseg eval``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from fcnseg.nets.fcn import head_modules
from fcnseg.train.engine import evaluate


def evaluate_each(
    modules: Sequence[nn.Module], datasets: Sequence[Dataset], device: torch.device, **options
) -> list[dict]:
    """The metrics of each one-head module on its dataset (``datasets[k]`` for ``modules[k]``).

    The modules are a net's heads as they run: :func:`~fcnseg.nets.fcn.head_modules`, or
    a :class:`~fcnseg.deploy.inference.Segmenter`'s ``as_module(k)`` (any backend, with
    test-time augmentation). Each dataset yields (normalised image, label) pairs and has
    the ``info`` of its labels; ``options`` go to :func:`~fcnseg.train.engine.evaluate`.

    Returns:
        One metrics dict per module, as :func:`~fcnseg.train.engine.evaluate` gives it.
    """
    if len(modules) != len(datasets):
        raise ValueError(f"{len(modules)} heads but {len(datasets)} datasets were given")
    return [
        evaluate(module, data, data.info.num_classes, device, **options)
        for module, data in zip(modules, datasets, strict=True)
    ]


def evaluate_heads(
    model: nn.Module, datasets: Sequence[Dataset], device: torch.device, **options
) -> list[dict]:
    """The metrics of each head of ``model`` on its dataset (``datasets[k]`` for head k);
    ``options`` go to :func:`~fcnseg.train.engine.evaluate`.

    Example:
        >>> from fcnseg.data.registry import build_dataset  # doctest: +SKIP
        >>> sets = [build_dataset(n, root, "test", eval_transform("siftflow"))
        ...         for n in ("siftflow", "siftflow-geometric")]  # doctest: +SKIP
        >>> semantic, geometric = evaluate_heads(model, sets, device)  # doctest: +SKIP
    """
    return evaluate_each(head_modules(model), datasets, device, **options)
