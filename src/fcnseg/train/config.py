"""The training configuration: one frozen dataclass, saved as ``config.json`` with a run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run reads. Saved as ``config.json`` beside its checkpoints."""

    # model (see fcnseg.build_model)
    model: str = "fcn8s"
    width: float = 1.0
    batch_norm: bool = False
    learnable_upsampling: bool = False
    pad: int = 100
    backbone_weights: str | None = None  # "imagenet", a path, or None (from scratch)
    init_from: str | None = None  # checkpoint of a coarser FCN (staged training)
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    normalization: str = "imagenet"  # "caffe" for the reference's BGR-mean weights
    crop: int | None = None  # None: whole images, batch 1 (the reference)
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
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
    class_weighting: str = "none"  # or "median" (median-frequency balancing)
    # speed (see "Training at scale" in the README)
    precision: str = "fp32"  # "bf16" or "fp16" (autocast; fp16 with a grad scaler)
    channels_last: bool = False
    compile: bool = False
    dropout: float = 0.5  # after fc6 and fc7, as the reference
    # bookkeeping
    eval_every: int = 500
    log_every: int = 20
    seed: int = 0
    device: str = "auto"

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        if data.get("scale") is not None:
            data = {**data, "scale": tuple(data["scale"])}
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
