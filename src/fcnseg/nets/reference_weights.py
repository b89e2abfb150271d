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
        url: the reference's ``caffemodel-url``; None where it publishes no file.
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
    url: str | None
    dataset: str
    num_classes: int
    normalization: str = "caffe"
    sha256: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    reported: str = ""
    description: str = ""

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


_README = "the reference's README"
_NYUD = "CVPR 2015 paper, Table 4 (NYUDv2 test), for the paper's model before this release"
_SIFT = "CVPR 2015 paper, Table 5 (SIFT Flow test), for the paper's FCN-16s before this release"


def _four(pixel_acc: float, mean_acc: float, mean_iu: float, fw_iu: float) -> dict[str, float]:
    """The paper's four metrics, given in percent, as fractions."""
    return {"pixel_acc": pixel_acc / 100, "mean_acc": mean_acc / 100, "mean_iu": mean_iu / 100,
            "fw_iu": fw_iu / 100}  # fmt: skip


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
    "voc-fcn-alexnet": ReferenceWeights(
        "fcn-alexnet-caffe", CAFFE_URL + "fcn-alexnet-pascal.caffemodel", "voc", 21,
        metrics={"seg11valid": {"mean_iu": 0.480}}, reported=_README,
        description="PASCAL VOC, AlexNet (CaffeNet layout), stride 32",
    ),
    "pascalcontext-fcn32s": ReferenceWeights(
        "fcn32s", CAFFE_URL + "pascalcontext-fcn32s-heavy.caffemodel", "pascal-context", 60,
        description="PASCAL-Context, 59 classes + background, stride 32",
    ),
    "pascalcontext-fcn16s": ReferenceWeights(
        "fcn16s", CAFFE_URL + "pascalcontext-fcn16s-heavy.caffemodel", "pascal-context", 60,
        description="PASCAL-Context, 59 classes + background, stride 16",
    ),
    "pascalcontext-fcn8s": ReferenceWeights(
        "fcn8s", CAFFE_URL + "pascalcontext-fcn8s-heavy.caffemodel", "pascal-context", 60,
        description="PASCAL-Context, 59 classes + background, stride 8",
    ),
    "nyud-fcn32s-color": ReferenceWeights(
        "fcn32s", CAFFE_URL + "nyud-fcn32s-color-heavy.caffemodel", "nyud", 40, "nyud",
        metrics={"test": _four(60.0, 42.2, 29.2, 43.9)}, reported=_NYUD,
        description="NYUDv2 40 classes, colour (BGR) input",
    ),
    "nyud-fcn32s-hha": ReferenceWeights(
        "fcn32s", CAFFE_URL + "nyud-fcn32s-hha-heavy.caffemodel", "nyud-hha", 40, "nyud-hha",
        metrics={"test": _four(57.1, 35.2, 24.2, 40.4)}, reported=_NYUD,
        description="NYUDv2 40 classes, HHA input",
    ),
    "nyud-fcn32s-color-d": ReferenceWeights(
        "fcn32s-color-d", None, "nyud-color-d", 40, "nyud",
        metrics={"test": _four(61.5, 42.4, 30.5, 45.5)}, reported=_NYUD,
        description="NYUDv2 40 classes, colour + log depth (4 channels); no file published",
    ),
    "nyud-fcn32s-color-hha": ReferenceWeights(
        "fcn32s-color-hha", CAFFE_URL + "nyud-fcn32s-color-hha-heavy.caffemodel",
        "nyud-color-hha", 40, "nyud",
        metrics={"test": _four(64.3, 44.9, 32.8, 48.0)}, reported=_NYUD,
        description="NYUDv2 40 classes, colour and HHA streams, scores summed",
    ),
    "siftflow-fcn32s": ReferenceWeights(
        "fcn32s-sem-geo", CAFFE_URL + "siftflow-fcn32s-heavy.caffemodel", "siftflow", 33,
        "siftflow", description="SIFT Flow, 33 semantic + 3 geometric classes, stride 32",
    ),
    "siftflow-fcn16s": ReferenceWeights(
        "fcn16s-sem-geo", CAFFE_URL + "siftflow-fcn16s-heavy.caffemodel", "siftflow", 33,
        "siftflow", reported=_SIFT,
        metrics={"test": {**_four(85.2, 51.7, 39.5, 76.1), "geo_pixel_acc": 0.943}},
        description="SIFT Flow, 33 semantic + 3 geometric classes, stride 16",
    ),
    "siftflow-fcn8s": ReferenceWeights(
        "fcn8s-sem-geo", CAFFE_URL + "siftflow-fcn8s-heavy.caffemodel", "siftflow", 33,
        "siftflow", description="SIFT Flow, 33 semantic + 3 geometric classes, stride 8",
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
    if entry.url is None:
        raise WeightsError(
            f"the reference publishes no caffemodel for {name}: convert one of your own "
            f"(fcnseg convert-caffe FILE --model {name} -o {name}.pt)"
        )
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


def load_weights(
    model: nn.Module, weights: WeightsFile, model_name: str, *, assign: bool = False
) -> None:
    """Load :func:`read_weights`' result into ``model`` (in place), every key and shape checked.

    ``assign``: make the file's tensors the parameters instead of copying them (for a
    model built on the meta device: shapes only, no memory, no random init).
    """
    if weights.layers is not None:
        names = reference_names(model_name)
        state = state_dict_from_caffe(model, weights.layers, names, weights.source)
    else:
        state = weights.state
    load_strict(model, state, weights.source, assign=assign)
