"""The model registry: the paper's FCNs by name (``build_model``, ``list_models``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from torch import nn

from fcnseg.errors import ConfigError
from fcnseg.nets.backbones import build_backbone
from fcnseg.nets.fcn import FCN, fcn_from_classifier
from fcnseg.nets.surgery import init_from, load_backbone_weights


@dataclass(frozen=True)
class ModelSpec:
    """What distinguishes one registered FCN from another (paper section 4)."""

    backbone: str
    skips: tuple[str, ...] = ()
    skip_scales: dict[str, float] = field(default_factory=dict)
    final_kernel: int = 64
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "fcn32s": ModelSpec("vgg16", description="VGG16, scores at stride 32 upsampled 32x"),
    "fcn16s": ModelSpec(
        "vgg16", ("pool4",), final_kernel=32, description="FCN-32s + pool4 skip, stride 16"
    ),
    "fcn8s": ModelSpec(
        "vgg16",
        ("pool4", "pool3"),
        final_kernel=16,
        description="FCN-16s + pool3 skip, stride 8",
    ),
    "fcn8s-atonce": ModelSpec(
        "vgg16",
        ("pool4", "pool3"),
        {"pool4": 0.01, "pool3": 0.0001},
        final_kernel=16,
        description="FCN-8s trained in one stage, skips scaled by 0.01 / 0.0001",
    ),
    "fcn-alexnet": ModelSpec(
        "alexnet", final_kernel=63, description="AlexNet, stride 32, upsampled with kernel 63"
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved in checkpoints."""

    name: str
    num_classes: int
    learnable_upsampling: bool = False
    batch_norm: bool = False
    width: float = 1.0
    pad: int = 100
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODELS)


def build_model(
    name: str,
    num_classes: int,
    *,
    backbone_weights: str | os.PathLike | None = None,
    learnable_upsampling: bool = False,
    batch_norm: bool = False,
    width: float = 1.0,
    pad: int = 100,
    dropout: float = 0.5,
    init_from_model: nn.Module | None = None,
) -> FCN:
    """Build a registered FCN.

    Args:
        name: one of :func:`list_models` (``fcn32s``, ``fcn16s``, ``fcn8s``,
            ``fcn8s-atonce``, ``fcn-alexnet``).
        num_classes: output classes (void excluded).
        backbone_weights: ``None`` (random), ``"imagenet"`` (torchvision's file,
            downloaded once, hash checked) or a path to a torchvision-format state_dict.
        learnable_upsampling: learn the upsampling (default fixed bilinear, as the reference).
        batch_norm: VGG16 with batch norm (torchvision's ``vgg16_bn`` layout).
        width: channel multiplier of the backbone; 1.0 is the published net.
        pad: input padding of the first convolution; the reference's 100 makes
            every input size align.
        dropout: dropout rate after fc6 and fc7 (the reference's 0.5).
        init_from_model: a trained coarser FCN to start from (staged training).

    Returns:
        An :class:`~fcnseg.nets.fcn.FCN`: (N, 3, H, W) -> (N, num_classes, H, W),
        with ``model.config`` (a :class:`ModelConfig`) to rebuild it.

    Example:
        >>> import torch, fcnseg
        >>> model = fcnseg.build_model("fcn8s", 21).eval()
        >>> model(torch.randn(1, 3, 31, 17)).shape
        torch.Size([1, 21, 31, 17])
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    spec = MODELS[name]
    classifier = build_backbone(spec.backbone, batch_norm=batch_norm, width=width)
    if backbone_weights is not None:
        load_backbone_weights(
            classifier, backbone_weights, name=spec.backbone, batch_norm=batch_norm
        )
    model = fcn_from_classifier(
        classifier,
        num_classes=num_classes,
        skips=spec.skips,
        skip_scales=spec.skip_scales,
        final_kernel=spec.final_kernel,
        learnable_upsampling=learnable_upsampling,
        pad=pad,
        dropout=dropout,
    )
    model.config = ModelConfig(
        name, num_classes, learnable_upsampling, batch_norm, width, pad, dropout
    )
    if init_from_model is not None:
        init_from(model, init_from_model)
    return model


def build_from_config(config: ModelConfig | dict) -> FCN:
    """Rebuild a model (random weights) from its saved :class:`ModelConfig`."""
    if isinstance(config, dict):
        config = ModelConfig(**config)
    return build_model(
        config.name,
        config.num_classes,
        learnable_upsampling=config.learnable_upsampling,
        batch_norm=config.batch_norm,
        width=config.width,
        pad=config.pad,
        dropout=config.dropout,
    )
