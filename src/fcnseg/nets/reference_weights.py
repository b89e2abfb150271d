"""The reference's trained FCNs, described: where each caffemodel is, what it predicts, its score.

Like torchvision's weight enums, each entry names the registered model it fits, its
URL (the reference's ``caffemodel-url``), the sha256 of the file when known, the
dataset whose classes it predicts, the pixel normalisation it expects and the
metrics the reference reports for it. A name is downloaded once into torch.hub's
cache (``<hub dir>/checkpoints``) and converted; a local file needs no network.

Example:
    >>> import fcnseg
    >>> model = fcnseg.build_model("fcn8s", weights="voc-fcn8s")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import urllib.error
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fcnseg.nets.caffe_convert import (
    num_classes_in,
    reference_names,
    state_dict_from_caffe,
    width_in,
)
from fcnseg.nets.caffemodel import CaffeLayer, read_caffemodel
from fcnseg.nets.weights import WeightsError, load_file, load_strict, state_dict_of

CAFFE_URL = "http://dl.caffe.berkeleyvision.org/"


@dataclass(frozen=True)
class ReferenceWeights:
    """One published caffemodel of the reference.

    Args:
        model: the registered model it fits (``fcnseg models``).
        url: the reference's ``caffemodel-url``.
        dataset: the registered dataset whose classes it predicts, in order.
        num_classes: classes it predicts.
        normalization: how it expects pixels (``caffe``: BGR, 0-255, minus the mean).
        sha256: of the file, checked on download; None where unknown.
        metrics: what the reference reports: split -> metric (fcnseg's names:
            ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu``) -> value, a fraction.
        reported: where those metrics come from.
        description: one line.
    """

    model: str
    url: str
    dataset: str
    num_classes: int
    normalization: str = "caffe"
    sha256: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    reported: str = ""
    description: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_README = "the reference's README"

REFERENCE_WEIGHTS: dict[str, ReferenceWeights] = {
    "voc-fcn32s": ReferenceWeights(
        "fcn32s", CAFFE_URL + "fcn32s-heavy-pascal.caffemodel", "voc", 21,
        metrics={"seg11valid": {"mean_iu": 0.636}}, reported=_README,
        description="PASCAL VOC, single stream, stride 32",
    ),
    "voc-fcn16s": ReferenceWeights(
        "fcn16s", CAFFE_URL + "fcn16s-heavy-pascal.caffemodel", "voc", 21,
        metrics={"seg11valid": {"mean_iu": 0.650}}, reported=_README,
        description="PASCAL VOC, two streams, stride 16",
    ),
    "voc-fcn8s": ReferenceWeights(
        "fcn8s", CAFFE_URL + "fcn8s-heavy-pascal.caffemodel", "voc", 21,
        metrics={"seg11valid": {"mean_iu": 0.655}, "seg12test": {"mean_iu": 0.672}},
        reported=_README,
        description="PASCAL VOC, three streams, stride 8",
    ),
    "voc-fcn8s-atonce": ReferenceWeights(
        "fcn8s-atonce", CAFFE_URL + "fcn8s-atonce-pascal.caffemodel", "voc", 21,
        metrics={"seg11valid": {"mean_iu": 0.654}}, reported=_README,
        description="PASCAL VOC, three streams trained at once (scaled skips)",
    ),
}  # fmt: skip


def weights_entry_named(name: str) -> ReferenceWeights:
    """The entry of a reference weights name; :class:`WeightsError` listing them if unknown."""
    if name not in REFERENCE_WEIGHTS:
        raise WeightsError(
            f"unknown weights {name!r}: give a file, or one of {', '.join(REFERENCE_WEIGHTS)}"
        )
    return REFERENCE_WEIGHTS[name]


def is_weights_name(weights: str | os.PathLike) -> bool:
    """Whether ``weights`` names a reference entry rather than a file (a file wins)."""
    return str(weights) in REFERENCE_WEIGHTS and not Path(weights).exists()


def fetch_caffemodel(name: str, *, progress: bool = True) -> Path:
    """The reference caffemodel ``name``, downloaded once into torch.hub's cache.

    Raises:
        WeightsError: the download failed (the message says how to get it by hand).
    """
    entry = weights_entry_named(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / entry.filename
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # to a temp file, renamed once complete and hash-checked
        torch.hub.download_url_to_file(entry.url, str(path), entry.sha256, progress=progress)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(
            f"cannot download {entry.url} ({reason}); download it by hand and convert it: "
            f"fcnseg convert-caffe {entry.filename} --model {name} -o {name}.pt"
        ) from None
    return path


@dataclass(frozen=True)
class WeightsFile:
    """Weights read from a caffemodel (``layers``) or an fcnseg file (``state``), with
    the class count and channel multiplier (None: not said) of the net they are for."""

    source: str
    num_classes: int
    width: float | None
    layers: Mapping[str, CaffeLayer] | None = None
    state: Mapping[str, torch.Tensor] | None = None


def read_weights(weights: str | os.PathLike, model_name: str) -> WeightsFile:
    """Read weights for ``model_name`` from a reference name, a ``.caffemodel`` or an
    fcnseg file (a converted file, a checkpoint or a state_dict).

    Raises:
        WeightsError: an unknown name, a name for another model, or an unreadable file.
    """
    if is_weights_name(weights):
        entry = REFERENCE_WEIGHTS[str(weights)]
        if entry.model != model_name:
            raise WeightsError(
                f"weights {weights} fit model {entry.model}, not {model_name}: "
                f"build_model({entry.model!r}, weights={str(weights)!r})"
            )
        weights = fetch_caffemodel(str(weights))
    source = str(weights)
    if Path(weights).is_file() and zipfile.is_zipfile(weights):  # torch's format
        return _read_fcnseg_file(weights)
    layers = read_caffemodel(weights)
    names = reference_names(model_name)
    return WeightsFile(
        source,
        num_classes_in(layers, names, source),
        width_in(layers, names, model_name, source),
        layers,
    )


def _read_fcnseg_file(path: str | os.PathLike) -> WeightsFile:
    obj = load_file(path)
    config = obj.get("model_config") if isinstance(obj, Mapping) else None
    state = state_dict_of(obj, path)
    config = config if isinstance(config, Mapping) else {}
    if "num_classes" in config:
        num_classes = config["num_classes"]
    elif "score_fr.weight" in state:
        num_classes = state["score_fr.weight"].shape[0]
    else:
        raise WeightsError(f"{path}: no score_fr layer, so no classes to read")
    return WeightsFile(str(path), num_classes, config.get("width"), state=state)


def load_weights(model: nn.Module, weights: WeightsFile, model_name: str) -> None:
    """Load :func:`read_weights`' result into ``model`` (in place), every key and shape checked."""
    if weights.layers is not None:
        state = state_dict_from_caffe(
            model, weights.layers, reference_names(model_name), weights.source
        )
    else:
        state = weights.state
    load_strict(model, state, weights.source)
