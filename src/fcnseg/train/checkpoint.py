"""Checkpoints that describe themselves and survive being killed mid-write."""

from __future__ import annotations

import os
import shutil

import torch

from fcnseg.atomic import atomic_write
from fcnseg.nets.registry import build_from_config
from fcnseg.nets.weights import WeightsError, load_file


def save_checkpoint(obj: dict, path: str | os.PathLike, *copies: str | os.PathLike) -> None:
    """Write ``obj`` to ``path``, and the same bytes to each of ``copies``, each with
    :func:`atomic_write`. ``obj`` is serialised once: the copies read ``path`` back."""
    atomic_write(path, lambda f: torch.save(obj, f))
    for copy in copies:
        _copy_atomically(path, copy)


def _copy_atomically(source: str | os.PathLike, target: str | os.PathLike) -> None:
    with open(source, "rb") as src:
        atomic_write(target, lambda f: shutil.copyfileobj(src, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU)."""
    obj = load_file(path, "fcnseg checkpoint")
    if not isinstance(obj, dict) or "model" not in obj or "model_config" not in obj:
        raise WeightsError(f"{path}: not an fcnseg checkpoint (no model or model_config)")
    return obj


def model_from_checkpoint(path_or_obj: str | os.PathLike | dict) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode.

    Returns:
        The model and the checkpoint dict (dataset info, normalisation, config).
    """
    ckpt = path_or_obj if isinstance(path_or_obj, dict) else load_checkpoint(path_or_obj)
    model = build_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
