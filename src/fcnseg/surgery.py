"""Weight surgery: ImageNet weights into an FCN, and a coarser FCN into a finer one.

The reference's ``surgery.transplant`` copies a classifier's convolutions, reshapes
its fully connected layers into fc6/fc7 and drops the ImageNet classifier. Here the
classifier is loaded with its own (torchvision) key names and then convolutionalized
(:func:`fcnseg.fcn.fcn_from_classifier`), so the reshape lives in one place.
Staged training (section 4.2) starts FCN-16s from FCN-32s and FCN-8s from FCN-16s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fcnseg.backbones import weights_entry


class WeightsError(ValueError):
    """A weight file that does not fit the model it is loaded into."""


def _numpy_data_types() -> list:
    # numpy arrays are plain data too (checkpoints hold numpy's RNG state).
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_file(path: str | os.PathLike, what: str = "weight file"):
    """``torch.load`` on the CPU, tensors and plain data only (no code runs)."""
    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such {what}") from None
    except Exception as e:  # torch raises many types for files that are not checkpoints
        raise WeightsError(f"{path}: not a readable {what} ({type(e).__name__})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict (or a checkpoint holding one under ``model``) from a file."""
    obj = load_file(path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    return dict(obj)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; on any mismatch, raise naming every bad key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {', '.join(shapes)}")
    if problems:
        raise WeightsError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state)


def load_backbone_weights(
    classifier: nn.Module, weights: str | os.PathLike, *, name: str, batch_norm: bool = False
) -> None:
    """Load ImageNet weights into a backbone classifier, in place.

    Args:
        classifier: a :class:`~fcnseg.backbones.VGG16` or :class:`~fcnseg.backbones.AlexNet`.
        weights: a local torchvision-format state_dict file, or ``"imagenet"`` to
            download torchvision's published file through torch.hub's cache, hash checked.
        name: the backbone's name (``vgg16`` or ``alexnet``), to pick the published file.
    """
    if str(weights) == "imagenet":
        url = weights_entry(name, batch_norm=batch_norm).url
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True)
        source = url
    else:
        state = read_state_dict(weights)
        source = str(weights)
    load_strict(classifier, state, source)


def init_from(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor]) -> list[str]:
    """Initialise ``model`` from a coarser trained FCN (staged training, section 4.2).

    Every parameter and buffer whose name exists in both is copied; the finer net's
    new layers (e.g. ``score_pool4``, ``upscore2``) keep their initialisation, zero
    for score layers, so the output right after this equals the source's.

    Returns:
        The names of the tensors copied.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else source
    own = model.state_dict()
    shared = [k for k in own if k in state]
    bad = [k for k in shared if own[k].shape != state[k].shape]
    if bad:
        raise WeightsError(f"cannot init from source: shape mismatch for {', '.join(bad)}")
    if not any(k.startswith("features.") for k in shared):
        raise WeightsError("cannot init from source: it shares no backbone weights with the model")
    model.load_state_dict({k: state[k] for k in shared}, strict=False)
    return shared
