"""Weight files: the published ImageNet weights, described, and safe loading of any file.

Each published file is an entry with its URL (sha256 prefix in the name), the
pixel normalisation it was trained with and its class count; the normalisation
of a run follows from the weights it starts from.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fcnseg.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet's mean grey (BT.601 luma of IMAGENET_MEAN) on 0-255: the level ``grey_world``
# sets every channel of an image to.
IMAGENET_GREY = 255 * (0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
# The reference Caffe nets' BGR pixel mean, on the 0-255 scale.
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)
# The reference's NYUDv2 and SIFT Flow nets were fed their datasets' own means
# (nyud_layers.py, siftflow_layers.py): colour as BGR, HHA as stored (not flipped),
# depth as the log of millimetres.
NYUD_BGR_MEAN = (116.190, 97.203, 92.318)
NYUD_HHA_MEAN = (132.431, 94.076, 118.477)
NYUD_LOG_DEPTH_MEAN = 7.844
SIFT_FLOW_BGR_MEAN = (114.578, 115.294, 108.353)


@dataclass(frozen=True)
class Normalization:
    """How a net's weights expect a 3-channel image on 0-255: each channel first scaled
    so its mean over the image is ``grey_world`` (when set) and clipped to 0-255 if
    ``clip``, channels reversed to BGR if ``bgr``, divided by ``divisor``, then
    ``(x - mean) / std`` per channel."""

    pixels: str  # in words, for people and the server's /v1/model
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False
    divisor: float = 1.0
    # Grey-world white balance and exposure: an image taken at dusk, or under a colour
    # cast, reaches the net at the same channel means as one taken at noon.
    grey_world: float | None = None
    # Clip the balanced image to 0-255, as a camera would have saturated it: a dusk sky
    # scaled up keeps the flat white of a noon sky rather than values no photo holds.
    clip: bool = False


NORMALIZATION_SPECS: dict[str, Normalization] = {
    "imagenet": Normalization("RGB in [0, 1]", IMAGENET_MEAN, IMAGENET_STD, divisor=255.0),
    "caffe": Normalization("BGR in [0, 255]", CAFFE_BGR_MEAN, bgr=True),
    "nyud": Normalization("BGR in [0, 255]", NYUD_BGR_MEAN, bgr=True),
    "nyud-hha": Normalization("HHA in [0, 255]", NYUD_HHA_MEAN),
    "siftflow": Normalization("BGR in [0, 255]", SIFT_FLOW_BGR_MEAN, bgr=True),
    "imagenet-greyworld": Normalization(
        f"RGB in [0, 1], each channel first scaled to mean {IMAGENET_GREY:.1f} on 0-255",
        IMAGENET_MEAN,
        IMAGENET_STD,
        divisor=255.0,
        grey_world=IMAGENET_GREY,
    ),
    "imagenet-greyworld-clip": Normalization(
        f"RGB in [0, 1], each channel first scaled to mean {IMAGENET_GREY:.1f} on 0-255 "
        "and clipped to 0-255",
        IMAGENET_MEAN,
        IMAGENET_STD,
        divisor=255.0,
        grey_world=IMAGENET_GREY,
        clip=True,
    ),
}
"""Every normalisation by name: torchvision's (``imagenet``), the reference nets', and
``imagenet`` after a grey-world balance (``imagenet-greyworld``; clipped to 0-255 as a
photo is, ``imagenet-greyworld-clip``; for nets trained with them)."""
NORMALIZATIONS = tuple(NORMALIZATION_SPECS)


def same_scale(a: str, b: str) -> bool:
    """Whether normalisations ``a`` and ``b`` put pixels on the same scale (mean, std,
    channel order, divisor) and differ at most in the grey-world balance and its clip:
    a net trained with one can be fed the other (``imagenet-greyworld`` and
    ``imagenet-greyworld-clip``, say), where ``imagenet`` and ``caffe`` would be noise."""
    unbalanced = [dataclasses.replace(NORMALIZATION_SPECS[n], pixels="", grey_world=None,
                                      clip=False) for n in (a, b)]  # fmt: skip
    return unbalanced[0] == unbalanced[1]


@dataclass(frozen=True)
class Weights:
    """A published weight file: torchvision's, whose name carries a sha256 prefix."""

    url: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    normalization: str = "imagenet"  # how its pixels are fed: imagenet or caffe


IMAGENET_WEIGHTS = {
    "vgg16": Weights("https://download.pytorch.org/models/vgg16-397923af.pth"),
    "vgg16_bn": Weights("https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"),
    "alexnet": Weights("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


def weights_entry(name: str, *, batch_norm: bool = False) -> Weights:
    """The published ImageNet weights of a backbone."""
    return IMAGENET_WEIGHTS[f"{name}_bn" if batch_norm else name]


class WeightsError(UserError, ValueError):
    """A weight file that does not fit the model it is loaded into."""


def _numpy_data_types() -> list:
    # numpy arrays are plain data too. Checkpoints written today hold none, but those
    # written before the sample stream replaced the global RNGs hold numpy's RNG
    # state (an array): they still load.
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_file(path: str | os.PathLike, what: str = "weight file", *, mmap: bool = False):
    """``torch.load`` on the CPU, tensors and plain data only (no code runs).

    ``mmap``: map the tensors instead of reading them (for a look at the metadata
    of a large checkpoint); only torch's zip format can be mapped, others are read.
    """
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such {what}") from None
    except Exception as e:  # torch raises many types for files that are not checkpoints
        raise WeightsError(f"{path}: not a readable {what} ({type(e).__name__})") from None


def saved_normalization(path: str | os.PathLike) -> str | None:
    """The pixel normalisation an fcnseg checkpoint was trained with; None for a bare
    state_dict or a checkpoint that does not say.

    That is its training config's, where it has one: the checkpoint's own
    ``normalization`` is the one it is deployed with, which a run may have chosen
    to differ (``--val-normalization``: the balance clipped, say)."""
    obj = load_file(path, "checkpoint", mmap=True)
    if not isinstance(obj, Mapping):
        return None
    trained = obj.get("train_config")
    candidates = [trained.get("normalization")] if isinstance(trained, Mapping) else []
    return next((v for v in [*candidates, obj.get("normalization")] if v in NORMALIZATIONS), None)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict (or a checkpoint holding one under ``model``) from a file."""
    return state_dict_of(load_file(path), path)


def state_dict_of(obj: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict a loaded file holds: itself, or a checkpoint's ``model``."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    return dict(obj)


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, assign: bool = False
) -> None:
    """Load ``state`` into ``module``; on any mismatch, raise naming every bad key.

    ``assign``: the tensors become the module's (``load_state_dict(assign=True)``).
    """
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
    module.load_state_dict(state, assign=assign)
