"""Checkpoints made from the reference's Caffe weights: what ``fcnseg convert-caffe``
writes and what ``--weights NAME`` loads.

A converted file is an fcnseg checkpoint, like a ``best.pt`` without the optimiser:
the weights (``model``), the config that rebuilds the net (``model_config``), the
classes and colours (``dataset``), how pixels are fed (``normalization``; ``caffe``:
BGR on 0-255 minus the reference's mean, as its data layers do) and the data ``eval``
reads (``train_config``, data fields only: those of the recipe of the same name as the
reference weights, the dataset and split the reference evaluates on; else the
dataset alone). So
``predict``, ``eval`` and ``serve`` take it as they take any checkpoint, with no flag.
``reference`` records where it came from: the file, its sha256, the reported metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch

from fcnseg.data.info import DatasetInfo, voc_colors
from fcnseg.data.registry import DATASETS
from fcnseg.nets.caffe_convert import learned_upsampling
from fcnseg.nets.reference_weights import (
    REFERENCE_WEIGHTS,
    fetch_caffemodel,
    load_weights,
    read_weights,
)
from fcnseg.nets.registry import MODELS, build_model
from fcnseg.nets.weights import WeightsError
from fcnseg.train.checkpoint import save_checkpoint
from fcnseg.train.config import TrainConfig
from fcnseg.train.recipes import RECIPES

# The fields of a converted file's train_config: its data, for eval (the model and
# its input are the checkpoint's own; nothing was trained).
DATA_FIELDS = ("dataset", "data_root", "train_split", "val_dataset", "val_root", "val_split")


def convert_caffemodel(
    path: str | os.PathLike,
    model: str,
    *,
    dataset: str | None = None,
    width: float | None = None,
) -> dict:
    """Read a caffemodel into a checkpoint dict (see the module docstring).

    Args:
        path: the ``.caffemodel``.
        model: a reference weights name (``voc-fcn8s``: its model, classes,
            normalisation and recipe) or a registered model name (``fcn8s``: classes
            from ``dataset``, else numbered; normalisation ``caffe``).
        dataset: the registered dataset whose classes the net predicts, in order.
        width: the net's channel multiplier; None: read from the file (1.0 for the
            published nets).

    The upsampling is learnable when the file's is not the fixed bilinear kernel
    (the paper's original nets learned it), fixed otherwise, as the reference's.

    Raises:
        WeightsError: an unknown name, a file that is no caffemodel or does not fit
            the model (one line naming the layers), classes that differ from the dataset's.
    """
    entry = REFERENCE_WEIGHTS.get(model)
    if entry is None and model not in MODELS:
        raise WeightsError(
            f"--model {model}: give a reference weights name ({', '.join(REFERENCE_WEIGHTS)}) "
            f"or a model name ({', '.join(MODELS)})"
        )
    model_name = entry.model if entry else model
    trained = read_weights(path, model_name)
    width = width or trained.width or 1.0
    learnable = bool(trained.layers and learned_upsampling(trained.layers))
    with torch.device("meta"):  # shapes only: the file's tensors become the weights
        net = build_model(
            model_name, trained.num_classes, width=width, learnable_upsampling=learnable
        )
    load_weights(net, trained, model_name, assign=True)
    dataset = dataset or (entry.dataset if entry else None)
    normalization = entry.normalization if entry else "caffe"
    checkpoint = {
        "model": net.state_dict(),
        "model_config": net.config.to_dict(),
        "dataset": dataclasses.asdict(_classes(dataset, trained.num_classes, path)),
        "normalization": normalization,
        "reference": {
            "file": Path(path).name,
            "sha256": _sha256(path),
            "weights": model if entry else None,
            "url": entry.url if entry else None,
            "metrics": dict(entry.metrics) if entry else {},
            "reported": entry.reported if entry else "",
        },
    }
    # The data eval reads: the reference's recipe of the same name, or the dataset alone.
    if entry and model in RECIPES:
        base = RECIPES[model]
    elif dataset is not None:
        base = TrainConfig(dataset=dataset)
    else:
        return checkpoint
    data = {name: getattr(base, name) for name in DATA_FIELDS}
    return checkpoint | {"train_config": data | {"normalization": normalization}}


def _classes(dataset: str | None, num_classes: int, path: str | os.PathLike) -> DatasetInfo:
    """The classes of ``dataset``, checked against the file's count; numbered without one."""
    if dataset is None:
        names = tuple(f"class {i}" for i in range(num_classes))
        return DatasetInfo("caffe", names, voc_colors(num_classes))
    info = getattr(DATASETS.get(dataset), "info", None)
    if not isinstance(info, DatasetInfo):
        fixed = [
            n for n, cls in DATASETS.items() if isinstance(getattr(cls, "info", None), DatasetInfo)
        ]
        raise WeightsError(
            f"--dataset {dataset}: choose a dataset with fixed classes ({', '.join(fixed)})"
        )
    if info.num_classes != num_classes:
        raise WeightsError(
            f"{path} predicts {num_classes} classes, {dataset} has {info.num_classes}"
        )
    return info


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def weights_checkpoint(weights: str | os.PathLike, *, progress: bool = True) -> Path:
    """The checkpoint file ``--weights`` names: a reference name, downloaded and converted
    once (both cached in torch.hub's ``checkpoints`` folder), or a converted file as it is.

    Raises:
        WeightsError: neither a reference name nor an existing file, or a caffemodel
            (which needs its model named: ``fcnseg convert-caffe``).
    """
    path = Path(weights)
    if path.is_file():
        if path.suffix == ".caffemodel":
            raise WeightsError(
                f"--weights {path}: convert it first (fcnseg convert-caffe {path} --model NAME "
                f"-o {path.with_suffix('.pt')})"
            )
        return path
    if str(weights) not in REFERENCE_WEIGHTS:
        raise WeightsError(
            f"--weights {weights}: no such file, and not a reference name "
            f"({', '.join(REFERENCE_WEIGHTS)})"
        )
    converted = Path(torch.hub.get_dir()) / "checkpoints" / f"fcnseg-{weights}.pt"
    if not converted.is_file():
        caffemodel = fetch_caffemodel(str(weights), progress=progress)
        save_checkpoint(convert_caffemodel(caffemodel, str(weights)), converted)
    return converted
