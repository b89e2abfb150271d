"""Checkpoints that describe themselves and survive being killed mid-write."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from fcnseg.nets.registry import build_from_config
from fcnseg.nets.weights import WeightsError, load_file


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` atomically: ``write`` fills a temp file in the same folder
    (``.<name>.<random>.tmp``), which is fsynced, then renamed over ``path``. A kill
    at any moment leaves the old file or the new one, never a torn one (only,
    at worst, a torn temp file, which :class:`~fcnseg.train.run.RunFolder` clears).
    The file gets the permissions a plain ``open(path, "w")`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty ``.<name>.<random>.tmp`` beside ``path``, open for writing.

    Created as ``open()`` creates files (mode 0o666 less the umask), not 0o600 as
    ``tempfile.mkstemp`` would: the renamed file must not lose permissions.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
