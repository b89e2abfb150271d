"""The training configuration: one frozen dataclass, checked when built, saved as ``config.json``.

Every field is checked in :meth:`TrainConfig.__post_init__` (its type, then its
range or choices, then whether the model can be built with these options), so a
bad value stops with one line naming the field and its flag before anything
runs. The config also says which data a run reads (:func:`build_train_set`,
:func:`build_val_sets`: a label set per head for a several-head net), which
checkpoint starts each stream of a late-fusion net (:func:`stream_sources`) and
which pixel normalisation its starting weights expect (:func:`resolve_normalization`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from fcnseg.data.dataset import MultiHeadDataset, SegmentationDataset, Transform
from fcnseg.data.info import DataError
from fcnseg.data.registry import DATASETS, build_dataset, head_datasets
from fcnseg.data.transforms import second_image_normalization
from fcnseg.data.voc import VOCDataset
from fcnseg.errors import ConfigError
from fcnseg.nets.registry import MODELS, build_model
from fcnseg.nets.weights import NORMALIZATIONS, same_scale, saved_normalization, weights_entry
from fcnseg.train.loss import CLASS_WEIGHTS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("fixed", "poly")
CLASS_WEIGHTINGS = ("none", *CLASS_WEIGHTS)
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run reads. Saved as ``config.json`` beside its checkpoints.

    Raises:
        ConfigError: on construction, for a value outside what its field allows.
    """

    # model (see fcnseg.build_model)
    model: str = "fcn8s"
    width: float = 1.0
    batch_norm: bool = False
    learnable_upsampling: bool = False
    pad: int = 100
    backbone_weights: str | None = None  # "imagenet", a path, or None (from scratch)
    init_from: str | None = None  # checkpoint of a coarser FCN (staged training), or
    # one per stream of a late-fusion net: "color=PATH,hha=PATH" (stream_sources)
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    val_dataset: str | None = None  # None: the training dataset
    val_root: str | None = None  # None: data_root (for the training dataset)
    normalization: str | None = None  # None: what the starting weights expect
    val_normalization: str | None = None  # None: normalization (see _check_val_normalization)
    crop: int | None = None  # None: whole images, batch 1 (the reference)
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    color_jitter: float = 0.0  # 0: none; s: brightness/contrast/saturation x [1-s, 1+s]
    batch_size: int = 1
    accumulate: int = 1  # gradient accumulation (the reference's iter_size)
    workers: int = 0
    # optimisation
    iterations: int = 1000
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0  # the reference: biases learn 2x, without decay
    schedule: str = "poly"  # "fixed" (the reference) or "poly"
    poly_power: float = 0.9
    warmup: int = 0
    normalize_loss: bool = True  # False: the reference's summed loss
    class_weighting: str = "none"  # "median" (median-frequency) or "enet" (1 / ln(1.02 + p))
    label_smoothing: float = 0.0  # 0: one-hot targets (the paper)
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0: none
    aux_weight: float = 0.0  # loss weight of each coarser stage (FCN-32s, -16s); 0: none
    # speed (see "Training at scale" in the README)
    # "bf16" or "fp16": autocast (fp16 with a grad scaler); "auto": bf16 where the device
    # computes it natively, else fp32 on a CPU, fp16 on a GPU (train.device.resolve_precision)
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    dropout: float = 0.5  # after fc6 and fc7, as the reference
    # bookkeeping
    eval_every: int = 500
    keep_checkpoints: bool = False  # also keep each evaluation's checkpoint (iter_<N>.pt)
    log_every: int = 20
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        # JSON has no tuples and writes 1.0 as 1: store the canonical types.
        if isinstance(self.scale, list):
            object.__setattr__(self, "scale", tuple(self.scale))
        for name, (base, _) in FIELD_TYPES.items():
            value = getattr(self, name)
            if base is float and type(value) is int:
                object.__setattr__(self, name, float(value))
        _validate(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _field_types() -> dict[str, tuple[type, bool]]:
    """Each field's base type (bool, int, float, str or tuple) and whether it may be None."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        base = args[0] if optional else hint
        types[name] = (typing.get_origin(base) or base, optional)
    return types


FIELD_TYPES = _field_types()
"""Field name -> (base type, optional): what the command line parses for each field."""


def option_name(field: str) -> str:
    """The command-line flag of a config field: ``class_weighting`` -> ``--class-weighting``."""
    return "--" + field.replace("_", "-")


def _named(field: str) -> str:
    return f"{field} ({option_name(field)})"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_TYPE_CHECKS: dict[type, tuple[Callable[[typing.Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    float: (_is_number, "a finite number"),
    str: (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
    tuple: (
        lambda v: isinstance(v, tuple) and len(v) == 2 and all(map(_is_number, v)),
        "two numbers LOW HIGH",
    ),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "model": tuple(MODELS),
    "dataset": tuple(DATASETS),
    "val_dataset": tuple(DATASETS),
    "normalization": NORMALIZATIONS,
    "val_normalization": NORMALIZATIONS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "class_weighting": CLASS_WEIGHTINGS,
    "precision": TRAIN_PRECISIONS,
}

_RANGES: dict[str, tuple[Callable[[typing.Any], bool], str]] = {
    "width": (lambda v: v > 0, "> 0 (1.0 is the published net)"),
    "pad": (lambda v: v >= 1, ">= 1 (100: the reference; 1: the efficient geometry)"),
    "crop": (lambda v: v >= 1, ">= 1, or none for whole images"),
    "scale": (lambda v: 0 < v[0] <= v[1], "two numbers 0 < LOW <= HIGH"),
    "color_jitter": (lambda v: 0 <= v < 1, "in [0, 1) (0: no jitter)"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "accumulate": (lambda v: v >= 1, ">= 1"),
    "workers": (lambda v: v >= 0, ">= 0"),
    "iterations": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "bias_lr_mult": (lambda v: v >= 0, ">= 0"),
    "poly_power": (lambda v: v >= 0, ">= 0"),
    "warmup": (lambda v: v >= 0, ">= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1) (0: no smoothing)"),
    "ema": (lambda v: 0 <= v < 1, "in [0, 1) (0: no average)"),
    "aux_weight": (lambda v: v >= 0, ">= 0 (0: no auxiliary loss)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "eval_every": (lambda v: v >= 1, ">= 1"),
    "log_every": (lambda v: v >= 1, ">= 1"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32) (numpy's seed range)"),
}


def _validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for the first field outside what it allows."""
    for name, (base, optional) in FIELD_TYPES.items():
        value = getattr(cfg, name)
        if value is None and optional:
            continue
        check, kind = _TYPE_CHECKS[base]
        if not check(value):
            unset = ", or none" if optional else ""
            raise ConfigError(f"{_named(name)} must be {kind}{unset}; got {value!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ConfigError(
                f"{_named(name)} must be one of {', '.join(_CHOICES[name])}; got {value!r}"
            )
        if name in _RANGES and not _RANGES[name][0](value):
            raise ConfigError(f"{_named(name)} must be {_RANGES[name][1]}; got {value!r}")
    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"{_named('device')} must be auto, cpu, cuda, cuda:N or mps; got {cfg.device!r}"
            ) from None
    _check_data_roots(cfg)
    _check_val_normalization(cfg)
    _check_model_options(cfg)


def _check_val_normalization(cfg: TrainConfig) -> None:
    """A net validated with another normalisation than it trains with is fed pixels on
    the same scale (only the grey-world balance or its clip may differ; see
    :func:`fcnseg.nets.weights.same_scale`): any other would score noise. Checked
    again once the training normalisation is resolved from the starting weights."""
    val, train = cfg.val_normalization, cfg.normalization
    if val is None or train is None or same_scale(val, train):
        return
    allowed = ", ".join(n for n in NORMALIZATIONS if same_scale(n, train))
    raise ConfigError(
        f"{_named('val_normalization')} {val!r} puts pixels on another scale than "
        f"{_named('normalization')} {train!r}; choose one of {allowed}, or none"
    )


def _check_data_roots(cfg: TrainConfig) -> None:
    """The synthetic scenes are drawn, not read: a folder given for them is a mistake."""
    roots = [("data_root", cfg.dataset, cfg.data_root)]
    roots.append(("val_root", cfg.val_dataset or cfg.dataset, cfg.val_root))
    for name, dataset, root in roots:
        if dataset == "synthetic" and root is not None:
            raise ConfigError(
                f"{_named(name)} must be none for the synthetic dataset (its scenes are "
                f"drawn, not read); got {root!r}"
            )


def _check_model_options(cfg: TrainConfig) -> None:
    """Refuse model options the builder refuses (e.g. AlexNet with batch norm, or with
    pad != 100: its fc6 kernel is even). The net is built on the meta device: no
    memory, no weights, about 10 ms."""
    try:
        with torch.device("meta"):
            build_model(
                cfg.model, 2, batch_norm=cfg.batch_norm, width=cfg.width, pad=cfg.pad,
                learnable_upsampling=cfg.learnable_upsampling, dropout=cfg.dropout,
            )  # fmt: skip
    except ValueError as e:
        options = f"--pad {cfg.pad}" + (" --batch-norm" if cfg.batch_norm else "")
        raise ConfigError(f"{_named('model')} {cfg.model} with {options}: {e}") from None
    _check_heads(cfg)
    stream_sources(cfg)  # a per-stream init_from fits the model's streams


def num_heads(cfg: TrainConfig) -> int:
    """How many label maps the run's model predicts (2 for SIFT Flow's nets)."""
    return len(MODELS[cfg.model].heads)


def _check_heads(cfg: TrainConfig) -> None:
    """A net with several heads trains on a dataset with a label set per head (SIFT
    Flow) and takes no class weights (they would be one head's)."""
    if num_heads(cfg) == 1:
        return
    try:
        head_datasets(cfg.dataset, num_heads(cfg))
    except DataError as e:
        raise ConfigError(f"{_named('model')} {cfg.model}: {e}") from None
    if cfg.class_weighting != "none":
        raise ConfigError(
            f"{_named('class_weighting')} must be none for {cfg.model}: class weights are one "
            f"head's; got {cfg.class_weighting!r}"
        )


_STREAM_SOURCE = re.compile(r"(\w+)=(.+)")


def stream_sources(cfg: TrainConfig) -> dict[str, str] | None:
    """The checkpoint of each stream when ``init_from`` gives one per stream of a
    late-fusion net (``color=a.pt,hha=b.pt``: the reference starts its colour + HHA
    net from a trained colour net and a trained HHA net); None when it names one
    checkpoint, or none. A path with ``=`` in it reads as one path from ``./`` on.

    Raises:
        ConfigError: a per-stream ``init_from`` that does not name each of the
            model's streams once, or a model without streams.
    """
    if cfg.init_from is None:
        return None
    parts = [_STREAM_SOURCE.fullmatch(part.strip()) for part in cfg.init_from.split(",")]
    if not any(parts):
        return None
    streams = MODELS[cfg.model].streams
    sources = {m[1]: m[2] for m in parts if m}
    if not streams:
        raise ConfigError(
            f"{_named('init_from')} {cfg.init_from!r}: {cfg.model} has one stream; give one "
            "checkpoint (a file with '=' in its name: ./NAME)"
        )
    if not all(parts) or len(parts) != len(streams) or set(sources) != set(streams):
        want = ",".join(f"{s}=PATH" for s in streams)
        raise ConfigError(
            f"{_named('init_from')} {cfg.init_from!r}: give each stream of {cfg.model} one "
            f"checkpoint, as {want}"
        )
    return {s: sources[s] for s in streams}


def resolve_normalization(cfg: TrainConfig) -> str:
    """How the run's pixels are normalised: ``cfg.normalization`` when set, else what
    its starting weights expect.

    That is the normalisation saved in an ``init_from`` checkpoint (``imagenet`` if
    it is a bare state_dict), the published weights' own entry for ``imagenet``
    backbone weights (:attr:`fcnseg.nets.weights.Weights.normalization`), and
    ``imagenet`` for a local weights file (torchvision's format) or from scratch.
    A late-fusion net started from one checkpoint per stream takes the first's
    (:func:`_streams_normalization`).
    """
    if cfg.normalization is not None:
        return cfg.normalization
    sources = stream_sources(cfg)
    if sources is not None:
        return _streams_normalization(sources)
    if cfg.init_from is not None:
        return saved_normalization(cfg.init_from) or "imagenet"
    if cfg.backbone_weights == "imagenet":
        backbone = MODELS[cfg.model].backbone
        return weights_entry(backbone, batch_norm=cfg.batch_norm).normalization
    return "imagenet"


def deployed_normalization(cfg: TrainConfig) -> str:
    """How a resolved run feeds its validation images, and so how its checkpoints'
    nets are fed at test time: ``cfg.val_normalization`` when set (a mode on the
    training one's scale, e.g. the grey-world balance clipped to 0-255 as a photo
    is), else ``cfg.normalization``. Model selection sees what deployment sees."""
    return cfg.val_normalization or cfg.normalization


def _streams_normalization(sources: dict[str, str]) -> str:
    """The first stream's checkpoint's normalisation, once it is known to feed every
    other stream as that one's checkpoint was trained (``imagenet`` feeds HHA as
    ``imagenet``; ``nyud``, the reference's colour net's, as ``nyud-hha``, its HHA net's).

    Raises:
        ConfigError: a stream would be fed otherwise than it was trained.
    """
    saved = {name: saved_normalization(path) or "imagenet" for name, path in sources.items()}
    first, *others = saved
    feeds = second_image_normalization(saved[first])
    for name in others:
        if saved[name] != feeds:
            raise ConfigError(
                f"{_named('init_from')}: the {first} checkpoint's normalization "
                f"{saved[first]} feeds the {name} stream as {feeds}, but its checkpoint was "
                f"trained with {saved[name]}; set --normalization to choose one"
            )
    return saved[first]


def build_train_set(cfg: TrainConfig, transform: Transform | None = None) -> SegmentationDataset:
    """The training data: split ``train_split`` of ``dataset`` under ``data_root``.

    For a net with several heads, a :class:`~fcnseg.data.dataset.MultiHeadDataset`
    of each head's labels of those images (SIFT Flow's semantic and geometric).
    """
    names = head_datasets(cfg.dataset, num_heads(cfg))
    if len(names) == 1:
        return build_dataset(cfg.dataset, cfg.data_root, cfg.train_split, transform)
    parts = [build_dataset(name, cfg.data_root, cfg.train_split) for name in names]
    return MultiHeadDataset(parts, transform)


def build_val_sets(
    cfg: TrainConfig, transform: Transform | None = None
) -> list[SegmentationDataset]:
    """The validation data of each head: :func:`build_val_set`'s for a one-head net;
    for several, each head's labels of split ``val_split`` of ``dataset`` (under
    ``val_root``, else ``data_root``), in head order."""
    names = head_datasets(cfg.val_dataset or cfg.dataset, num_heads(cfg))
    if len(names) == 1:
        return [build_val_set(cfg, transform)]
    root = cfg.val_root or cfg.data_root
    return [build_dataset(name, root, cfg.val_split, transform) for name in names]


def build_val_set(cfg: TrainConfig, transform: Transform | None = None) -> SegmentationDataset:
    """The validation data: split ``val_split`` of ``val_dataset`` under ``val_root``.

    Without ``val_dataset`` it is the training dataset, under ``val_root`` or else
    ``data_root``. Another dataset needs its own ``val_root``. Training on SBD and
    validating on VOC (the reference's data), ``seg11valid`` without a list file is
    computed as VOC val minus SBD's ``train.txt`` (736 images for VOC2011).
    """
    if cfg.val_dataset in (None, cfg.dataset):
        return build_dataset(cfg.dataset, cfg.val_root or cfg.data_root, cfg.val_split, transform)
    if cfg.val_root is None and cfg.val_dataset != "synthetic":
        raise DataError(
            f"validation dataset {cfg.val_dataset!r} needs its own folder (--val-root); "
            f"--data-root is the {cfg.dataset} training data"
        )
    if cfg.val_dataset == "voc" and cfg.dataset == "sbd":
        return VOCDataset(cfg.val_root, cfg.val_split, transform, sbd_root=cfg.data_root)
    return build_dataset(cfg.val_dataset, cfg.val_root, cfg.val_split, transform)
